"""The PromptTPP pipeline over the bus: next-event predictions per second of ``eddy run`` on
``pipelines/examples/interactions-tpp.yaml``, the way a user runs it.

Simulated users (one multivariate Hawkes sequence each, ``connectors.sources.drifting_hawkes``) become
``interaction/v1`` records keyed by user on ``live.interactions``, all produced before the worker starts. The
worker (one process, ``EDDY_TORCH_THREADS=1``) forecasts each interaction, keeps each user's last 64 events in Redis
with its checkpoints and trains every 2,000 interactions, as the example says. Predictions/s is measured from the
output records' timestamps (first to last forecast), so the worker's start-up and group join are not counted; the
time spent training is inside the figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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


def measure(users: int, t_end: float, workdir: Path, partitions: int = 4) -> dict[str, float]:
    """Produce the users' interactions, run the example pipeline over them, and return its figures."""
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
    bus.create_topics([source, sink, f"{spec['name']}.dlq"], partitions)
    bus.produce(source, [encode(m) for m in messages], keys=[m.user.encode() for m in messages])
    env = {**os.environ, "EDDY_BROKER": broker.url, "EDDY_STATE": redis.url, "EDDY_HOME": str(workdir / "home")}
    env["EDDY_TORCH_THREADS"] = "1"
    worker = subprocess.Popen(
        [EDDY, "run", str(spec_path), "--port", str(free_port()), "--partitions", str(partitions)],
        env=env,
        stderr=(workdir / "worker.log").open("wb"),
    )
    try:
        outputs = bus.read(sink, len(messages), timeout_s=1800)
    finally:
        worker.terminate()
        worker.wait(120)
        broker.stop()
        redis.stop()
    if len(outputs) < len(messages):
        raise RuntimeError(f"the pipeline answered {len(outputs)} of {len(messages)} interactions; see worker.log")
    stamps = sorted(r.timestamp for r in outputs)
    return {
        "interactions": float(len(messages)),
        "users": float(users),
        "predictions_per_s": (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000.0),
        "trainings": float(len(messages) // spec["sequence"]["train_every_events"]),
    }


def run(users: int = 200, t_end: float = 30.0) -> str:
    """Measure the pipeline; write the section ``tpp-pipeline`` of docs/benchmarks.md and return it."""
    with tempfile.TemporaryDirectory(prefix="eddy-bench-tpp-") as tmp:
        f = measure(users, t_end, Path(tmp))
    body = "\n".join(
        [
            "`eddy run pipelines/examples/interactions-tpp.yaml` (PromptTPP, d_model 32, one layer, history 64, "
            "training every 2,000 interactions, one torch thread) on interactions of simulated Hawkes users "
            "(5 kinds), pre-filled on a 4-partition topic of the embedded Tansu; redis-server beside it, all on "
            "the same 2 cores. Predictions/s from the first to the last forecast's record timestamp, trainings "
            "included.",
            "",
            "| users | interactions | trainings | predictions/s |",
            "|---:|---:|---:|---:|",
            f"| {f['users']:,.0f} | {f['interactions']:,.0f} | {f['trainings']:,.0f} | {f['predictions_per_s']:,.0f} |",
        ]
    )
    write_section("tpp-pipeline", "PromptTPP pipeline: predictions per second", body, "python -m bench.tpp_pipeline")
    return body


def main() -> None:
    """``python -m bench.tpp_pipeline [--users N] [--t-end T]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.tpp_pipeline", description=__doc__)
    parser.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    parser.add_argument("--t-end", type=float, default=30.0, help="seconds of each user's activity (default 30)")
    args = parser.parse_args()
    if args.users < 1 or args.t_end <= 0:
        parser.error(f"--users must be >= 1 and --t-end > 0 (got {args.users}, {args.t_end})")
    print(run(args.users, args.t_end))


if __name__ == "__main__":
    main()
