"""The live-platform simulator and its exact allocation MDP: determinism, the model's statistics, drift events,
propensities, and value iteration's optimum checked against every simple policy and against simulation."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from connectors.messages import Interaction, Room, decode, encode
from connectors.sources import (
    AllocationMDP,
    CategoryTrend,
    LivePlatform,
    LivePlatformConfig,
    LivePlatformLog,
    RequestState,
    SessionPlay,
    StreamerOffline,
    TabularPolicy,
    Threshold,
)
from connectors.sources.live_platform import ActivityGroup, Policy, always, never

Z = 4.5
"""How many standard errors a simulated mean may be off (seeded runs: a pass is stable; the margin is for seeds)."""
HOUR = 3600.0


def constant(probability: float) -> Callable[[RequestState], float]:
    def policy(state: RequestState) -> float:
        return probability

    return policy


def eager(state: RequestState) -> float:
    """A stochastic policy that reads the state: more likely to insert a likely click."""
    return min(1.0, 0.1 + 1.5 * state.click_probability)


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


@pytest.fixture(scope="module")
def platform() -> LivePlatform:
    return LivePlatform(LivePlatformConfig(), seed=11)


@pytest.fixture(scope="module")
def eager_log(platform: LivePlatform) -> LivePlatformLog:
    return platform.run(eager)


@pytest.fixture(scope="module")
def small() -> LivePlatform:
    return LivePlatform(LivePlatformConfig.small(), seed=1)


@pytest.fixture(scope="module")
def mdp(small: LivePlatform) -> AllocationMDP:
    return AllocationMDP(small)


# -- determinism -----------------------------------------------------------------------------------------------------


def test_a_seed_gives_the_same_run_and_another_seed_another() -> None:
    config = LivePlatformConfig(users=30, streamers=8, hours=6.0)
    first = LivePlatform(config, seed=4).run(eager)
    assert first == LivePlatform(config, seed=4).run(eager)
    assert list(first.messages()) == list(LivePlatform(config, seed=4).run(eager).messages())
    other = LivePlatform(config, seed=5).run(eager)
    assert other != first
    assert len(first.decisions) > 100 and len(other.decisions) > 100


def test_the_world_and_the_session_starts_do_not_depend_on_the_policy(platform: LivePlatform) -> None:
    runs = [platform.run(policy) for policy in (never, always)]
    np.testing.assert_array_equal(runs[0].sessions.start_ms, runs[1].sessions.start_ms)
    np.testing.assert_array_equal(runs[0].sessions.user, runs[1].sessions.user)
    rooms = [run.kuailive.tables["room"] for run in runs]
    started = int(np.searchsorted(platform.room_start, platform.horizon))  # every run logs these, and maybe more
    assert started > 100 and min(len(table) for table in rooms) >= started
    for column in rooms[0].columns:
        np.testing.assert_array_equal(rooms[0][column][:started], rooms[1][column][:started])
    assert runs[0].kuailive.tables["user"] == runs[1].kuailive.tables["user"]


def test_streamers_go_live_on_a_poisson_schedule_and_users_come_as_their_group_says() -> None:
    platform = LivePlatform(dataclasses.replace(LivePlatformConfig.small(), hours=1500.0), seed=2)
    for streamer in range(platform.config.streamers):
        mine = platform.room_streamer == streamer
        lengths = (platform.room_end - platform.room_start)[mine][1:-1]  # the first began before 0, the last is cut
        mean = platform.live_seconds[streamer]
        assert len(lengths) > 300 and abs(lengths.mean() - mean) < Z * mean / math.sqrt(len(lengths))
        gaps = platform.room_start[mine][1:] - platform.room_end[mine][:-1]
        assert abs(gaps.mean() - platform.offline_seconds[streamer]) < Z * gaps.mean() / math.sqrt(len(gaps))
    days = platform.config.hours / 24
    for group, params in enumerate(platform.config.groups):
        users = np.flatnonzero(platform.user_group == group)
        sessions = sum(len(platform.session_starts(user)) for user in users.tolist())
        expected = params.sessions_per_day * days * len(users)
        assert abs(sessions - expected) < Z * math.sqrt(expected)


def test_popularity_drifts_by_the_hour_unless_told_not_to(platform: LivePlatform, small: LivePlatform) -> None:
    hourly = [platform.popularity_at(hour * HOUR) for hour in range(24)]
    assert all(np.all(a != b) for a, b in itertools.pairwise(hourly))
    np.testing.assert_array_equal(platform.popularity_at(3 * HOUR), platform.popularity_at(3.99 * HOUR))
    assert np.all(np.abs(np.log(hourly[-1] / hourly[0])) < 3.0)  # mean-reverting: no runaway
    np.testing.assert_array_equal(small.popularity_at(0.0), small.popularity_at(20 * HOUR))


# -- what the policy sees and what is logged -------------------------------------------------------------------------


def test_the_policy_sees_the_live_rooms_and_the_top_candidate_by_ctr(platform: LivePlatform) -> None:
    seen: list[tuple[RequestState, float]] = []

    def spy(state: RequestState) -> float:
        seen.append((state, len(seen) / 1e6))
        return eager(state)

    log = platform.run(spy)
    assert len(seen) == len(log.decisions) > 1000
    for (state, _), ts_ms, live_id in zip(
        seen[::97], log.decisions.ts_ms[::97], log.decisions.live_id[::97], strict=True
    ):
        t = (int(ts_ms) - platform.config.start_ms) / 1000
        streamers, rooms = platform.live_at(t)
        assert state.live == tuple(streamers.tolist())
        ctrs = platform.match[state.user][streamers] * platform.popularity_at(t)[streamers]
        assert state.streamer == streamers[np.argmax(ctrs)] and state.ctr == pytest.approx(ctrs.max(), abs=1e-12)
        assert rooms[np.argmax(ctrs)] == live_id
        assert state.group == platform.user_group[state.user]


def test_logged_propensities_are_the_behaviour_policys(eager_log: LivePlatformLog) -> None:
    decisions = eager_log.decisions
    expected = np.minimum(1.0, 0.1 + 1.5 * decisions.ctr * (1.0 - decisions.fatigue))
    np.testing.assert_array_equal(decisions.insert_probability, expected)
    np.testing.assert_array_equal(decisions.propensity, np.where(decisions.inserted, expected, 1.0 - expected))
    # the decisions were drawn with those probabilities: in every band of p, the insert rate is the mean p
    bands = np.digitize(expected, [0.2, 0.4, 0.6, 0.8])
    for band in np.unique(bands):
        chosen = bands == band
        p = expected[chosen]
        error = math.sqrt(np.sum(p * (1 - p))) / chosen.sum()
        assert abs(decisions.inserted[chosen].mean() - p.mean()) < Z * error + 1e-12


def test_clicks_follow_ctr_times_one_minus_fatigue(eager_log: LivePlatformLog) -> None:
    decisions = eager_log.decisions
    shown = decisions.inserted
    p = decisions.ctr[shown] * (1.0 - decisions.fatigue[shown])
    assert abs(decisions.clicked[shown].sum() - p.sum()) < Z * math.sqrt(np.sum(p * (1 - p)))
    assert not decisions.clicked[~shown].any()
    tables = eager_log.kuailive.tables
    assert len(tables["click"]) == decisions.clicked.sum()
    assert len(tables["negative"]) == (shown & ~decisions.clicked).sum()


def test_fatigue_rises_with_allocations_and_falls_without(eager_log: LivePlatformLog, platform: LivePlatform) -> None:
    decisions, sessions = eager_log.decisions, eager_log.sessions
    top = platform.config.fatigue_levels
    levels = np.rint(decisions.fatigue * top).astype(int)
    first = np.r_[True, decisions.session[1:] != decisions.session[:-1]]
    assert np.all(levels[first] == 0) and levels.max() == top
    # in sessions where every request had a live room, each request's decision sets the next one's level
    every = (sessions.requests == sessions.decisions)[decisions.session[:-1]] & ~first[1:]
    assert every.sum() > 1000
    expected = np.where(decisions.inserted[:-1], np.minimum(levels[:-1] + 1, top), np.maximum(levels[:-1] - 1, 0))
    np.testing.assert_array_equal(levels[1:][every], expected[every])


def test_more_frequent_allocation_ends_sessions_sooner(platform: LivePlatform) -> None:
    """Paired by session: every session draws from its own seed, so the runs differ only by the policy."""
    requests = [platform.run(constant(probability)).sessions.requests.astype(float) for probability in (0.0, 0.3, 1.0)]
    for more, less in itertools.pairwise(requests):
        shortened = more - less
        assert shortened.mean() > Z * standard_error(shortened)


def test_interactions_happen_in_live_rooms_while_watching(eager_log: LivePlatformLog) -> None:
    tables = eager_log.kuailive.tables
    rooms = tables["room"]
    start = dict(zip(rooms["live_id"].tolist(), rooms["start_timestamp"].tolist(), strict=True))
    end = dict(zip(rooms["live_id"].tolist(), rooms["end_timestamp"].tolist(), strict=True))
    clicks = tables["click"]
    watching: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for user, live, ts, watch in zip(
        *(clicks[column].tolist() for column in ("user_id", "live_id", "timestamp", "watch_live_time")), strict=True
    ):
        assert start[live] <= ts and ts + watch <= end[live] + 1  # ms rounding
        watching.setdefault((user, live), []).append((ts, ts + watch))
    for name in ("comment", "like", "gift"):
        table = tables[name]
        assert len(table) > 0
        for user, live, ts in zip(*(table[c].tolist() for c in ("user_id", "live_id", "timestamp")), strict=True):
            assert any(begin <= ts <= stop for begin, stop in watching[(user, live)])
    assert set(tables["gift"]["gift_price"].tolist()) <= {1, 2, 5, 10, 20, 50, 100}


def test_messages_come_in_time_order_with_their_keys(eager_log: LivePlatformLog) -> None:
    messages = list(eager_log.messages())
    tables = eager_log.kuailive.tables
    assert len(messages) == 2 * len(tables["room"]) + sum(
        len(tables[n]) for n in ("click", "comment", "like", "gift", "negative")
    )
    assert all(a.message.ts <= b.message.ts for a, b in itertools.pairwise(messages))
    kinds: dict[str, int] = {}
    opened: set[str] = set()
    for topic, key, message in messages:
        kinds[message.kind] = kinds.get(message.kind, 0) + 1
        if isinstance(message, Room):
            assert topic == "live.rooms" and key == message.room
            if message.kind == "start":
                opened.add(message.room)
            else:
                assert message.room in opened
        else:
            assert isinstance(message, Interaction) and topic == "live.interactions" and key == message.user
            assert message.room in opened
    assert kinds["impression"] == len(tables["negative"]) and kinds["click"] == len(tables["click"])
    for _, _, message in messages[:: len(messages) // 50]:
        assert decode(encode(message), message.schema_name) == message


def test_a_policy_must_return_a_probability(platform: LivePlatform, mdp: AllocationMDP) -> None:
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"policy returned .* a number in \[0, 1\]"):
            platform.run(constant(bad))
        with pytest.raises(ValueError, match=r"policy returned"):
            mdp.value(constant(bad))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"users": 0}, r"users must be >= 1 \(got 0\)"),
        ({"groups": (ActivityGroup("all", 0.9, 3.0, 0.1, 30.0, 60.0),)}, "shares must add up to 1"),
        ({"fatigue_exit": 0.99}, r"fatigue_exit must be in \[0, 1 - exit_probability\]"),
        ({"slot_share": 1.0}, r"slot_share must be in \[0, 1\)"),
        ({"drift": (StreamerOffline(hour=30.0),)}, r"within \[0, hours\]"),
        ({"drift": (CategoryTrend(hour=1.0, category=9),)}, "needs a category in 0..5"),
    ],
    ids=["users", "shares", "fatigue-exit", "slot", "late-event", "category"],
)
def test_bad_configurations_say_what_to_fix(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LivePlatformConfig(**changes)  # type: ignore[arg-type]


def test_sessions_played_step_by_step_in_any_order_make_the_run_of_the_same_decisions(small: LivePlatform) -> None:
    """A driver that decides itself and interleaves the users' sessions by time (as the live feed does) gets the
    run's log: each session draws from its own seed, and draws the deciding uniform whoever decides."""
    policy = Threshold(0.2)
    plays = [SessionPlay(small, session) for session in small.session_schedule()]
    waiting = [play for play in plays if play.request is not None]
    assert len(waiting) > 50
    while waiting:
        play = min(waiting, key=lambda play: play.request.time if play.request else math.inf)
        assert play.request is not None
        probability = policy(play.request.state)
        if play.answer(probability, inserted=probability >= 0.5) is None:
            waiting.remove(play)
    assert small.log(plays) == small.run(policy)


