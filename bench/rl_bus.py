"""RL over the bus: an env runner and the agent pipeline (``pipelines/examples/cartpole-streamq.yaml``) talking
through the embedded broker, as ``eddy run`` hosts it.

Measured from the records' timestamps on the two topics: steps/s over the run, the agent's answer time (observation
sent -> its action sent by the pipeline, p50/p99) and the loop period per env (observation -> the env's next
observation, p50/p99), with ``n_envs`` environments stepping concurrently (one agent per env). Returns are reported
too, to show the agent learns while it is measured.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.report import percentile, write_section
from connectors.bus import KafkaBus
from connectors.embedded import REDIS, TANSU, ServiceProcess, free_port
from connectors.env_runner import EnvRunner
from connectors.messages import decode

EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "examples" / "cartpole-streamq.yaml"
EDDY = str(Path(sys.executable).parent / "eddy")


def measure(n_envs: int, steps: int, workdir: Path) -> dict[str, float]:
    """Run the loop for ``steps`` env steps in all and return its figures."""
    broker = ServiceProcess(TANSU, workdir / f"broker-{n_envs}", free_port()).start()
    redis = ServiceProcess(REDIS, workdir / f"redis-{n_envs}", free_port()).start()
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec_path = workdir / "agent.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    observations, actions = spec["input"]["topics"][0], spec["outputs"]["predictions"]
    bus = KafkaBus(broker.url)
    bus.create_topics([observations, actions])
    env = {
        **os.environ,
        "EDDY_BROKER": broker.url,
        "EDDY_STATE": redis.url,
        "EDDY_HOME": str(workdir / "home"),
        "OMP_NUM_THREADS": "1",
    }
    worker = subprocess.Popen(
        [EDDY, "run", str(spec_path), "--port", str(free_port())], env=env, stderr=subprocess.DEVNULL
    )
    try:
        runner = EnvRunner(
            bus, "CartPole-v1", n_envs=n_envs, seed=1, observations_topic=observations, actions_topic=actions,
            max_steps=steps,
        )  # fmt: skip
        with runner:
            summary = runner.run()
            returns = [r.episode_return for r in runner.returns]
        obs_records = bus.read(observations, summary.observations, timeout_s=10)
        act_records = bus.read(actions, summary.steps, timeout_s=10)
    finally:
        worker.terminate()
        worker.wait(60)
        broker.stop()
        redis.stop()
    sent: dict[tuple[str, int], int] = {}
    by_env: dict[str, list[int]] = {}
    for record in obs_records:
        obs = decode(record.value, "observation/v1")
        sent[(obs.env, obs.step)] = record.timestamp  # type: ignore[attr-defined]
        by_env.setdefault(obs.env, []).append(record.timestamp)  # type: ignore[attr-defined]
    answers = []
    for record in act_records:
        action = decode(record.value, "action/v1")
        key = (action.env, action.step)  # type: ignore[attr-defined]
        if key in sent:
            answers.append(float(record.timestamp - sent[key]))
    periods = [float(b - a) for stamps in by_env.values() for a, b in itertools.pairwise(stamps)]
    first_answer = min(r.timestamp for r in act_records)
    last_observation = max(r.timestamp for r in obs_records)
    # the first episodes are the agent exploring; the last ones show it learned while being measured
    return {
        # from the first action to the last observation: the worker's start-up (group join) is not counted
        "steps_per_s": summary.steps / ((last_observation - first_answer) / 1000.0),
        "answer_p50": percentile(answers, 0.5),
        "answer_p99": percentile(answers, 0.99),
        "period_p50": percentile(periods, 0.5),
        "period_p99": percentile(periods, 0.99),
        "first_returns": sum(returns[:10]) / max(1, len(returns[:10])),
        "last_returns": sum(returns[-10:]) / max(1, len(returns[-10:])),
        "episodes": float(len(returns)),
    }


def run(steps: int = 6000, envs: tuple[int, ...] = (1, 8)) -> str:
    """Measure the loop for each env count; write the table into docs/benchmarks.md and return it."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="eddy-bench-rl-") as tmp:
        for n in envs:
            figures = measure(n, steps, Path(tmp))
            rows.append((n, figures))
            print(f"{n} envs: {figures}", file=sys.stderr)
    lines = [
        f"CartPole-v1, Stream Q(λ) agent pipeline (`eddy run pipelines/examples/cartpole-streamq.yaml`, one agent per "
        f"env, OMP_NUM_THREADS=1) and an `EnvRunner` in another process, {steps:,} env steps in all per row, embedded "
        "Tansu (20 ms fetch wait) and redis-server on the same 2 cores. Answer: observation sent -> its action sent; "
        "period: observation -> the same env's next observation (record timestamps).",
        "",
        "| envs | env steps/s | answer p50 / p99 (ms) | period p50 / p99 (ms) | episodes | mean return, first 10 "
        "-> last 10 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, f in rows:
        lines.append(
            f"| {n} | {f['steps_per_s']:,.0f} | {f['answer_p50']:.0f} / {f['answer_p99']:.0f} "
            f"| {f['period_p50']:.0f} / {f['period_p99']:.0f} | {f['episodes']:.0f} "
            f"| {f['first_returns']:.1f} -> {f['last_returns']:.1f} |"
        )
    body = "\n".join(lines)
    write_section("rl-bus", "stream-x over the bus: steps/s and round trip", body, "python -m bench.rl_bus")
    return body


def main() -> None:
    """``python -m bench.rl_bus [--steps N]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.rl_bus", description=__doc__)
    parser.add_argument("--steps", type=int, default=6000, help="env steps per row (default 6,000)")
    print(run(parser.parse_args().steps))


if __name__ == "__main__":
    main()
