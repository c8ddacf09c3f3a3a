"""DriftMoE's experts: River's Hoeffding tree with the same predictions, computed several times faster.

DriftMoE asks every expert for its prediction on every instance (the router's target is the mask of experts that
are right), so the experts' leaf prediction is the mixture's hot path. River's naive Bayes leaves
(``do_naive_bayes_prediction``) call one splitter method per (feature, class) on every prediction, and the nominal
splitter sums a class's value counts on each of those calls: on LED (24 features, 10 classes) that is 240 method
calls, sums and logs per prediction, 80% of MoE-Data's time.

:class:`FastHoeffdingTreeClassifier` is River's ``HoeffdingTreeClassifier`` (same parameters, same learning: its
leaves subclass River's leaves and keep River's splitters, so splits happen at the same instances) whose leaves
predict from a per-class cache of the naive Bayes terms:

- nominal features: ``log(count / class total)`` per (feature, value) row, rebuilt for a class only after the leaf
  learned an instance of that class (the only event that changes it);
- Gaussian features: the class's mean, ``-2 * variance`` and ``0.5 * log(variance)``, rebuilt the same way;
- the last naive Bayes result, kept until the leaf learns, so predicting an instance and then learning it (or
  asking several times, as the mask and the routed prediction do) computes it once.

Every term is computed with the same floating-point operations, in the same order, as River's, so the
probabilities are equal bit for bit (class ranking and ties included) and the tree learns exactly what River's
learns. The tests compare the two instance by instance. Features seen by a splitter other than River's nominal and
Gaussian ones fall back on River's own computation.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
import sys
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from river.tree import HoeffdingTreeClassifier
from river.tree.nodes.htc_nodes import LeafMajorityClass, LeafNaiveBayes, LeafNaiveBayesAdaptive
from river.tree.nodes.leaf import HTLeaf
from river.tree.splitter import GaussianSplitter
from river.tree.splitter.nominal_splitter_classif import NominalSplitterClassif
from river.tree.utils import do_naive_bayes_prediction

_HALF_LOG_TAU = 0.5 * math.log(math.tau)  # river.proba.gaussian's constant, computed the same way
_NO_ROW = 0  # nominal row 0: a value the leaf never saw, whose term is 0.0 for every class (River skips it)


def _reduce_add(terms: Iterable[float], start: float) -> float:
    return functools.reduce(operator.add, terms, start)


# River adds a class's terms one by one, left to right. CPython's sum() over floats does exactly that, in C, up to
# 3.11; from 3.12 on it compensates the rounding (Neumaier), which would differ in the last bits, so use a plain
# left fold there.
_sequential_sum: Callable[[Iterable[float], float], float] = sum if sys.version_info < (3, 12) else _reduce_add


def _normalized(stats: dict[Hashable, float]) -> dict[Hashable, float]:
    """River's ``normalize_values_in_dict(stats, inplace=False)`` without its deep copy: the same products."""
    factor = sum(stats.values())
    if factor == 0 or math.isnan(factor):
        return dict(stats)
    multiplier = 1 / factor
    return {label: weight * multiplier for label, weight in stats.items()}


class FastLeafMajorityClass(LeafMajorityClass):
    """River's majority-class leaf; its prediction skips River's deep copy of the class counts."""

    def prediction(self, x: dict[Hashable, Any], *, tree: Any = None) -> dict[Hashable, float]:
        return _normalized(self.stats)


