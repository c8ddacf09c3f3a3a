"""The live platform in closed loop over the bus: the simulator's feed asks an allocation service at every decision.

A :class:`LiveFeed` plays a :class:`~connectors.sources.live_platform.LivePlatform`'s sessions in event-time order,
many users' at once, and lets a service it only knows through two topics decide each allocation (spec
livestream.md §2-§3, the allocation pipeline of ``pipelines/examples/live-allocation.yaml``):

* at each decision it produces a :class:`~connectors.messages.FeedRequest` to the requests topic, keyed by the
  user, carrying what the policy sees and the outcome of the session's previous decision (until that decision's
  next one: clicked, live seconds, short-video seconds, exited); when a session ends, one last request without a
  candidate carries the last outcome and asks nothing;
* it reads :class:`~connectors.messages.Allocation` answers from the allocations topic; the answer's ``inserted``
  decides, and the insert probability logged is its ``propensity`` when inserted, ``1 - propensity`` when not;
* the sessions' interactions and the rooms' starts and ends go to the interactions and rooms topics as
  :meth:`LivePlatformLog.messages() <connectors.sources.live_platform.LivePlatformLog.messages>` makes them (the
  same code builds them), in time order: a message goes out once no session still running can log an earlier one.
  A feed that plays every session to its end has written exactly ``log().messages()``, in that order.

Up to ``max_in_flight`` requests wait for answers at once, from different sessions (a session waits for the answer
to its request before it goes on), so a slow service costs one round trip per ``max_in_flight`` decisions, not per
decision. ``speed`` (event seconds per wall second) paces the requests and messages; None plays as fast as answers
come. A request unanswered after ``timeout_s`` is counted as a timeout and its session goes on as not inserted
(logged with insert probability 0); an answer that comes later is stale.

Answers are matched by request id (``"<run>:<session>:<step>"``, ``<run>`` drawn for each feed). Answers that do
not apply are counted, logged and skipped, never raised: *stale* when the request no longer waits (a duplicate, an
answer after its timeout, an answer to another run of a feed), *invalid* by reason when it does not decode (the
:data:`~connectors.messages.DECODE_REASONS`), names no request of this run (``unknown_request``; also an answer to a
session's last request, which asks nothing) or gives no decision (``no_decision``: ``inserted`` or ``propensity``
missing).

:meth:`LiveFeed.status` is a consistent snapshot of the counters, refreshed at least every ``POLL_MS`` while
:meth:`LiveFeed.run` plays; a stop event ends a run cleanly (what was in flight is dropped); ``max_sessions`` and
``until_hours`` bound the sessions played. :meth:`LiveFeed.log` is the run's log in the simulator's format, the
sessions in :meth:`~connectors.sources.live_platform.LivePlatform.run`'s order: every session draws from its own
seed and takes the decisions the answers gave it, so a service that answers as a policy with probabilities 0 and 1
gets the log ``platform.run(policy)`` gives.

Per user, requests come in time order, except for the rare user whose sessions overlap (a second device: see
:mod:`~connectors.sources.live_platform`); the ``session`` field tells them apart.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import KafkaProducer, TopicPartition

from connectors.bus import KafkaBus, check_topic_name
from connectors.messages import (
    DECODE_REASONS,
    Allocation,
    AllocationOutcome,
    DecodeError,
    FeedRequest,
    Room,
    decode,
    encode,
)
from connectors.sources.live_platform import (
    DecisionOutcome,
    LivePlatform,
    LivePlatformLog,
    ScheduledSession,
    SessionPlay,
)
from connectors.sources.live_platform_logs import (
    INTERACTION_KINDS,
    INTERACTIONS_TOPIC,
    ROOMS_TOPIC,
    KuaiLiveLogs,
    KuaiLiveTable,
    LiveMessage,
)

log = logging.getLogger(__name__)
WARN_EVERY_S = 10.0  # a kind of warning (timeouts, refused answers) is logged at most this often


class _Throttled:
    """One kind of warning, logged at most once per ``every_s`` seconds with how many were left out since the last
    one: a pipeline that is down times out every request, and one line each would flood the log. The counts in
    :class:`FeedStatus` stay exact."""

    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self.every_s = every_s
        self.last = -math.inf
        self.left_out = 0

    def warn(self, message: str, *args: Any, extra: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.left_out += 1
            return
        if self.left_out:
            message += f" (and {self.left_out} more like it in the last {now - self.last:.0f} s)"
        log.warning(message, *args, extra=extra)
        self.last, self.left_out = now, 0


REQUESTS_TOPIC = "live.requests"
ALLOCATIONS_TOPIC = "live.allocations"
DEFAULT_MAX_ANSWER_BYTES = 65_536
INVALID_ANSWER_REASONS = (*DECODE_REASONS, "unknown_request", "no_decision")
"""Every reason an answer is refused for: decode failures, then the feed's own checks."""
POLL_MS = 100
"""The longest one wait for answers lasts: how soon a stop request, a timeout or a paced request is seen."""

