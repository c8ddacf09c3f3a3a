"""The River-style contract every classifier in learners/ must keep (STYLE.md, DESIGN.md §7).

Like River's ``river/checks``, one set of checks runs over every learner listed in ``LEARNERS``, each built with its
``_unit_test_params()``. A new learner with the ``learn_one``/``predict_one``/``predict_proba_one``/``state_dict``
surface joins by being added to the list. Not listed, on purpose: ``learners.metrics.KappaM`` (a metric) and the
stream-x agents (an RL surface: ``act``/``observe``, tested in test_streamx*.py).
"""

from __future__ import annotations

import inspect
import math
import pickle
import random
from collections.abc import Hashable
from typing import Any

import pytest

from learners.ctr import EmbeddingCTR
from learners.driftmoe import MoEData, MoETask

LEARNERS: list[type[Any]] = [MoEData, MoETask, EmbeddingCTR]

Stream = list[tuple[dict[Hashable, Any], int]]


def synthetic_stream(n: int, seed: int = 0) -> Stream:
    """Three classes from two numeric features and a categorical one, with 5% label noise."""
    rng = random.Random(seed)
    stream: Stream = []
    for _ in range(n):
        x: dict[Hashable, Any] = {"a": rng.uniform(0, 10), "b": rng.gauss(0, 1), "colour": rng.choice("rgb")}
        y = int(x["a"] > 5) + int(x["colour"] == "b")
        stream.append((x, rng.randrange(3) if rng.random() < 0.05 else y))
    return stream


def build(learner: type[Any], **overrides: Any) -> Any:
    """The learner with its unit-test parameters."""
    return learner(**{**learner._unit_test_params(), **overrides})


def prequential(model: Any, stream: Stream) -> list[tuple[Any, dict[Hashable, float]]]:
    """Test-then-train over ``stream``; the predictions and probabilities made before each learn."""
    outputs = []
    for x, y in stream:
        outputs.append((model.predict_one(x), model.predict_proba_one(x)))
        model.learn_one(x, y)
    return outputs


parametrize = pytest.mark.parametrize("learner", LEARNERS, ids=lambda learner: learner.__name__)


@parametrize
def test_learns_and_predicts_known_classes(learner: type[Any]) -> None:
    stream = synthetic_stream(400)
    outputs = prequential(build(learner), stream)
    seen: set[Hashable] = set()
    for (prediction, _), (_, y) in zip(outputs, stream, strict=True):
        assert prediction is None if not seen else prediction in seen
        seen.add(y)
    accuracy = sum(pred == y for (pred, _), (_, y) in zip(outputs[200:], stream[200:], strict=True)) / 200
    assert accuracy > 0.5, f"{learner.__name__} learns nothing on an easy stream (accuracy {accuracy:.2f})"


@parametrize
def test_predicts_nothing_before_learning(learner: type[Any]) -> None:
    model = build(learner)
    x = synthetic_stream(1)[0][0]
    assert model.predict_one(x) is None
    assert model.predict_proba_one(x) == {}


@parametrize
def test_probabilities_sum_to_one(learner: type[Any]) -> None:
    outputs = prequential(build(learner), synthetic_stream(300))
    for _, proba in outputs[1:]:
        assert math.isclose(sum(proba.values()), 1.0, rel_tol=1e-6)
        assert all(0.0 <= p <= 1.0 for p in proba.values())


@parametrize
def test_state_dict_round_trip_continues_identically(learner: type[Any]) -> None:
    stream = synthetic_stream(600, seed=3)
    original = build(learner)
    prequential(original, stream[:300])
    state = pickle.loads(pickle.dumps(original.state_dict()))  # what a checkpoint does to it
    restored = build(learner)
    restored.load_state_dict(state)
    assert prequential(restored, stream[300:]) == prequential(original, stream[300:])
    assert restored.state_dict()["n_learned"] == 600


@parametrize
def test_state_dict_is_a_snapshot(learner: type[Any]) -> None:
    stream = synthetic_stream(400, seed=4)
    model = build(learner)
    prequential(model, stream[:200])
    state = model.state_dict()
    expected = prequential(build_from(learner, state), stream[200:])
    prequential(model, stream[200:])  # learning on must not reach into the saved state
    assert prequential(build_from(learner, state), stream[200:]) == expected


def build_from(learner: type[Any], state: dict[str, Any]) -> Any:
    """A fresh learner loaded with ``state``."""
    model = build(learner)
    model.load_state_dict(state)
    return model


@parametrize
def test_same_seed_same_predictions(learner: type[Any]) -> None:
    if "seed" not in inspect.signature(learner).parameters:
        pytest.skip(f"{learner.__name__} takes no seed")
    stream = synthetic_stream(400, seed=5)
    assert prequential(build(learner, seed=7), stream) == prequential(build(learner, seed=7), stream)


@parametrize
def test_unseen_features_at_predict_time(learner: type[Any]) -> None:
    model = build(learner)
    prequential(model, synthetic_stream(200))
    for x in ({"a": 1.0, "never_seen": 3.0}, {"colour": "purple"}, {}, {"a": None, "b": 0.5, "colour": "r"}):
        proba = model.predict_proba_one(x)
        assert math.isclose(sum(proba.values()), 1.0, rel_tol=1e-6)
        assert model.predict_one(x) in {0, 1, 2}


@parametrize
@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0, 2.0], 0, "must be a dict"),
        ({"a": float("nan")}, 0, "not finite"),
        ({"a": float("inf")}, 0, "not finite"),
        ({"a": [1, 2]}, 0, "must be a number, a string or None"),
        ({"a": 1.0}, "zero", "labels so far are int"),
        ({"a": 1.0}, None, "label must be"),
    ],
    ids=["not-a-dict", "nan", "inf", "list-value", "label-type", "no-label"],
)
def test_bad_input_raises_value_error(learner: type[Any], x: Any, y: Any, message: str) -> None:
    model = build(learner)
    model.learn_one({"a": 1.0, "colour": "r"}, 1)
    with pytest.raises(ValueError, match=message):
        model.learn_one(x, y)
    assert model.state_dict()["n_learned"] == 1, "a refused instance must leave the learner untouched"


@parametrize
def test_bad_predict_input_raises_value_error(learner: type[Any]) -> None:
    with pytest.raises(ValueError, match="not finite"):
        build(learner).predict_one({"a": float("nan")})


@parametrize
def test_load_state_dict_refuses_a_foreign_state(learner: type[Any]) -> None:
    model = build(learner)
    with pytest.raises(ValueError, match="state"):
        model.load_state_dict({"format": 1, "learner": "SomethingElse"})
    other = build(learner, seed=99)
    with pytest.raises(ValueError, match="parameters"):
        model.load_state_dict(other.state_dict())
