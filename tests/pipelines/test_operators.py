"""Operator adapters in-process: prequential order, rejections, state round trips, serving swaps."""

from __future__ import annotations

import json
import pickle

import pytest

from connectors.messages import Event, Interaction
from pipelines.operators import (
    LearnerOperator,
    Record,
    RecordRejected,
    RelayOperator,
    Scoreboard,
    ServingOperator,
    Source,
    build_operator,
    features_and_label,
)
from pipelines.spec import PipelineSpec, parse_spec
from tests.pipelines import support


def spec(**operator: object) -> PipelineSpec:
    return parse_spec(
        {
            "name": "unit",
            "input": {"topics": ["t"], "schema": "event/v1"},
            "operator": {"use": "river.linear_model:LogisticRegression", **operator},
            "monitor": {"detector": "adwin", "metrics": ["accuracy", "kappa_m"]},
        }
    )


def record(i: int, label: object = True, **features: float) -> Record:
    event = Event(key=f"k{i}", features=features or {"x": float(i % 2)}, label=label)
    return Record(event, Source(b"raw", b"k", "t", 0, i, 1000 * i))


def test_learner_predicts_before_it_learns() -> None:
    op = LearnerOperator.from_spec(spec())
    first = op.process([record(0, label=True, x=1.0)])
    # the very first prediction is made by an untrained model: it cannot have seen its own label
    untrained = LearnerOperator.from_spec(spec())
    assert json.loads(first.outputs[0].value)["prediction"] == untrained.learner.predict_one({"x": 1.0})
    assert op.learned == 1 and op.scoreboard.labelled == 1
    batch = [record(i, label=bool(i % 2), x=float(i % 2)) for i in range(1, 400)]
    result = op.process(batch)
    assert [json.loads(o.value)["source_offset"] for o in result.outputs] == list(range(1, 400))
    assert op.scores()["accuracy"] > 0.9 and "kappa_m" in op.scores()


def test_learner_state_round_trip_resumes_identically() -> None:
    op = LearnerOperator.from_spec(spec())
    batch = [record(i, label=bool(i % 3 == 0), x=float(i % 3), y=float(i % 5)) for i in range(300)]
    op.process(batch[:150])
    resumed = LearnerOperator.from_spec(spec())
    resumed.load_state(pickle.loads(pickle.dumps(op.state())))
    a = op.process(batch[150:])
    b = resumed.process(batch[150:])
    assert [json.loads(o.value)["prediction"] for o in a.outputs] == [
        json.loads(o.value)["prediction"] for o in b.outputs
    ]
    assert op.learner.weights == resumed.learner.weights
    assert op.scores() == resumed.scores()


def test_unlabelled_records_are_rejected_in_learn_mode() -> None:
    op = LearnerOperator.from_spec(spec())
    with pytest.raises(RecordRejected) as exc:
        op.validate(Event(features={"x": 1.0}))
    assert exc.value.reason == "missing_label"


def test_model_errors_become_rejections_and_the_batch_goes_on() -> None:
    op = LearnerOperator.from_spec(spec(use="tests.pipelines.support:PickyLearner"))
    result = op.process([record(0, x=1.0), record(1, poison=1.0), record(2, x=1.0)])
    assert [r.source.offset for r in result.rejected] == [1]
    assert result.rejected[0].reason == "operator_error" and "poison" in result.rejected[0].detail
    assert len(result.outputs) == 2 and op.learned == 2


def test_serving_swaps_models_and_refuses_to_run_without_one() -> None:
    op = ServingOperator.from_spec(
        parse_spec(
            {
                "name": "serve",
                "input": {"topics": ["t"], "schema": "event/v1"},
                "operator": {"mode": "serve"},
                "registry": {"model": "m", "follow": "champion"},
            }
        )
    )
    with pytest.raises(RuntimeError, match="no model"):
        op.process([record(0)])
    op.swap(support.ConstantModel("A"), "1")
    first = json.loads(op.process([record(0)]).outputs[0].value)
    op.swap(support.ConstantModel("B"), "2")
    second = json.loads(op.process([record(1)]).outputs[0].value)
    assert (first["prediction"], first["model_version"]) == ("A", "1")
    assert (second["prediction"], second["model_version"]) == ("B", "2")


def test_relay_forwards_bytes_and_build_operator_picks_by_mode() -> None:
    relay_spec = parse_spec(
        {"name": "r", "input": {"topics": ["t"], "schema": "event/v1"}, "operator": {"mode": "relay"}}
    )
    op = build_operator(relay_spec)
    assert isinstance(op, RelayOperator)
    out = op.process([record(0), record(1)]).outputs
    assert [o.value for o in out] == [b"raw", b"raw"] and [o.source_timestamp_ms for o in out] == [0, 1000]


def test_features_and_label_for_other_schemas() -> None:
    message = Interaction(user="u", streamer="s", kind="click", value=2.0, context={"hour": 3, "clicked": 1})
    features, label = features_and_label(message, "clicked")
    assert label == 1 and features["hour"] == 3 and features["kind"] == "click" and "clicked" not in features


def test_scoreboard_counts_drift_on_a_changing_error_rate() -> None:
    board = Scoreboard.from_spec(spec())
    for i in range(3000):
        board.update(True, i < 1500, None)
    assert board.drifts >= 1 and board.monitor is not None and board.monitor.alarms[0] > 1500
