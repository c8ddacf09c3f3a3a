"""``make bench``: run the benchmarks and write their tables into docs/benchmarks.md."""

from __future__ import annotations

import argparse

from bench import core


def main() -> None:
    """Run the benchmarks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=30_000, help="pre-filled events for throughput")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="seconds of offered load for latency")
    args = parser.parse_args()
    print(core.run(args.events, args.latency_seconds))


if __name__ == "__main__":
    main()
