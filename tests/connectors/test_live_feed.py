"""The live feed against a real broker: a responder thread answers its requests over the bus as a policy would, and
the feed's log must be the log of ``LivePlatform.run`` with that policy."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import numpy as np
import pytest
from kafka import TopicPartition

from connectors.bus import BusError, KafkaBus
from connectors.messages import Allocation, FeedRequest, Interaction, Room, decode, encode
from connectors.sources import (
    FeedStatus,
    LiveFeed,
    LivePlatform,
    LivePlatformConfig,
    LivePlatformLog,
    RequestState,
    Threshold,
)
from connectors.sources.live_platform import Policy, insert_probability

DEADLINE_S = 30.0
CONFIG = dataclasses.replace(LivePlatformConfig.small(), users=24, hours=8.0)
POLICY = Threshold(0.15)


def state_of(request: FeedRequest) -> RequestState:
    assert request.streamer is not None
    return RequestState(
        request.user, request.group, request.fatigue, tuple(request.live), request.streamer, request.ctr
    )


def answer(request: FeedRequest, policy: Policy) -> Allocation:
    """The allocation service's answer: insert when the policy says so with probability >= 1/2."""
    probability = insert_probability(policy, state_of(request))
    inserted = probability >= 0.5
    return Allocation(
        key=str(request.user),
        ts=request.ts,
        allocations={str(request.streamer): float(inserted)},
        request=request.request,
        inserted=inserted,
        propensity=probability if inserted else 1.0 - probability,
    )


class Responder:
    """Answers the feed's requests over the bus from ``policy`` in a thread, and keeps every request it read.

    ``before(request)`` gives raw records to send ahead of the answer; requests that ``ignore`` picks get none;
    with ``hold``, answers wait until that many requests do (or until a poll brings nothing new), and
    :attr:`most_waiting` is the most that waited at once.
    """

    def __init__(
        self,
        bus: KafkaBus,
        feed: LiveFeed,
        policy: Policy = POLICY,
        *,
        before: Callable[[FeedRequest], Iterable[bytes]] = lambda request: (),
        ignore: Callable[[FeedRequest], bool] = lambda request: False,
        hold: int = 1,
    ) -> None:
        self.bus, self.feed, self.policy = bus, feed, policy
        self.before, self.ignore, self.hold = before, ignore, hold
        self.requests: list[FeedRequest] = []
        self.statuses: list[FeedStatus] = []
        self.most_waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Responder:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        if self._error is not None and error is None:
            raise self._error

    def _run(self) -> None:
        consumer = self.bus.consumer(enable_auto_commit=False)
        producer = self.bus.producer(linger_ms=0)
        try:
            consumer.assign([TopicPartition(self.feed.requests_topic, 0)])
            consumer.seek_to_beginning()
            waiting: list[FeedRequest] = []
            while not self._stop.is_set():
                new = [decode(r.value, "feed-request/v1") for batch in consumer.poll(50).values() for r in batch]
                for request in new:
                    assert isinstance(request, FeedRequest)
                    self.requests.append(request)
                    self.statuses.append(self.feed.status())
                    if request.streamer is not None and not self.ignore(request):
                        waiting.append(request)
                if waiting and (len(waiting) >= self.hold or not new):
                    self.most_waiting = max(self.most_waiting, len(waiting))
                    for request in waiting:
                        key = str(request.user).encode()
                        for raw in [*self.before(request), encode(answer(request, self.policy))]:
                            producer.send(self.feed.allocations_topic, raw, key=key)
                    waiting.clear()
                    producer.flush()
        except BaseException as exc:  # surfaced in the test thread
            self._error = exc
        finally:
            producer.close()
            consumer.close()


