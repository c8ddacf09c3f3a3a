"""Mode allocate: insert the top live room into a feed page or not, per request, learning online from the outcomes.

Each ``feed-request/v1`` (keyed by user) asks one decision and reports the outcome of the user's previous one in
the session (the feed server knows it when the user asks for the next page; a session's end sends one last request
without a candidate). The operator joins that outcome to the decision it made, hands the transition to the
allocation agent (SL-MGAC or a baseline, :mod:`learners.allocation`), then answers with an ``allocation/v1`` drawn
from the distilled student policy, kept ``explore`` away from 0 and 1 so the logged propensities stay usable for
off-policy evaluation. Versions of the agent go to the registry like a learner's.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.messages import Allocation, FeedRequest, Message, encode
from connectors.sources.live_platform import RequestState
from learners.allocation import AllocationAgent, AllocationConfig, Transition
from pipelines.records import BatchResult, Output, Record, RecordRejected, Rejection
from pipelines.spec import AllocateSpec, PipelineSpec, SpecError

log = logging.getLogger(__name__)
RECENT_DECISIONS = 1000  # decisions in the reported allocation rate
RECENT_SESSIONS = 200  # finished sessions in the reported watch and app time per session
PENDING_LIMIT = 100_000  # decisions kept waiting for an outcome; beyond it the oldest are dropped (sessions gone)


@dataclass(frozen=True)
class _Decision:
    """A decision waiting for its outcome in the user's next request."""

    request: str
    state: RequestState
    action: int
    propensity: float


def build_agent(allocate: AllocateSpec, name: str) -> AllocationAgent:
    """The agent an ``allocate`` section describes; unknown ``config`` keys are a :class:`SpecError`."""
    known = [f.name for f in dataclasses.fields(AllocationConfig)]
    problems = []
    for key in allocate.config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            problems.append(f"allocate.config.{key} is not a setting of AllocationConfig ({hint})")
    if problems:
        raise SpecError(f"pipeline {name!r}", problems)
    try:
        config = AllocationConfig.variant(allocate.variant, **allocate.config)
        return AllocationAgent(allocate.groups, allocate.streamers, config=config, seed=allocate.seed)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"pipeline {name!r}", [f"allocate.config: {exc}"]) from None