_TIE_ORDER = {kind: rank for rank, kind in enumerate(("start", *INTERACTION_KINDS.values(), "end"))}
"""The order of messages at one millisecond in ``LivePlatformLog.messages()``: room starts, interactions, ends."""

StopReason = Literal["finished", "stop_event"]


@dataclass(frozen=True)
class FeedStatus:
    """Where a :class:`LiveFeed` stands: counts since its run began.

    ``sessions`` to play, ``sessions_started`` and ``sessions_finished``; ``requests`` (decision requests sent),
    ``answered`` (decided by an answer), ``timeouts`` (decided as not inserted for want of one), ``inserted``,
    ``in_flight`` (waiting for answers now); answers refused: ``stale`` and ``invalid`` by reason; messages
    produced: ``interactions`` and ``room_events``; ``event_time`` (epoch seconds) of the latest request sent;
    ``stopped_by`` once the run has ended (None while it plays).
    """

    sessions: int
    sessions_started: int = 0
    sessions_finished: int = 0
    requests: int = 0
    answered: int = 0
    timeouts: int = 0
    inserted: int = 0
    in_flight: int = 0
    stale: int = 0
    invalid: Mapping[str, int] = field(default_factory=dict)
    interactions: int = 0
    room_events: int = 0
    event_time: float | None = None
    stopped_by: StopReason | None = None

    @property
    def allocation_rate(self) -> float:
        """The share of decisions that inserted the live room (0 before any)."""
        decided = self.answered + self.timeouts
        return self.inserted / decided if decided else 0.0


