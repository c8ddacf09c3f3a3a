"""DriftMoE's fast experts predict exactly what River's Hoeffding tree predicts, instance by instance, and learn the
same tree (learners/driftmoe/experts.py)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Hashable, Iterator
from typing import Any

import pytest
from river.datasets import synth
from river.tree import HoeffdingTreeClassifier
from river.tree.nodes.leaf import HTLeaf
from river.tree.utils import BranchFactory

from learners.driftmoe import MoEData
from learners.driftmoe.experts import FastHoeffdingTreeClassifier, _FastSplitSuggestions

Instance = tuple[dict[Hashable, Any], Hashable]


def led(n: int) -> Iterator[Instance]:
    """LED with nominal ("0"/"1") attributes and 10 classes, as bench/drift.py feeds it."""
    stream = synth.LEDDrift(seed=3, noise_percentage=0.1, irrelevant_features=True, n_drift_features=3)
    for x, y in stream.take(n):
        yield {name: str(value) for name, value in x.items()}, y


def rbf(n: int) -> Iterator[Instance]:
    """RandomRBF with drifting centroids: numeric attributes (Gaussian splitters), 3 classes."""
    yield from synth.RandomRBFDrift(
        seed_model=3, seed_sample=4, n_classes=3, n_features=10, n_centroids=50, change_speed=0.001
    ).take(n)


def mixed(n: int) -> Iterator[Instance]:
    """Nominal and numeric attributes interleaved in one leaf."""
    for (nominal, a), (numeric, b) in zip(led(n), rbf(n), strict=True):
        x: dict[Hashable, Any] = dict(list(nominal.items())[:6])
        x.update({f"n{name}": value for name, value in numeric.items()})
        yield x, (int(str(a)) % 3 + int(str(b))) % 4


def many_valued(n: int) -> Iterator[Instance]:
    """Agrawal with its three categorical attributes as nominal ones of 5, 20 and 9 values (split suggestions over
    more than two values) beside its numeric ones."""
    for x, y in synth.Agrawal(classification_function=2, seed=5).take(n):
        yield {name: str(value) if name in ("elevel", "car", "zipcode") else value for name, value in x.items()}, y


@pytest.mark.parametrize(
    ("stream", "n", "delta"),
    [(led, 4000, 0.5), (rbf, 3000, 0.01), (mixed, 3000, 0.5), (many_valued, 3000, 0.5)],
    ids=["led-nominal", "rbf-numeric", "mixed", "many-valued-nominal"],
)
@pytest.mark.parametrize("leaf_prediction", ["nba", "nb", "mc"])
@pytest.mark.parametrize("binary_split", [False, True], ids=["multiway", "binary"])
def test_fast_expert_predicts_what_river_predicts(
    stream: Any, n: int, delta: float, leaf_prediction: str, binary_split: bool
) -> None:
    """Same probabilities bit for bit (so the same ranking and ties) before, across and after splits, so the same
    splits. A larger delta than DriftMoE's 1e-7 makes the trees split within a few thousand instances."""
    params: dict[str, Any] = {
        "grace_period": 50,
        "delta": delta,
        "leaf_prediction": leaf_prediction,
        "binary_split": binary_split,
    }
    fast, river = FastHoeffdingTreeClassifier(**params), HoeffdingTreeClassifier(**params)
    for index, (x, y) in enumerate(stream(n)):
        expected = river.predict_proba_one(x)
        assert fast.predict_proba_one(x) == expected, f"instance {index}"
        assert fast.predict_proba_one(x) == expected, f"instance {index}, asked twice"
        fast.learn_one(x, y)
        river.learn_one(x, y)
    assert river.n_nodes > 1, "the stream should make the tree split"
    assert (fast.n_nodes, fast.height, fast.n_active_leaves) == (river.n_nodes, river.height, river.n_active_leaves)
    assert [leaf_state(leaf) for leaf in fast._find_leaves()] == [leaf_state(leaf) for leaf in river._find_leaves()]


@pytest.mark.parametrize(
    ("stream", "n"), [(led, 3000), (mixed, 2000), (many_valued, 2000)], ids=["led", "mixed", "many-valued"]
)
@pytest.mark.parametrize("leaf_prediction", ["nba", "nb", "mc"])
def test_fast_expert_predict_one_is_rivers(stream: Any, n: int, leaf_prediction: str) -> None:
    """``predict_one`` (which reads the winner off the log-likelihoods or the counts when one class is clearly ahead)
    names River's class on every instance, ties included: River takes the first class in sorted order among those
    of highest probability, and the stream must give such ties for the check to mean anything."""
    params: dict[str, Any] = {"grace_period": 50, "delta": 0.5, "leaf_prediction": leaf_prediction}
    fast, river = FastHoeffdingTreeClassifier(**params), HoeffdingTreeClassifier(**params)
    ties = 0
    for index, (x, y) in enumerate(stream(n)):
        assert fast.predict_one(x) == river.predict_one(x), f"instance {index}"
        proba = river.predict_proba_one(x)
        ties += list(proba.values()).count(max(proba.values(), default=0.0)) > 1
        fast.learn_one(x, y)
        river.learn_one(x, y)
    assert ties > 0, "the stream should give ties between the most probable classes"
    assert [leaf_state(leaf) for leaf in fast._find_leaves()] == [leaf_state(leaf) for leaf in river._find_leaves()]


