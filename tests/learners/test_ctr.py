"""The collisionless embedding table, the online CTR learner over it and the live-only ranking (livestream.md §4)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from river import metrics

from bench.ctr import Instance, simulator_stream
from connectors.sources.live_platform import LivePlatformConfig
from learners.ctr import EmbeddingCTR, EmbeddingTable, live_only


def prequential(model: EmbeddingCTR, stream: list[Instance]) -> Iterator[float]:
    """Click probabilities predicted before each instance is learned."""
    for x, y, t in stream:
        yield model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, y, t=t)


# -- the table -------------------------------------------------------------------------------------------------


def test_an_id_gets_a_row_on_its_min_count_th_sighting() -> None:
    table = EmbeddingTable(dim=3, min_count=3)
    assert [table.see("u", t=float(t)) for t in range(4)] == [False, False, True, True]
    assert len(table) == 1 and table.n_pending == 0
    assert table.get("v") is None and table.get("u") is not None


def test_idle_rows_and_counters_expire_and_a_sighting_keeps_them() -> None:
    table = EmbeddingTable(dim=2, min_count=2, expire_after=10.0)
    table.see("kept", t=0.0)
    table.see("kept", t=1.0)
    table.see("dropped", t=1.0)
    table.see("dropped", t=2.0)
    table.see("counted", t=2.0)
    table.see("kept", t=10.5)
    assert "kept" in table and "dropped" in table and table.n_pending == 1
    table.advance(12.5)  # "dropped" last used at 2.0, "counted" last seen at 2.0
    assert "kept" in table and "dropped" not in table and table.n_pending == 0
    table.advance(5.0)  # a late event does not rewind the clock
    assert table.clock == 12.5
    assert table.delta().removed == frozenset({"dropped"})


def test_memory_stays_bounded_on_an_endless_stream_of_new_ids() -> None:
    bounded = EmbeddingTable(dim=2, min_count=1, expire_after=100.0)
    filtered = EmbeddingTable(dim=2, min_count=2, expire_after=100.0)
    unbounded = EmbeddingTable(dim=2, min_count=1)
    peak = 0
    for t in range(20_000):  # one new id per second
        for table in (bounded, filtered, unbounded):
            table.see(f"id{t}", t=float(t))
        peak = max(peak, len(bounded), filtered.n_pending)
    assert peak <= 101, "expiry must hold at most the ids seen in the last expire_after seconds"
    assert len(filtered) == 0, "ids seen once must never get a row when min_count=2"
    assert len(unbounded) == 20_000


def test_update_refuses_an_id_without_a_row_and_a_wrong_shape() -> None:
    table = EmbeddingTable(dim=2, min_count=1)
    with pytest.raises(ValueError, match="no row for 'u'"):
        table.update("u", np.zeros(2))
    table.see("u", t=0.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        table.update("u", np.zeros(3))
    with pytest.raises(ValueError, match="event time t must be finite"):
        table.see("u", t=math.nan)
    with pytest.raises(ValueError, match="min_count must be an int >= 1"):
        EmbeddingTable(min_count=0)
    with pytest.raises(ValueError, match="expire_after must be a positive number"):
        EmbeddingTable(expire_after=0.0)


def test_table_state_round_trip_keeps_counters_clock_and_sync_bookkeeping() -> None:
    table = EmbeddingTable(dim=2, min_count=2, expire_after=5.0, seed=3)
    for t, key in enumerate("aabcab"):
        table.see(key, t=float(t))
    restored = EmbeddingTable(dim=2, min_count=2, expire_after=5.0, seed=3)
    restored.load_state_dict(pickle.loads(pickle.dumps(table.state_dict())))
    for t, key in enumerate("cdd", start=6):
        assert restored.see(key, t=float(t)) == table.see(key, t=float(t))
    ours, theirs = table.delta(), restored.delta()
    assert ours.removed == theirs.removed and ours.rows.keys() == theirs.rows.keys()
    assert all(np.array_equal(ours.rows[key], theirs.rows[key]) for key in ours.rows)
    with pytest.raises(ValueError, match="parameters"):
        EmbeddingTable(dim=3).load_state_dict(table.state_dict())


# -- the learner -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream() -> list[Instance]:
    return simulator_stream(LivePlatformConfig(users=300, streamers=20, hours=24.0), seed=0)


def test_beats_a_constant_predictor_on_the_simulator_stream(stream: list[Instance]) -> None:
    model = EmbeddingCTR(min_count=2, expire_after=6 * 3600.0, seed=0)
    auc, loss, constant_loss = metrics.ROCAUC(n_thresholds=50), metrics.LogLoss(), metrics.LogLoss()
    clicks = 0
    for n, ((_, y, _), p) in enumerate(zip(stream, prequential(model, stream), strict=True)):
        auc.update(y, p)
        loss.update(y, p)
        constant_loss.update(y, (clicks + 1) / (n + 2))  # the running click rate: the best constant so far
        clicks += y
    assert auc.get() > 0.62, f"prequential AUC {auc.get():.3f}: the learner ranks no better than a constant"
    assert loss.get() < constant_loss.get(), (loss.get(), constant_loss.get())


def test_sync_ships_only_touched_rows_and_the_replica_then_predicts_like_the_trainer(
    stream: list[Instance],
) -> None:
    params: dict[str, Any] = {"min_count": 2, "expire_after": 3600.0, "seed": 0}
    trainer, replica = EmbeddingCTR(**params), EmbeddingCTR(**params)
    for x, y, t in stream[:3000]:
        trainer.learn_one(x, y, t=t)
    trainer.sync_to(replica, dense=True)
    for x, _, _ in stream[3000:3300]:
        assert replica.predict_proba_one(x) == trainer.predict_proba_one(x)
    x, y, t = stream[3000]
    trainer.learn_one(x, y, t=t)
    delta = trainer.table.delta()
    ids = {(name, value) for name, value in x.items() if isinstance(value, str)}
    rows = {key if key in trainer.table else (key[0], None) for key in ids}  # an id without a row: its cold row
    assert set(delta.rows) == {key for key in rows if key in trainer.table}
    assert len(delta.rows) < len(trainer.table)
    trainer.learn_one(*stream[3001][:2], t=stream[3001][2] + 7200.0)  # two idle hours: every older row expires
    trainer.sync_to(replica, dense=False)
    assert len(replica.table) == len(trainer.table)


def test_a_stale_dense_sync_is_the_only_difference_left() -> None:
    trainer, replica = EmbeddingCTR(min_count=1), EmbeddingCTR(min_count=1)
    trainer.learn_one({"user": "a"}, True, t=0.0)
    trainer.sync_to(replica, dense=True)
    trainer.learn_one({"user": "a"}, False, t=1.0)
    trainer.sync_to(replica, dense=False)
    assert np.array_equal(replica.table.get(("user", "a")), trainer.table.get(("user", "a")))
    assert replica.predict_proba_one({"user": "a"}) != trainer.predict_proba_one({"user": "a"})


def test_unadmitted_ids_score_as_the_zero_embedding() -> None:
    model = EmbeddingCTR(min_count=3)
    for t in range(20):
        model.learn_one({"user": "regular"}, t % 2 == 0, t=float(t))
    model.learn_one({"user": "new"}, True, t=20.0)
    assert ("user", "new") not in model.table
    assert model.predict_proba_one({"user": "new"}) == model.predict_proba_one({"user": "never-seen"})


def test_same_seed_same_model_other_seed_other_model(stream: list[Instance]) -> None:
    def run(seed: int) -> list[float]:
        return list(prequential(EmbeddingCTR(min_count=1, seed=seed), stream[:800]))

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_round_trip_mid_stream_continues_identically(stream: list[Instance]) -> None:
    params: dict[str, Any] = {"min_count": 2, "expire_after": 1800.0, "seed": 2}
    original = EmbeddingCTR(**params)
    list(prequential(original, stream[:1500]))
    restored = EmbeddingCTR(**params)
    restored.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    assert list(prequential(restored, stream[1500:2500])) == list(prequential(original, stream[1500:2500]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"w": -1.0}, "weight w must be a finite number >= 0"),
        ({"w": math.nan}, "weight w must be a finite number >= 0"),
        ({"t": math.inf}, "event time t must be a finite number"),
    ],
)
def test_bad_weight_or_time_is_refused_and_leaves_the_learner_untouched(kwargs: dict[str, Any], message: str) -> None:
    model = EmbeddingCTR(min_count=1)
    with pytest.raises(ValueError, match=message):
        model.learn_one({"user": "a"}, True, **kwargs)
    assert model.n_learned == 0 and len(model.table) == 0 and model.classes == []


def test_sync_refuses_a_replica_with_other_parameters() -> None:
    with pytest.raises(ValueError, match="same parameters"):
        EmbeddingCTR(dim=4).sync_to(EmbeddingCTR(dim=8), dense=True)


def test_watch_time_weights_make_the_odds_follow_watch_time() -> None:
    model = EmbeddingCTR(min_count=1, lr=0.2)
    for t in range(4000):  # half the impressions are clicks watched 3 s, so the odds should approach 3
        clicked = t % 2 == 0
        model.learn_one({"streamer": "s"}, clicked, w=3.0 if clicked else 1.0, t=float(t))
    p = model.predict_proba_one({"streamer": "s"})[True]
    assert p / (1.0 - p) == pytest.approx(3.0, rel=0.1)


# -- live-only ranking -----------------------------------------------------------------------------------------


def test_recommends_only_rooms_live_at_the_request_time() -> None:
    scores = {f"r{i}": float(i) for i in range(10)}
    assert live_only(scores, live={"r1", "r3", "r9", "r42"}, k=2) == [("r9", 9.0), ("r3", 3.0)]
    assert live_only(scores, live={"r1"}, k=5) == [("r1", 1.0)]


@pytest.mark.parametrize(
    ("scores", "k", "message"), [({"r": 1.0}, 0, "k must be an int >= 1"), ({"r": math.nan}, 1, "must be finite")]
)
def test_live_only_refuses_bad_input(scores: dict[str, float], k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        live_only(scores, live={"r"}, k=k)