def play(feed: LiveFeed, stop: threading.Event | None = None) -> FeedStatus:
    """Run ``feed`` in a thread, failing the test if it has not ended within the deadline."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["status"] = feed.run(stop)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    if "error" in outcome:
        raise outcome["error"]
    assert not thread.is_alive(), f"the feed is still running after {DEADLINE_S}s: {feed.status()}"
    status: FeedStatus = outcome["status"]
    return status


@pytest.fixture
def topics(eddy_topic_factory: Callable[..., str]) -> dict[str, str]:
    return {f"{name}_topic": eddy_topic_factory(name) for name in ("requests", "allocations", "interactions", "rooms")}


@pytest.fixture(scope="module")
def platform() -> LivePlatform:
    return LivePlatform(CONFIG, seed=5)


@pytest.fixture(scope="module")
def expected(platform: LivePlatform) -> LivePlatformLog:
    log = platform.run(POLICY)
    assert len(log.sessions) > 20 and len(log.decisions) > 100 and 0 < log.decisions.inserted.mean() < 1
    return log


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many warnings containing ``text`` were logged."""
    return sum(1 for r in caplog.records if r.levelname == "WARNING" and text in r.getMessage())


def by_session(requests: list[FeedRequest]) -> dict[int, list[FeedRequest]]:
    sessions: dict[int, list[FeedRequest]] = {}
    for request in requests:
        sessions.setdefault(request.session, []).append(request)
    return sessions


def test_the_feed_over_the_bus_logs_what_run_logs_for_the_same_decisions(
    eddy_bus: KafkaBus, topics: dict[str, str], platform: LivePlatform, expected: LivePlatformLog
) -> None:
    feed = LiveFeed(eddy_bus, platform, max_in_flight=8, timeout_s=DEADLINE_S, **topics)
    with Responder(eddy_bus, feed) as responder:
        status = play(feed)

    assert feed.log() == expected
    decisions = expected.decisions
    assert status == FeedStatus(
        sessions=len(expected.sessions),
        sessions_started=len(expected.sessions),
        sessions_finished=len(expected.sessions),
        requests=len(decisions),
        answered=len(decisions),
        inserted=int(decisions.inserted.sum()),
        interactions=sum(1 for m in expected.messages() if isinstance(m.message, Interaction)),
        room_events=2 * len(expected.kuailive.tables["room"]),
        event_time=status.event_time,
        stopped_by="finished",
    )
    assert status.allocation_rate == decisions.inserted.mean()

    # every decision asked once, in each session's order, each request reporting the previous decision's outcome
    asks = [r for r in responder.requests if r.streamer is not None]
    assert len(asks) == len({r.request for r in asks}) == len(decisions)
    sessions = by_session(responder.requests)
    assert sorted(sessions) == sorted(set(decisions.session.tolist()))
    row = 0
    for _, requests in sorted(sessions.items()):
        *asked, last = requests
        assert last.streamer is None and all(r.streamer is not None for r in asked)
        assert [r.outcome.request if r.outcome else None for r in requests] == [None] + [r.request for r in asked]
        for request in asked:
            assert (request.session, request.user, request.streamer) == (
                decisions.session[row],
                decisions.user[row],
                decisions.streamer[row],
            )
            assert (round(request.ts * 1000), request.fatigue, request.ctr) == (
                decisions.ts_ms[row],
                decisions.fatigue[row],
                decisions.ctr[row],
            )
            row += 1
        outcomes = [r.outcome for r in requests[1:]]
        first = row - len(asked)
        assert [(o.clicked, o.live_seconds) for o in outcomes if o] == list(
            zip(decisions.clicked[first:row].tolist(), decisions.live_seconds[first:row].tolist(), strict=True)
        )
        assert all(
            o and o.video_seconds >= v for o, v in zip(outcomes, decisions.video_seconds[first:row], strict=True)
        )
        assert last.outcome and last.outcome.exited  # after the last decision or a request with no room live
    # the statuses seen while it ran: counts only grow, and no more than max_in_flight wait at once
    assert all(s.in_flight <= 8 for s in responder.statuses) and responder.statuses[0].stopped_by is None
    for before, after in itertools.pairwise(responder.statuses):
        assert all(getattr(after, f) >= getattr(before, f) for f in ("requests", "answered", "sessions_finished"))

    # interactions and rooms: the run's messages, in its order, on their topics
    for topic, kind in ((topics["interactions_topic"], Interaction), (topics["rooms_topic"], Room)):
        wanted = [(m.key, m.message) for m in expected.messages() if isinstance(m.message, kind)]
        records = eddy_bus.read(topic, len(wanted), timeout_s=10)
        assert [(r.key.decode(), decode(r.value, kind.schema_name)) for r in records] == wanted
        times: dict[str, list[float]] = {}
        for key, message in wanted:
            times.setdefault(key, []).append(message.ts)
        assert all(ts == sorted(ts) for ts in times.values())  # per user (per room) in time order
    kinds = {m.message.kind for m in expected.messages()}
    assert {"start", "end", "click", "impression"} <= kinds  # the run shows what the feed writes