@dataclass
class AllocateOperator:
    """One allocation agent for the pipeline's requests; see the module docstring for the protocol."""

    spec: PipelineSpec
    allocate: AllocateSpec
    agent: AllocationAgent
    rng: np.random.Generator
    pending: dict[tuple[int, int], _Decision] = field(default_factory=dict)  # by (user, session)
    live: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # live and app s so far
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    sessions: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RECENT_SESSIONS))
    learned: int = 0
    decisions: int = 0
    unmatched: int = 0
    overridden: int = 0
    version: str | None = None

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> AllocateOperator:
        """An untrained agent with the ``allocate`` section's variant, sizes, seed and config."""
        assert spec.allocate is not None  # the spec's validation requires it in mode allocate
        agent = build_agent(spec.allocate, spec.name)
        return cls(spec, spec.allocate, agent, np.random.default_rng(spec.allocate.seed))

    def validate(self, message: Message) -> None:
        """Requests only, with group and streamer ids inside the sizes the agent was built for."""
        if not isinstance(message, FeedRequest):
            raise RecordRejected("wrong_schema", f"mode allocate takes feed-request/v1 (got {message.schema_name})")
        if message.group >= self.allocate.groups:
            raise RecordRejected(
                "out_of_range",
                f"group {message.group} is not below allocate.groups ({self.allocate.groups}); raise allocate.groups",
            )
        largest = max([*message.live, message.streamer or 0])
        if largest >= self.allocate.streamers:
            raise RecordRejected(
                "out_of_range",
                f"streamer id {largest} is not below allocate.streamers ({self.allocate.streamers}); "
                "raise allocate.streamers or map streamer ids to dense numbers",
            )

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Take in each reported outcome, then answer the requests that have a candidate with one forward pass of
        the student (a session's second request in a batch waits for its first one's answer). The gradient steps
        the outcomes owe wait for :meth:`learn_deferred`, after the answers are sent."""
        result = BatchResult()
        asked: list[tuple[Record, FeedRequest]] = []
        sessions: set[tuple[int, int]] = set()
        for record in records:
            request = record.message
            assert isinstance(request, FeedRequest)
            if (request.user, request.session) in sessions:
                self._answer(asked, result)
                asked, sessions = [], set()
            try:
                self._learn(request)
            except Exception as exc:  # a request the agent cannot take must not stop the worker
                result.rejected.append(Rejection(record.source, "operator_error", f"{type(exc).__name__}: {exc}"))
                continue
            if request.streamer is not None:
                asked.append((record, request))
                sessions.add((request.user, request.session))
        self._answer(asked, result)
        return result

    def _answer(self, asked: list[tuple[Record, FeedRequest]], result: BatchResult) -> None:
        """Decide ``asked`` together and add their allocations to ``result``."""
        if not asked:
            return
        states = [_state(request) for _, request in asked]
        try:
            choices = self.agent.serve_batch(states)
        except Exception as exc:  # not one of them can be answered: each goes to the dead-letter topic
            detail = f"{type(exc).__name__}: {exc}"
            result.rejected.extend(Rejection(record.source, "operator_error", detail) for record, _ in asked)
            return
        for (record, request), state, choice in zip(asked, states, choices.tolist(), strict=True):
            answer = self._decide(request, state, choice)
            key = str(request.user).encode()
            result.outputs.append(Output("allocations", key, encode(answer), record.source.timestamp_ms))

    def _learn(self, request: FeedRequest) -> None:
        """Join the request's outcome to the user's pending decision and hand the transition to the agent."""
        session = (request.user, request.session)
        decision = self.pending.pop(session, None)
        outcome = request.outcome
        if outcome is None:
            return
        if decision is None or decision.request != outcome.request:
            self.unmatched += 1  # e.g. answered by a worker whose decisions a restart from a checkpoint lost
            return
        if outcome.inserted != bool(decision.action):
            self.overridden += 1  # the feed applied another action (the answer came too late): no propensity for it
            self.live.pop(session, None)
            return
        ended = outcome.exited or request.streamer is None
        self.agent.observe(
            Transition(
                state=decision.state,
                action=decision.action,
                propensity=decision.propensity,
                reward=outcome.live_seconds + self.agent.config.video_weight * outcome.video_seconds,
                app_seconds=outcome.live_seconds + outcome.video_seconds,
                clicked=outcome.clicked,
                watch_seconds=outcome.live_seconds,
                exited=outcome.exited,
                next_state=None if ended else _state(request),
            ),
            train=False,
        )
        self.learned += 1
        live, app = self.live.pop(session, (0.0, 0.0))
        live, app = live + outcome.live_seconds, app + outcome.live_seconds + outcome.video_seconds
        if ended:
            self.sessions.append((live, app))
        else:
            self.live[session] = (live, app)

    def _decide(self, request: FeedRequest, state: RequestState, choice: float) -> Allocation:
        """The answer to a request with a candidate: the student's ``choice`` (1.0: insert), explored."""
        assert request.streamer is not None
        explore = self.agent.config.explore
        insert = explore + (1.0 - 2.0 * explore) * choice
        inserted = bool(self.rng.random() < insert)
        propensity = insert if inserted else 1.0 - insert
        self.pending[(request.user, request.session)] = _Decision(request.request, state, int(inserted), propensity)
        if len(self.pending) > PENDING_LIMIT:  # a session that never reported its end: forget its oldest decision
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self.live.pop(oldest, None)
        self.decisions += 1
        self.recent.append(inserted)
        return Allocation(
            key=str(request.user),
            ts=request.ts,
            allocations={str(request.streamer): float(inserted)},
            request=request.request,
            inserted=inserted,
            propensity=propensity,
            model_version=self.version,
        )

    def learn_deferred(self) -> None:
        """The gradient steps the batch's outcomes owe (the runtime calls it once the answers are sent). A step that
        raises is logged and the steps owed are dropped: the worker goes on answering with the model it has."""
        try:
            self.agent.train()
        except Exception:
            log.exception("pipeline %s: a gradient step failed; %d owed steps dropped", self.spec.name, self.agent.owed)
            self.agent.owed = 0

    def published_model(self) -> Any:
        """What a registry version holds: the agent (its student serves)."""
        return self.agent

    def state(self) -> Any:
        """The agent, the exploration generator, the decisions waiting for outcomes and the tallies."""
        return {
            "agent": self.agent,
            "rng": self.rng,
            "pending": dict(self.pending),
            "live": dict(self.live),
            "recent": list(self.recent),
            "sessions": list(self.sessions),
            "counts": (self.learned, self.decisions, self.unmatched, self.overridden),
        }

    def load_state(self, state: Any) -> None:
        """Resume from a checkpoint."""
        self.agent = state["agent"]
        self.rng = state["rng"]
        self.pending = dict(state["pending"])
        self.live = dict(state["live"])
        self.recent = deque(state["recent"], maxlen=RECENT_DECISIONS)
        self.sessions = deque(state["sessions"], maxlen=RECENT_SESSIONS)
        self.learned, self.decisions, self.unmatched, self.overridden = state["counts"]

    def scores(self) -> dict[str, float]:
        """Allocation rate over the recent decisions; live watch and app time per recent finished session, with
        the app-time floor the constraint protects (0 when none), named ``session_*`` so the dashboard draws them on
        one chart; the Lagrange multiplier; counts."""
        live = [s[0] for s in self.sessions]
        app = [s[1] for s in self.sessions]
        return {
            "allocation_rate": sum(self.recent) / len(self.recent) if self.recent else 0.0,
            "session_live_seconds": float(np.mean(live)) if live else 0.0,
            "session_app_seconds": float(np.mean(app)) if app else 0.0,
            "session_app_floor_seconds": self.agent.config.app_floor or 0.0,
            "lagrange_multiplier": float(self.agent.lagrange.value),
            "decisions": float(self.decisions),
            "unmatched_outcomes": float(self.unmatched),
            "overridden_outcomes": float(self.overridden),
        }


def _state(request: FeedRequest) -> RequestState:
    assert request.streamer is not None
    return RequestState(
        request.user, request.group, request.fatigue, tuple(request.live), request.streamer, request.ctr
    )