class _CachedNaiveBayes(FastLeafMajorityClass):
    """The naive Bayes prediction of River's leaves (``do_naive_bayes_prediction``), from cached per-class terms.

    River computes, for each class ``c`` in the order of ``stats``: ``log(P(c))``, then adds, feature by feature
    in the order of ``splitters``, ``log(count_c(value) / total_c)`` for a nominal feature (nothing when the count
    is 0) and the Gaussian log-density for a numeric one (nothing when it is -inf or undefined); then normalises
    with log-sum-exp. Here:

    - the nominal counts are mirrored in flat lists (one row per (feature, value) the leaf saw, row 0 standing for
      an unseen value), updated as the leaf learns, so that a class's terms are one list comprehension;
    - a class's terms (nominal rows, Gaussian parameters) only change when the leaf learns an instance of that
      class: they are rebuilt, before the next prediction, for the classes learned since the last one (``_dirty``).

    The mirrored totals are running sums, equal to River's ``sum(class_dist.values())`` while the weights are whole
    numbers (``learn_one``'s default ``w=1.0``); a leaf that learns a fractional weight falls back on River's
    computation, as does one with a splitter other than River's nominal and Gaussian ones.
    """

    def __init__(self, stats: dict[Hashable, float], depth: int, splitter: Any, **kwargs: Any) -> None:
        super().__init__(stats, depth, splitter, **kwargs)
        self._reset_cache()

    def _reset_cache(self) -> None:
        """Forget the mirror and every cached term: a new leaf, or River replaced the splitters (activate,
        deactivate), so both restart from empty."""
        self._features: list[Hashable] = []  # the splitters' features, in the splitters' order
        self._nominal: list[bool] = []  # per feature: nominal (True) or Gaussian (False)
        self._nominal_lookup: list[tuple[Hashable, int, dict[Any, int]]] = []  # (feature, position, value -> row)
        self._all_nominal = True
        # a numeric splitter other than River's Gaussian one, or a fractional weight: use River's computation
        self._river_only = type(self.splitter) is not GaussianSplitter
        self._slots: dict[Hashable, tuple[Any, int, dict[Any, int] | None]] = {}  # feature -> splitter, position,
        # and its value -> row map (None for a Gaussian feature)
        self._row_position: list[int] = [0]  # row -> feature position; row 0 is "a value never seen"
        self._counts: dict[Hashable, list[float]] = {}  # class -> weight per row
        self._totals: dict[Hashable, list[float]] = {}  # class -> weight per feature position
        self._terms: dict[Hashable, list[float]] = {}  # class -> log(count / total) per row, 0.0 when count is 0
        self._gaussians: dict[Hashable, list[tuple[float, float, float] | None]] = {}  # class -> per position
        self._dirty: set[Hashable] = set(self.stats)
        self._memo: tuple[dict[Hashable, Any], dict[Hashable, float]] | None = None

    def activate(self) -> None:
        super().activate()
        self._reset_cache()

    def deactivate(self) -> None:
        super().deactivate()
        self._reset_cache()

    def learn_one(self, x: dict[Hashable, Any], y: Hashable, *, w: float = 1.0, tree: Any = None) -> None:
        self._learn_and_mirror(x, y, w, tree)

    def _learn_and_mirror(self, x: dict[Hashable, Any], y: Hashable, w: float, tree: Any) -> None:
        """River's update (class counts, then ``update_splitters`` below); the terms of ``y`` and the memo are
        stale after it."""
        HTLeaf.learn_one(self, x, y, w=w, tree=tree)
        self._memo = None
        self._dirty.add(y)

    def update_splitters(self, x: dict[Hashable, Any], y: Hashable, w: float, nominal_attributes: Any) -> None:
        """River's ``HTLeaf.update_splitters`` with ``NominalSplitterClassif.update`` inlined (the same changes to
        the same splitters, without a method call per feature), updating the nominal mirror in the same pass."""
        if self._river_only or self._disabled_attrs or not float(w).is_integer():
            self._river_only = True  # a fractional weight would make the running totals differ from River's sums
            HTLeaf.update_splitters(self, x, y, w, nominal_attributes)
            return
        counts = self._counts.get(y)
        if counts is None:
            counts = self._counts[y] = [0.0] * len(self._row_position)
            self._totals[y] = [0.0] * len(self._features)
        totals = self._totals[y]
        slots = self._slots
        for feature, value in x.items():
            slot = slots.get(feature)
            if slot is None:  # River's rule for a feature's first splitter
                if (nominal_attributes is not None and feature in nominal_attributes) or not isinstance(
                    value, numbers.Number
                ):
                    self.splitters[feature] = self.new_nominal_splitter()
                else:
                    self.splitters[feature] = self.splitter.clone()
                self._follow_splitters()
                slot = slots[feature]
            splitter, position, rows = slot
            if rows is None:  # Gaussian
                splitter.update(value, y, w)
                continue
            if value is None:
                splitter._missing_weight_observed += w
            else:
                splitter._att_values.add(value)
                class_counts = splitter._att_dist_per_class[y]
                if value in class_counts:
                    class_counts[value] += w
                else:
                    class_counts[value] = w
                row = rows.get(value)
                if row is None:
                    row = rows[value] = len(self._row_position)
                    self._row_position.append(position)
                    for class_rows in itertools.chain(self._counts.values(), self._terms.values()):
                        class_rows.append(0.0)  # no other class has this value yet: count 0, term 0.0
                counts[row] += w
                totals[position] += w
            splitter._total_weight_observed += w

    def _follow_splitters(self) -> None:
        """Take in the splitters created since (features are only ever added, at the end)."""
        splitters = self.splitters
        for feature in list(splitters)[len(self._features) :]:
            position = len(self._features)
            splitter = splitters[feature]
            kind = type(splitter)
            if kind is NominalSplitterClassif:
                self._nominal.append(True)
                rows: dict[Any, int] = {}
                self._nominal_lookup.append((feature, position, rows))
                self._slots[feature] = (splitter, position, rows)
            elif kind is GaussianSplitter:
                self._nominal.append(False)
                self._all_nominal = False
                self._slots[feature] = (splitter, position, None)
            else:
                self._river_only = True
            self._features.append(feature)
        n_features = len(self._features)
        for totals in self._totals.values():
            totals.extend([0.0] * (n_features - len(totals)))
        for gaussians in self._gaussians.values():  # the classes not learned since have no estimator there
            gaussians.extend([None] * (n_features - len(gaussians)))

    def _refresh(self, label: Hashable) -> None:
        """Rebuild class ``label``'s terms: River's ``cond_proba`` per nominal row, and the parts of the Gaussian
        ``log_pdf`` that do not depend on ``x`` per numeric feature."""
        counts = self._counts.get(label)
        if counts is None:  # a class the leaf inherited at its split and has not learned since: no terms
            self._terms[label] = [0.0] * len(self._row_position)
        else:
            totals = self._totals[label]
            log = math.log
            self._terms[label] = [
                log(count / totals[position]) if count > 0 else 0.0
                for count, position in zip(counts, self._row_position, strict=True)
            ]
        if self._all_nominal:  # kept the same length as the features, for when a numeric one comes
            self._gaussians[label] = [None] * len(self._features)
            return
        splitters = self.splitters
        gaussians: list[tuple[float, float, float] | None] = []
        for feature, nominal in zip(self._features, self._nominal, strict=True):
            entry = None
            gaussian = None if nominal else splitters[feature]._att_dist_per_class.get(label)
            if gaussian is not None:
                var = gaussian._var
                n = var.mean.n
                if n > var.ddof:
                    variance = var._S / (n - var.ddof)
                    if variance > 0.0:
                        entry = (var.mean._mean, -2.0 * variance, 0.5 * math.log(variance))
            gaussians.append(entry)
        self._gaussians[label] = gaussians

    def _naive_bayes(self, x: dict[Hashable, Any]) -> dict[Hashable, float]:
        """``do_naive_bayes_prediction(x, self.stats, self.splitters)``, bit for bit (see the class docstring)."""
        memo = self._memo
        if memo is not None and memo[0] == x:
            return memo[1]
        stats = self.stats
        total_weight = sum(stats.values())
        if not stats or total_weight == 0:
            return {}
        if len(self._features) != len(self.splitters):
            self._follow_splitters()
        if self._river_only:
            return do_naive_bayes_prediction(x, stats, self.splitters)
        if self._dirty:
            for label in self._dirty:
                self._refresh(label)
            self._dirty.clear()

        log = math.log
        terms = self._terms
        get = x.get
        votes: list[float] = []
        if self._all_nominal:
            rows = [lookup.get(get(feature), 0) for feature, _, lookup in self._nominal_lookup]
            pick = operator.itemgetter(*rows) if len(rows) > 1 else lambda terms: tuple(terms[r] for r in rows)
            for label, class_weight in stats.items():
                if class_weight > 0:
                    votes.append(_sequential_sum(pick(terms[label]), log(class_weight / total_weight)))
                else:
                    votes.append(0.0)
        else:
            values = [get(feature) for feature in self._features]
            rows = [0] * len(values)
            for _, position, lookup in self._nominal_lookup:
                rows[position] = lookup.get(values[position], 0)
            for label, class_weight in stats.items():
                if class_weight <= 0:
                    votes.append(0.0)
                    continue
                vote = log(class_weight / total_weight)
                class_terms = terms[label]
                for nominal, value, row, gaussian in zip(
                    self._nominal, values, rows, self._gaussians[label], strict=True
                ):
                    if nominal:
                        vote += class_terms[row]
                    elif gaussian is not None and value is not None:
                        mu, minus_two_variance, half_log_variance = gaussian
                        log_p = (value - mu) ** 2 / minus_two_variance - _HALF_LOG_TAU - half_log_variance
                        if log_p > -math.inf:
                            vote += log_p
                votes.append(vote)

        max_ll = max(votes)
        exp = math.exp
        lse = max_ll + log(sum([exp(vote - max_ll) for vote in votes]))
        result = {label: exp(vote - lse) for label, vote in zip(stats, votes, strict=True)}
        self._memo = (dict(x), result)
        return result


