"""PromptTPP benchmark: the streaming protocol on drifting Hawkes processes, against two baselines and the truth.

``python -m bench.tpp [--seeds 3] [--quick]`` runs, in one process on one core (``torch.set_num_threads(1)``; run
with ``OMP_NUM_THREADS=1``), for each seed:

- **drift**: ``connectors.sources.hawkes.drifting_hawkes`` with a new excitation matrix every period (same base
  rates), through :func:`learners.tpp.protocol.run_protocol` for PromptTPP (``strategy="prompt"``), naive
  fine-tuning and train-once-then-frozen, all with the same model size, seed and epochs. Per period: prequential
  log-likelihood per event (before training on the period) beside the exact log-likelihood per event of the true
  process on the same sequences, next-time RMSE and type accuracy; average forgetting on held-out sequences.
- **stationary**: the same stream with ``drift="none"``: the last period's prequential log-likelihood per event
  (after training on the four before it) against the truth, gap in %.
- **predictions/s** of ``predict_next`` on a 64-event history, learner only (one sequence, no batching).

It writes the section ``tpp`` of docs/benchmarks.md (:func:`bench.report.write_section`) and the plot
docs/tpp-drift.png. Every number is measured by this run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from bench.report import write_section
from connectors.sources.hawkes import Drift, Period, drifting_hawkes, log_likelihood
from learners.tpp import ContinualTPP, Strategy
from learners.tpp.protocol import ProtocolResult, run_protocol

DOCS = Path(__file__).resolve().parents[1] / "docs"
SEEDS = 3
STRATEGIES: tuple[Strategy, ...] = ("prompt", "finetune", "frozen")
LABELS = {"prompt": "PromptTPP", "finetune": "fine-tuning", "frozen": "frozen after period 0"}
STATIONARY_STRATEGIES: tuple[Strategy, ...] = ("prompt", "finetune")
STATIONARY_GAP_GOAL = 5.0  # % of the true log-likelihood per event
HISTORY = 64  # events of history for the predictions/s figure


@dataclass(frozen=True)
class Budget:
    """Stream sizes and training effort of one mode."""

    name: str
    n_types: int
    n_periods: int
    sequences: int  # per period
    t_end: float  # per sequence
    epochs: int  # per period
    max_predictions: int  # next-event predictions scored per period
    prediction_calls: int  # predict_next calls timed for predictions/s


FULL = Budget("full", 3, 5, sequences=300, t_end=15.0, epochs=3, max_predictions=200, prediction_calls=500)
QUICK = Budget("quick", 3, 3, sequences=24, t_end=8.0, epochs=1, max_predictions=20, prediction_calls=50)


def model_for(strategy: Strategy, budget: Budget, seed: int) -> ContinualTPP:
    """The learner every run uses: defaults of :class:`ContinualTPP`, ``time_scale`` at about the mean gap."""
    return ContinualTPP(budget.n_types, strategy, time_scale=0.5, seed=seed)


def true_log_likelihood(period: Period) -> float:
    """The exact log-likelihood per event of the period's sequences under the period's true process."""
    total = sum(log_likelihood(period.params, seq) for seq in period.sequences)
    return total / sum(len(seq) for seq in period.sequences)


@dataclass(frozen=True)
class Run:
    """One protocol run: what it measured, the truth beside it, and its wall time."""

    result: ProtocolResult
    truth: list[float]
    seconds: float


def protocol_run(strategy: Strategy, stream: list[Period], budget: Budget, seed: int) -> Run:
    """:func:`run_protocol` for one strategy on one stream."""
    started = time.perf_counter()
    result = run_protocol(
        model_for(strategy, budget, seed),
        [period.sequences for period in stream],
        epochs=budget.epochs,
        max_predictions=budget.max_predictions,
        seed=seed,
    )
    return Run(result, [true_log_likelihood(period) for period in stream], time.perf_counter() - started)


def stream_for(budget: Budget, seed: int, drift: Drift) -> list[Period]:
    """The benchmark's stream for a seed: ``drifting_hawkes`` at the budget's sizes, branching ratio 0.6."""
    return drifting_hawkes(budget.n_types, budget.n_periods, budget.sequences, budget.t_end, seed=seed, drift=drift)


def predictions_per_second(model: ContinualTPP, stream: list[Period], calls: int) -> float:
    """``predict_next`` calls per second on the longest sequence's last ``HISTORY`` events (rebased to start at 0).
    The cost does not depend on what the model has learned (a fixed grid of query times), so a fresh model will do."""
    longest = max(stream[-1].sequences, key=len)
    times, types = longest.times[-HISTORY:], longest.types[-HISTORY:]
    times = times - times[0]
    model.predict_next(times, types)  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        model.predict_next(times, types)
    return calls / (time.perf_counter() - started)


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` (population std over seeds)."""
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def plot(runs: dict[Strategy, list[Run]], n_periods: int) -> Path:
    """Two panels over the periods: prequential log-likelihood per event (with the truth), and the held-out
    log-likelihood per event right after training on each period and at the end (the gap is the forgetting)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    periods = np.arange(n_periods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    truth = np.array([run.truth for run in runs["prompt"]])
    left.plot(periods, truth.mean(0), "k--", label="true process")
    for strategy, strategy_runs in runs.items():
        prequential = np.array([[s.log_likelihood for s in run.result.prequential] for run in strategy_runs])
        mean, std = prequential.mean(0), prequential.std(0)
        (line,) = left.plot(periods, mean, "o-", label=LABELS[strategy])
        left.fill_between(periods, mean - std, mean + std, alpha=0.2, color=line.get_color())
        after = np.array([run.result.after_training for run in strategy_runs]).mean(0)
        final = np.array([run.result.final for run in strategy_runs]).mean(0)
        right.plot(periods, after, "o:", color=line.get_color(), label=f"{LABELS[strategy]}: after training on p")
        right.plot(periods, final, "s-", color=line.get_color(), label=f"{LABELS[strategy]}: at the end")
    left.set(title="prequential (before training on the period)", xlabel="period", ylabel="log-likelihood / event")
    right.set(title="held-out sequences of each period", xlabel="period")
    for ax in (left, right):
        ax.set_xticks(periods)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"Drifting Hawkes (new excitation every period), mean ± std over {len(truth)} seeds", fontsize=10)
    fig.tight_layout()
    path = DOCS / "tpp-drift.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def drift_tables(
    runs: dict[Strategy, list[Run]], budget: Budget
) -> tuple[list[str], dict[Strategy, list[float]], dict[Strategy, list[float]]]:
    """The per-period and summary tables; per strategy, the mean log-likelihood and the forgetting of each seed."""
    truths = [run.truth for run in runs["prompt"]]
    header = " | ".join(LABELS[s] for s in runs)
    lines = [
        "Prequential log-likelihood per event (nats, before training on the period), mean ± std over seeds:",
        "",
        f"| period | true process | {header} |",
        "|---|---|" + "---|" * len(runs),
    ]
    for p in range(budget.n_periods):
        cells = [mean_std([run.result.prequential[p].log_likelihood for run in runs[s]]) for s in runs]
        lines.append(f"| {p} | {mean_std([t[p] for t in truths])} | " + " | ".join(cells) + " |")
    mean_ll = {s: [run.result.mean_log_likelihood for run in runs[s]] for s in runs}
    forgetting = {s: [run.result.forgetting for run in runs[s]] for s in runs}
    lines += [
        "",
        "| strategy | mean log-likelihood / event | average forgetting (nats / event) | next-time RMSE | "
        "type accuracy | seconds per run |",
        "|---|---|---|---|---|---|",
        f"| true process | {mean_std([statistics.fmean(t) for t in truths])} | | | | |",
    ]
    for s, strategy_runs in runs.items():
        rmse = [statistics.fmean(x.rmse for x in run.result.prequential) for run in strategy_runs]
        accuracy = [statistics.fmean(x.type_accuracy for x in run.result.prequential) for run in strategy_runs]
        seconds = statistics.fmean(run.seconds for run in strategy_runs)
        lines.append(
            f"| {LABELS[s]} | {mean_std(mean_ll[s])} | {mean_std(forgetting[s])} | {mean_std(rmse)} | "
            f"{mean_std(accuracy)} | {seconds:.0f} |"
        )
    return lines, mean_ll, forgetting


def stationary_table(runs: dict[Strategy, list[Run]]) -> tuple[list[str], dict[Strategy, float]]:
    """The last period's prequential log-likelihood per event against the truth; the gap in % per strategy."""
    lines = [
        "| strategy | model log-likelihood / event | true log-likelihood / event | gap |",
        "|---|---|---|---|",
    ]
    gaps: dict[Strategy, float] = {}
    for s, strategy_runs in runs.items():
        model = [run.result.prequential[-1].log_likelihood for run in strategy_runs]
        truth = [run.truth[-1] for run in strategy_runs]
        gap = [100.0 * (t - m) / abs(t) for m, t in zip(model, truth, strict=True)]
        gaps[s] = statistics.fmean(gap)
        lines.append(f"| {LABELS[s]} | {mean_std(model)} | {mean_std(truth)} | {mean_std(gap, 1)} % |")
    return lines, gaps