def test_a_session_refuses_answers_it_cannot_take(small: LivePlatform) -> None:
    play = next(p for p in (SessionPlay(small, s) for s in small.session_schedule()) if p.request is not None)
    with pytest.raises(ValueError, match=r"an insert probability is a number in \[0, 1\] \(got 1.5\)"):
        play.answer(1.5)
    with pytest.raises(ValueError, match="the action taken must have had a positive probability"):
        play.answer(0.0, inserted=True)
    with pytest.raises(ValueError, match="has not ended; a log holds ended sessions only"):
        small.log([play])
    while play.request is not None:
        play.answer(0.0)
    with pytest.raises(RuntimeError, match="has ended: nothing to answer"):
        play.answer(0.5)


# -- drift events ----------------------------------------------------------------------------------------------------


DECIDED = (
    "ts_ms",
    "user",
    "session",
    "streamer",
    "live_id",
    "fatigue",
    "ctr",
    "insert_probability",
    "inserted",
    "clicked",
)
"""What a decision saw and chose (its outcome, such as the watch time, may run past a drift event)."""


def decisions_before(log: LivePlatformLog, t_ms: int) -> list[tuple[object, ...]]:
    keep = log.decisions.ts_ms < t_ms
    return list(zip(*(getattr(log.decisions, name)[keep].tolist() for name in DECIDED), strict=True))


