"""``make bench``: run the benchmarks and write their tables into docs/benchmarks.md."""

from __future__ import annotations

import argparse

from bench import (
    allocation,
    allocation_pipeline,
    core,
    ctr,
    drift,
    frames,
    replay,
    rl_bus,
    rolling_cache,
    streamx,
    tpp,
    tpp_pipeline,
)

BENCHMARKS = (
    "core",
    "replay",
    "rl_bus",
    "streamx",
    "drift",
    "tpp",
    "tpp_pipeline",
    "rolling_cache",
    "frames",
    "ctr",
    "allocation",
    "allocation_pipeline",
)


def main() -> None:
    """Run the benchmarks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--events", type=int, default=30_000, help="pre-filled events for core throughput")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="seconds of offered load for latency")
    parser.add_argument(
        "--full", action="store_true", help="paper-length runs: stream-x curves, DriftMoE 1M x 10 seeds (hours)"
    )
    parser.add_argument("--replay-events", type=int, default=50_000, help="messages per replay throughput run")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or BENCHMARKS
    if "core" in names:
        print(core.run(args.events, args.latency_seconds))
    if "replay" in names:
        print(replay.run(args.replay_events))
    if "rl_bus" in names:
        print(rl_bus.run())
    if "streamx" in names:
        print(streamx.run(quick=not args.full))
    if "drift" in names:
        print(drift.run(quick=not args.full))
    if "tpp" in names:
        print(tpp.run(quick=False))
    if "tpp_pipeline" in names:
        print(tpp_pipeline.run())
    if "rolling_cache" in names:
        print(rolling_cache.run(quick=not args.full))
    if "frames" in names:
        print(frames.run(quick=False))
    if "ctr" in names:
        ctr.run(quick=False, doc=ctr.DOC)
    if "allocation" in names:
        print(allocation.run(allocation.FULL, allocation.SEEDS, allocation.DOC, "python -m bench.allocation"))
    if "allocation_pipeline" in names:
        print(allocation_pipeline.run())


if __name__ == "__main__":
    main()
