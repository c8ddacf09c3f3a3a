"""The ``eddy`` command line: thin shells over library functions (every command has ``--help``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from connectors.bus import BusError, KafkaBus
from connectors.embedded import SERVICE_KINDS, EmbeddedServiceError, stop_recorded
from connectors.messages import ModelUpdate, encode
from connectors.recording import parse_time
from connectors.registry import ModelRegistry, RegistryError
from connectors.replay import parse_topic_map, plan_replay, record_topics, replay_plan
from connectors.services import ResolvedServices, embedded_status, resolve_services, running_services
from connectors.settings import Settings, SettingsError
from connectors.state import CheckpointError, StateStore
from pipelines.dashboard import DashboardError, check_binding
from pipelines.follower import announce
from pipelines.serialization import load_state, project_secret
from pipelines.spec import SpecError, load_specs, spec_json_schema

log = logging.getLogger("eddy")
Handler = Callable[[argparse.Namespace, Settings, Console], int]


def cmd_up(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Start the embedded broker and Redis in the background for this project directory."""
    resolved = resolve_services(settings, detached=True)
    console.print(f"broker   {resolved.broker_url}\nstate    {resolved.state_url}\nregistry {resolved.registry_uri}")
    console.print("stop them with 'eddy down'")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Stop the embedded services of this project directory."""
    stopped = [kind.name for kind in SERVICE_KINDS if stop_recorded(kind, settings.home)]
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no embedded services were running")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Show where each service is and whether the embedded ones are running."""
    embedded = embedded_status(settings)
    rows = {
        "broker": settings.broker if settings.broker != "embedded" else embedded["broker"],
        "state": settings.state if settings.state != "embedded" else embedded["redis"],
        "registry": settings.registry_uri,
    }
    for name, url in rows.items():
        console.print(f"{name:<9}{url or 'embedded, not running (eddy up starts it)'}")
    return 0


