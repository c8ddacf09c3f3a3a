"""Online CTR with a collisionless embedding table (spec livestream.md §4): AUC against the sync interval of the
serving replica, the table's memory on an endless stream of new ids, and Diag-LinUCB on fresh streamers.

``python -m bench.ctr [--quick] [--doc PATH]`` runs in one process (numpy; run with ``OMP_NUM_THREADS=1``):

- **AUC vs sync interval.** The simulator (:class:`~connectors.sources.live_platform.LivePlatform`, policy
  ``always``) gives the impression/click stream of ``live.interactions``; an :class:`~learners.ctr.EmbeddingCTR`
  learns it online, and serving replicas score every impression before the trainer learns it, with the rows touched
  synced every ``N`` seconds of event time (N = 0, 10, 60, 600) and the dense weights every ``10 N`` seconds
  (N = 0: the replica is the trainer). Prequential AUC (exact, rank-based) and log-loss of each replica, and of the
  running click rate (a constant predictor).
- **Memory.** One new id per second of event time for ``ids`` seconds, plus a pool of 100 returning ids: rows and
  pending counters of the table with and without expiry (``expire_after`` one hour), at ``min_count`` 1 and 2.
- **Cold start.** On the same stream, at every click each recommender ranks the streamers live at that time
  (:meth:`LivePlatform.live_at <connectors.sources.live_platform.LivePlatform.live_at>`) before learning it; hit@k
  is the share of clicks whose clicked streamer it ranks in its top k (ties broken uniformly at random, so a
  constant ranks at chance), split into clicks on fresh streamers (within their first ``FRESH_EXPOSURES``
  exposures, impressions and clicks) and on the others. Compared: :class:`~learners.ctr.DiagLinUCB` (its clusters
  and ``alpha`` varied), the :class:`~learners.ctr.EmbeddingCTR` above, popularity (clicks so far) and chance.

It writes the section ``ctr`` of docs/benchmarks.md (:func:`bench.report.write_section`; ``--doc`` elsewhere).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from bench.report import DOC, write_section
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, always
from learners.ctr import DiagLinUCB, EmbeddingCTR, EmbeddingTable, TableDelta
from learners.ctr.table import Vector

SYNC_SECONDS = (0.0, 10.0, 60.0, 600.0)
DENSE_FACTOR = 10.0  # dense weights ship every DENSE_FACTOR x the sparse interval
RECENT_SECONDS = 900.0  # the window of the user's recent exposures (the simulator's fatigue builds on them)
MODEL: dict[str, Any] = {"dim": 8, "min_count": 2, "expire_after": 6 * 3600.0, "lr": 0.05, "seed": 0}
Instance = tuple[dict[Hashable, Any], bool, float]
FRESH_EXPOSURES = 100  # a streamer is fresh for its first 100 exposures (impressions and clicks)
HIT_AT = (1, 3)
ALPHAS = (0.0, 0.1, 0.3, 1.0)  # Diag-LinUCB's exploration widths on its default (own + global) clusters


def simulator_stream(config: LivePlatformConfig, seed: int) -> list[Instance]:
    """The simulator's impressions (False) and clicks (True) in time order as ``(x, clicked, event seconds)``.

    ``x`` holds the sparse ids ``user``, ``streamer``, ``room`` and two dense features known at request time: the
    hour of day and how many live cards the user was shown in the previous ``RECENT_SECONDS``.
    """
    recent: dict[str, deque[float]] = {}
    stream: list[Instance] = []
    for message in LivePlatform(config, seed=seed).run(always).messages():
        event = message.message
        if message.topic != "live.interactions" or event.kind not in ("impression", "click"):
            continue
        shown = recent.setdefault(event.user, deque())
        while shown and shown[0] < event.ts - RECENT_SECONDS:
            shown.popleft()
        hour = (event.ts % 86400.0) / 3600.0
        x: dict[Hashable, Any] = {
            "user": event.user,
            "streamer": event.streamer,
            "room": event.room,
            "hour": hour,
            "recent": len(shown),
        }
        stream.append((x, event.kind == "click", event.ts))
        shown.append(event.ts)
    return stream


def auc(labels: list[bool], scores: list[float]) -> float:
    """The exact ROC AUC (ties count half): the Mann-Whitney statistic of the scores."""
    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(scores)
    positives = int(y.sum())
    negatives = len(y) - positives
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: list[bool], scores: list[float]) -> float:
    """The mean log-loss, probabilities clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(np.asarray(scores), 1e-15, 1 - 1e-15)
    y = np.asarray(labels, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


@dataclass
class Replica:
    """A serving replica synced every ``every`` seconds: the trainer's deltas pile up here until the next sync."""

    every: float
    model: EmbeddingCTR
    rows: dict[Hashable, Any] = field(default_factory=dict)
    removed: set[Hashable] = field(default_factory=set)
    last_sparse: float = -math.inf
    last_dense: float = -math.inf
    scores: list[float] = field(default_factory=list)

    def collect(self, delta: TableDelta) -> None:
        """Merge one trainer delta into what the next sync ships (a later update of a row wins)."""
        for key in delta.removed:
            self.rows.pop(key, None)
        self.removed |= delta.removed
        self.removed -= delta.rows.keys()
        self.rows.update(delta.rows)

    def sync(self, trainer: EmbeddingCTR, now: float) -> None:
        """Ship what is due at event time ``now``."""
        if now - self.last_sparse >= self.every:
            self.model.table.apply(TableDelta(self.rows, frozenset(self.removed)))
            self.rows, self.removed, self.last_sparse = {}, set(), now
        if now - self.last_dense >= DENSE_FACTOR * self.every:
            self.model.load_dense(trainer.dense_state())
            self.last_dense = now


def sync_interval_rows(stream: list[Instance]) -> list[str]:
    """Prequential AUC and log-loss of replicas synced at each of ``SYNC_SECONDS``, and of a constant."""
    trainer = EmbeddingCTR(**MODEL)
    replicas = [Replica(every, EmbeddingCTR(**MODEL)) for every in SYNC_SECONDS]
    labels: list[bool] = []
    constant: list[float] = []
    for x, y, t in stream:
        for replica in replicas:
            replica.sync(trainer, t)
            replica.scores.append(replica.model.predict_proba_one(x).get(True, 0.0))
        constant.append((sum(labels) + 1) / (len(labels) + 2))
        labels.append(y)
        trainer.learn_one(x, y, t=t)
        delta = trainer.table.delta()
        for replica in replicas:
            replica.collect(delta)
    rows = [
        f"| {replica.every:g} s | {DENSE_FACTOR * replica.every:g} s | {auc(labels, replica.scores):.4f} | "
        f"{log_loss(labels, replica.scores):.4f} |"
        for replica in replicas
    ]
    rows.append(f"| constant (running click rate) | | {auc(labels, constant):.4f} | {log_loss(labels, constant):.4f} |")
    return rows


def memory_rows(ids: int) -> list[str]:
    """Rows and counters held after ``ids`` seconds of one new id per second plus 100 returning ids."""
    rng = np.random.default_rng(0)
    tables = {
        (min_count, expire): EmbeddingTable(dim=8, min_count=min_count, expire_after=expire)
        for min_count in (1, 2)
        for expire in (None, 3600.0)
    }
    returning = rng.integers(0, 100, size=ids).tolist()
    for t in range(ids):
        for table in tables.values():
            table.see(f"new{t}", t=float(t))
            table.see(f"returning{returning[t]}", t=t + 0.5)
    return [
        f"| {min_count} | {'none' if expire is None else f'{expire:g} s'} | {len(table):,} | {table.n_pending:,} | "
        f"{len(table) * 2 * 8 * 8 / 2**20:.2f} |"
        for (min_count, expire), table in tables.items()
    ]


def hit_at(scores: Vector, index: int, k: int) -> float:
    """The probability that candidate ``index`` is among the ``k`` best of ``scores`` when ties are broken
    uniformly at random (so equal scores everywhere give ``k / len(scores)``, chance).

    >>> hit_at(np.array([0.1, 0.5, 0.5, 0.2]), 1, 1), hit_at(np.array([0.1, 0.5, 0.5, 0.2]), 0, 3)
    (0.5, 0.0)
    """
    better, tied = int(np.sum(scores > scores[index])), int(np.sum(scores == scores[index]))
    return min(max((k - better) / tied, 0.0), 1.0)


def cold_start_rows(stream: list[Instance], config: LivePlatformConfig, seed: int) -> tuple[list[str], int]:
    """Hit@k of each recommender on clicks on fresh streamers and on the others; the number of fresh clicks.

    Every recommender scores the live streamers at a click before it learns that exposure; all learn every
    exposure (reward 1 for a click, 0 for an impression without one).
    """
    platform = LivePlatform(config, seed=seed)
    epoch = config.start_ms / 1000.0  # event times are epoch seconds, the simulator's clock starts there
    expire_after = MODEL["expire_after"]
    bandits = {  # clusters -> the recommender and the alphas it ranks with (one state serves every alpha)
        "own + global": (DiagLinUCB(expire_after=expire_after), ALPHAS),
        "own only": (DiagLinUCB(global_weight=0.0, expire_after=expire_after), (0.0,)),
        "global only": (DiagLinUCB(own_weight=0.0, expire_after=expire_after), (0.0,)),
    }
    model = EmbeddingCTR(**MODEL)
    exposures: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    hits: dict[str, dict[bool, list[list[float]]]] = {}
    for x, y, t in stream:
        streamer = x["streamer"]
        if y:
            live, rooms = platform.live_at(t - epoch)
            names = [str(name) for name in live.tolist()]
            scores: dict[str, Vector] = {}
            for clusters, (bandit, alphas) in bandits.items():
                mean, width = bandit.estimate(x["user"], names)  # score = mean + alpha * width
                for alpha in alphas:
                    scores[f"Diag-LinUCB, clusters {clusters}, alpha {alpha:g}"] = mean + alpha * width
            proba = np.array(
                [
                    model.predict_proba_one({**x, "streamer": name, "room": str(room)}).get(True, 0.0)
                    for name, room in zip(names, rooms.tolist(), strict=True)
                ]
            )
            known = np.array([("streamer", name) in model.table for name in names])
            scores["EmbeddingCTR click probability"] = proba
            scores["EmbeddingCTR, streamers without a row ranked last"] = np.where(known, proba, -1.0)
            scores["popularity (clicks so far)"] = np.array([float(clicks[name]) for name in names])
            scores["chance"] = np.zeros(len(names))
            clicked, fresh = names.index(streamer), exposures[streamer] < FRESH_EXPOSURES
            for name, ranking in scores.items():
                hits.setdefault(name, {True: [], False: []})[fresh].append(
                    [hit_at(ranking, clicked, k) for k in HIT_AT]
                )
        for bandit, _ in bandits.values():
            bandit.update(x["user"], streamer, float(y), t=t)
        model.learn_one(x, y, t=t)
        exposures[streamer] += 1
        clicks[streamer] += y
    rows = []
    for name, by_freshness in hits.items():
        on_fresh, on_established = np.array(by_freshness[True]), np.array(by_freshness[False])
        error = on_fresh[:, 0].std() / math.sqrt(len(on_fresh))
        rows.append(
            f"| {name} | {on_fresh[:, 0].mean():.3f} ± {error:.3f} | {on_fresh[:, 1].mean():.3f} | "
            f"{on_established[:, 0].mean():.3f} | {on_established[:, 1].mean():.3f} |"
        )
    return rows, len(hits["chance"][True])


def run(quick: bool, doc: Path) -> None:
    start = time.perf_counter()
    users, hours, ids = (300, 24.0, 50_000) if quick else (2000, 48.0, 500_000)
    config = LivePlatformConfig(users=users, streamers=40, hours=hours)
    stream = simulator_stream(config, seed=0)
    clicks = sum(y for _, y, _ in stream)
    cold_start, fresh_clicks = cold_start_rows(stream, config, seed=0)
    body = "\n".join(
        [
            f"Simulator: {users} users, 40 streamers, {hours:g} h, policy `always`, seed 0: {len(stream):,} "
            f"impressions of which {clicks:,} clicks. `EmbeddingCTR({', '.join(f'{k}={v}' for k, v in MODEL.items())})`"
            " learns online; each replica scores every impression before the trainer learns it.",
            "",
            "| sparse sync every | dense sync every | prequential AUC | log-loss |",
            "|---|---|---|---|",
            *sync_interval_rows(stream),
            "",
            f"Table memory after {ids:,} s of event time, one new id per second plus 100 returning ids "
            "(embedding + Adagrad state: 2 x 8 floats per row):",
            "",
            "| min_count | expire_after | rows | pending counters | row MiB |",
            "|---|---|---|---|---|",
            *memory_rows(ids),
            "",
            f"Cold start on the same stream: at each click every recommender ranks the streamers live then (about 10)"
            f" before learning it. Hit@k: the share of clicks whose streamer it ranks in its top k (ties broken at "
            f"random). Fresh: {fresh_clicks:,} clicks on a streamer within its first {FRESH_EXPOSURES} exposures;"
            f" established: the other {clicks - fresh_clicks:,}. The simulator shows each user the live streamer it is"
            " most likely to click, so hit@1 is how often a recommender's first pick is that streamer. A replay: a"
            " ranking does not change what is shown, so exploration's payoff (what showing a fresh streamer teaches)"
            " is not measured, only its cost in ranking. Diag-LinUCB: `ridge=1`, `expire_after` as the table's;"
            " its default clusters are each user's own plus a global one (weights 1); ± one standard error.",
            "",
            "| recommender | fresh hit@1 | fresh hit@3 | established hit@1 | established hit@3 |",
            "|---|---|---|---|---|",
            *cold_start,
            "",
            f"Run time: {time.perf_counter() - start:.0f} s.",
        ]
    )
    command = f"OMP_NUM_THREADS=1 python -m bench.ctr{' --quick' if quick else ''}"
    write_section("ctr", "Online CTR with a collisionless embedding table", body, command, doc=doc)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small simulator and id stream: a smoke test (seconds)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to write the section into")
    args = parser.parse_args()
    run(args.quick, args.doc)


if __name__ == "__main__":
    main()
