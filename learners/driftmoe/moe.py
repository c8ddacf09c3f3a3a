"""DriftMoE: a neural router that learns online which Hoeffding-tree experts are right where (MoE-Data, MoE-Task).

Router and experts co-train on every instance, test-then-train: the experts' predictions on ``x`` (before they learn
it) give the router's target, the correctness mask; then the routed experts learn ``x``. The router itself learns
from a buffer of ``(router input, mask)`` pairs, one Adam step every ``router_batch_size`` instances.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, deque
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from river.tree import HoeffdingTreeClassifier

from learners._state import check_state, require
from learners.driftmoe.experts import FastHoeffdingTreeClassifier
from learners.driftmoe.features import RouterInputs, validated_features
from learners.driftmoe.router import Router

STATE_FORMAT = 1


class _RoutedMixture:
    """What both variants share: input encoding, the router and its training buffer, label discovery, routing
    statistics, validation and checkpoints. Subclasses say what the experts are, what the router's target is,
    which experts learn an instance, and how routed experts make a prediction."""

    def __init__(
        self,
        *,
        grace_period: int,
        delta: float,
        router_hidden: tuple[int, ...],
        dropout: float,
        lr: float,
        router_batch_size: int,
        share_window: int,
        seed: int,
        **variant_params: Any,
    ) -> None:
        name = type(self).__name__
        require(
            isinstance(grace_period, int) and grace_period >= 1,
            f"{name}: grace_period must be an int >= 1 (got {grace_period!r}); it is the number of instances a "
            "leaf sees between split attempts",
        )
        require(0.0 < delta < 1.0, f"{name}: delta must be in (0, 1) (got {delta!r}); the paper uses 1e-7")
        require(
            len(router_hidden) >= 1 and all(isinstance(size, int) and size >= 1 for size in router_hidden),
            f"{name}: router_hidden must be one or more layer widths >= 1 (got {router_hidden!r}), e.g. (256, 128)",
        )
        require(0.0 <= dropout < 1.0, f"{name}: dropout must be in [0, 1) (got {dropout!r}); the paper uses 0.2")
        require(lr > 0.0 and math.isfinite(lr), f"{name}: lr must be a positive number (got {lr!r}), e.g. 2e-3")
        require(
            isinstance(router_batch_size, int) and router_batch_size >= 1,
            f"{name}: router_batch_size must be an int >= 1 (got {router_batch_size!r}); the paper uses 256",
        )
        require(
            isinstance(share_window, int) and share_window >= 1,
            f"{name}: share_window must be an int >= 1 (got {share_window!r}); it is how many recent routes "
            "expert_shares() counts",
        )
        require(isinstance(seed, int), f"{name}: seed must be an int (got {seed!r})")
        self._params: dict[str, Any] = {
            "grace_period": grace_period,
            "delta": delta,
            "router_hidden": tuple(router_hidden),
            "dropout": dropout,
            "lr": lr,
            "router_batch_size": router_batch_size,
            "share_window": share_window,
            "seed": seed,
            **variant_params,
        }
        self.classes: list[Hashable] = []
        self._label_type: type | None = None
        self.inputs = RouterInputs()
        self.experts: list[HoeffdingTreeClassifier] = [self._new_expert() for _ in range(self._n_outputs())]
        self.router = Router(
            0,
            self._n_outputs(),
            hidden=self._params["router_hidden"],
            dropout=dropout,
            lr=lr,
            generator=torch.Generator().manual_seed(seed),
        )
        self._buffer_inputs: list[np.ndarray] = []
        self._buffer_masks: list[np.ndarray] = []
        self._routes: deque[int] = deque(maxlen=share_window)
        self.n_learned = 0
        self.router_updates = 0
        # the last prediction's features, router state, input vector and logits: learn_one reuses them for the same
        # instance when neither the inputs' scaling and vocabulary nor the router changed in between
        self._scored: tuple[dict[Hashable, Any], tuple[int, int, int], np.ndarray, np.ndarray] | None = None

    # -- what a variant defines --------------------------------------------------------------------------------

    def _n_outputs(self) -> int:
        """How many experts the router scores."""
        raise NotImplementedError

    def _mask(self, x: dict[Hashable, Any], y: Hashable) -> np.ndarray:
        """The router's target for ``(x, y)``, from the experts as they are before learning ``x``."""
        raise NotImplementedError

    def _train_experts(self, x: dict[Hashable, Any], y: Hashable, logits: np.ndarray) -> None:
        """Let the experts that ``logits`` route ``x`` to learn it."""
        raise NotImplementedError

    def _proba(self, x: dict[Hashable, Any], logits: np.ndarray) -> dict[Hashable, float]:
        """Class probabilities over ``self.classes`` (at least one class is known)."""
        raise NotImplementedError

    def _add_class(self, y: Hashable) -> None:
        """A label seen for the first time."""
        self.classes.append(y)

    # -- the River surface ---------------------------------------------------------------------------------------

    def _new_expert(self) -> HoeffdingTreeClassifier:
        """River's Hoeffding tree (other settings at River's defaults), as the drop-in with the same predictions."""
        return FastHoeffdingTreeClassifier(grace_period=self._params["grace_period"], delta=self._params["delta"])

    def _check_label(self, y: Any) -> None:
        name = type(self).__name__
        require(
            y is not None and isinstance(y, Hashable),
            f"{name}: the label must be a hashable class value such as an int, a bool or a str (got {y!r})",
        )
        require(
            not (isinstance(y, float) and not math.isfinite(y)),
            f"{name}: the label is not finite (got {y!r}); drop the instance or fix the label upstream",
        )
        require(
            self._label_type is None or type(y) is self._label_type,
            f"{name}: label {y!r} has type {type(y).__name__} but the labels so far are "
            f"{getattr(self._label_type, '__name__', None)}; send labels of one type (e.g. cast them upstream)",
        )

    def learn_one(self, x: dict[Hashable, Any], y: Hashable) -> None:
        """Test-then-train on one instance: target the router with the experts' correctness, then train the routed
        experts; every ``router_batch_size`` instances the router takes one step on the buffer."""
        x = validated_features(x, type(self).__name__)
        self._check_label(y)
        if not self.classes:
            self._label_type = type(y)
        if y not in self.classes:
            self._add_class(y)
        inputs_changed = self.inputs.learn(x)
        self.router.grow(self.inputs.width, self._n_outputs())
        scored = self._scored
        if not inputs_changed and scored is not None and scored[1] == self._router_state() and scored[0] == x:
            vector, logits = scored[2], scored[3]
        else:
            vector, logits = self._score(x)
        self._buffer_inputs.append(vector)
        self._buffer_masks.append(self._mask(x, y))
        self._train_experts(x, y, logits)
        self._routes.append(int(np.argmax(logits)))
        self.n_learned += 1
        if len(self._buffer_inputs) >= self._params["router_batch_size"]:
            self._fit_router()

    def _fit_router(self) -> None:
        """One pass over the buffer (one Adam step); buffered rows made before the router grew are zero-padded."""
        inputs = np.zeros((len(self._buffer_inputs), self.router.n_inputs), dtype=np.float32)
        masks = np.zeros((len(self._buffer_masks), self.router.n_outputs), dtype=np.float32)
        for row, (vector, mask) in enumerate(zip(self._buffer_inputs, self._buffer_masks, strict=True)):
            inputs[row, : len(vector)] = vector
            masks[row, : len(mask)] = mask
        self.router.fit(inputs, masks)
        self._buffer_inputs.clear()
        self._buffer_masks.clear()
        self.router_updates += 1

    def predict_proba_one(self, x: dict[Hashable, Any]) -> dict[Hashable, float]:
        """Class probabilities (summing to 1) over the classes seen so far; ``{}`` before any learning."""
        x = validated_features(x, type(self).__name__)
        if not self.classes:
            return {}
        return self._proba(x, self._score(x)[1])

    def _router_state(self) -> tuple[int, int, int]:
        """What changes the router's output for a given input vector: its steps and its shape."""
        return self.router_updates, self.router.n_inputs, self.router.n_outputs

    def _score(self, x: dict[Hashable, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The router's input vector and logits for ``x``, remembered for ``learn_one``."""
        vector = self.inputs.transform(x)
        logits = self.router.scores(vector)
        self._scored = (x, self._router_state(), vector, logits)
        return vector, logits

    def predict_one(self, x: dict[Hashable, Any]) -> Hashable | None:
        """The most probable class, or ``None`` before any learning."""
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.__getitem__) if proba else None

    def expert_shares(self) -> dict[int, float]:
        """Fraction of the last ``share_window`` learned instances whose top-1 route was each expert (all zeros
        before any learning): the signal a monitor draws to see the router reassign regions after a drift."""
        routes = list(self._routes)  # one snapshot: a worker reads this while its executor thread learns
        counts = Counter(routes)
        total = len(routes)
        return {expert: counts[expert] / total if total else 0.0 for expert in range(self._n_outputs())}

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of everything learned: trees (River objects), router weights and Adam state,
        scaler moments and vocabularies, the router's buffer, routing history and the generator state."""
        return copy.deepcopy(
            {
                "format": STATE_FORMAT,
                "learner": type(self).__name__,
                "params": self._params,
                "classes": self.classes,
                "label_type": self._label_type,
                "inputs": self.inputs,
                "experts": self.experts,
                "router": self.router.state_dict(),
                "buffer": (self._buffer_inputs, self._buffer_masks),
                "routes": list(self._routes),
                "n_learned": self.n_learned,
                "router_updates": self.router_updates,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a learner built with the same parameters."""
        check_state(state, type(self).__name__, STATE_FORMAT, self._params)
        state = copy.deepcopy(state)
        self.classes = state["classes"]
        self._label_type = state["label_type"]
        self.inputs = state["inputs"]
        self.experts = state["experts"]
        self.router.load_state_dict(state["router"])
        self._buffer_inputs, self._buffer_masks = state["buffer"]
        self._routes = deque(state["routes"], maxlen=self._params["share_window"])
        self.n_learned = state["n_learned"]
        self.router_updates = state["router_updates"]
        self._scored = None


def _positive_proba(proba: dict[Hashable, float]) -> float:
    """A one-vs-rest expert's probability of its class; 0.5 (no opinion) while it has learned nothing."""
    return proba.get(True, 0.0) if proba else 0.5


class MoEData(_RoutedMixture):
    """DriftMoE, data-driven variant: ``n_experts`` Hoeffding trees specialise on the regions the router sends them.

    The top-1 routed expert predicts; the ``top_k`` routed experts learn each instance. The router's target is the
    multi-hot mask of experts whose prediction was right (one-hot on the expert that gave the true class the most
    probability when none was), so it learns which experts to trust where, and re-learns it after a drift.

    Parameters
    ----------
    n_experts
        Number of Hoeffding-tree experts ``E``.
    top_k
        How many routed experts learn each instance.
    grace_period, delta
        The experts' ``HoeffdingTreeClassifier`` settings.
    router_hidden
        Hidden widths of the router MLP (``d -> 256 -> 128 -> E`` by default).
    dropout, lr
        Router dropout (training only) and Adam learning rate.
    router_batch_size
        Instances buffered per router step.
    share_window
        Recent instances counted by ``expert_shares()``.
    seed
        Seeds the router's ``torch.Generator`` (initial weights, dropout): same seed and stream, same predictions.

    Examples
    --------
    >>> from river.datasets import synth
    >>> model = MoEData(seed=1)
    >>> correct = 0
    >>> for x, y in synth.SEA(variant=0, seed=1).take(600):
    ...     correct += model.predict_one(x) == y
    ...     model.learn_one(x, y)
    >>> correct > 480, model.router_updates
    (True, 2)
    >>> round(sum(model.expert_shares().values()), 6)
    1.0

    References
    ----------
    Aspis, M., Cavalcante, S. A., Vieira, R. G., Tenreiro de Magalhães, A. (2025). DriftMoE: A Mixture of Experts
    Approach to Handle Concept Drifts. arXiv:2507.18464.
    """

    def __init__(
        self,
        n_experts: int = 12,
        top_k: int = 3,
        *,
        grace_period: int = 50,
        delta: float = 1e-7,
        router_hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.2,
        lr: float = 2e-3,
        router_batch_size: int = 256,
        share_window: int = 1000,
        seed: int = 0,
    ) -> None:
        require(
            isinstance(n_experts, int) and n_experts >= 1,
            f"MoEData: n_experts must be an int >= 1 (got {n_experts!r}); the paper uses 12",
        )
        require(
            isinstance(top_k, int) and 1 <= top_k <= n_experts,
            f"MoEData: top_k must be an int between 1 and n_experts={n_experts} (got {top_k!r}); the paper uses 3",
        )
        self.n_experts = n_experts
        self.top_k = top_k
        super().__init__(
            grace_period=grace_period,
            delta=delta,
            router_hidden=router_hidden,
            dropout=dropout,
            lr=lr,
            router_batch_size=router_batch_size,
            share_window=share_window,
            seed=seed,
            n_experts=n_experts,
            top_k=top_k,
        )

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small settings for the contract tests."""
        return {"n_experts": 4, "top_k": 2, "grace_period": 20, "router_hidden": (16, 8), "router_batch_size": 32}

    def _n_outputs(self) -> int:
        return self.n_experts

    def _mask(self, x: dict[Hashable, Any], y: Hashable) -> np.ndarray:
        mask = np.array([expert.predict_one(x) == y for expert in self.experts], dtype=np.float32)
        if not mask.any():
            mask[int(np.argmax([expert.predict_proba_one(x).get(y, 0.0) for expert in self.experts]))] = 1.0
        return mask

    def _train_experts(self, x: dict[Hashable, Any], y: Hashable, logits: np.ndarray) -> None:
        for expert in np.argsort(-logits, kind="stable")[: self.top_k]:
            self.experts[expert].learn_one(x, y)

    def _proba(self, x: dict[Hashable, Any], logits: np.ndarray) -> dict[Hashable, float]:
        proba = self.experts[int(np.argmax(logits))].predict_proba_one(x)
        total = sum(proba.get(label, 0.0) for label in self.classes)
        if total <= 0.0:  # the routed expert has learned nothing yet
            return {label: 1.0 / len(self.classes) for label in self.classes}
        return {label: proba.get(label, 0.0) / total for label in self.classes}


class MoETask(_RoutedMixture):
    """DriftMoE, task-driven variant: one one-vs-rest Hoeffding tree per class, discovered online.

    The router scores classes: its target is one-hot on the true class (the correctness mask of one-vs-rest
    experts: only the true class's expert can "predict y", and when it does not, it is still the expert giving the
    true class the most probability). Every expert learns every instance (positives and negatives). The prediction
    combines both: ``P(c | x) ∝ sigmoid(router_c(x)) * P_c(c | x)``, where ``P_c`` is expert ``c``'s probability
    of its class (0.5 while it has learned nothing). Unlike the authors' release, the experts therefore shape the
    output: the router says which classes are plausible here, the experts refine it.

    Parameters
    ----------
    grace_period, delta
        The experts' ``HoeffdingTreeClassifier`` settings.
    router_hidden
        Hidden widths of the router MLP (``d -> 256 -> 128 -> n_classes`` by default).
    dropout, lr
        Router dropout (training only) and Adam learning rate.
    router_batch_size
        Instances buffered per router step.
    share_window
        Recent instances counted by ``expert_shares()`` (expert ``i`` is the expert of ``classes[i]``).
    seed
        Seeds the router's ``torch.Generator``.

    Examples
    --------
    >>> from river.datasets import synth
    >>> model = MoETask(seed=1)
    >>> correct = 0
    >>> for x, y in synth.SEA(variant=0, seed=1).take(600):
    ...     correct += model.predict_one(x) == y
    ...     model.learn_one(x, y)
    >>> correct > 480, sorted(model.classes)
    (True, [False, True])

    References
    ----------
    Aspis, M., Cavalcante, S. A., Vieira, R. G., Tenreiro de Magalhães, A. (2025). DriftMoE: A Mixture of Experts
    Approach to Handle Concept Drifts. arXiv:2507.18464.
    """

    def __init__(
        self,
        *,
        grace_period: int = 50,
        delta: float = 1e-7,
        router_hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.2,
        lr: float = 2e-3,
        router_batch_size: int = 256,
        share_window: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(
            grace_period=grace_period,
            delta=delta,
            router_hidden=router_hidden,
            dropout=dropout,
            lr=lr,
            router_batch_size=router_batch_size,
            share_window=share_window,
            seed=seed,
        )

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small settings for the contract tests."""
        return {"grace_period": 20, "router_hidden": (16, 8), "router_batch_size": 32}

    def _n_outputs(self) -> int:
        return len(self.classes)

    def _add_class(self, y: Hashable) -> None:
        super()._add_class(y)
        self.experts.append(self._new_expert())

    def _mask(self, x: dict[Hashable, Any], y: Hashable) -> np.ndarray:
        mask = np.zeros(len(self.classes), dtype=np.float32)
        mask[self.classes.index(y)] = 1.0
        return mask

    def _train_experts(self, x: dict[Hashable, Any], y: Hashable, logits: np.ndarray) -> None:
        for label, expert in zip(self.classes, self.experts, strict=True):
            expert.learn_one(x, label == y)

    def _proba(self, x: dict[Hashable, Any], logits: np.ndarray) -> dict[Hashable, float]:
        router = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        experts = np.array([_positive_proba(expert.predict_proba_one(x)) for expert in self.experts])
        scores = router * experts
        if scores.sum() <= 0.0:  # every expert rules its class out: fall back on the router alone
            scores = router
        scores = scores / scores.sum()
        return dict(zip(self.classes, scores.tolist(), strict=True))