def test_a_popular_streamer_going_offline_is_gone_from_then_on_and_nothing_before_changes() -> None:
    config = LivePlatformConfig(users=120, streamers=20, hours=12.0)
    drifted = LivePlatform(dataclasses.replace(config, drift=(StreamerOffline(hour=6.0),)), seed=3)
    steady = LivePlatform(config, seed=3)
    ((gone, at),) = drifted.offline_from.items()
    assert at == 6 * HOUR and gone == np.argmax(steady.popularity_at(at))
    mine = drifted.room_streamer == gone
    assert mine.any() and np.all(drifted.room_start[mine] < at) and np.all(drifted.room_end[mine] <= at)
    assert (steady.room_end[steady.room_streamer == gone] > at).any()
    log, before = drifted.run(eager), steady.run(eager)
    at_ms = config.start_ms + int(at * 1000)
    for name in ("click", "negative", "comment"):
        table = log.kuailive.tables[name]
        assert not np.any((table["streamer_id"] == gone) & (table["timestamp"] >= at_ms))
    assert decisions_before(log, at_ms) == decisions_before(before, at_ms)
    assert not np.any((log.decisions.streamer == gone) & (log.decisions.ts_ms >= at_ms))


def test_a_trending_category_gets_more_of_the_clicks_from_its_hour_on() -> None:
    config = LivePlatformConfig(users=300, streamers=24, hours=16.0)
    trend = CategoryTrend(hour=8.0, category=2, boost=10.0)
    steady, trending = LivePlatform(config, seed=9), LivePlatform(dataclasses.replace(config, drift=(trend,)), seed=9)
    at = trend.hour * HOUR
    in_category = steady.category == 2
    np.testing.assert_array_equal(steady.popularity_at(at - 1), trending.popularity_at(at - 1))
    odds = lambda p: p / (1 - p)  # noqa: E731
    np.testing.assert_allclose(
        odds(trending.popularity_at(at)), odds(steady.popularity_at(at)) * np.where(in_category, 10.0, 1.0)
    )
    runs = [platform.run(eager) for platform in (steady, trending)]
    at_ms = config.start_ms + int(at * 1000)
    assert decisions_before(runs[0], at_ms) == decisions_before(runs[1], at_ms)
    shares = []
    for run in runs:
        clicks = run.kuailive.tables["click"]
        after = clicks["timestamp"] >= at_ms
        shares.append((in_category[clicks["streamer_id"][after]].mean(), after.sum()))
    (steady_share, n_steady), (trend_share, n_trend) = shares
    error = math.sqrt(steady_share * (1 - steady_share) / n_steady + trend_share * (1 - trend_share) / n_trend)
    assert trend_share - steady_share > Z * error