class FastLeafNaiveBayes(_CachedNaiveBayes, LeafNaiveBayes):
    """River's naive Bayes leaf (``leaf_prediction="nb"``) with the cached computation."""

    def prediction(self, x: dict[Hashable, Any], *, tree: Any = None) -> dict[Hashable, float]:
        if self.is_active() and self.total_weight >= tree.nb_threshold:
            return self._naive_bayes(x)
        return _normalized(self.stats)


class FastLeafNaiveBayesAdaptive(_CachedNaiveBayes, LeafNaiveBayesAdaptive):
    """River's adaptive naive Bayes leaf (``leaf_prediction="nba"``, the default, as MOA's): naive Bayes while it
    has been right at least as often as the majority class on the instances the leaf learned."""

    def __init__(self, stats: dict[Hashable, float], depth: int, splitter: Any, **kwargs: Any) -> None:
        super().__init__(stats, depth, splitter, **kwargs)

    def learn_one(self, x: dict[Hashable, Any], y: Hashable, *, w: float = 1.0, tree: Any = None) -> None:
        if self.is_active():
            majority = _normalized(self.stats)
            if len(self.stats) == 0 or max(majority, key=majority.__getitem__) == y:
                self._mc_correct_weight += w
            naive_bayes = self._naive_bayes(x)
            if len(naive_bayes) > 0 and max(naive_bayes, key=naive_bayes.__getitem__) == y:
                self._nb_correct_weight += w
        self._learn_and_mirror(x, y, w, tree)

    def prediction(self, x: dict[Hashable, Any], *, tree: Any = None) -> dict[Hashable, float]:
        if self.is_active() and self._nb_correct_weight >= self._mc_correct_weight:
            return self._naive_bayes(x)
        return _normalized(self.stats)