def _run_worker(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from pipelines.worker import Worker

    specs = load_specs(args.specs)
    secret = project_secret(settings.secret, settings.home)

    async def main(services: ResolvedServices) -> None:
        worker = Worker(
            specs,
            services,
            secret=secret,
            port=args.port,
            partitions=args.partitions,
            stall_threshold_s=args.stall_threshold,
            torch_threads=settings.torch_threads,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"running {', '.join(s.name for s in specs)}; metrics on :{args.port}/metrics (Ctrl-C stops)")
        await worker.run(stop)

    with running_services(settings) as services:
        asyncio.run(main(services))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The main job of ``make run``."""
    from pipelines.demo import DemoOptions, run_demo

    options = DemoOptions(
        events=args.events,
        rate=args.rate,
        users=args.users,
        live_speed=args.live_speed,
        port=args.port,
        dashboard_port=args.dashboard_port,
        seed=args.seed,
        torch_threads=settings.torch_threads,
    )
    secret = project_secret(settings.secret, settings.home)
    with running_services(settings) as services:
        return asyncio.run(run_demo(services, options, secret, console))


def cmd_dashboard(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Serve the dashboard until Ctrl-C."""
    from pipelines.dashboard import dashboard_url, serve_dashboard

    token = os.environ.get("EDDY_DASHBOARD_TOKEN") or None
    check_binding(args.host, token)

    async def main(state_url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"dashboard: {dashboard_url(args.host, args.port)}  (Ctrl-C stops)")
        await serve_dashboard(state_url, args.host, args.port, token, stop)

    with running_services(settings) as services:
        asyncio.run(main(services.state_url))
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Create, list and describe topics."""
    with running_services(settings) as services:
        bus = KafkaBus(services.broker_url)
        if args.topics_command == "create":
            created = bus.create_topics(args.names, args.partitions, compacted=args.compacted)
            for name in args.names:
                console.print(f"{name}: {'created' if name in created else 'exists'}")
        elif args.topics_command == "list":
            for name in bus.list_topics():
                print(name)
        else:
            info = bus.describe(args.name)
            print(json.dumps({"topic": info.name, "partitions": info.partitions, "messages": info.messages}))
    return 0


def _read_lines(path: str | None) -> Iterable[str]:
    if path is None or path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8") as handle:
        yield from handle


def cmd_produce(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Produce one message per JSONL line (from a file or stdin), keyed by a field when asked."""
    values: list[bytes] = []
    keys: list[bytes | None] = []
    for number, line in enumerate(_read_lines(args.file), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BusError(f"line {number} is not JSON ({exc.msg}); each line must be one JSON object") from None
        key = record.get(args.key) if args.key and isinstance(record, dict) else None
        values.append(line.strip().encode())
        keys.append(str(key).encode() if key is not None else None)
    with running_services(settings) as services:
        bus = KafkaBus(services.broker_url)
        bus.partitions(args.topic)
        sent = bus.produce(args.topic, values, keys)
    console.print(f"produced {sent} messages to {args.topic}", highlight=False)
    return 0


def cmd_frames(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Publish synthetic video (static and moving segments per camera) as frame/v1 messages keyed by camera."""
    from connectors.sources import frame_messages, synthetic_videos

    if not args.rate > 0:
        raise ValueError(f"--rate must be > 0 frames per second per camera (got {args.rate})")
    videos = synthetic_videos(args.cameras, args.frames, args.seed, height=args.height, width=args.width)
    total = sum(len(video) for video in videos)
    with running_services(settings) as services, _stop_on_interrupt() as stop:
        bus = KafkaBus(services.broker_url)
        bus.partitions(args.topic)
        producer = bus.producer()
        started, futures = time.monotonic(), []
        columns = (TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn())
        try:
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task("frames", total=total)
                for frame in frame_messages(videos, fps=args.rate, t0=time.time()):
                    ahead = frame.seq / args.rate - (time.monotonic() - started)
                    if stop.is_set() or (not args.max_speed and ahead > 0 and stop.wait(ahead)):
                        break
                    futures.append(producer.send(args.topic, key=frame.stream.encode(), value=encode(frame)))
                    bar.update(task, completed=len(futures))
            producer.flush()
            for future in futures:
                future.get(timeout=30)  # raises what the broker refused
        finally:
            producer.close()
    shape = f"{args.height}x{args.width}x3"
    console.print(
        f"produced {len(futures)} of {total} frames ({args.cameras} cameras, {shape}) to {args.topic}", highlight=False
    )
    return 130 if stop.is_set() else 0


def cmd_consume(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Print messages of a topic, one per line (base64 under 'value_b64' when not UTF-8)."""
    with running_services(settings) as services:
        bus = KafkaBus(services.broker_url)
        records = bus.iter_records(args.topic, args.limit, timeout_s=args.timeout, from_beginning=args.from_beginning)
        for record in records:
            try:
                text = record.value.decode("utf-8")
                print(text if not args.meta else json.dumps({**_meta(record), "value": text}), flush=True)
            except UnicodeDecodeError:
                print(json.dumps({**_meta(record), "value_b64": base64.b64encode(record.value).decode()}), flush=True)
    return 0


def _meta(record: object) -> dict[str, object]:
    key = getattr(record, "key", None)
    return {
        "partition": getattr(record, "partition", None),
        "offset": getattr(record, "offset", None),
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT) and SIGTERM set, so long jobs end between two messages and report."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_record(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Record topics to a file, one kcat-style JSON envelope per message."""
    since = None if args.from_beginning else parse_time(args.since or "now")
    until = parse_time(args.until) if args.until else None
    with running_services(settings) as services, _stop_on_interrupt() as stop:
        columns = (SpinnerColumn(), TextColumn("recording {task.completed:,} messages"))
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("record", total=None)
            summary = record_topics(
                KafkaBus(services.broker_url),
                args.topics,
                args.out,
                since_ms=since,
                until_ms=until,
                limit=args.limit,
                stop=stop,
                progress=lambda n: bar.update(task, completed=n),
            )
    console.print(summary.describe(), highlight=False)
    return 130 if summary.interrupted else 0


def cmd_replay(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Replay recordings onto topics at a chosen speed, keeping partitions, order and pacing."""
    plan = plan_replay(
        args.files,
        topic_map=parse_topic_map(args.topic_map),
        since_ms=parse_time(args.since) if args.since else None,
        until_ms=parse_time(args.until) if args.until else None,
        keys=[k for k in args.keys.split(",") if k] if args.keys is not None else None,
        skip_bad=args.skip_bad,
    )
    for bad in plan.bad_lines[:10]:
        console.print(f"[yellow]skipped[/] {bad}", highlight=False)
    if len(plan.bad_lines) > 10:
        console.print(f"[yellow]skipped[/] {len(plan.bad_lines) - 10} more bad lines", highlight=False)
    speed = None if args.max_speed else args.speed
    with running_services(settings) as services, _stop_on_interrupt() as stop:
        columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("replay", total=len(plan.messages))
            summary = replay_plan(
                KafkaBus(services.broker_url),
                plan,
                speed=speed,
                dedupe=args.dedupe,
                stop=stop,
                progress=lambda n: bar.update(task, completed=n),
            )
    console.print(summary.describe(), highlight=False)
    if summary.interrupted:
        return 130
    return 0 if summary.complete else 1


def cmd_spec(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Validate spec files or print the JSON schema."""
    if args.spec_command == "schema":
        print(json.dumps(spec_json_schema(), indent=2))
        return 0
    specs = load_specs(args.files)
    for path, spec in zip(args.files, specs, strict=True):
        console.print(f"{path}: ok (pipeline {spec.name!r})", highlight=False)
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """List model versions, promote a version to an alias, roll an alias back."""
    registry = ModelRegistry.from_settings(settings)
    if args.models_command == "list":
        if args.model:
            for version in registry.list_versions(args.model):
                print(version.model_dump_json())
        else:
            for model in registry.list_models():
                print(model.model_dump_json())
        return 0
    if args.models_command == "promote":
        info = registry.promote(args.model, args.version, alias=args.alias)
    else:
        info = registry.rollback(args.model, alias=args.alias)
    with running_services(settings) as services:
        announce(
            KafkaBus(services.broker_url),
            ModelUpdate(model=info.model, version=info.version, alias=args.alias, uri=info.uri),
        )
    console.print(f"models:/{info.model}@{args.alias} -> version {info.version}", highlight=False)
    return 0


def cmd_checkpoints(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """List the pipelines' newest checkpoints (and whether this worker could restore each), or delete some."""
    secret = project_secret(settings.secret, settings.home)
    with running_services(settings) as services, StateStore(services.state_url, retry_timeout_s=10.0) as store:
        if args.checkpoints_command == "list":
            pipelines = store.checkpoint_pipelines()
            for pipeline in pipelines:
                print(json.dumps(_checkpoint_summary(store, pipeline, secret)))
            if not pipelines:
                console.print(f"no pipeline has a checkpoint in {store!r}", highlight=False, soft_wrap=True)
            return 0
        missing = sorted(set(args.pipelines) - set(store.checkpoint_pipelines()))
        if missing:
            raise ValueError(
                f"no checkpoint of {', '.join(map(repr, missing))}; `eddy checkpoints list` shows the pipelines that "
                "have one (nothing was deleted)"
            )
        for name in args.pipelines:
            store.delete_checkpoint(name)
            console.print(
                f"{name}: checkpoint deleted; its next worker starts afresh from the beginning of its input topics",
                highlight=False,
                soft_wrap=True,
            )
    return 0


def _checkpoint_summary(store: StateStore, pipeline: str, secret: bytes) -> dict[str, object]:
    """What ``eddy checkpoints list`` prints of one pipeline's newest checkpoint, its state unpickled as a worker
    would (the error when that fails)."""
    checkpoint = store.read_checkpoint(pipeline)
    if checkpoint is None:  # deleted since the listing
        return {"pipeline": pipeline, "restorable": False, "problem": "deleted while listing"}
    summary: dict[str, object] = {
        "pipeline": pipeline,
        "events": checkpoint.events,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checkpoint.created_at)),
        "bytes": len(checkpoint.state),
    }
    try:
        load_state(checkpoint.state, secret)
    except Exception as exc:  # unpickling runs the learners' own code: any error means a worker cannot restore it
        return {**summary, "restorable": False, "problem": f"{type(exc).__name__}: {exc}"}
    return {**summary, "restorable": True}


def cmd_recommender(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Train the streamer recommender on KuaiLive logs or a simulator run, publish it and announce the alias."""
    from connectors.readers import read_kuailive
    from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, always
    from pipelines.recommender_training import publish_recommender, train_recommender, user_sequences

    if args.logs is not None:
        logs = read_kuailive(args.logs).logs
        source = str(args.logs)
    else:
        config = LivePlatformConfig(users=args.users, streamers=args.streamers, hours=args.hours)
        logs = LivePlatform(config, seed=args.simulate).run(always).kuailive
        source = f"simulator seed {args.simulate} ({args.users} users, {args.streamers} streamers, {args.hours:g} h)"
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    sequences = user_sequences(logs, kinds)
    console.print(f"{len(sequences)} users from {source}", highlight=False)
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("train", total=args.steps, loss=float("nan"))
        trained = train_recommender(
            sequences,
            kinds=kinds,
            dim=args.dim,
            layers=args.layers,
            heads=args.heads,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            length=args.length,
            min_count=args.min_count,
            k=args.k,
            seed=args.seed,
            on_step=lambda step, loss: bar.update(task, completed=step + 1, loss=loss),
        )
    registry = ModelRegistry.from_settings(settings)
    info, update = publish_recommender(
        registry, args.model, trained, project_secret(settings.secret, settings.home), alias=args.alias
    )
    if update is not None:
        with running_services(settings) as services:
            announce(KafkaBus(services.broker_url), update)
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in trained.metrics.items())
    console.print(f"models:/{info.model}/{info.version} ({metrics})", highlight=False)
    print(info.model_dump_json())
    return 0


TIME_HELP = (
    "TIME is 'now', a relative time ('-10m' ago, '+30s' ahead; units ms s m h d), an ISO-8601 date-time "
    "('2026-11-24T10:00:00Z'), or epoch milliseconds."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="eddy",
        description="Eddy: streaming ML on Kafka topics. Services come from EDDY_BROKER, EDDY_STATE, "
        "EDDY_REGISTRY (default: embedded ones under EDDY_HOME=.eddy).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    add("up", cmd_up, "start the embedded broker and Redis in the background")
    add("down", cmd_down, "stop the embedded services started by 'eddy up'")
    add("status", cmd_status, "show where the broker, state store and registry are")

    run = add("run", _run_worker, "run pipelines from spec files in one worker")
    run.add_argument("specs", nargs="+", metavar="SPEC", help="pipeline YAML files")
    run.add_argument("--port", type=int, default=9400, help="port of /metrics, /readyz, /status (default 9400)")
    run.add_argument("--partitions", type=int, default=1, help="partitions for topics this creates (default 1)")
    run.add_argument(
        "--stall-threshold",
        type=float,
        default=60.0,
        help="seconds without progress while lag > 0 before /readyz fails and an error is logged (default 60)",
    )

    demo = add("demo", cmd_demo, "the live platform and its learners (and DriftMoE on a drifting stream), embedded")
    demo.add_argument("--events", type=int, default=None, help="stop after N events and exit 0 (default: run on)")
    demo.add_argument("--rate", type=float, default=500.0, help="drifting-stream events/s produced (default 500)")
    demo.add_argument("--users", type=int, default=500, help="users of the simulated live platform (default 500)")
    demo.add_argument(
        "--live-speed", type=float, default=300.0, help="simulated seconds per second of the platform (default 300)"
    )
    demo.add_argument("--port", type=int, default=9400, help="port of /metrics (default 9400)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the synthetic stream")
    demo.add_argument("--dashboard-port", type=int, default=9500, help="port of the dashboard (default 9500)")

    dashboard = add("dashboard", cmd_dashboard, "serve the live dashboard of every pipeline (history kept in Redis)")
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need EDDY_DASHBOARD_TOKEN)"
    )
    dashboard.add_argument("--port", type=int, default=9500, help="port (default 9500)")

    topics = add("topics", cmd_topics, "create, list or describe topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = topics_sub.add_parser("create", help="create topics", description="create topics")
    create.add_argument("names", nargs="+", metavar="TOPIC")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--compacted", action="store_true", help="cleanup.policy=compact")
    topics_sub.add_parser("list", help="list topics", description="list topics")
    describe = topics_sub.add_parser("describe", help="partitions and message counts", description="describe a topic")
    describe.add_argument("name", metavar="TOPIC")

    produce = add("produce", cmd_produce, "produce JSONL lines (file or stdin) to a topic")
    produce.add_argument("topic", metavar="TOPIC")
    produce.add_argument("file", nargs="?", default=None, help="JSONL file (default: stdin)")
    produce.add_argument("--key", metavar="FIELD", help="use this field of each record as the message key")

    frames = add(
        "frames", cmd_frames, "publish synthetic video (static and moving segments) as frame/v1, keyed by camera"
    )
    frames.add_argument("topic", metavar="TOPIC")
    frames.add_argument("--cameras", type=int, default=4, help="cameras cam0, cam1, ... (default 4)")
    frames.add_argument("--frames", type=int, default=250, help="frames per camera (default 250)")
    frames.add_argument("--height", type=int, default=64, help="frame height in pixels (default 64)")
    frames.add_argument("--width", type=int, default=64, help="frame width in pixels (default 64)")
    frames.add_argument("--seed", type=int, default=0, help="seed of the videos (default 0)")
    frames.add_argument(
        "--rate", type=float, default=25.0, metavar="FPS", help="frames per second per camera (default 25)"
    )
    frames.add_argument("--max-speed", action="store_true", help="no pacing: as fast as the broker takes them")
    frames.epilog = (
        "The videos are made in memory first (cameras * frames * height * width * 3 bytes). Frame timestamps are "
        "now + seq / FPS either way; Ctrl-C stops between two frames."
    )

    consume = add("consume", cmd_consume, "print messages of a topic")
    consume.add_argument("topic", metavar="TOPIC")
    consume.add_argument("--from-beginning", action="store_true", help="start at the oldest message")
    consume.add_argument("--limit", type=int, default=None, help="stop after N messages")
    consume.add_argument("--timeout", type=float, default=None, help="stop after S seconds without messages")
    consume.add_argument("--meta", action="store_true", help="print partition, offset and key with each value")

    record = add("record", cmd_record, "record topics to a JSONL file (.jsonl, .jsonl.gz, .jsonl.zst; kcat -J fields)")
    record.add_argument("topics", nargs="+", metavar="TOPIC")
    record.add_argument("--out", required=True, metavar="FILE", help="recording to write; its suffix picks compression")
    start = record.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="record from the oldest message")
    start.add_argument("--since", metavar="TIME", help="record messages from TIME on (default: from now)")
    end = record.add_mutually_exclusive_group()
    end.add_argument("--until", metavar="TIME", help="stop once every partition is past TIME (e.g. now, +5m)")
    end.add_argument("--limit", type=int, metavar="N", help="stop after N messages")
    record.epilog = TIME_HELP

    replay = add("replay", cmd_replay, "replay recordings onto topics, keeping partitions, order and pacing")
    replay.add_argument("files", nargs="+", metavar="FILE", help="recordings (.jsonl, .jsonl.gz, .jsonl.zst)")
    replay.add_argument("--topic-map", metavar="OLD=NEW,...", help="produce OLD's messages to NEW")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=1.0, metavar="FACTOR", help="2.0 replays twice as fast (default 1)"
    )
    pace.add_argument("--max-speed", action="store_true", help="no pacing: as fast as the broker takes them")
    replay.add_argument("--since", metavar="TIME", help="only messages with timestamps from TIME on")
    replay.add_argument("--until", metavar="TIME", help="only messages with timestamps up to TIME")
    replay.add_argument("--keys", metavar="K,...", help="only messages with these keys")
    replay.add_argument(
        "--dedupe",
        action="store_true",
        help="stamp each message with an eddy-replay-id header, so a restarted replay gives no duplicates to "
        "consumers that honour it (Eddy pipelines do)",
    )
    replay.add_argument("--skip-bad", action="store_true", help="skip and count bad lines instead of stopping")
    replay.epilog = TIME_HELP

    spec = add("spec", cmd_spec, "validate pipeline specs or print their JSON schema")
    spec_sub = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")
    validate = spec_sub.add_parser("validate", help="validate spec files", description="validate spec files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    spec_sub.add_parser("schema", help="print the JSON schema of a spec", description="print the JSON schema")

    models = add("models", cmd_models, "list, promote and roll back model versions")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    mlist = models_sub.add_parser("list", help="list models or one model's versions", description="list models")
    mlist.add_argument("model", nargs="?", default=None)
    promote = models_sub.add_parser("promote", help="point an alias at a version", description="promote a version")
    promote.add_argument("model")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    rollback = models_sub.add_parser(
        "rollback", help="move an alias back to its previous version", description="roll an alias back"
    )
    rollback.add_argument("model")
    rollback.add_argument("--alias", default="champion")

    checkpoints = add("checkpoints", cmd_checkpoints, "list the pipelines' checkpoints or delete some")
    checkpoints_sub = checkpoints.add_subparsers(dest="checkpoints_command", required=True, metavar="ACTION")
    checkpoints_sub.add_parser(
        "list",
        help="one JSON line per pipeline: events, when written, size, whether this worker can restore it",
        description="one JSON line per pipeline: events, when written, size, whether this worker can restore it "
        "(its state unpickled with EDDY_SECRET, as a worker would; the error when not)",
    )
    delete = checkpoints_sub.add_parser(
        "delete",
        help="delete pipelines' checkpoints and offsets: they start afresh from the beginning of their inputs",
        description="delete pipelines' newest and previous checkpoints and their offsets, e.g. one that `eddy run` "
        "cannot restore: the next worker starts the pipeline afresh from the beginning of its input topics",
    )
    delete.add_argument("pipelines", nargs="+", metavar="PIPELINE")

    recommender = add("recommender", cmd_recommender, "train the streamer recommender of mode recommend")
    recommender_sub = recommender.add_subparsers(dest="recommender_command", required=True, metavar="ACTION")
    train = recommender_sub.add_parser(
        "train",
        help="train on KuaiLive logs or a simulator run and publish a version",
        description="train on KuaiLive logs or a simulator run and publish a version",
    )
    data = train.add_mutually_exclusive_group(required=True)
    data.add_argument("--logs", metavar="PATH", help="KuaiLive folder or .zip")
    data.add_argument("--simulate", type=int, metavar="SEED", help="simulate a live platform with this seed")
    train.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    train.add_argument("--streamers", type=int, default=40, help="simulated streamers (default 40)")
    train.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    train.add_argument("--model", required=True, help="registered model name to publish to")
    train.add_argument("--alias", default="champion", help="alias the version gets (default champion)")
    train.add_argument(
        "--kinds", default="click,comment,like,gift,follow", help="interaction kinds that make the sequences"
    )
    train.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    train.add_argument("--dim", type=int, default=32, help="model width (default 32)")
    train.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    train.add_argument("--heads", type=int, default=2, help="attention heads (default 2)")
    train.add_argument("--length", type=int, default=32, help="tokens per training window (default 32)")
    train.add_argument("--batch-size", type=int, default=32, help="windows per step (default 32)")
    train.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 0.003)")
    train.add_argument("--min-count", type=int, default=1, help="interactions a streamer needs to get a token")
    train.add_argument("--k", type=int, default=10, help="k of the held-out hit-rate@k (default 10)")
    train.add_argument("--seed", type=int, default=0, help="seed of the weights and batches (default 0)")
    train.epilog = (
        "The simulator runs with a policy that always inserts the live card. Prints the new version as JSON; "
        "recommend pipelines following the alias swap to it."
    )
    return parser


USER_ERRORS = (
    SpecError,
    SettingsError,
    BusError,
    RegistryError,
    EmbeddedServiceError,
    DashboardError,
    CheckpointError,
    ValueError,
    OSError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eddy`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "aiokafka", "faust", "mode", "mlflow", "alembic", "urllib3", "pipelines.transport"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    console = Console(stderr=True)
    try:
        settings = Settings.from_env()
        handler: Handler = args.handler
        return handler(args, settings, console)
    except USER_ERRORS as exc:
        # Not wrapped to the terminal and not read as markup: users copy paths and commands from it.
        console.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