# -- the exact MDP and its optimum -----------------------------------------------------------------------------------


def test_value_iteration_beats_never_always_and_every_threshold_exactly(mdp: AllocationMDP) -> None:
    optimal = mdp.value(mdp.optimal_policy())
    assert mdp.value(never).gain == 0.0 and mdp.value(never).app_change == 0.0
    others: list[Policy] = [never, always, *(constant(p) for p in (0.1, 0.3, 0.6))]
    others += [Threshold(float(t)) for t in np.linspace(0, 0.7, 36)]
    values = [mdp.value(policy) for policy in others]
    assert all(value.gain <= optimal.gain + 1e-9 * optimal.reward for value in values)
    best_threshold = max(values[5:], key=lambda value: value.gain)
    assert optimal.gain > 0 and best_threshold.gain < 0.9 * optimal.gain  # fatigue and the live set matter
    assert mdp.value(always).gain < 0
    assert optimal.fraction_of(optimal) == 1.0 and mdp.value(never).fraction_of(optimal) == 0.0


def test_no_change_of_the_optimal_policy_at_any_state_improves_it(mdp: AllocationMDP, small: LivePlatform) -> None:
    best = mdp.optimal_policy()
    assert set(np.unique(best.table)) <= {0.0, 1.0}
    optimal = mdp.value(best).gain
    rng = np.random.default_rng(0)
    for _ in range(25):
        table = best.table.copy()
        user, level = rng.integers(small.config.users), rng.integers(small.config.fatigue_levels + 1)
        mask = rng.integers(1, table.shape[2])
        table[user, level, mask] = 1.0 - table[user, level, mask]
        assert mdp.value(TabularPolicy(table, best.fatigue_levels)).gain <= optimal + 1e-9 * abs(optimal)