def goal(text: str, ours: list[float], baselines: dict[str, list[float]], higher_is_better: bool) -> str:
    """A goal line: met when PromptTPP's mean over seeds beats every baseline's (qualified when it does not in every
    seed), with the means and, per baseline, the paired per-seed difference and in how many seeds PromptTPP won."""
    sign = 1.0 if higher_is_better else -1.0
    met = all(sign * (statistics.fmean(ours) - statistics.fmean(theirs)) > 0 for theirs in baselines.values())
    comparisons, every_seed = [], True
    for name, theirs in baselines.items():
        differences = [a - b for a, b in zip(ours, theirs, strict=True)]
        wins = sum(sign * d > 0 for d in differences)
        every_seed = every_seed and wins == len(differences)
        comparisons.append(
            f"vs {name} {statistics.fmean(theirs):+.4f}: difference {mean_std(differences, 4)}, better in {wins} of "
            f"{len(differences)} seeds"
        )
    verdict = "**not met**" if not met else "**met**" if every_seed else "**met on the mean, not in every seed**"
    return f"- {text}: {verdict} (PromptTPP {statistics.fmean(ours):+.4f}; " + "; ".join(comparisons) + ")."


def run(quick: bool, seeds: int = SEEDS) -> str:
    """Run the benchmark, write the ``tpp`` section of docs/benchmarks.md and docs/tpp-drift.png, return the
    section's markdown."""
    budget = QUICK if quick else FULL
    command = "OMP_NUM_THREADS=1 python -m bench.tpp" + (" --quick" if quick else "") + f" --seeds {seeds}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    drift: dict[Strategy, list[Run]] = {s: [] for s in STRATEGIES}
    stationary: dict[Strategy, list[Run]] = {s: [] for s in STATIONARY_STRATEGIES}
    events_per_sequence: list[float] = []
    started = time.perf_counter()
    try:
        with Progress() as progress:
            task = progress.add_task("PromptTPP benchmark", total=seeds * (len(drift) + len(stationary)) + 1)
            for seed in range(seeds):
                drifting = stream_for(budget, seed, "excitation")
                events_per_sequence += [len(seq) for period in drifting for seq in period.sequences]
                for strategy, runs in drift.items():
                    runs.append(protocol_run(strategy, drifting, budget, seed))
                    progress.advance(task)
                steady = stream_for(budget, seed, "none")
                for strategy, runs in stationary.items():
                    runs.append(protocol_run(strategy, steady, budget, seed))
                    progress.advance(task)
            speeds = {
                s: predictions_per_second(model_for(s, budget, 0), drifting, budget.prediction_calls)
                for s in STATIONARY_STRATEGIES
            }
            progress.advance(task)
    finally:
        torch.set_num_threads(threads)
    minutes = (time.perf_counter() - started) / 60.0
    path = plot(drift, budget.n_periods)
    drift_lines, mean_ll, forgetting = drift_tables(drift, budget)
    stationary_lines, gaps = stationary_table(stationary)
    goals = [
        goal(
            "PromptTPP above both baselines on mean log-likelihood per event",
            mean_ll["prompt"],
            {LABELS[s]: mean_ll[s] for s in ("finetune", "frozen")},
            higher_is_better=True,
        ),
        goal(
            "PromptTPP below both baselines on average forgetting (frozen's is 0 by construction, so beating it takes "
            "backward transfer)",
            forgetting["prompt"],
            {LABELS[s]: forgetting[s] for s in ("finetune", "frozen")},
            higher_is_better=False,
        ),
        f"- Stationary data, PromptTPP within {STATIONARY_GAP_GOAL:.0f}% of the true log-likelihood per event: "
        f"{'**met**' if gaps['prompt'] <= STATIONARY_GAP_GOAL else '**not met**'} (gap {gaps['prompt']:.1f}%).",
    ]
    events = statistics.fmean(events_per_sequence)
    setup = (
        f"Mode: {budget.name}. Stream: {budget.n_types} event types, {budget.n_periods} periods of "
        f"{budget.sequences} sequences on [0, {budget.t_end:g}] (about {events:.0f} events each), branching ratio "
        f"0.6, beta 1, seeds 0..{seeds - 1} (stream, model and protocol seed alike). Learner: "
        f"`ContinualTPP` defaults (d_model 32, 1 layer, 2 heads, 20 Monte-Carlo samples per gap, batch 16, "
        f"Adam lr 3e-3; PromptTPP: pools M=10, L_p=5, N=5, pool lr 1e-2, base lr 3e-4 after period 0), "
        f"`time_scale` 0.5, epochs per period: {budget.epochs}. Protocol: prequential scores on every sequence of "
        f"a period before training on it; training on the first 80%; forgetting on the last 20% (held out), "
        f"right after training on the period minus at the end; {budget.max_predictions} next-event predictions "
        f"per period from random prefixes (expected time under the model, type = argmax intensity there). "
        f"Whole run: {minutes:.1f} min on one core."
    )
    speed = ", ".join(f"{LABELS[s]} {v:,.0f}/s" for s, v in speeds.items())
    body = "\n".join(
        [
            setup,
            "",
            "Goals:",
            "",
            *goals,
            "",
            *drift_lines,
            "",
            f"![prequential and held-out log-likelihood per period]({path.relative_to(DOCS).as_posix()})",
            "",
            'Stationary Hawkes (`drift="none"`), last period\'s prequential log-likelihood per event after training '
            "on the periods before it, mean ± std over seeds:",
            "",
            *stationary_lines,
            "",
            f"`predict_next` on a {HISTORY}-event history, one sequence per call, learner only (no pipeline): {speed}.",
        ]
    )
    write_section("tpp", "PromptTPP on drifting Hawkes", body, command)
    return body


def main() -> None:
    """``python -m bench.tpp [--seeds N] [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.tpp", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per strategy (default {SEEDS})")
    parser.add_argument("--quick", action="store_true", help="tiny streams and one epoch: a smoke test (a minute)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1 (got {args.seeds})")
    print(run(quick=args.quick, seeds=args.seeds))


if __name__ == "__main__":
    main()
