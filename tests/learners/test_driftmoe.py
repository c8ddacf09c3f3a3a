"""DriftMoE's own behaviour (the shared contract is in test_contract.py): accuracy and recovery on SEA, the
router's mini-batch schedule and growth, MoE-Task's experts shaping the output, routing shares, categories."""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest
import torch
from river.datasets import synth
from river.tree import HoeffdingTreeClassifier

from learners.driftmoe import MoEData, MoETask
from learners.driftmoe.router import Router


def hits(model: Any, stream: Any) -> list[bool]:
    """Prequential (test-then-train) correctness, instance by instance."""
    out = []
    for x, y in stream:
        out.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    return out


def test_moe_data_is_accurate_on_sea() -> None:
    correct = hits(MoEData(seed=0), synth.SEA(variant=0, seed=7).take(20_000))
    assert np.mean(correct) > 0.9  # measured 0.969
    assert np.mean(correct[-5000:]) > 0.95


def test_moe_data_recovers_after_an_abrupt_drift() -> None:
    stream = synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, seed=1),
        drift_stream=synth.SEA(variant=3, seed=2),
        position=4000,
        width=50,  # abrupt at this scale (River's sigmoid overflows for much smaller widths)
        seed=3,
    )
    correct = hits(MoEData(seed=0), stream.take(9000))
    before, after, recovered = np.mean(correct[3000:4000]), np.mean(correct[4000:4250]), np.mean(correct[8000:])
    assert after < before - 0.03, "the drift should hurt before the mixture adapts"  # measured 0.93 -> 0.87
    assert recovered > 0.93 and recovered > after + 0.05  # measured 0.96


@pytest.mark.parametrize("learner", [MoEData, MoETask], ids=lambda learner: learner.__name__)
def test_router_takes_one_step_per_batch(learner: type[Any]) -> None:
    model = learner(router_batch_size=256, router_hidden=(16, 8), seed=0)
    stream = list(synth.SEA(variant=0, seed=1).take(2 * 256 + 10))
    weights = model.router.params[2].detach().clone()
    for x, y in stream[:255]:
        model.learn_one(x, y)
    assert model.router_updates == 0 and torch.equal(model.router.params[2], weights)
    model.learn_one(*stream[255])
    assert model.router_updates == 1 and not torch.equal(model.router.params[2], weights)
    for x, y in stream[256:]:
        model.learn_one(x, y)
    assert model.router_updates == 2
    assert len(model.state_dict()["buffer"][0]) == 10


def test_moe_task_experts_shape_the_prediction() -> None:
    model = MoETask(seed=0)
    stream = list(synth.SEA(variant=0, seed=1).take(1000))
    for x, y in stream:
        model.learn_one(x, y)
    x = stream[0][0]
    predicted = model.predict_one(x)
    other = next(label for label in model.classes if label != predicted)
    for label, claims in [(predicted, False), (other, True)]:  # the predicted class's expert now rules it out
        expert = HoeffdingTreeClassifier()
        expert.learn_one(x, claims)
        model.experts[model.classes.index(label)] = expert
    assert model.predict_one(x) == other


@pytest.mark.parametrize("learner", [MoEData, MoETask], ids=lambda learner: learner.__name__)
def test_expert_shares_sum_to_one(learner: type[Any]) -> None:
    model = learner(**learner._unit_test_params())
    assert sum(model.expert_shares().values()) == 0.0
    for x, y in synth.SEA(variant=0, seed=1).take(300):
        model.learn_one(x, y)
    shares = model.expert_shares()
    assert sorted(shares) == list(range(len(model.experts)))
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("learner", [MoEData, MoETask], ids=lambda learner: learner.__name__)
def test_categorical_features_drive_the_prediction(learner: type[Any]) -> None:
    rng = random.Random(0)
    colours = {"red": "stop", "amber": "wait", "green": "go"}
    stream: list[tuple[dict[Hashable, Any], str]] = []
    for _ in range(1500):
        colour = rng.choice(sorted(colours))
        stream.append(({"colour": colour, "noise": rng.gauss(0, 1)}, colours[colour]))
    model = learner(**learner._unit_test_params())
    assert np.mean(hits(model, stream)[500:]) > 0.95
    assert model.router.n_inputs == 4  # noise + three colours
    assert model.predict_one({"colour": "blue", "noise": 0.0}) in colours.values()


def test_router_growth_keeps_its_function_on_past_inputs() -> None:
    router = Router(3, 2, hidden=(8, 4), dropout=0.2, lr=1e-2, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    router.fit(rng.normal(size=(16, 3)).astype(np.float32), (rng.random((16, 2)) > 0.5).astype(np.float32))
    old = rng.normal(size=3).astype(np.float32)
    before = router.scores(old)
    router.grow(n_inputs=5, n_outputs=3)
    after = router.scores(np.concatenate([old, np.zeros(2, dtype=np.float32)]))
    np.testing.assert_allclose(after[:2], before, rtol=1e-6, atol=1e-6)
    assert router.optimizer.state_dict()["state"][0]["exp_avg"].shape == (8, 5)
    router.fit(rng.normal(size=(16, 5)).astype(np.float32), np.ones((16, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_experts": 0}, "n_experts must be"),
        ({"top_k": 13}, "top_k must be an int between 1 and n_experts=12"),
        ({"grace_period": 0}, "grace_period"),
        ({"delta": 1.5}, "delta"),
        ({"dropout": 1.0}, "dropout"),
        ({"lr": 0.0}, "lr"),
        ({"router_batch_size": 0}, "router_batch_size"),
        ({"router_hidden": ()}, "router_hidden"),
        ({"share_window": 0}, "share_window"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MoEData(**params)


@pytest.mark.parametrize("learner", [MoEData, MoETask], ids=lambda learner: learner.__name__)
def test_predicting_first_does_not_change_what_is_learned(learner: type[Any]) -> None:
    """learn_one reuses the router's scores of the last instance scored when it is the same instance and nothing
    that shapes them changed (all-categorical instances with known categories, no router step since): the learner
    ends in the same state as one that recomputes them every time, through router steps, growth, new categories
    and instances learned twice in a row."""
    rng = random.Random(1)
    values = [f"v{k}" for k in range(4)]
    stream: list[tuple[dict[Hashable, Any], int]] = [
        ({f"f{j}": rng.choice(values[: 2 + i // 400]) for j in range(5)}, rng.randrange(3)) for i in range(900)
    ]
    stream += [({**x, "n": rng.gauss(0, 1)}, y) for x, y in stream[:300]]  # then a numeric feature too
    # some learned twice in a row, predicted only the first time
    steps = [(x, y, again) for x, y in stream for again in [False, True][: 1 + (rng.random() < 0.2)]]
    predicting, learning = learner(**learner._unit_test_params()), learner(**learner._unit_test_params())
    for x, y, again in steps:
        if not again:
            predicting.predict_one(x)
        predicting.learn_one(x, y)
        learning._scored = None  # nothing remembered: every score computed afresh
        learning.learn_one(x, y)
        assert predicting._scored is not None and learning._scored is not None
        assert np.array_equal(predicting._scored[3], learning._scored[3])  # the logits each learn_one routed by
    assert predicting.router_updates == learning.router_updates > 0
    assert predicting.router.n_inputs == learning.router.n_inputs == 4 * 5 + 1
    for mine, theirs in zip(predicting.router.params, learning.router.params, strict=True):
        assert torch.equal(mine, theirs)
    assert list(predicting._routes) == list(learning._routes)
