"""Transitions of the allocation MDP from a platform's logged decisions: one per decision, rewards in seconds.

A decision's step lasts from its request to the next decision of the same session (or the session's end), so its
reward takes in the short videos of the requests in between that had no live room: their time is the gap between
the two decisions' timestamps less the decision's own watching. The return of a session from its first decision is
then exactly its live watching plus ``video_weight`` x its short-video time from there on, and the steps form the
semi-Markov process the exact MDP of the simulator solves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from learners._state import require
from learners.allocation.features import Request

__all__ = ["DecisionLog", "SessionLog", "Transition", "session_transitions"]


class DecisionLog(Protocol):
    """The columns of the simulator's ``Decisions`` that transitions use (one entry per decision, session order)."""

    @property
    def ts_ms(self) -> npt.NDArray[np.int64]: ...
    @property
    def user(self) -> npt.NDArray[np.int64]: ...
    @property
    def session(self) -> npt.NDArray[np.int64]: ...
    @property
    def streamer(self) -> npt.NDArray[np.int64]: ...
    @property
    def insert_probability(self) -> npt.NDArray[np.float64]: ...
    @property
    def inserted(self) -> npt.NDArray[np.bool_]: ...
    @property
    def clicked(self) -> npt.NDArray[np.bool_]: ...
    @property
    def live_seconds(self) -> npt.NDArray[np.float64]: ...
    @property
    def video_seconds(self) -> npt.NDArray[np.float64]: ...
    @property
    def exited(self) -> npt.NDArray[np.bool_]: ...


class SessionLog(Protocol):
    """The columns of the simulator's ``Sessions`` that transitions use."""

    @property
    def start_ms(self) -> npt.NDArray[np.int64]: ...
    @property
    def live_seconds(self) -> npt.NDArray[np.float64]: ...
    @property
    def video_seconds(self) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Transition:
    """One allocation decision and what followed until the next one.

    ``action`` 1 inserted the top candidate; ``propensity`` the behaviour policy's probability of that action;
    ``reward`` = ``live_seconds + video_weight x video`` over the step; ``app_seconds`` = live + video over the step
    (the constrained quantity); ``clicked``, ``watch_seconds`` and ``exited`` the request's immediate outcomes;
    ``next_state`` the next decision's request, None when the session ended first (the agent's supervised targets
    are the click, the live and short-video time of the step and whether ``next_state`` is None).
    """

    state: Request
    action: int
    propensity: float
    reward: float
    app_seconds: float
    clicked: bool
    watch_seconds: float
    exited: bool
    next_state: Request | None


def session_transitions(
    states: Sequence[Request], decisions: DecisionLog, sessions: SessionLog, *, video_weight: float = 1.0
) -> list[Transition]:
    """The transitions of a logged run; ``states[i]`` is the request the policy saw at decision ``i``.

    >>> from types import SimpleNamespace as Row
    >>> state = Row(user=0, group=0, fatigue=0.0, live=(1,), streamer=1, ctr=0.2)
    >>> decisions = Row(ts_ms=np.array([0, 100_000]), user=np.array([0, 0]), session=np.array([0, 0]),
    ...     streamer=np.array([1, 1]), insert_probability=np.array([0.5, 0.5]), inserted=np.array([True, False]),
    ...     clicked=np.array([True, False]), live_seconds=np.array([40.0, 0.0]), video_seconds=np.array([20.0, 30.0]),
    ...     exited=np.array([False, True]))
    >>> sessions = Row(start_ms=np.array([0]), live_seconds=np.array([40.0]), video_seconds=np.array([90.0]))
    >>> first, last = session_transitions([state, state], decisions, sessions)
    >>> first.reward, first.app_seconds, first.next_state is state, last.reward, last.next_state
    (100.0, 100.0, True, 30.0, None)
    """
    n = len(decisions.ts_ms)
    require(
        len(states) == n,
        f"session_transitions: {len(states)} states for {n} decisions; record every request the policy was asked "
        "during the run, in order",
    )
    for index in (0, n // 2, n - 1) if n else ():
        require(
            int(states[index].user) == int(decisions.user[index])
            and int(states[index].streamer) == int(decisions.streamer[index]),
            f"session_transitions: state {index} (user {states[index].user}, streamer {states[index].streamer}) is "
            f"not decision {index}'s (user {decisions.user[index]}, streamer {decisions.streamer[index]}); the "
            "states must be recorded from the run that produced the log",
        )
    session = decisions.session
    ends_ms = sessions.start_ms + np.round((sessions.live_seconds + sessions.video_seconds) * 1000.0)
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = session[1:] == session[:-1]
    next_ms = np.where(same_next, np.roll(decisions.ts_ms, -1), ends_ms[session]) if n else ends_ms[:0]
    own = decisions.live_seconds + decisions.video_seconds
    between = np.maximum((next_ms - decisions.ts_ms) / 1000.0 - own, 0.0)  # short videos of no-live requests
    video = decisions.video_seconds + between
    reward = decisions.live_seconds + video_weight * video
    app = decisions.live_seconds + video
    inserted = decisions.inserted
    propensity = np.where(inserted, decisions.insert_probability, 1.0 - decisions.insert_probability)
    return [
        Transition(
            state=states[i],
            action=int(inserted[i]),
            propensity=float(propensity[i]),
            reward=float(reward[i]),
            app_seconds=float(app[i]),
            clicked=bool(decisions.clicked[i]),
            watch_seconds=float(decisions.live_seconds[i]),
            exited=bool(decisions.exited[i]),
            next_state=states[i + 1] if same_next[i] else None,
        )
        for i in range(n)
    ]
