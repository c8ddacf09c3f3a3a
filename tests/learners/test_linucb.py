"""Diag-LinUCB, the bandit baseline for fresh streamers (livestream.md §4): its formula, exploration, expiry and
checkpoints."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest

from learners.ctr import DiagLinUCB

# -- the formula ---------------------------------------------------------------------------------------------------


def test_scores_follow_the_formula_on_a_hand_computed_example() -> None:
    bandit = DiagLinUCB(alpha=2.0, ridge=1.0)
    bandit.update("u", "x", 1.0, t=0.0, clusters={"a": 1.0, "b": 0.5})  # (a,x): d=2, b=1; (b,x): d=1.25, b=0.5
    bandit.update("u", "x", 0.0, t=1.0, clusters={"a": 1.0})  # (a,x): d=3, b=1
    assert [edge[:4] for edge in bandit.state_dict()["edges"]] == [["b", "x", 1.25, 0.5], ["a", "x", 3.0, 1.0]]
    mean, width = bandit.estimate("u", ["x", "y"], clusters={"a": 1.0, "b": 0.5})
    # x: Σ w·b/d = 1·1/3 + 0.5·0.5/1.25; Σ w²/d = 1/3 + 0.25/1.25. y was never shown: d = ridge, b = 0.
    np.testing.assert_allclose(mean, [1 / 3 + 0.2, 0.0])
    np.testing.assert_allclose(width, [math.sqrt(1 / 3 + 0.2), math.sqrt(1.25)])
    np.testing.assert_allclose(
        bandit.score("u", ["x", "y"], clusters={"a": 1.0, "b": 0.5}),
        [1 / 3 + 0.2 + 2 * math.sqrt(1 / 3 + 0.2), 2 * math.sqrt(1.25)],
    )


def test_the_default_clusters_are_the_users_own_and_the_global_one() -> None:
    bandit = DiagLinUCB(alpha=1.0, ridge=2.0, own_weight=1.0, global_weight=0.5)
    assert bandit.clusters_of("ann") == {("user", "ann"): 1.0, ("global",): 0.5}
    bandit.update("ann", "x", 1.0, t=0.0)  # own: d = 2 + 1, b = 1; global: d = 2 + 0.25, b = 0.5
    np.testing.assert_allclose(bandit.score("ann", ["x"]), [1 / 3 + 0.5 * 0.5 / 2.25 + math.sqrt(1 / 3 + 0.25 / 2.25)])
    # Bob never saw x: his own edge is at the prior, the global one carries Ann's click.
    np.testing.assert_allclose(bandit.score("bob", ["x"]), [0.5 * 0.5 / 2.25 + math.sqrt(1 / 2 + 0.25 / 2.25)])
    assert DiagLinUCB(global_weight=0.0).clusters_of("ann") == {("user", "ann"): 1.0}


def test_the_exploration_bonus_shrinks_as_one_over_root_d_with_exposure() -> None:
    bandit = DiagLinUCB(alpha=1.0)
    widths = []
    for n in range(6):
        widths.append(float(bandit.estimate("ann", ["x"])[1][0]))
        bandit.update("ann", "x", 0.0, t=float(n))
    # own and global edges each at d = 1 + n after n exposures (weights 1): width √(2 / (1 + n)).
    np.testing.assert_allclose(widths, [math.sqrt(2 / (1 + n)) for n in range(6)])
    assert all(later < earlier for earlier, later in itertools.pairwise(widths))


# -- cold start ----------------------------------------------------------------------------------------------------


def test_a_fresh_item_outranks_a_known_bad_one_and_a_known_good_one_wins_after_evidence() -> None:
    bandit, greedy = DiagLinUCB(alpha=0.5), DiagLinUCB(alpha=0.0)
    for t in range(30):  # 30 users see "bad" and never click
        for model in (bandit, greedy):
            model.update(f"u{t}", "bad", 0.0, t=float(t))
    assert [item for item, _ in bandit.recommend("new user", ["bad", "fresh"], k=2)] == ["fresh", "bad"]
    assert greedy.score("new user", ["bad", "fresh"]).tolist() == [0.0, 0.0], "without the bonus nothing favours it"
    for t in range(30, 90):  # then "good" is shown to 60 users and a third of them click
        bandit.update(f"u{t}", "good", float(t % 3 == 0), t=float(t))
    assert [item for item, _ in bandit.recommend("new user", ["bad", "fresh", "good"], k=3)] == ["good", "fresh", "bad"]


def test_recommend_ranks_only_live_items() -> None:
    bandit = DiagLinUCB(alpha=0.0)
    for t, (item, reward) in enumerate([("ended", 1.0), ("a", 0.5), ("b", 0.2)]):
        bandit.update("ann", item, reward, t=float(t))
    # one reward r each: own and global edges at d = 2, b = r, so the score is r/2 + r/2 = r; "ended" is not live
    assert bandit.recommend("ann", live=["b", "a", "a"], k=5) == [("a", 0.5), ("b", 0.2)]
    assert bandit.recommend("ann", live=[], k=1) == []
    assert [item for item, _ in bandit.recommend("ann", live=("z", "y"), k=1)] == ["z"], "ties keep the live order"


# -- memory --------------------------------------------------------------------------------------------------------


def test_expiry_bounds_memory_on_an_endless_stream_of_new_streamers() -> None:
    bounded, unbounded = DiagLinUCB(expire_after=100.0), DiagLinUCB()
    peak = 0
    for t in range(10_000):  # a new streamer every second, shown to one of 50 users
        for bandit in (bounded, unbounded):
            bandit.update(f"u{t % 50}", f"streamer{t}", float(t % 7 == 0), t=float(t))
        peak = max(peak, len(bounded))
    assert peak <= 2 * 101, "at most the (own + global) edges updated in the last expire_after seconds"
    assert len(unbounded) == 2 * 10_000


def test_an_expired_edge_is_back_at_the_prior_and_a_late_event_does_not_rewind_the_clock() -> None:
    bandit = DiagLinUCB(alpha=1.0, expire_after=10.0)
    fresh = bandit.score("ann", ["x"])
    bandit.update("ann", "x", 1.0, t=0.0)
    bandit.update("bob", "y", 1.0, t=5.0)
    assert bandit.score("ann", ["x"])[0] != fresh[0]
    bandit.advance(10.5)
    assert len(bandit) == 2 and bandit.score("ann", ["x"])[0] == fresh[0]
    bandit.update("bob", "y", 0.0, t=3.0)  # late: counted at the clock, 10.5, not at 3
    assert bandit.clock == 10.5
    bandit.advance(16.0)
    assert len(bandit) == 2, "the late update kept bob's edges"


# -- checkpoints ---------------------------------------------------------------------------------------------------


def test_a_state_round_trip_through_json_gives_identical_scores_and_updates() -> None:
    rng = np.random.default_rng(0)
    params: dict[str, Any] = {"alpha": 0.3, "ridge": 2.0, "global_weight": 0.5, "expire_after": 50.0}
    bandit = DiagLinUCB(**params)
    items = [f"s{i}" for i in range(12)]
    for t in range(200):
        bandit.update(f"u{rng.integers(8)}", items[rng.integers(12)], float(rng.random() < 0.2), t=float(t))
    restored = DiagLinUCB(**params)
    restored.load_state_dict(json.loads(json.dumps(bandit.state_dict())))  # plain data: ("user", id) keys survive
    assert len(restored) == len(bandit) and restored.clock == bandit.clock
    for user in ("u0", "u3", "someone new"):
        assert restored.score(user, items).tolist() == bandit.score(user, items).tolist()
    for model in (bandit, restored):
        model.update("u1", "s4", 1.0, t=260.0)
    assert restored.state_dict() == bandit.state_dict()
    with pytest.raises(ValueError, match=r"saved with alpha=0.3 but this learner has alpha=1.0"):
        DiagLinUCB(**{**params, "alpha": 1.0}).load_state_dict(bandit.state_dict())
    with pytest.raises(ValueError, match="'edges' must be a list"):
        DiagLinUCB(**params).load_state_dict({**bandit.state_dict(), "edges": [["c", "i", 1.0]]})


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -0.1}, r"alpha must be a finite number >= 0 \(got -0.1\)"),
        ({"ridge": 0.0}, r"ridge must be a finite number > 0 \(got 0.0\)"),
        ({"own_weight": math.nan}, r"own_weight must be a finite number >= 0 \(got nan\)"),
        ({"own_weight": 0.0, "global_weight": 0.0}, "both 0"),
        ({"expire_after": 0.0}, r"expire_after must be a positive number of seconds or None \(got 0.0\)"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiagLinUCB(**params)


def test_bad_calls_are_refused_with_what_was_wrong() -> None:
    bandit = DiagLinUCB()
    with pytest.raises(ValueError, match=r"reward must be a finite number \(got nan\)"):
        bandit.update("ann", "x", math.nan, t=0.0)
    with pytest.raises(ValueError, match=r"event time t must be a finite number of seconds \(got inf\)"):
        bandit.update("ann", "x", 1.0, t=math.inf)
    with pytest.raises(ValueError, match=r"the item must be a hashable id"):
        bandit.update("ann", ["x"], 1.0, t=0.0)
    with pytest.raises(ValueError, match=r"the user must be a hashable id"):
        bandit.score({"name": "ann"}, ["x"])
    with pytest.raises(ValueError, match=r"items must be a sequence of item ids \(got 'xy'\)"):
        bandit.score("ann", "xy")
    with pytest.raises(ValueError, match=r"item ids must be hashable, such as str \(got \[\['x'\]\]\)"):
        bandit.recommend("ann", [["x"]], k=1)
    with pytest.raises(ValueError, match=r"cluster weights must be finite numbers > 0 \(got \{'c': -1.0\}\)"):
        bandit.score("ann", ["x"], clusters={"b": 1.0, "c": -1.0})
    with pytest.raises(ValueError, match="clusters must be a non-empty mapping"):
        bandit.update("ann", "x", 1.0, t=0.0, clusters={})
    with pytest.raises(ValueError, match=r"k must be an int >= 1 \(got 0\)"):
        bandit.recommend("ann", ["x"], k=0)
    assert len(bandit) == 0, "a refused update changes nothing"