def leaf_state(leaf: Any) -> tuple[Any, ...]:
    """A leaf's depth, its class counts and each splitter's classes, in their orders: the order a leaf's counts are
    summed in when it predicts, and the order a split's children inherit them in."""
    splitter_classes = {feature: list(s._att_dist_per_class) for feature, s in leaf.splitters.items()}
    return leaf.depth, list(leaf.stats.items()), splitter_classes


@pytest.mark.parametrize("stream", [led, many_valued, rbf], ids=["two-valued", "many-valued", "numeric"])
@pytest.mark.parametrize("binary_split", [False, True])
def test_fast_split_suggestions_are_rivers(stream: Any, binary_split: bool) -> None:
    """Every 97 instances of a leaf that never splits, the suggestions (merit, feature, split value, children's
    class counts in their order) are those River's splitters make, nominal and numeric (Gaussian) ones."""
    tree = FastHoeffdingTreeClassifier(grace_period=10**9, binary_split=binary_split)
    criterion = tree._new_split_criterion()

    def fields(suggestions: list[BranchFactory]) -> list[tuple[Any, ...]]:
        return [tuple(getattr(s, field.name) for field in dataclasses.fields(s)) for s in suggestions]

    for index, (x, y) in enumerate(stream(1000)):
        tree.learn_one(x, y)
        if index % 97 == 0:
            leaf: Any = tree._root
            fast = _FastSplitSuggestions.best_split_suggestions(leaf, criterion, tree)
            assert fields(fast) == fields(HTLeaf.best_split_suggestions(leaf, criterion, tree)), f"instance {index}"


def test_fast_expert_survives_pickling_and_copies_midstream() -> None:
    """Checkpoints pickle and deep-copy the experts; a restored expert goes on predicting as River's does."""
    fast, river = FastHoeffdingTreeClassifier(grace_period=50, delta=0.5), HoeffdingTreeClassifier(grace_period=50)
    river.delta = 0.5
    data = list(led(3000))
    for x, y in data[:1500]:
        fast.predict_proba_one(x)
        fast.learn_one(x, y)
        river.learn_one(x, y)
    restored = pickle.loads(pickle.dumps(copy.deepcopy(fast)))
    for x, y in data[1500:]:
        assert restored.predict_proba_one(x) == river.predict_proba_one(x)
        restored.learn_one(x, y)
        river.learn_one(x, y)


def test_fast_expert_pickled_by_an_earlier_version_still_loads() -> None:
    """A checkpoint's leaves made before a cache was added lack its attribute; loaded, they start it empty and go
    on predicting as River's tree does."""
    fast, river = FastHoeffdingTreeClassifier(grace_period=50, delta=0.5), HoeffdingTreeClassifier(grace_period=50)
    river.delta = 0.5
    data = list(led(3000))
    for x, y in data[:1500]:
        fast.predict_proba_one(x)
        river.predict_proba_one(x)
        fast.learn_one(x, y)
        river.learn_one(x, y)
    for leaf in fast._find_leaves():
        del leaf.__dict__["_touched"], leaf.__dict__["_plan"]  # as an earlier version pickled them
        leaf.__dict__["_memo"] = (dict(data[1500][0]), {})  # its memo: (instance, probabilities)
    restored = pickle.loads(pickle.dumps(fast))
    for x, y in data[1500:]:
        assert restored.predict_proba_one(x) == river.predict_proba_one(x)
        restored.learn_one(x, y)
        river.learn_one(x, y)


def test_moe_experts_are_fast_trees_and_accept_river_trees() -> None:
    """The mixture builds fast experts, and still runs with plain River trees as experts (e.g. swapped in)."""
    model = MoEData(n_experts=3, top_k=2, seed=0)
    assert all(isinstance(expert, FastHoeffdingTreeClassifier) for expert in model.experts)
    model.experts[0] = HoeffdingTreeClassifier(grace_period=50, delta=1e-7)
    for x, y in led(300):
        model.predict_one(x)
        model.learn_one(x, y)
    assert model.predict_one(next(led(1))[0]) is not None
