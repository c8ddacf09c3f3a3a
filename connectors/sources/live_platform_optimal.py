"""The optimal live-stream allocation of a small simulated platform, by value iteration, and exact policy values.

:class:`AllocationMDP` turns a :class:`~connectors.sources.live_platform.LivePlatform` into the Markov decision
process its sessions follow, one per user, so that learned allocation policies can be scored as a fraction of the
optimum (spec livestream.md §2).

The discretised state: the process is looked at only at a user's feed requests, where the state is ``(L, level)``,
the set ``L`` of streamers live (a bitmask: ``2**S`` sets) and the fatigue level ``0..F`` (discrete by construction;
``fatigue = level / F``), for each user (fixed: its match to every streamer and its group). Nothing is rounded:
this is the simulator's own state at a request. Between two requests time is continuous, but every duration in the
model is exponential (live and offline periods, watching, a page of short videos), so it is integrated out exactly
and the live set at the next request follows from the current one in closed form. With ``G`` the
generator of the streamers' on/off chain, a page of short videos (mean ``m`` seconds) moves the live set by the
matrix ``(I - m G)^-1``, and watching a room (mean ``w``, cut short when the room ends) is an absorbing chain whose
fundamental matrix gives both the expected watch time and the live set when the user comes back. The top
candidate, the click probability ``ctr * (1 - level / F)``, the fatigue step and the exit probability are those of
the simulator. Sessions start unfatigued with the live set in its stationary distribution (session starts are
independent of the schedule).

Action: insert the top live candidate or not (no decision when nothing is live). Reward of a request: its live
watch seconds plus ``video_weight`` times its short-video seconds; a session's return is their sum (undiscounted:
every request ends the session with probability at least ``exit_probability``). Relative to never inserting, a
policy's ``gain`` is *live watch time gained minus ``video_weight`` times the short-video time the allocations
cost*, early exits included: the reward of spec §3 that prevents greedy allocation. The platform constraint is
reported as ``app_change``: the expected app time of a session (live + short video) minus never inserting's.

Value iteration runs until the Bellman update moves no value by more than a relative 1e-10; its greedy policy is
then evaluated exactly (a linear solve) and improved until stable (policy iteration), so the policy returned is
exactly optimal, not nearly. :meth:`AllocationMDP.value` evaluates any policy exactly, asking it at every state
with the :class:`~connectors.sources.live_platform.RequestState` the simulator would give it there. Values are per
session, averaged over users weighted by how often each starts one.

Exact when the platform's popularity does not drift (``popularity_drift=0``) and no drift event happens during
the sessions: then a run's sessions are draws of this process (:meth:`LivePlatformConfig.small
<connectors.sources.live_platform.LivePlatformConfig.small>`). Otherwise the MDP is the platform frozen as it is at
``hour``: the popularity then, without the streamers gone offline by then.

>>> from connectors.sources.live_platform import Threshold, always, never
>>> platform = LivePlatform(LivePlatformConfig.small(), seed=1)
>>> mdp = AllocationMDP(platform)
>>> best = mdp.value(mdp.optimal_policy())
>>> round(best.gain, 1), round(best.allocation_rate, 3), mdp.value(never).gain  # seconds per session
(37.2, 0.221, 0.0)
>>> round(mdp.value(Threshold(0.3)).fraction_of(best), 3), round(mdp.value(always).gain, 1)
(0.33, -263.4)

References
----------
Puterman, M. L. (1994). Markov Decision Processes: Discrete Stochastic Dynamic Programming, ch. 6 (value iteration,
policy iteration) and ch. 11 (semi-Markov decision processes). Wiley.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from connectors.sources.live_platform import (
    LivePlatform,
    LivePlatformConfig,
    Policy,
    RequestState,
    insert_probability,
)

MAX_STREAMERS = 8
"""The most streamers an exact MDP takes: its state counts ``2**streamers`` live sets."""
_TOLERANCE = 1e-10
_MAX_SWEEPS = 100_000
_SOLVE_BYTES = 1 << 26
_HOUR = 3600.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_TOTALS = ("live_seconds", "video_seconds", "requests", "decisions", "allocations", "clicks")


@dataclass(frozen=True)
class PolicyValue:
    """A policy's expected totals per session, exact (:meth:`AllocationMDP.value`).

    ``reward`` = ``live_seconds + video_weight * video_seconds``; ``gain`` is the reward minus never inserting's
    (live time gained minus the weighted short-video time it cost); ``app_change`` the app time (live + short video)
    minus never inserting's: the quantity the platform constraint bounds from below. ``requests``, ``decisions``
    (requests with a live room), ``allocations`` and ``clicks`` are expected counts per session.
    """

    reward: float
    gain: float
    live_seconds: float
    video_seconds: float
    app_change: float
    requests: float
    decisions: float
    allocations: float
    clicks: float

    @property
    def app_seconds(self) -> float:
        """Expected time in the app per session: live watching plus short videos."""
        return self.live_seconds + self.video_seconds

    @property
    def allocation_rate(self) -> float:
        """Allocations per decision: how often a live room is inserted when one could be."""
        return self.allocations / self.decisions if self.decisions else 0.0

    def fraction_of(self, optimal: PolicyValue) -> float:
        """This policy's gain as a fraction of ``optimal``'s: 1 for an optimal policy, 0 for never inserting."""
        if not optimal.gain > 0:
            raise ValueError(
                f"the optimal gain is {optimal.gain:.6g}: never inserting is optimal here, so there is no gain to "
                "score a fraction of; pick a platform where live rooms are worth their cost (a lower video_weight)"
            )
        return self.gain / optimal.gain


@dataclass(frozen=True, eq=False)
class TabularPolicy:
    """A policy given by a table: the probability of inserting per user, fatigue level and live set (a bitmask).

    ``table[user, level, mask]`` with ``mask = sum(1 << s for s in live)`` and ``level = round(fatigue *
    fatigue_levels)``. :meth:`AllocationMDP.optimal_policy` returns one (with probabilities 0 or 1).

    >>> both = TabularPolicy(np.zeros((1, 3, 4)) + [0.0, 0.0, 0.0, 1.0], fatigue_levels=2)  # streamers 0 and 1 live
    >>> both(RequestState(user=0, group=0, fatigue=0.5, live=(0, 1), streamer=1, ctr=0.2))
    1.0
    """

    table: FloatArray
    fatigue_levels: int

    def __call__(self, state: RequestState) -> float:
        users, _, masks = self.table.shape
        mask = sum(1 << streamer for streamer in state.live)
        if not (0 <= state.user < users and mask < masks):
            raise ValueError(
                f"this policy's table covers users 0..{users - 1} and streamers 0..{masks.bit_length() - 2} "
                f"(got user {state.user}, live {state.live}); solve the MDP of the platform it runs on"
            )
        return float(self.table[state.user, round(state.fatigue * self.fatigue_levels), mask])


@dataclass(frozen=True)
class _GroupModel:
    """The session dynamics of one activity group's users, stacked along a leading user axis.

    Per user and live set: the top candidate's ``ctr`` and expected ``watch`` seconds once clicked, and the live set
    at the next request after the user ``clicked`` (watching, then a shorter page); shared by the group: after no
    insertion (``idle``) and after an insertion not clicked (``skipped``); per fatigue level, the chance to go on.
    """

    group: int
    users: IntArray  # (m,) the users' indices
    ctr: FloatArray  # (m, n), 0 where nothing is live
    top: IntArray  # (m, n), -1 where nothing is live
    watch: FloatArray  # (m, n)
    clicked: FloatArray  # (m, n, n)
    idle: FloatArray  # (n, n)
    skipped: FloatArray  # (n, n)
    stay: FloatArray  # (levels,) 1 - exit probability at each fatigue level


class AllocationMDP:
    """The allocation problem of a small platform as an exact Markov decision process; see the module docstring.

    ``video_weight`` weighs a second of short video against a second of live watching in the reward; ``hour``
    freezes the platform at that time (popularity, streamers offline). Refuses platforms of more than
    :data:`MAX_STREAMERS` streamers.

    >>> platform = LivePlatform(LivePlatformConfig.small(), seed=1)
    >>> live_first = AllocationMDP(platform, video_weight=0.5)  # short video is worth less: allocate more
    >>> round(live_first.value(live_first.optimal_policy()).allocation_rate, 3)
    0.352
    """

    def __init__(self, platform: LivePlatform, *, video_weight: float = 1.0, hour: float = 0.0) -> None:
        config = platform.config
        if config.streamers > MAX_STREAMERS:
            raise ValueError(
                f"an exact allocation MDP tracks all 2**streamers live sets, so it takes at most {MAX_STREAMERS} "
                f"streamers (got {config.streamers}); use LivePlatformConfig.small() or evaluate by simulation"
            )
        if not (math.isfinite(video_weight) and video_weight >= 0):
            raise ValueError(f"video_weight must be finite and >= 0 (got {video_weight})")
        if not 0 <= hour <= platform.schedule_end / _HOUR:
            raise ValueError(f"hour must be within the platform's schedule, 0..{platform.schedule_end / _HOUR:g}")
        self.platform = platform
        self.config: LivePlatformConfig = config
        self.video_weight = float(video_weight)
        self.hour = float(hour)
        n_streamers = config.streamers
        masks = np.arange(2**n_streamers)
        self._live = ((masks[:, None] >> np.arange(n_streamers)) & 1).astype(bool)  # (n, S)
        self._has_live = masks > 0
        levels = np.arange(config.fatigue_levels + 1)
        self._down, self._up = np.maximum(levels - 1, 0), np.minimum(levels + 1, config.fatigue_levels)
        self._click_factor = 1.0 - levels / config.fatigue_levels
        t = hour * _HOUR
        gone = [streamer for streamer, at in platform.offline_from.items() if at <= t]
        on_rate = 1.0 / platform.offline_seconds
        on_rate[gone] = 0.0
        off_rate = 1.0 / platform.live_seconds
        generator = self._generator(on_rate, off_rate)
        live_share = on_rate / (on_rate + off_rate)
        self._start = np.prod(np.where(self._live, live_share, 1.0 - live_share), axis=1)
        self._popularity = platform.popularity_at(t)
        weights = np.array([config.groups[g].sessions_per_day for g in platform.user_group.tolist()])
        self._user_weights = weights / weights.sum()
        self._groups = [self._group_model(group, generator, off_rate) for group in range(len(config.groups))]

    def _generator(self, on_rate: FloatArray, off_rate: FloatArray) -> FloatArray:
        """The rate matrix of the live set: each streamer turns on or off independently."""
        n = len(self._live)
        generator = np.zeros((n, n))
        rows = np.arange(n)
        for streamer in range(self.config.streamers):
            live = self._live[:, streamer]
            generator[rows, rows ^ (1 << streamer)] = np.where(live, off_rate[streamer], on_rate[streamer])
        generator[rows, rows] = -generator.sum(axis=1)
        return generator

    def _group_model(self, group: int, generator: FloatArray, off_rate: FloatArray) -> _GroupModel:
        n = len(self._live)
        params = self.config.groups[group]
        page = 1.0 / params.video_seconds
        short_page = page / (1.0 - self.config.slot_share)
        idle = np.asarray(page * np.linalg.inv(page * np.eye(n) - generator), dtype=np.float64)
        skipped = np.asarray(short_page * np.linalg.inv(short_page * np.eye(n) - generator), dtype=np.float64)
        users = np.flatnonzero(self.platform.user_group == group)
        ctrs = np.where(self._live, self.platform.match[users][:, None, :] * self._popularity, -np.inf)  # (m, n, S)
        top = np.where(self._has_live, np.argmax(ctrs, axis=2), -1)
        ctr = np.where(self._has_live, np.take_along_axis(ctrs, np.maximum(top, 0)[..., None], axis=2)[..., 0], 0.0)
        watch = np.zeros((len(users), n))
        clicked = np.zeros((len(users), n, n))
        for streamer in range(self.config.streamers):
            back, seconds = self._watching(generator, off_rate, streamer, params.watch_seconds)
            chosen = top == streamer  # (m, n)
            watch[chosen] = np.broadcast_to(seconds, chosen.shape)[chosen]
            clicked[chosen] = np.broadcast_to(back @ skipped, (len(users), n, n))[chosen]
        level = np.arange(self.config.fatigue_levels + 1) / self.config.fatigue_levels
        stay = 1.0 - (params.exit_probability + self.config.fatigue_exit * level)
        return _GroupModel(group, users, ctr, top, watch, clicked, idle, skipped, stay)

    def _watching(
        self, generator: FloatArray, off_rate: FloatArray, streamer: int, watch_seconds: float
    ) -> tuple[FloatArray, FloatArray]:
        """Watching ``streamer``'s room from each live set holding it: where the user comes back, and after how long.

        An absorbing chain on the live sets holding the streamer: the watch ends at rate ``1 / watch_seconds``
        (the live set stays) or when the room ends (the streamer leaves the set). Rows of sets without the
        streamer are zero.
        """
        n = len(self._live)
        inside = np.flatnonzero(self._live[:, streamer])
        stop = 1.0 / watch_seconds
        fundamental = np.linalg.inv(stop * np.eye(len(inside)) - generator[np.ix_(inside, inside)])
        back = np.zeros((n, n))
        back[np.ix_(inside, inside)] = stop * fundamental
        back[np.ix_(inside, inside ^ (1 << streamer))] += off_rate[streamer] * fundamental
        seconds = np.zeros(n)
        seconds[inside] = fundamental.sum(axis=1)
        return back, seconds

    def _action_values(self, model: _GroupModel, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The value of not inserting and of inserting at every (user, level, live set), given next-request
        ``values`` (users, levels, live sets)."""
        down, up, stay = self._down, self._up, model.stay
        clicks = model.ctr[:, None, :] * self._click_factor[None, :, None]
        video = self.video_weight * self.config.groups[model.group].video_seconds
        wait = video + stay[down][None, :, None] * (values[:, down] @ model.idle.T)
        after = clicks * (values[:, up] @ model.clicked.transpose(0, 2, 1)) + (1.0 - clicks) * (
            values[:, up] @ model.skipped.T
        )
        insert = (
            clicks * model.watch[:, None, :] + video * (1.0 - self.config.slot_share) + stay[up][None, :, None] * after
        )
        return wait, np.where(self._has_live, insert, -np.inf)

    def _evaluate(self, model: _GroupModel, insert: FloatArray) -> FloatArray:
        """Expected totals from every (user, level, live set) under insert probabilities ``insert`` (users, levels,
        live sets): one exact linear solve per user; the last axis as :data:`_TOTALS`."""
        users, levels, n = insert.shape
        batch = max(1, _SOLVE_BYTES // (8 * (levels * n) ** 2))  # users solved at once, to bound the memory
        parts = [self._evaluate_users(model, insert, slice(first, first + batch)) for first in range(0, users, batch)]
        return np.concatenate(parts) if parts else np.zeros((*insert.shape, len(_TOTALS)))

    def _evaluate_users(self, model: _GroupModel, insert: FloatArray, users: slice) -> FloatArray:
        insert = np.where(self._has_live, insert[users], 0.0)
        m, levels, n = insert.shape
        clicks = model.ctr[users, None, :] * self._click_factor[None, :, None]
        clicked = model.clicked[users]
        moves = np.zeros((m, levels, n, levels, n))
        for level in range(levels):
            down, up = self._down[level], self._up[level]
            p, c = insert[:, level, :, None], clicks[:, level, :, None]
            moves[:, level, :, down] += (1.0 - p) * model.stay[down] * model.idle
            moves[:, level, :, up] += p * model.stay[up] * (c * clicked + (1.0 - c) * model.skipped)
        per_request = np.stack(
            [
                insert * clicks * model.watch[users, None, :],
                self.config.groups[model.group].video_seconds * (1.0 - self.config.slot_share * insert),
                np.ones_like(insert),
                np.broadcast_to(self._has_live, insert.shape).astype(float),
                insert,
                insert * clicks,
            ],
            axis=-1,
        )
        system = np.eye(levels * n) - moves.reshape(m, levels * n, levels * n)
        totals: FloatArray = np.linalg.solve(system, per_request.reshape(m, levels * n, len(_TOTALS)))
        return totals.reshape(m, levels, n, len(_TOTALS))

    def optimal_policy(self) -> TabularPolicy:
        """The optimal policy: value iteration, then policy iteration until its greedy policy is stable."""
        return self._optimal

    @cached_property
    def _optimal(self) -> TabularPolicy:
        table = np.zeros((self.config.users, self.config.fatigue_levels + 1, len(self._live)))
        for model in self._groups:
            values = np.zeros(table.shape[1:])[None].repeat(len(model.users), axis=0)
            for _ in range(_MAX_SWEEPS):
                updated = np.maximum(*self._action_values(model, values))
                converged = np.max(np.abs(updated - values), initial=0.0) <= _TOLERANCE * max(
                    1.0, np.max(np.abs(updated), initial=0.0)
                )
                values = updated
                if converged:
                    break
            insert = self._greedy(model, values, None)
            while True:
                totals = self._evaluate(model, insert)
                values = totals[..., 0] + self.video_weight * totals[..., 1]
                improved = self._greedy(model, values, insert)
                if np.array_equal(improved, insert):
                    break
                insert = improved
            table[model.users] = insert
        return TabularPolicy(table, self.config.fatigue_levels)

    def _greedy(self, model: _GroupModel, values: FloatArray, current: FloatArray | None) -> FloatArray:
        """Insert where that is worth more; a change from ``current`` only where it gains more than rounding."""
        wait, insert = self._action_values(model, values)
        margin = _TOLERANCE * max(1.0, float(np.max(np.abs(values), initial=0.0)))
        if current is None:
            return (insert > wait + margin).astype(float)
        better = np.where(current > 0, wait > insert + margin, insert > wait + margin)
        return np.where(better, 1.0 - current, current)

    def _session_totals(self, table: FloatArray) -> FloatArray:
        """Expected totals of a session (:data:`_TOTALS`) from an insert table (users, levels, live sets)."""
        per_user = np.zeros((self.config.users, len(_TOTALS)))
        for model in self._groups:
            per_user[model.users] = np.einsum("n,mnk->mk", self._start, self._evaluate(model, table[model.users])[:, 0])
        totals: FloatArray = self._user_weights @ per_user
        return totals

    @cached_property
    def _never(self) -> FloatArray:
        return self._session_totals(np.zeros((self.config.users, self.config.fatigue_levels + 1, len(self._live))))

    def value(self, policy: Policy) -> PolicyValue:
        """The exact value of ``policy``, asked at every state with the request the simulator would give it."""
        live_seconds, video_seconds, requests, decisions, allocations, clicks = self._session_totals(
            self._table(policy)
        )
        never_live, never_video = self._never[0], self._never[1]
        reward = live_seconds + self.video_weight * video_seconds
        return PolicyValue(
            reward=float(reward),
            gain=float(reward - (never_live + self.video_weight * never_video)),
            live_seconds=float(live_seconds),
            video_seconds=float(video_seconds),
            app_change=float(live_seconds + video_seconds - never_live - never_video),
            requests=float(requests),
            decisions=float(decisions),
            allocations=float(allocations),
            clicks=float(clicks),
        )

    def _table(self, policy: Policy) -> FloatArray:
        """``policy``'s insert probability at every (user, level, live set); 0 where nothing is live."""
        levels = self.config.fatigue_levels
        table = np.zeros((self.config.users, levels + 1, len(self._live)))
        masks = np.flatnonzero(self._has_live).tolist()
        lives = {mask: tuple(np.flatnonzero(self._live[mask]).tolist()) for mask in masks}
        for model in self._groups:
            for row, user in enumerate(model.users.tolist()):
                for mask in masks:
                    streamer, ctr = int(model.top[row, mask]), float(model.ctr[row, mask])
                    for level in range(levels + 1):
                        state = RequestState(user, model.group, level / levels, lives[mask], streamer, ctr)
                        table[user, level, mask] = insert_probability(policy, state)
        return table