def test_requests_wait_for_answers_together_up_to_max_in_flight(
    eddy_bus: KafkaBus, topics: dict[str, str], platform: LivePlatform
) -> None:
    feed = LiveFeed(eddy_bus, platform, max_in_flight=4, max_sessions=10, timeout_s=DEADLINE_S, **topics)
    with Responder(eddy_bus, feed, hold=4) as responder:
        status = play(feed)
    assert responder.most_waiting == 4
    assert status.sessions == status.sessions_finished == 10 and status.answered == status.requests > 10
    assert len(feed.log().sessions) == 10 and status.timeouts == 0


def test_unanswered_requests_time_out_and_their_sessions_go_on_without_live(
    eddy_bus: KafkaBus,
    topics: dict[str, str],
    platform: LivePlatform,
    expected: LivePlatformLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    decided = np.bincount(expected.decisions.user, minlength=CONFIG.users)
    shy = int(np.flatnonzero(decided >= 2)[np.argmin(decided[decided >= 2])])  # a user with few decisions
    # the timed-out decisions are logged as not inserting, with probability 0: a run that never inserts for them
    wanted = platform.run(lambda state: 0.0 if state.user == shy else POLICY(state))
    timeouts = int(np.sum(wanted.decisions.user == shy))
    feed = LiveFeed(eddy_bus, platform, max_in_flight=8, timeout_s=0.2, **topics)
    with Responder(eddy_bus, feed, ignore=lambda request: request.user == shy):
        status = play(feed)

    assert timeouts >= 1 and status.timeouts == timeouts and status.answered == status.requests - timeouts
    assert status.stopped_by == "finished" and status.stale == 0
    assert feed.log() == wanted
    assert 1 <= warnings(caplog, "unanswered") <= timeouts  # the first timeout, then at most one line per 10 s


def test_bad_answers_are_counted_and_skipped(
    eddy_bus: KafkaBus,
    topics: dict[str, str],
    platform: LivePlatform,
    expected: LivePlatformLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answered: list[bytes] = []

    def bad(request: FeedRequest) -> list[bytes]:
        good = answer(request, POLICY)
        _, session, step = request.request.split(":")
        records = [
            b"not json",
            b'{"allocations": "all"}',
            b"x" * 2000,
            encode(good.model_copy(update={"request": "r1"})),
            encode(good.model_copy(update={"request": f"{request.request}9"})),  # a step never asked
            encode(good.model_copy(update={"request": f"0123456789ab:{session}:{step}"})),  # another run's: stale
            encode(good.model_copy(update={"inserted": None})),
            *answered[-1:],  # the previous answer again: stale
        ]
        answered.append(encode(good))
        return records

    feed = LiveFeed(eddy_bus, platform, max_in_flight=8, max_answer_bytes=1000, timeout_s=DEADLINE_S, **topics)
    with Responder(eddy_bus, feed, before=bad):
        status = play(feed)

    n = status.requests
    assert status.answered == n == len(expected.decisions) and status.timeouts == 0
    assert status.invalid == {
        "invalid_json": n,
        "validation": n,
        "oversized": n,
        "unknown_request": 2 * n,
        "no_decision": n,
    }
    assert status.stale == n + n - 1
    assert feed.log() == expected
    assert 1 <= warnings(caplog, "refused answer") < n  # throttled: not one line per refused answer (6 per request)


def test_a_stop_event_ends_a_run_and_its_log_holds_the_sessions_that_ended(
    eddy_bus: KafkaBus, topics: dict[str, str], platform: LivePlatform
) -> None:
    feed = LiveFeed(eddy_bus, platform, max_in_flight=2, timeout_s=DEADLINE_S, **topics)
    stop = threading.Event()
    statuses: list[FeedStatus] = []
    thread = threading.Thread(target=lambda: statuses.append(feed.run(stop)), daemon=True)
    thread.start()
    first = eddy_bus.read(topics["requests_topic"], 2, timeout_s=DEADLINE_S)  # unanswered: the run waits
    stop.set()
    thread.join(DEADLINE_S)
    assert not thread.is_alive() and len(first) == 2
    (status,) = statuses
    assert status.stopped_by == "stop_event" and status.requests == status.in_flight == 2 and status.answered == 0
    log = feed.log()
    assert len(log.decisions) == 0 and len(log.sessions) == status.sessions_finished < status.sessions
    with pytest.raises(RuntimeError, match="runs once"):
        feed.run()


def test_speed_paces_the_requests_by_event_time(
    eddy_bus: KafkaBus, topics: dict[str, str], platform: LivePlatform
) -> None:
    speed = 4 * 3600.0  # four event hours a second
    feed = LiveFeed(eddy_bus, platform, speed=speed, until_hours=2.0, timeout_s=DEADLINE_S, **topics)
    with Responder(eddy_bus, feed) as responder:
        began = time.monotonic()
        status = play(feed)
        took = time.monotonic() - began
    times = [request.ts for request in responder.requests if request.streamer is not None]
    starts = sorted(s.start for s in platform.session_schedule() if s.start < 2 * 3600.0)
    assert status.stopped_by == "finished" and status.sessions == len(starts) and len(times) > 5
    assert took >= (max(times) - CONFIG.start_ms / 1000 - starts[0]) / speed


def test_the_log_is_not_there_before_a_run(platform: LivePlatform) -> None:
    feed = LiveFeed(KafkaBus("kafka://localhost:9092"), platform)
    assert feed.status() == FeedStatus(sessions=len(platform.session_schedule()))
    with pytest.raises(RuntimeError, match="has not run yet"):
        feed.log()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_in_flight": 0}, r"max_in_flight must be >= 1 \(got 0\)"),
        ({"max_sessions": 0}, r"max_sessions must be >= 1 \(or None for no limit\) \(got 0\)"),
        ({"timeout_s": 0.0}, r"timeout_s must be finite and > 0 \(got 0.0\)"),
        ({"speed": float("nan")}, r"speed must be finite and > 0 \(or None\) \(got nan\)"),
        ({"until_hours": -1.0}, r"until_hours must be finite and > 0 \(or None\)"),
        ({"requests_topic": "bad topic"}, "invalid topic name 'bad topic'"),
        ({"allocations_topic": "live.requests"}, "must differ from each other"),
        ({"rooms_topic": "live.allocations"}, "must differ from each other and from the interactions and rooms"),
    ],
)
def test_bad_configuration_says_how_to_fix(platform: LivePlatform, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveFeed(KafkaBus("kafka://localhost:9092"), platform, **options)


def test_a_missing_topic_is_a_clear_error(eddy_bus: KafkaBus, topics: dict[str, str], platform: LivePlatform) -> None:
    feed = LiveFeed(eddy_bus, platform, **{**topics, "allocations_topic": "no.such.allocations"})
    with pytest.raises(BusError, match=r"'no\.such\.allocations' does not exist"):
        feed.run()