def test_exact_values_match_the_simulation() -> None:
    """The MDP is the simulator's law: per-session means over a long run agree with the exact values (standard
    errors from batch means over time, which also covers the schedule every session shares)."""
    platform = LivePlatform(dataclasses.replace(LivePlatformConfig.small(), users=10, hours=1500.0), seed=4)
    model = AllocationMDP(platform)
    for policy in (eager, model.optimal_policy()):
        exact = model.value(policy)
        sessions = platform.run(policy).sessions
        batches = np.array_split(np.argsort(sessions.start_ms), 20)
        assert len(sessions) > 3000
        for name in ("live_seconds", "video_seconds", "requests", "allocations", "clicks"):
            values = getattr(sessions, name).astype(float)
            means = np.array([values[batch].mean() for batch in batches])
            error = means.std(ddof=1) / math.sqrt(len(means))
            assert abs(values.mean() - getattr(exact, name)) < Z * error, name


def test_a_lower_video_weight_allocates_more_at_the_cost_of_app_time(small: LivePlatform) -> None:
    app_time = AllocationMDP(small, video_weight=1.0)  # the reward is then the app time itself
    live_first = AllocationMDP(small, video_weight=0.3)
    careful, greedy = (mdp.value(mdp.optimal_policy()) for mdp in (app_time, live_first))
    assert greedy.allocation_rate > careful.allocation_rate and greedy.live_seconds > careful.live_seconds
    assert careful.app_seconds > greedy.app_seconds
    assert careful.app_change == pytest.approx(careful.gain)
    assert greedy.app_change == pytest.approx(greedy.app_seconds - app_time.value(never).app_seconds)
    assert live_first.value(always).app_change < 0  # the quantity the platform constraint bounds


def test_the_mdp_follows_drift_events_by_hour() -> None:
    config = dataclasses.replace(LivePlatformConfig.small(), drift=(StreamerOffline(hour=10.0),))
    platform = LivePlatform(config, seed=1)
    (gone,) = platform.offline_from
    before, after = AllocationMDP(platform, hour=9.0), AllocationMDP(platform, hour=11.0)
    seen: list[int] = []

    def watch_top(state: RequestState) -> float:
        seen.append(state.streamer)
        return 1.0 if gone in state.live else 0.0  # inserts only while the gone streamer is live

    assert before.value(watch_top).allocations > 0
    assert after.value(watch_top).allocations == pytest.approx(0.0, abs=1e-12)
    assert after.value(after.optimal_policy()).gain != before.value(before.optimal_policy()).gain
    assert gone in seen


def test_the_mdp_refuses_what_it_cannot_solve(small: LivePlatform, mdp: AllocationMDP) -> None:
    with pytest.raises(ValueError, match=r"at most 8 streamers \(got 40\).*evaluate by simulation"):
        AllocationMDP(LivePlatform(LivePlatformConfig(), seed=0))
    with pytest.raises(ValueError, match="video_weight must be finite and >= 0"):
        AllocationMDP(small, video_weight=-1.0)
    state = RequestState(user=99, group=0, fatigue=0.0, live=(1,), streamer=1, ctr=0.2)
    with pytest.raises(ValueError, match=r"covers users 0..39 and streamers 0..3 \(got user 99"):
        mdp.optimal_policy()(state)
    with pytest.raises(ValueError, match="never inserting is optimal here"):
        mdp.value(never).fraction_of(mdp.value(never))
