"""The PromptTPP pipeline over the bus: next-event predictions per second of ``eddy run`` on
``pipelines/examples/interactions-tpp.yaml``, the way a user runs it, with one, two and three worker processes.

Simulated users (one multivariate Hawkes sequence each, ``connectors.sources.drifting_hawkes``) become
``interaction/v1`` records keyed by user on ``live.interactions`` (6 partitions). The workers (``EDDY_TORCH_THREADS=1``
each, one consumer group) start first; once they hold all partitions between them, every interaction is produced.
Each worker forecasts the interactions of its partitions, keeps each user's last 64 events in Redis with its
checkpoints and trains every 2,000 of its interactions, as the example says. Predictions/s is measured from the
output records' timestamps (first to last forecast), so start-up and group joins are not counted; the time spent
training is inside the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.report import write_section
from connectors.bus import KafkaBus
from connectors.embedded import REDIS, TANSU, ServiceProcess, free_port
from connectors.messages import encode
from connectors.sources import drifting_hawkes, to_interactions

EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "examples" / "interactions-tpp.yaml"
EDDY = str(Path(sys.executable).parent / "eddy")
T0 = 1_700_000_000.0
PARTITIONS = 6


def _partitions_held(port: int) -> int | None:
    """How many input partitions the worker on ``port`` holds (None while it does not answer)."""
    try:
        statuses = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read())
    except OSError:
        return None
    return len(statuses[0]["partitions"])


def _wait_for_spread(workers: list[subprocess.Popen[bytes]], ports: list[int], timeout_s: float = 180) -> None:
    """Wait until the workers hold all partitions between them, each as many as the assignor gives it."""
    share, extra = divmod(PARTITIONS, len(ports))
    wanted = sorted([share + 1] * extra + [share] * (len(ports) - extra))
    deadline = time.monotonic() + timeout_s
    while sorted(_partitions_held(port) or 0 for port in ports) != wanted:
        if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
            raise RuntimeError(f"the {len(ports)} workers did not share the {PARTITIONS} partitions; see worker.log")
        time.sleep(0.1)


def measure(users: int, t_end: float, workdir: Path, workers: int = 1) -> dict[str, float]:
    """Start ``workers`` processes of the example pipeline, produce the users' interactions, and return its
    figures."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["operator"]["params"]["time_scale"] = 1.0  # the simulated processes' time unit is one second
    spec.pop("registry", None)  # publishing is not what is measured
    kinds = spec["sequence"]["kinds"]
    spec_path = workdir / "tpp.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    [period] = drifting_hawkes(len(kinds), 1, users, t_end, seed=0)
    messages = sorted(
        (m for i, seq in enumerate(period.sequences) for m in to_interactions(seq, f"u{i}", kinds, t0=T0)),
        key=lambda m: m.ts,
    )
    broker = ServiceProcess(TANSU, workdir / "broker", free_port()).start()
    redis = ServiceProcess(REDIS, workdir / "redis", free_port()).start()
    source, sink = spec["input"]["topics"][0], f"{spec['name']}.predictions"
    bus = KafkaBus(broker.url)
    bus.create_topics([source, sink, f"{spec['name']}.dlq"], PARTITIONS)
    env = {**os.environ, "EDDY_BROKER": broker.url, "EDDY_STATE": redis.url, "EDDY_HOME": str(workdir / "home")}
    env["EDDY_TORCH_THREADS"] = "1"
    ports = [free_port() for _ in range(workers)]
    log = workdir / "worker.log"
    processes = [
        subprocess.Popen([EDDY, "run", str(spec_path), "--port", str(port)], env=env, stderr=log.open("ab"))
        for port in ports
    ]
    try:
        _wait_for_spread(processes, ports)
        bus.produce(source, [encode(m) for m in messages], keys=[m.user.encode() for m in messages])
        outputs = bus.read(sink, len(messages), timeout_s=1800)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(120)
        broker.stop()
        redis.stop()
    if len(outputs) < len(messages):
        raise RuntimeError(f"the pipeline answered {len(outputs)} of {len(messages)} interactions; see worker.log")
    stamps = sorted(r.timestamp for r in outputs)
    return {
        "interactions": float(len(messages)),
        "users": float(users),
        "predictions_per_s": (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000.0),
    }


def run(users: int = 200, t_end: float = 30.0, workers: tuple[int, ...] = (1, 2, 3)) -> str:
    """Measure the pipeline with each number of workers; write the section ``tpp-pipeline`` of docs/benchmarks.md
    and return it."""
    rows = []
    for n in workers:
        with tempfile.TemporaryDirectory(prefix="eddy-bench-tpp-") as tmp:
            rows.append((n, measure(users, t_end, Path(tmp), n)))
            print(f"{n} worker(s): {rows[-1][1]['predictions_per_s']:,.0f} predictions/s", file=sys.stderr)
    one = rows[0][1]["predictions_per_s"] if rows[0][0] == 1 else None
    f = rows[0][1]
    lines = [
        "`eddy run pipelines/examples/interactions-tpp.yaml` (PromptTPP, d_model 32, one layer, history 64, "
        "training every 2,000 interactions of a worker, one torch thread per worker) in 1 to 3 worker processes of "
        f"one consumer group, on {f['interactions']:,.0f} interactions of {f['users']:,.0f} simulated Hawkes users "
        f"(5 kinds) produced to a {PARTITIONS}-partition topic of the embedded Tansu once the workers hold the "
        "partitions; redis-server beside them, everything on the same 2 cores. Predictions/s from the first to the "
        "last forecast's record timestamp, trainings included.",
        "",
        "| workers | predictions/s | vs one worker |",
        "|---:|---:|---:|",
    ]
    for n, figures in rows:
        ratio = f"{figures['predictions_per_s'] / one:.2f}x" if one else "n/a"
        lines.append(f"| {n} | {figures['predictions_per_s']:,.0f} | {ratio} |")
    body = "\n".join(lines)
    write_section(
        "tpp-pipeline",
        "PromptTPP pipeline: predictions per second, 1 to 3 workers",
        body,
        "python -m bench.tpp_pipeline",
    )
    return body


def main() -> None:
    """``python -m bench.tpp_pipeline [--users N] [--t-end T] [--workers 1,2,3]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.tpp_pipeline", description=__doc__)
    parser.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    parser.add_argument("--t-end", type=float, default=30.0, help="seconds of each user's activity (default 30)")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure, comma-separated (default 1,2,3)")
    args = parser.parse_args()
    if args.users < 1 or args.t_end <= 0:
        parser.error(f"--users must be >= 1 and --t-end > 0 (got {args.users}, {args.t_end})")
    try:
        workers = tuple(int(n) for n in args.workers.split(","))
    except ValueError:
        parser.error(f"--workers takes comma-separated worker counts such as 1,2,3 (got {args.workers!r})")
    if any(not 1 <= n <= PARTITIONS for n in workers):
        parser.error(f"--workers counts must be between 1 and {PARTITIONS}, the partitions (got {args.workers!r})")
    print(run(args.users, args.t_end, workers))


if __name__ == "__main__":
    main()
