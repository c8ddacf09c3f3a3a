"""Live-stream allocation benchmark: SL-MGAC against its baselines on the simulator, scored exactly, plus NCIS.

``python -m bench.allocation [--quick] [--seeds 5] [--doc PATH]`` runs, in one process on one core
(``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``), for each seed, on
``LivePlatformConfig.small()`` (40 users, 4 streamers, no popularity drift: the simulator's exact MDP):

- **policies**: never, always, greedy on the platform's CTR with the threshold that earned the most reward per
  session in simulated runs (grid 0.05..0.60), and the learned agents DQN, plain actor-critic and SL-MGAC
  (:class:`learners.allocation.AllocationAgent`), each trained online: ``rounds`` runs of the platform over
  ``train_hours`` with the agent as the policy, learning from each run's decisions (its own interactions) after it.
  The learned agents are scored by their greedy policies; SL-MGAC's distilled student too.
- **exact scores** (:class:`connectors.sources.live_platform_optimal.AllocationMDP`): fraction of the optimal
  policy's gain, app time change per session against never inserting (the constraint: no more than ``MARGIN`` of
  never's app time lost), allocation rate.
- **off-policy evaluation**: one run of ``log_hours`` under an exploratory behaviour policy (0.1 + 0.8 x the tuned
  greedy policy's choice) with its propensities; NCIS (cap ``CAP``) estimates each policy's reward per session from
  it, compared with the exact value (OPE error).

It writes the section ``allocation`` of docs/benchmarks.md (:func:`bench.report.write_section`; ``--doc`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from bench.report import DOC, write_section
from connectors.sources.live_platform import (
    LivePlatform,
    LivePlatformConfig,
    LivePlatformLog,
    Policy,
    RequestState,
    Threshold,
    always,
    never,
)
from connectors.sources.live_platform_optimal import AllocationMDP
from learners.allocation import AllocationAgent, AllocationConfig, ncis, session_transitions

SEEDS = 5
MARGIN = 0.01  # the constraint: app time per session may fall at most 1% below never inserting's
CAP = 1000.0  # NCIS weight cap
GOAL = 0.9  # SL-MGAC's fraction of optimal
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.601, 0.05), 2).tolist())
LEARNED = ("dqn", "actor-critic", "sl-mgac")
LABELS = {
    "never": "never",
    "always": "always",
    "greedy": "greedy CTR (tuned threshold)",
    "dqn": "DQN",
    "actor-critic": "actor-critic (plain)",
    "sl-mgac": "SL-MGAC",
    "student": "SL-MGAC student (served)",
    "optimal": "optimal (value iteration)",
}


@dataclass(frozen=True)
class Budget:
    """Training effort and log size of one mode."""

    name: str
    train_hours: float  # simulated hours per training round
    rounds: int  # training rounds per learned agent
    log_hours: float  # hours of behaviour-policy log for NCIS


FULL = Budget("full", train_hours=72.0, rounds=16, log_hours=720.0)
QUICK = Budget("quick", train_hours=24.0, rounds=4, log_hours=240.0)


def play_round(platform: LivePlatform, agent: AllocationAgent, video_weight: float = 1.0) -> LivePlatformLog:
    """Run the platform once with ``agent`` as its policy, then let the agent learn from every logged decision."""
    states: list[RequestState] = []

    def policy(state: RequestState) -> float:
        states.append(state)
        return agent(state)

    log = platform.run(policy)
    for transition in session_transitions(states, log.decisions, log.sessions, video_weight=video_weight):
        agent.observe(transition)
    return log


def session_app_floor(platform: LivePlatform, margin: float = MARGIN) -> float:
    """Never inserting's app seconds per session from the first decision on, less ``margin`` of it: the agents'
    constraint, measured by simulation as a platform would on a no-live holdout."""
    states: list[RequestState] = []

    def policy(state: RequestState) -> float:
        states.append(state)
        return 0.0

    log = platform.run(policy)
    transitions = session_transitions(states, log.decisions, log.sessions)
    sessions = len(set(log.decisions.session.tolist()))
    return (1.0 - margin) * sum(t.app_seconds for t in transitions) / max(sessions, 1)


def train_agent(
    platform: LivePlatform, variant: str, rounds: int, seed: int, app_floor: float, advance: Callable[[], None]
) -> AllocationAgent:
    """An agent of ``variant`` trained online for ``rounds`` runs of ``platform``."""
    config = AllocationConfig.variant(variant, app_floor=app_floor)
    agent = AllocationAgent(len(platform.config.groups), platform.config.streamers, config=config, seed=seed)
    for _ in range(rounds):
        play_round(platform, agent)
        advance()
    return agent


def tuned_threshold(platform: LivePlatform) -> float:
    """The CTR threshold whose simulated runs earned the most reward (live + short video) per session."""

    def reward(threshold: float) -> float:
        sessions = platform.run(Threshold(threshold)).sessions
        return float(np.mean(sessions.live_seconds + sessions.video_seconds))

    return max(THRESHOLDS, key=reward)


def ope(platform: LivePlatform, threshold: float, policies: dict[str, Policy]) -> dict[str, tuple[float, float]]:
    """NCIS estimate and its standard error of each policy's reward per session, from one exploratory log."""
    greedy = Threshold(threshold)
    states: list[RequestState] = []

    def behaviour(state: RequestState) -> float:
        states.append(state)
        return 0.1 + 0.8 * greedy(state)

    log = platform.run(behaviour)
    decisions, sessions = log.decisions, log.sessions
    returns = sessions.live_seconds + sessions.video_seconds
    rewards = np.array([t.reward for t in session_transitions(states, decisions, sessions)])
    estimates = {}
    for name, policy in policies.items():
        insert = np.array([policy(state) for state in states])
        target = np.where(decisions.inserted, insert, 1.0 - insert)
        estimate = ncis(returns, decisions.session, rewards, decisions.propensity, target, cap=CAP)
        estimates[name] = (estimate.value, estimate.stderr)
    return estimates