class FastHoeffdingTreeClassifier(HoeffdingTreeClassifier):
    """River's ``HoeffdingTreeClassifier`` (same parameters and defaults, same splits, same probabilities) with
    leaves that cache their naive Bayes terms: several times faster where every instance is predicted, and the
    experts of :class:`learners.driftmoe.MoEData` and :class:`learners.driftmoe.MoETask`.

    Examples
    --------
    >>> from river.datasets import synth
    >>> from river.tree import HoeffdingTreeClassifier
    >>> fast, river = FastHoeffdingTreeClassifier(grace_period=50), HoeffdingTreeClassifier(grace_period=50)
    >>> same = True
    >>> for x, y in synth.Agrawal(seed=1).take(500):
    ...     same &= fast.predict_proba_one(x) == river.predict_proba_one(x)
    ...     fast.learn_one(x, y)
    ...     river.learn_one(x, y)
    >>> same, fast.n_nodes == river.n_nodes
    (True, True)

    References
    ----------
    Domingos, P., Hulten, G. (2000). Mining High-Speed Data Streams. KDD.
    """

    _sorted_classes: list[Hashable] = []  # per instance once a class is seen; the sorted self.classes

    def _new_leaf(self, initial_stats: dict[Hashable, float] | None = None, parent: Any = None) -> HTLeaf:
        if initial_stats is None:
            initial_stats = {}
        depth = 0 if parent is None else parent.depth + 1
        if self._leaf_prediction == self._MAJORITY_CLASS:
            return FastLeafMajorityClass(initial_stats, depth, self.splitter)
        if self._leaf_prediction == self._NAIVE_BAYES:
            return FastLeafNaiveBayes(initial_stats, depth, self.splitter)
        return FastLeafNaiveBayesAdaptive(initial_stats, depth, self.splitter)

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        """River's: every class seen, in sorted order, at 0.0 unless the leaf gives it a probability."""
        if len(self._sorted_classes) != len(self.classes):  # classes are only ever added
            self._sorted_classes = sorted(self.classes)
        proba = dict.fromkeys(self._sorted_classes, 0.0)
        if self._root is not None:
            leaf: Any = self._root.traverse(x, until_leaf=True) if not isinstance(self._root, HTLeaf) else self._root
            proba.update(leaf.prediction(x, tree=self))
        return proba