class _Refused(Exception):
    """An answer the feed refuses: a ``reason`` (one of :data:`INVALID_ANSWER_REASONS`) and a ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Session:
    """One scheduled session and where it stands with the service."""

    scheduled: ScheduledSession
    play: SessionPlay | None = None  # made when the session starts
    asked: int = 0  # decision requests sent; the next one's step number
    previous: str | None = None  # the id of the latest decision request: the next request reports its outcome
    waiting: str | None = None  # the id of the request waiting for an answer
    deadline: float = 0.0  # monotonic time when that request times out
    at: float = 0.0  # the event time of that request
    queued: int = 0  # the play's interactions already queued as messages


class LiveFeed:
    """Plays ``platform``'s sessions against an allocation service over the bus; see the module docstring.

    Parameters
    ----------
    bus
        The broker; the four topics must exist on it.
    platform
        The simulated platform; its sessions are played with the service's decisions.
    requests_topic, allocations_topic
        Where requests go and where the answers come from.
    interactions_topic, rooms_topic
        Where the interactions and the rooms' starts and ends go.
    max_in_flight
        The most requests waiting for answers at once.
    timeout_s
        How long a request waits for its answer before its session goes on as not inserted.
    speed
        Event seconds per wall second (3600: an hour a second); None: as fast as the answers come.
    max_sessions
        Play only the first sessions to start, this many (None: all).
    until_hours
        Play only the sessions that start in the first ``until_hours`` hours (None: all).
    max_answer_bytes
        Larger answers are refused (reason ``oversized``).
    """

    def __init__(
        self,
        bus: KafkaBus,
        platform: LivePlatform,
        *,
        requests_topic: str = REQUESTS_TOPIC,
        allocations_topic: str = ALLOCATIONS_TOPIC,
        interactions_topic: str = INTERACTIONS_TOPIC,
        rooms_topic: str = ROOMS_TOPIC,
        max_in_flight: int = 64,
        timeout_s: float = 5.0,
        speed: float | None = None,
        max_sessions: int | None = None,
        until_hours: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        problems = [
            f"{name} must be >= 1{' (or None for no limit)' if name == 'max_sessions' else ''} (got {value})"
            for name, value in (
                ("max_in_flight", max_in_flight),
                ("max_sessions", max_sessions),
                ("max_answer_bytes", max_answer_bytes),
            )
            if value is not None and value < 1
        ]
        problems += [
            f"{name} must be finite and > 0{'' if name == 'timeout_s' else ' (or None)'} (got {value})"
            for name, value in (("timeout_s", timeout_s), ("speed", speed), ("until_hours", until_hours))
            if value is not None and not (math.isfinite(value) and value > 0)
        ]
        if problems:
            raise ValueError("LiveFeed: " + "; ".join(problems))
        topics = [check_topic_name(t) for t in (requests_topic, allocations_topic, interactions_topic, rooms_topic)]
        if len(set(topics[:2])) < 2 or set(topics[:2]) & set(topics[2:]):
            raise ValueError(
                f"LiveFeed: the requests topic {requests_topic!r} and the allocations topic {allocations_topic!r} "
                f"must differ from each other and from the interactions and rooms topics {topics[2:]}"
            )
        self.bus = bus
        self.platform = platform
        self.requests_topic, self.allocations_topic, self.interactions_topic, self.rooms_topic = topics
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.speed = speed
        self.max_answer_bytes = max_answer_bytes
        self.run_id = uuid.uuid4().hex[:12]

        by_start = sorted(platform.session_schedule(), key=lambda s: (s.start, s.index))
        if until_hours is not None:
            by_start = [s for s in by_start if s.start < until_hours * 3600.0]
        chosen = sorted(by_start[:max_sessions], key=lambda s: s.index)
        self._sessions = {s.index: _Session(s) for s in chosen}
        self._origin = min((s.start for s in chosen), default=0.0)  # pacing counts event time from the first start
        self._ready = [(s.start, s.index) for s in chosen]  # sessions whose next request is not sent, by its time
        heapq.heapify(self._ready)
        self._waiting: dict[str, _Session] = {}  # request id -> session, in the order sent (= deadline order)
        self._outbox: list[tuple[tuple[int, ...], LiveMessage]] = []  # messages by (ms, tie order, ...)
        self._tally: Counter[str] = Counter()  # FeedStatus's counts, by field name
        self._invalid: Counter[str] = Counter()
        self._refused_warning, self._timeout_warning = _Throttled(), _Throttled()
        self._event_time: float | None = None
        self._status = FeedStatus(len(chosen))
        self._wall_origin = 0.0
        self._ran = False
        self._log: LivePlatformLog | None = None

    def status(self) -> FeedStatus:
        """The counts as of the latest step of the run (safe to call from any thread while it runs)."""
        return self._status

    def log(self) -> LivePlatformLog:
        """The log of the sessions that ended, in the simulator's format (after :meth:`run`)."""
        if self._log is None:
            raise RuntimeError("the feed has not run yet: call run() first")
        return self._log

    def run(self, stop: threading.Event | None = None) -> FeedStatus:
        """Play the sessions until they have all ended or ``stop`` is set; returns the final status.

        Raises :class:`~connectors.bus.BusError` when a topic is missing. A feed runs once.
        """
        if self._ran:
            raise RuntimeError("a LiveFeed runs once: make another one for another run")
        for topic in (self.requests_topic, self.interactions_topic, self.rooms_topic):
            self.bus.partitions(topic)
        partitions = self.bus.partitions(self.allocations_topic)
        self._ran = True
        stop = stop if stop is not None else threading.Event()
        consumer = self.bus.consumer(enable_auto_commit=False)
        producer = self.bus.producer(linger_ms=0)
        try:
            consumer.assign([TopicPartition(self.allocations_topic, p) for p in range(partitions)])
            consumer.seek_to_beginning()
            rooms = self.platform.room_table(len(self.platform.room_start))
            self._queue(KuaiLiveLogs.from_tables({"room": rooms}).messages())
            log.info(
                "live feed %s: %d sessions, requests to %s, answers from %s",
                self.run_id,
                len(self._sessions),
                self.requests_topic,
                self.allocations_topic,
                extra={"run": self.run_id},
            )
            self._wall_origin = time.monotonic()
            while not stop.is_set() and (self._ready or self._waiting):
                self._send_due(producer)
                for records in consumer.poll(self._wait_ms()).values():
                    for record in records:
                        self._handle(record.value, producer)
                self._expire(producer)
                watermark = self._watermark_ms()
                if watermark is not None:
                    self._flush(producer, watermark)
                self._publish(None)
            finished = not (self._ready or self._waiting)
            ended = [s.play for s in self._sessions.values() if s.play is not None and s.play.totals is not None]
            self._log = self.platform.log(ended)
            if finished:  # every message of the log, and only those: the rooms up to the log's
                self._flush(producer, math.inf, rooms=len(self._log.kuailive.tables["room"]))
            producer.flush()
        finally:
            producer.close()
            consumer.close()
        self._publish("finished" if finished else "stop_event")
        log.info("live feed %s stopped: %s", self.run_id, self._status, extra={"run": self.run_id})
        return self._status

    # -- requests ----------------------------------------------------------------------------------------------------

    def _send_due(self, producer: KafkaProducer) -> None:
        """Start the sessions and send the requests whose time has come, as long as there is room in flight."""
        now = time.monotonic()
        while self._ready and len(self._waiting) < self.max_in_flight and self._due(self._ready[0][0]) <= now:
            _, index = heapq.heappop(self._ready)
            session = self._sessions[index]
            if session.play is None:
                session.play = SessionPlay(self.platform, session.scheduled)
                self._tally["sessions_started"] += 1
                self._continue(session, producer)  # its first decision, which may come later than others' requests
            else:
                self._ask(session, producer, now)

    def _ask(self, session: _Session, producer: KafkaProducer, now: float) -> None:
        """Send the request of the session's pending decision and wait for its answer."""
        assert session.play is not None and session.play.request is not None
        point = session.play.request
        state = point.state
        index = session.scheduled.index
        request = FeedRequest(
            request=f"{self.run_id}:{index}:{session.asked}",
            user=state.user,
            session=index,
            group=state.group,
            ts=self.platform.epoch_ms(point.time) / 1000.0,
            fatigue=state.fatigue,
            live=list(state.live),
            streamer=state.streamer,
            ctr=state.ctr,
            outcome=_outcome(session.previous, point.previous),
        )
        self._send(producer, request)
        session.asked += 1
        session.previous = session.waiting = request.request
        session.deadline, session.at = now + self.timeout_s, point.time
        self._waiting[request.request] = session
        self._tally["requests"] += 1
        self._event_time = request.ts

    def _continue(self, session: _Session, producer: KafkaProducer) -> None:
        """After a decision: queue the session's new interactions, then schedule its next request or end it."""
        play = session.play
        assert play is not None
        new = play.interactions[session.queued :]
        if new:
            rows: dict[str, list[tuple[int, ...]]] = {}
            for name, row in new:
                rows.setdefault(name, []).append(row)
            tables = {name: KuaiLiveTable.from_rows(name, table) for name, table in rows.items()}
            self._queue(KuaiLiveLogs.from_tables(tables).messages(), session.scheduled.index, session.queued)
            session.queued = len(play.interactions)
        if play.request is not None:
            heapq.heappush(self._ready, (play.request.time, session.scheduled.index))
            return
        if play.outcome is not None:  # it had decisions: report the last one's outcome
            assert play.end is not None
            index = session.scheduled.index
            self._send(
                producer,
                FeedRequest(
                    request=f"{self.run_id}:{index}:{session.asked}",
                    user=session.scheduled.user,
                    session=index,
                    group=play.group,
                    ts=self.platform.epoch_ms(play.end) / 1000.0,
                    outcome=_outcome(session.previous, play.outcome),
                ),
            )
        self._tally["sessions_finished"] += 1

    def _send(self, producer: KafkaProducer, request: FeedRequest) -> None:
        producer.send(self.requests_topic, value=encode(request), key=str(request.user).encode()).add_errback(
            self._send_failed
        )

    # -- answers -----------------------------------------------------------------------------------------------------

    def _handle(self, raw: bytes, producer: KafkaProducer) -> None:
        """Apply one raw answer, or count and log why not."""
        try:
            answer, session = self._check(raw)
        except _Refused as exc:
            self._invalid[exc.reason] += 1
            self._refused_warning.warn(
                "refused answer on %s (%s): %s",
                self.allocations_topic,
                exc.reason,
                exc.detail,
                extra={"topic": self.allocations_topic, "reason": exc.reason},
            )
            return
        if session is None:
            self._tally["stale"] += 1
            return
        assert answer.inserted is not None and answer.propensity is not None
        probability = answer.propensity if answer.inserted else 1.0 - answer.propensity
        self._tally["answered"] += 1
        self._decide(session, probability, answer.inserted, producer)

    def _check(self, raw: bytes) -> tuple[Allocation, _Session | None]:
        """The answer and the session waiting for it (None when no request waits for it: stale).

        Raises :class:`_Refused` for an answer that does not decode, names no request of this run, or decides
        nothing.
        """
        try:
            answer = decode(raw, Allocation.schema_name, max_bytes=self.max_answer_bytes)
        except DecodeError as exc:
            raise _Refused(exc.reason, exc.detail) from None
        assert isinstance(answer, Allocation)
        parts = (answer.request or "").split(":")
        if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
            raise _Refused("unknown_request", f"{answer.request!r} is no request id of a live feed")
        run, index, step = parts[0], int(parts[1]), int(parts[2])
        if run != self.run_id:
            return answer, None  # another run's
        session = self._sessions.get(index)
        if session is None or step >= session.asked:
            raise _Refused("unknown_request", f"request {answer.request!r} was not sent, or asks nothing")
        if answer.inserted is None or answer.propensity is None:
            raise _Refused(
                "no_decision",
                f"the answer to {answer.request!r} must give inserted and propensity (got {answer.inserted!r} and "
                f"{answer.propensity!r})",
            )
        return answer, session if session.waiting == answer.request else None

    def _expire(self, producer: KafkaProducer) -> None:
        """Decide the requests that waited too long as not inserted."""
        now = time.monotonic()
        while self._waiting:
            session = next(iter(self._waiting.values()))
            if session.deadline > now:
                return
            self._timeout_warning.warn(
                "request %s unanswered after %gs: its session goes on without a live room",
                session.waiting,
                self.timeout_s,
                extra={"topic": self.requests_topic},
            )
            self._tally["timeouts"] += 1
            self._decide(session, 0.0, False, producer)

    def _decide(self, session: _Session, probability: float, inserted: bool, producer: KafkaProducer) -> None:
        assert session.play is not None and session.waiting is not None
        del self._waiting[session.waiting]
        session.waiting = None
        self._tally["inserted"] += inserted
        session.play.answer(probability, inserted)
        self._continue(session, producer)

    # -- messages and time -------------------------------------------------------------------------------------------

    def _queue(self, messages: Iterable[LiveMessage], session: int = 0, first: int = 0) -> None:
        """Queue messages in the order ``LivePlatformLog.messages()`` gives them: by time, then by the order of kinds
        at one millisecond, then rooms by ``live_id`` and interactions by ``session`` and simulation order (a
        session's messages numbered from ``first``)."""
        for number, item in enumerate(messages, first):
            message = item.message
            order = (int(message.room),) if isinstance(message, Room) else (session, number)
            heapq.heappush(self._outbox, ((round(message.ts * 1000.0), _TIE_ORDER[message.kind], *order), item))

    def _flush(self, producer: KafkaProducer, before_ms: float, rooms: int | None = None) -> None:
        """Produce the queued messages earlier than ``before_ms`` (epoch ms), in order; with ``rooms``, leave out
        the rooms from that ``live_id`` on."""
        while self._outbox and self._outbox[0][0][0] < before_ms:
            _, (_, key, message) = heapq.heappop(self._outbox)
            if isinstance(message, Room):
                if rooms is not None and int(message.room) >= rooms:
                    continue
                topic = self.rooms_topic
                self._tally["room_events"] += 1
            else:
                topic = self.interactions_topic
                self._tally["interactions"] += 1
            producer.send(topic, value=encode(message), key=key.encode()).add_errback(self._send_failed)

    def _watermark_ms(self) -> float | None:
        """Epoch ms before which no message can still come: the earliest time a session may yet log (None once
        every session has ended), no later than the paced clock."""
        times = [session.at for session in self._waiting.values()]
        if self._ready:
            times.append(self._ready[0][0])
        if not times:
            return None
        limit = self.platform.epoch_ms(min(times))
        if self.speed is not None:
            clock = self._origin + (time.monotonic() - self._wall_origin) * self.speed
            limit = min(limit, self.platform.epoch_ms(clock))
        return limit

    def _due(self, event_time: float) -> float:
        """The monotonic wall time at which ``event_time`` comes (at once when unpaced)."""
        if self.speed is None:
            return self._wall_origin
        return self._wall_origin + (event_time - self._origin) / self.speed

    def _wait_ms(self) -> int:
        """How long to wait for answers now: until the next timeout, the next paced request, or ``POLL_MS``."""
        now = time.monotonic()
        wait = POLL_MS / 1000.0
        if self._waiting:
            wait = min(wait, next(iter(self._waiting.values())).deadline - now)
        if self._ready and len(self._waiting) < self.max_in_flight:
            wait = min(wait, self._due(self._ready[0][0]) - now)
        return max(0, math.ceil(wait * 1000.0))

    # -- counts ------------------------------------------------------------------------------------------------------

    def _publish(self, stopped_by: StopReason | None) -> None:
        """Make the current counts what :meth:`status` returns (one reference swap: a consistent snapshot)."""
        self._status = FeedStatus(
            len(self._sessions),
            **self._tally,
            in_flight=len(self._waiting),
            invalid=dict(self._invalid),
            event_time=self._event_time,
            stopped_by=stopped_by,
        )

    def _send_failed(self, exc: BaseException) -> None:
        """Say so when a message is lost: a lost request would time out, a lost interaction never be seen."""
        log.error("live feed %s could not produce: %s", self.run_id, exc, extra={"run": self.run_id})


def _outcome(request: str | None, outcome: DecisionOutcome | None) -> AllocationOutcome | None:
    """The outcome of the decision asked by ``request``, as a feed request reports it."""
    if outcome is None:
        return None
    assert request is not None
    return AllocationOutcome(
        request=request,
        inserted=outcome.inserted,
        clicked=outcome.clicked,
        live_seconds=outcome.live_seconds,
        video_seconds=outcome.video_seconds,
        exited=outcome.exited,
    )