@dataclass
class Scores:
    """One policy's figures over the seeds."""

    fraction: list[float] = dataclasses.field(default_factory=list)
    app_change: list[float] = dataclasses.field(default_factory=list)
    met: list[bool] = dataclasses.field(default_factory=list)
    allocation_rate: list[float] = dataclasses.field(default_factory=list)
    true_reward: list[float] = dataclasses.field(default_factory=list)
    ncis: list[float] = dataclasses.field(default_factory=list)
    ope_error: list[float] = dataclasses.field(default_factory=list)  # % of the optimal gain


def run_seed(seed: int, budget: Budget, scores: dict[str, Scores], advance: Callable[[], None]) -> None:
    """Train, score and estimate every policy on the platform of ``seed``."""
    small = LivePlatformConfig.small()
    platform = LivePlatform(dataclasses.replace(small, hours=budget.train_hours), seed=seed)
    mdp = AllocationMDP(platform)
    optimal = mdp.optimal_policy()
    best = mdp.value(optimal)
    floor = session_app_floor(platform)
    threshold = tuned_threshold(platform)
    agents = {variant: train_agent(platform, variant, budget.rounds, seed, floor, advance) for variant in LEARNED}
    policies: dict[str, Policy] = {
        "never": never,
        "always": always,
        "greedy": Threshold(threshold),
        **{variant: agent.greedy for variant, agent in agents.items()},
        "student": agents["sl-mgac"].serve,
        "optimal": optimal,
    }
    log_platform = LivePlatform(dataclasses.replace(small, hours=budget.log_hours), seed=seed)
    estimates = ope(log_platform, threshold, policies)
    margin = MARGIN * mdp.value(never).app_seconds
    for name, policy in policies.items():
        value = mdp.value(policy)
        score = scores[name]
        score.fraction.append(value.fraction_of(best))
        score.app_change.append(value.app_change)
        score.met.append(value.app_change >= -margin)
        score.allocation_rate.append(value.allocation_rate)
        score.true_reward.append(value.reward)
        score.ncis.append(estimates[name][0])
        score.ope_error.append(100.0 * abs(estimates[name][0] - value.reward) / best.gain)
    advance()


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± std`` (std 0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def run(budget: Budget, seeds: int, doc: Path, command: str) -> str:
    """Run the benchmark, write its section into ``doc`` and return the section's body."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    scores = {name: Scores() for name in LABELS}
    started = time.perf_counter()
    try:
        with Progress() as progress:
            task = progress.add_task("allocation benchmark", total=seeds * (len(LEARNED) * budget.rounds + 1))
            for seed in range(seeds):
                run_seed(seed, budget, scores, lambda: progress.advance(task))
    finally:
        torch.set_num_threads(threads)
    minutes = (time.perf_counter() - started) / 60.0
    rows = [
        "| policy | fraction of optimal | app change s/session (constraint met) | allocation rate "
        "| NCIS reward s/session"
        " | true reward s/session | OPE error, % of optimal gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, score in scores.items():
        rows.append(
            f"| {LABELS[name]} | {mean_std(score.fraction)} | {mean_std(score.app_change, 1)} "
            f"({sum(score.met)}/{seeds}) | {mean_std(score.allocation_rate)} | {mean_std(score.ncis, 1)} | "
            f"{mean_std(score.true_reward, 1)} | {mean_std(score.ope_error, 1)} |"
        )
    ours = statistics.fmean(scores["sl-mgac"].fraction)
    baselines = {name: statistics.fmean(scores[name].fraction) for name in ("never", "always", "greedy", *LEARNED[:2])}
    beaten = all(ours > value for value in baselines.values())
    met = all(scores["sl-mgac"].met)
    goals = [
        f"- SL-MGAC at least {GOAL:.0%} of optimal: {'**met**' if ours >= GOAL else '**not met**'} ({ours:.2f}).",
        f"- SL-MGAC above every baseline: {'**met**' if beaten else '**not met**'} (baselines: "
        + ", ".join(f"{LABELS[name]} {value:.2f}" for name, value in baselines.items())
        + ").",
        f"- SL-MGAC meets the app-time constraint on every seed: {'**met**' if met else '**not met**'} "
        f"({sum(scores['sl-mgac'].met)}/{seeds}).",
    ]
    sizes = AllocationConfig()
    setup = (
        f"Mode: {budget.name}. Platform: `LivePlatformConfig.small()` (seeds 0..{seeds - 1}; each seed is the "
        f"platform's world and the agents' seed), reward = live + short-video seconds (video_weight 1). Learned agents "
        f"train online for {budget.rounds} runs of {budget.train_hours:g} simulated hours each, learning from their "
        f"own "
        f"decisions after each run. SL-MGAC: dense features standardised by running statistics, embeddings "
        f"{sizes.embed} (drawn at std 0.1), behaviour sequence {sizes.history} with target "
        f"attention, trunk {sizes.depth}x{sizes.hidden} with LayerNorm, one actor and critic head per activity group, "
        f"critic over {sizes.bins} bins on [0, {sizes.max_return * sizes.reward_scale:g}] s (two-hot) whose "
        f"target is built from supervised click / watch / short-video / session-end heads (each plus a linear "
        f"function of the dense features) along {sizes.n_step}-step paths, student {sizes.student_hidden} wide; "
        f"Adam lr {sizes.lr}, batch {sizes.batch}, "
        f"one step per {sizes.update_every} transitions, replay {sizes.buffer}, {sizes.n_step}-step returns, "
        f"explore {sizes.explore}. DQN and plain "
        f"actor-critic are the same agent with groups, supervised heads and the distributional critic off (DQN also "
        f"without the actor). Constraint: app time per session at most {MARGIN:.0%} below never inserting's (exact "
        f"`app_change`), enforced in training by a Lagrange multiplier against a simulated no-live floor. NCIS: one "
        f"{budget.log_hours:g}-hour log per seed under 0.1 + 0.8 x greedy-CTR, cap {CAP:g}, per-decision "
        f"weights normalised per step. Whole run: {minutes:.1f} min on one core."
    )
    body = "\n".join([setup, "", "Goals:", "", *goals, "", *rows])
    write_section("allocation", "Live-stream allocation (SL-MGAC)", body, command, doc=doc)
    return body


def main() -> None:
    """``python -m bench.allocation [--quick] [--seeds N] [--doc PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.allocation", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds (default {SEEDS})")
    parser.add_argument("--quick", action="store_true", help="short training and logs: a smoke test (minutes)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to write the section into")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1 (got {args.seeds})")
    command = "python -m bench.allocation" + (" --quick" if args.quick else "")
    print(run(QUICK if args.quick else FULL, args.seeds, args.doc, command))


if __name__ == "__main__":
    main()
