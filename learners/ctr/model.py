"""An online CTR / watch-time learner over sparse ids: a factorisation machine whose embeddings live in a
collisionless :class:`~learners.ctr.table.EmbeddingTable`, with a linear softmax head.

Every string-valued feature is a sparse id, keyed ``(feature, value)`` in the table; every numeric feature is a
dense input, standardised online. An id without a row (not admitted yet, or expired) takes its feature's cold row,
keyed ``(feature, None)``: one row per feature, trained on the instances whose id had none, so a fresh streamer
scores like fresh streamers have done rather than like a zero vector (which would rank every unknown id above the
known ones whenever the known rows lean negative, as clicks are rare). With ``v_i`` the rows of the ids present,
``S = Σ v_i`` and the FM's pairwise term ``F = ½ (S² - Σ v_i²)`` (elementwise, so ``Σ F`` is
``Σ_{i<j} <v_i, v_j>``), the head scores class ``c`` as ``W_c · [1, S, F, dense]``: per-class weights on the pooled
embedding (first-order effects), on each coordinate of the pairwise interactions (a weighted FM) and on the dense
inputs. Head and rows train with Adagrad on the (weighted) log-loss, one instance at a time.

Watch time: ``learn_one(x, True, w=seconds)`` on clicks weights each click by its watch time (YouTube's weighted
logistic regression), so the odds ``p / (1 - p)`` estimate the expected watch time of an impression.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from learners._state import check_state, require
from learners.ctr.table import EmbeddingTable, Vector
from learners.driftmoe.features import RouterInputs, validated_features

STATE_FORMAT = 1
_EPS = 1e-8


class EmbeddingCTR:
    """Online CTR learner: a factorisation machine over raw-id embeddings (frequency filter, expiry, incremental
    sync to a serving replica) and standardised dense features, with River's ``learn_one``/``predict_*_one``.

    Parameters
    ----------
    dim
        Embedding width.
    min_count, expire_after
        The table's admission threshold (sightings in ``learn_one``) and idle expiry in seconds of event time
        (``None``: never expire). See :class:`~learners.ctr.table.EmbeddingTable`.
    lr
        Adagrad learning rate of the rows and of the head.
    init_scale
        Standard deviation of new rows.
    seed
        Seeds the table's row initialisation.

    Examples
    --------
    Users 0-9 click streamer ``a`` when their id is even, streamer ``b`` when it is odd:

    >>> import random
    >>> from river import metrics
    >>> rng = random.Random(1)
    >>> model, replica, auc = EmbeddingCTR(min_count=2, seed=1), EmbeddingCTR(min_count=2, seed=1), metrics.ROCAUC()
    >>> for t in range(3000):
    ...     user, streamer = rng.randrange(10), rng.choice("ab")
    ...     x = {"user": str(user), "streamer": streamer, "hour": (t // 100) % 24}
    ...     y = rng.random() < (0.8 if (user % 2 == 0) == (streamer == "a") else 0.1)
    ...     auc.update(y, model.predict_proba_one(x).get(True, 0.0))
    ...     model.learn_one(x, y, t=float(t))
    >>> print(f"AUC {auc.get():.2f}")
    AUC 0.85
    >>> model.sync_to(replica, dense=True)
    >>> replica.predict_proba_one(x) == model.predict_proba_one(x)
    True

    References
    ----------
    Rendle, S. (2010). Factorization Machines. ICDM.
    Liu, Z., Zou, L., Zou, X., et al. (2022). Monolith: Real Time Recommendation System With Collisionless
    Embedding Table. arXiv:2209.07663.
    Covington, P., Adams, J., Sargin, E. (2016). Deep Neural Networks for YouTube Recommendations. RecSys.
    """

    def __init__(
        self,
        dim: int = 8,
        *,
        min_count: int = 2,
        expire_after: float | None = None,
        lr: float = 0.05,
        init_scale: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.table = EmbeddingTable(
            dim, min_count=min_count, expire_after=expire_after, lr=lr, init_scale=init_scale, seed=seed
        )
        self._params = dict(self.table.params)
        self.classes: list[Hashable] = []
        self._label_type: type | None = None
        self.dense = RouterInputs()  # numeric features only: standardised, one column each
        self.head = np.zeros((0, 1 + 2 * dim))  # class x [bias, S, F, dense...]
        self._head_accum = np.zeros_like(self.head)
        self.n_learned = 0

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small settings for the contract tests."""
        return {"dim": 4, "min_count": 2, "expire_after": 1000.0, "lr": 0.1}

    # -- inputs --------------------------------------------------------------------------------------------------

    def _split(self, x: Any) -> tuple[list[tuple[Hashable, str]], dict[Hashable, Any]]:
        """The sparse ids and the numeric features of ``x``, after refusing what cannot be used."""
        x = validated_features(x, type(self).__name__)
        ids = [(name, value) for name, value in x.items() if isinstance(value, str)]
        return ids, {name: value for name, value in x.items() if not isinstance(value, str)}

    def _check_label(self, y: Any, w: float, t: float | None) -> None:
        name = type(self).__name__
        require(
            y is not None and isinstance(y, Hashable) and not (isinstance(y, float) and not math.isfinite(y)),
            f"{name}: the label must be a hashable class value such as a bool (clicked) or an int (got {y!r})",
        )
        require(
            self._label_type is None or type(y) is self._label_type,
            f"{name}: label {y!r} has type {type(y).__name__} but the labels so far are "
            f"{getattr(self._label_type, '__name__', None)}; send labels of one type (e.g. cast them upstream)",
        )
        require(
            isinstance(w, (int, float)) and math.isfinite(w) and w >= 0.0,
            f"{name}: the weight w must be a finite number >= 0 (got {w!r}), e.g. 1.0 or the watch seconds",
        )
        require(
            t is None or (isinstance(t, (int, float)) and math.isfinite(t)),
            f"{name}: the event time t must be a finite number of seconds or None (got {t!r})",
        )

    # -- the model -----------------------------------------------------------------------------------------------

    def _forward(
        self, ids: list[tuple[Hashable, str]], numeric: dict[Hashable, Any]
    ) -> tuple[list[tuple[tuple[Hashable, str | None], Vector]], Vector, Vector]:
        """The rows of the ids (their own, else their feature's cold row, when that has one), the summed embedding
        ``S`` and the head's input ``h``."""
        dim = self._params["dim"]
        rows: list[tuple[tuple[Hashable, str | None], Vector]] = []
        for key in ids:
            used: tuple[Hashable, str | None] = key if key in self.table else _cold(key)
            row = self.table.get(used)
            if row is not None:
                rows.append((used, row))
        total: Vector = np.zeros(dim)
        squares = np.zeros(dim)
        for _, row in rows:
            total += row
            squares += row * row
        pairwise = 0.5 * (total * total - squares)
        features: Vector = np.concatenate(([1.0], total, pairwise, self.dense.transform(numeric).astype(np.float64)))
        return rows, total, features

    def _proba(self, features: Vector) -> Vector:
        logits = self.head[:, : len(features)] @ features
        exp = np.exp(logits - logits.max())
        return np.asarray(exp / exp.sum(), dtype=np.float64)

    def learn_one(self, x: dict[Hashable, Any], y: Hashable, *, w: float = 1.0, t: float | None = None) -> None:
        """Learn one labelled instance: count its ids (admitting those that reach ``min_count``), then one Adagrad
        step on the head and on the rows of its ids.

        ``w`` weights the instance's loss (watch seconds for a click learns watch time). ``t`` is its event time
        in seconds, the clock of admission and expiry; without it the clock advances by one per instance.
        """
        ids, numeric = self._split(x)
        self._check_label(y, w, t)
        if not self.classes:
            self._label_type = type(y)
        if y not in self.classes:
            self.classes.append(y)
            self.head = np.vstack((self.head, np.zeros(self.head.shape[1])))
            self._head_accum = np.vstack((self._head_accum, np.zeros(self.head.shape[1])))
        self.dense.learn(numeric)
        width = 1 + 2 * self._params["dim"] + self.dense.width
        if self.head.shape[1] < width:
            pad = ((0, 0), (0, width - self.head.shape[1]))
            self.head, self._head_accum = np.pad(self.head, pad), np.pad(self._head_accum, pad)
        now = t if t is not None else (self.table.clock + 1.0 if self.n_learned else 0.0)
        for key in ids:
            if not self.table.see(key, now):
                self.table.see(_cold(key), now)
        rows, total, features = self._forward(ids, numeric)
        error = self._proba(features)
        error[self.classes.index(y)] -= 1.0
        error *= w
        grad_features = self.head.T @ error  # before the head moves
        grad_head = np.outer(error, features)
        self._head_accum += grad_head * grad_head
        self.head -= self._params["lr"] * grad_head / (np.sqrt(self._head_accum) + _EPS)
        dim = self._params["dim"]
        grad_total, grad_pairwise = grad_features[1 : 1 + dim], grad_features[1 + dim : 1 + 2 * dim]
        for used, row in rows:
            self.table.update(used, grad_total + grad_pairwise * (total - row))
        self.n_learned += 1

    def predict_proba_one(self, x: dict[Hashable, Any]) -> dict[Hashable, float]:
        """Class probabilities (summing to 1) over the labels seen so far; ``{}`` before any learning. The click
        probability of a CTR model is ``predict_proba_one(x).get(True, 0.0)``."""
        ids, numeric = self._split(x)
        if not self.classes:
            return {}
        proba = self._proba(self._forward(ids, numeric)[2])
        return {label: float(p) for label, p in zip(self.classes, proba, strict=True)}

    def predict_one(self, x: dict[Hashable, Any]) -> Hashable | None:
        """The most probable label, or ``None`` before any learning."""
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.__getitem__) if proba else None

    # -- serving and checkpoints ---------------------------------------------------------------------------------

    def dense_state(self) -> dict[str, Any]:
        """What serving needs besides the table: labels, the dense standardiser and the head."""
        return {"classes": self.classes, "label_type": self._label_type, "dense": self.dense, "head": self.head}

    def load_dense(self, state: dict[str, Any]) -> None:
        """Take a trainer's ``dense_state()`` (a serving replica); the table is synced apart, by deltas."""
        state = copy.deepcopy(state)
        self.classes, self._label_type = state["classes"], state["label_type"]
        self.dense, self.head = state["dense"], state["head"]

    def sync_to(self, replica: EmbeddingCTR, *, dense: bool) -> None:
        """Ship to a serving ``replica`` the rows touched and the ids expired since the previous sync, and, when
        ``dense``, the head and dense standardiser (ship those less often: they change every instance). After
        ``sync_to(replica, dense=True)`` the replica predicts exactly like this learner.

        One learner feeds one replica this way; to feed several, take ``self.table.delta()`` once and
        ``apply`` it to each replica's table.
        """
        require(
            isinstance(replica, EmbeddingCTR) and replica._params == self._params,
            f"{type(self).__name__}: sync_to needs a replica built with the same parameters {self._params} (got "
            f"{getattr(replica, '_params', replica)!r})",
        )
        replica.table.apply(self.table.delta())
        if dense:
            replica.load_dense(self.dense_state())

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of everything learned: the table, head, Adagrad state, standardiser, labels."""
        return copy.deepcopy(
            {
                "format": STATE_FORMAT,
                "learner": type(self).__name__,
                "params": self._params,
                "table": self.table.state_dict(),
                **self.dense_state(),
                "head_accum": self._head_accum,
                "n_learned": self.n_learned,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a learner built with the same parameters."""
        check_state(state, type(self).__name__, STATE_FORMAT, self._params)
        self.table.load_state_dict(state["table"])
        self.load_dense(state)
        self._head_accum = copy.deepcopy(state["head_accum"])
        self.n_learned = state["n_learned"]


def _cold(key: tuple[Hashable, str]) -> tuple[Hashable, None]:
    """The table key of the cold row of ``key``'s feature."""
    return (key[0], None)
