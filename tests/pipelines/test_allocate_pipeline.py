"""mode allocate: one allocation per feed request from SL-MGAC's student, learning online from reported outcomes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from connectors.messages import AllocationOutcome, FeedRequest, decode, encode
from connectors.registry import ModelRegistry
from connectors.sources.live_feed import LiveFeed
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig
from connectors.sources.live_requests import simulated_requests
from learners.allocation import AllocationAgent
from pipelines.allocate_operator import AllocateOperator
from pipelines.operators import Record, RecordRejected, Source
from pipelines.serialization import dump_state, load_state
from pipelines.spec import SpecError, load_spec, parse_spec
from pipelines.testing import PipelineHarness
from pipelines.testing.plugin import TEST_SECRET

pytestmark = pytest.mark.timeout(300)
Harness = Callable[..., PipelineHarness]
EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "live-allocation.yaml"
CONFIG = LivePlatformConfig.small()


@pytest.fixture(scope="module")
def requests() -> list[FeedRequest]:
    return simulated_requests(CONFIG, seed=3)


def spec(**allocate: Any) -> dict[str, Any]:
    return {
        "name": "alloc",
        "input": {"topics": ["live.requests"], "schema": "feed-request/v1"},
        "operator": {"mode": "allocate"},
        "allocate": {"groups": len(CONFIG.groups), "streamers": CONFIG.streamers, "config": {"batch": 32}, **allocate},
        "outputs": {"allocations": "live.allocations"},
        "batch": {"max": 64, "within_ms": 5},
        "checkpoint": {"every_events": 200, "every_s": 60},
    }


def records(requests: list[FeedRequest], start: int = 0) -> list[Record]:
    return [
        Record(r, Source(encode(r), str(r.user).encode(), "live.requests", 0, start + i, 0))
        for i, r in enumerate(requests)
    ]


def answers(
    operator: AllocateOperator, requests: list[FeedRequest], start: int = 0, given: dict[str, bool] | None = None
) -> list[dict[str, Any]]:
    """Feed ``requests`` one at a time, as a feed server whose applied action is the operator's answer reports them
    (the outcomes are otherwise the logged run's), with the learning deferred to after each answer as the runtime
    does; the answers. ``given`` keeps the answers across calls."""
    given = {} if given is None else given
    out = []
    for i, request in enumerate(requests):
        if request.outcome is not None and request.outcome.request in given:
            outcome = request.outcome.model_copy(update={"inserted": given[request.outcome.request]})
            request = request.model_copy(update={"outcome": outcome})
        result = operator.process(records([request], start + i))
        assert not result.rejected
        operator.learn_deferred()
        assert operator.agent.owed == 0
        for output in result.outputs:
            answer = decode(output.value, "allocation/v1").model_dump()
            given[answer["request"]] = answer["inserted"]
            out.append(answer)
    return out


def test_a_failing_gradient_step_is_logged_and_the_operator_goes_on_answering(
    requests: list[FeedRequest], caplog: pytest.LogCaptureFixture
) -> None:
    operator = AllocateOperator.from_spec(parse_spec(spec()))

    def failing_step() -> None:  # fault injection: no real input makes a step raise
        raise RuntimeError("injected")

    operator.agent._update = failing_step  # type: ignore[method-assign]
    allocations = answers(operator, requests[:400])
    assert len(allocations) == sum(r.streamer is not None for r in requests[:400]) and operator.learned > 0
    failures = [r for r in caplog.records if "a gradient step failed" in r.getMessage()]
    assert failures and all("injected" in (r.exc_text or "") for r in failures)


def test_each_request_with_a_candidate_gets_one_allocation_and_each_outcome_is_learned(
    requests: list[FeedRequest],
) -> None:
    operator = AllocateOperator.from_spec(parse_spec(spec()))
    before = [p.detach().clone() for p in operator.agent.student.parameters()]
    allocations = answers(operator, requests)

    asked = [r for r in requests if r.streamer is not None]
    assert [a["request"] for a in allocations] == [r.request for r in asked]
    assert [a["key"] for a in allocations] == [str(r.user) for r in asked]
    explore = operator.agent.config.explore
    for answer, request in zip(allocations, asked, strict=True):
        assert answer["allocations"] == {str(request.streamer): float(answer["inserted"])}
        assert answer["propensity"] in (pytest.approx(explore), pytest.approx(1 - explore))
    outcomes = [r for r in requests if r.outcome is not None]
    assert operator.learned == len(outcomes) == operator.agent.observed
    assert operator.unmatched == 0 and not operator.pending  # every session of the run ended
    scores = operator.scores()
    assert 0 < scores["allocation_rate"] < 1 and scores["decisions"] == len(asked)
    assert 0 < scores["session_live_seconds"] < scores["session_app_seconds"]
    after = list(operator.agent.student.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # the student was distilled


def test_an_outcome_for_a_decision_it_did_not_make_is_counted_not_learned(requests: list[FeedRequest]) -> None:
    operator = AllocateOperator.from_spec(parse_spec(spec()))
    first = next(r for r in requests if r.streamer is not None)
    stray = FeedRequest(
        request="x", user=first.user, session=first.session, group=first.group, live=first.live,
        streamer=first.streamer, outcome=AllocationOutcome(
            request="never-asked", inserted=False, clicked=False, live_seconds=0.0, video_seconds=5.0, exited=False
        ),
    )  # fmt: skip
    assert len(answers(operator, [first, stray])) == 2
    assert (operator.learned, operator.unmatched) == (0, 1)


def test_a_resumed_checkpoint_answers_and_learns_exactly_as_one_that_never_stopped(
    requests: list[FeedRequest],
) -> None:
    configured = parse_spec(spec())
    straight = AllocateOperator.from_spec(configured)
    expected = answers(straight, requests)

    half = len(requests) // 2
    first = AllocateOperator.from_spec(configured)
    given: dict[str, bool] = {}
    head = answers(first, requests[:half], given=given)
    resumed = AllocateOperator.from_spec(configured)
    resumed.load_state(load_state(dump_state(first.state(), b"secret"), b"secret"))
    tail = answers(resumed, requests[half:], start=half, given=given)
    assert [(a["request"], a["inserted"]) for a in head + tail] == [(a["request"], a["inserted"]) for a in expected]
    assert resumed.learned == straight.learned
    for mine, theirs in zip(resumed.agent.student.parameters(), straight.agent.student.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_requests_outside_the_sizes_the_agent_was_built_for_are_rejected_with_the_fix() -> None:
    operator = AllocateOperator.from_spec(parse_spec(spec()))
    with pytest.raises(RecordRejected, match=r"allocate.streamers \(4\)") as caught:
        operator.validate(FeedRequest(request="r", user=1, session=0, group=0, live=[9], streamer=9))
    assert caught.value.reason == "out_of_range"
    with pytest.raises(RecordRejected, match=r"allocate\.groups"):
        operator.validate(FeedRequest(request="r", user=1, session=0, group=7, live=[1], streamer=1))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"allocate": None}, "needs an allocate section"),
        ({"input": {"topics": ["live.requests"], "schema": "event/v1"}}, "mode 'allocate' reads feed-request/v1"),
        ({"monitor": {"detector": "adwin"}}, "monitor is not used in mode 'allocate'"),
        ({"operator": {"mode": "allocate", "use": "x.y:Z"}}, "operator.use, params and target are not used"),
    ],
)
def test_spec_problems_are_named(change: dict[str, Any], problem: str) -> None:
    data = {k: v for k, v in {**spec(), **change}.items() if v is not None}
    with pytest.raises(SpecError, match=problem):
        parse_spec(data)


def test_an_unknown_agent_setting_is_a_spec_error_with_a_suggestion() -> None:
    with pytest.raises(SpecError, match=r"allocate.config.explor is not a setting.*did you mean 'explore'"):
        AllocateOperator.from_spec(parse_spec(spec(config={"explor": 0.1})))


def test_the_example_spec_builds() -> None:
    operator = AllocateOperator.from_spec(load_spec(EXAMPLE))
    assert operator.agent.config.explore == 0.05 and operator.allocate.variant == "sl-mgac"


def test_the_simulator_in_closed_loop_is_answered_learned_from_and_versions_published(
    pipeline_harness: Harness, eddy_registry: ModelRegistry
) -> None:
    """The live platform's feed over the bus: every decision answered in time, every outcome learned, bad requests
    dead-lettered, versions published; the feed's log is the simulator's run under the pipeline's answers."""
    configured = {**spec(), "registry": {"model": "live-allocation", "publish_every_events": 300}}
    harness = pipeline_harness(configured)
    harness.bus.create_topics(["live.interactions", "live.rooms"])
    platform = LivePlatform(CONFIG, seed=4)
    feed = LiveFeed(harness.bus, platform, timeout_s=60.0)
    status = feed.run()
    bad: list[FeedRequest | bytes] = [
        FeedRequest(request="far", user=1, session=0, group=0, live=[99], streamer=99),
        b'{"schema": "feed-request/v1", "request": "r", "user": 1, "session": 0, "group": 0, "live": [1], '
        b'"streamer": 2}',
    ]
    harness.send(bad)
    result = harness.run()

    assert status.requests == status.answered > 0 and status.timeouts == 0 and not status.invalid
    allocations = result.outputs["allocations"]
    assert len(allocations) == status.requests
    assert sum(a["inserted"] for a in allocations) == status.inserted
    log = feed.log()
    assert len(log.decisions) == status.requests and log.decisions.inserted.sum() == status.inserted
    scores = result.status.scores
    assert result.status.learned == status.requests and scores["overridden_outcomes"] == 0
    assert scores["unmatched_outcomes"] == 0
    assert sorted(d.reason for d in result.dead_letters) == ["out_of_range", "validation"]
    published = result.status.published
    assert published >= 2 and len(eddy_registry.list_versions("live-allocation")) == published
    assert {a["model_version"] for a in allocations} >= {None, "1"}  # each version answers once published
    agent = load_state(eddy_registry.load("live-allocation", alias="champion").payload, TEST_SECRET)
    assert isinstance(agent, AllocationAgent) and agent.observed > 0  # a version holds the agent its student serves
