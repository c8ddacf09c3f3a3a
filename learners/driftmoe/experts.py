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

Every term is computed with the same floating-point operations, in the same order, as River's, so that the
probabilities are equal bit for bit (class ranking and ties included) and the tree learns what River's learns. Order
matters beyond the arithmetic: River's prediction gives each nominal splitter a key for every class of the leaf (a
side effect of ``cond_proba`` indexing a ``defaultdict``), and that class order is the order a binary split's children
hold their counts in, and so the order their probabilities are summed in; the fast leaves reproduce that side effect
(:meth:`_CachedNaiveBayes._touch_classes`). Without it, MoE-Data on the benchmark's gradual LED stream (seed 0) once
differed from River's trees in the last bit of one probability, which later changed a routing decision.

Split attempts compute the info gains of nominal and Gaussian features from tuples of weights (River's operations on
the same sequences: a nominal feature's distinct branches once each, a Gaussian class's mean and variance once per
attempt) and build River's dict distributions only for the split chosen; a Gaussian feature's estimator is updated
inline, with River's arithmetic. The tests compare the two instance by instance, and the split suggestions with
River's. Features seen by a splitter other than River's nominal and Gaussian ones fall back on River's own
computation.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
import sys
from collections.abc import Callable, Hashable, Iterable
from typing import Any, NamedTuple

from river.base.typing import ClfTarget
from river.tree import HoeffdingTreeClassifier
from river.tree.nodes.htc_nodes import LeafMajorityClass, LeafNaiveBayes, LeafNaiveBayesAdaptive
from river.tree.nodes.leaf import HTLeaf
from river.tree.split_criterion import InfoGainSplitCriterion
from river.tree.splitter import GaussianSplitter
from river.tree.splitter.nominal_splitter_classif import NominalSplitterClassif
from river.tree.utils import BranchFactory, do_naive_bayes_prediction

_HALF_LOG_TAU = 0.5 * math.log(math.tau)  # river.proba.gaussian's constant, computed the same way
_SQRT_2 = math.sqrt(2.0)  # river.utils.math.norm_cdf's divisor
_NULL_SPLIT = object()  # _nominal_split_suggestion's markers for River's null and multiway suggestions
_MULTIWAY_SPLIT = object()
_NO_ROW = 0  # nominal row 0: a value the leaf never saw, whose term is 0.0 for every class (River skips it)
_CLEAR_LEAD = 1e-9
"""A class ahead of every other by more than this (in log-likelihood for naive Bayes, relatively in weight for the
majority class) is the most probable after normalising, whatever the rounding: values this far apart stay apart
through exp() or a product, which move them by about their last bit."""


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


def _clear_majority(stats: dict[Hashable, float]) -> Hashable | None:
    """The class of the largest weight, the most probable in :func:`_normalized`, when it is ahead of every other
    by more than ``_CLEAR_LEAD`` relatively; None on a tie or without weight."""
    leader: Hashable | None = None
    best = runner = 0.0
    for label, weight in stats.items():
        if weight > best:
            leader, best, runner = label, weight, best
        elif weight > runner:
            runner = weight
    return leader if best - runner > _CLEAR_LEAD * best else None


def _leading(label: Any, proba: Callable[[], dict[Any, float]]) -> Any:
    """``label`` (a class known to be the most probable) or, when None, the first class of highest probability in
    ``proba()`` (None when it is empty): River's ``max(proba, key=proba.get)``, computed only when needed."""
    if label is not None:
        return label
    probabilities = proba()
    return max(probabilities, key=probabilities.__getitem__) if probabilities else None


# A branch's class weights, in the order River's split distribution dict holds them: River's info gain only ever
# reads a distribution's values, in that order, so equal sequences have equal sums and entropies.
_Weights = tuple[float, ...]


class _WeightLogWeight(dict[float, float]):
    """``d * log2(d)`` per weight ``d``, remembered (the weights are counts: few distinct values), up to a size."""

    def __missing__(self, weight: float) -> float:
        term = weight * math.log2(weight)
        if len(self) < 1 << 16:
            self[weight] = term
        return term


_weight_log_weight = _WeightLogWeight()


def _weight_log2(weight: float) -> float:
    """``d * log2(d)`` without the memo: for weights that rarely repeat (a Gaussian feature's CDF shares)."""
    return weight * math.log2(weight)


def _entropy(
    weights: _Weights, weights_sum: float, term: Callable[[float], float] = _weight_log_weight.__getitem__
) -> float:
    """River's ``InfoGainSplitCriterion._compute_entropy_dict`` over the dict's values, with the same result: River
    subtracts ``d * log2(d)`` from 0.0 for each positive weight in turn, which is the negated left-to-right sum of
    those terms (rounding is symmetric in sign), and adds the positive weights from 0.0, which is ``weights_sum``
    (``sum(weights)``) when they are all positive."""
    if not weights or min(weights) <= 0.0:  # zero or negative weights: River skips them
        weights = tuple([d for d in weights if d > 0.0])
        weights_sum = _sequential_sum(weights, 0.0)
    if not weights_sum > 0.0:
        return 0.0
    entropy = -_sequential_sum(map(term, weights), 0.0)
    return (entropy + weights_sum * math.log2(weights_sum)) / weights_sum


def _info_gain(
    pre_entropy: float,
    branches: list[_Weights],
    min_fraction: float,
    seen: dict[_Weights, tuple[float, float]] | None,
) -> float:
    """River's ``InfoGainSplitCriterion.merit_of_split`` (``num_subsets_greater_than_frac``, then the pre-split
    entropy minus the weighted branch entropies), the same operations in the same order, with the pre-split entropy
    computed once per split attempt and, for counts, each branch's (sum, entropy) once per distinct sequence
    (``seen``; None for weights that rarely repeat, where remembering costs more than it saves)."""
    sums_entropies = []
    for branch in branches:
        if seen is None:
            branch_sum = sum(branch)
            sums_entropies.append((branch_sum, _entropy(branch, branch_sum, _weight_log2)))
            continue
        known = seen.get(branch)
        if known is None:
            branch_sum = sum(branch)
            known = seen[branch] = (branch_sum, _entropy(branch, branch_sum))
        sums_entropies.append(known)
    total_weight = 0.0
    for branch_sum, _ in sums_entropies:
        total_weight += branch_sum
    if total_weight <= 0 or sum(1 for branch_sum, _ in sums_entropies if branch_sum / total_weight > min_fraction) < 2:
        return -math.inf
    entropy = 0.0
    for branch_sum, branch_entropy in sums_entropies:
        entropy += branch_sum * branch_entropy
    return pre_entropy - entropy / total_weight


def _nominal_split_suggestion(
    splitter: NominalSplitterClassif, feature: Hashable, pre_entropy: float, min_fraction: float, binary_only: bool
) -> BranchFactory:
    """``NominalSplitterClassif.best_evaluated_split_suggestion`` with the info gain criterion: the same merits
    (River's operations on the same sequences of weights) compared in the same order, so the same suggestion.
    River builds a dict distribution per candidate split; here each candidate is a tuple of its branches' weights,
    and only the chosen candidate's distribution is built, by River's own method."""
    per_class = splitter._att_dist_per_class  # class -> {value: weight}, in insertion order
    seen: dict[_Weights, tuple[float, float]] = {}
    best_merit, best_value = -math.inf, _NULL_SPLIT  # River starts from the null suggestion, merit -inf
    if not binary_only:
        # _class_dist_from_multiway_split: one branch per value (sorted), its weights in sorted class order
        classes = sorted(per_class)
        branches = [
            tuple([dist[value] for dist in (per_class[label] for label in classes) if value in dist])
            for value in sorted(splitter._att_values)
        ]
        best_merit, best_value = _info_gain(pre_entropy, branches, min_fraction, seen), _MULTIWAY_SPLIT
    dists = list(per_class.values())
    equal = {value: tuple([dist[value] for dist in dists if value in dist]) for value in splitter._att_values}
    for value, equal_weights in equal.items():  # the set's order, as River
        if len(equal) == 2:  # the other value's weights, in class order: River's "not equal" sums of one term
            (not_equal_weights,) = (weights for other, weights in equal.items() if other != value)
        else:  # _class_dist_from_binary_split: per class holding another value, 0.0 + its other weights in order
            not_equal = []
            for dist in dists:
                other_weight, has_other = 0.0, False
                for other, weight in dist.items():
                    if other != value:
                        other_weight += weight
                        has_other = True
                if has_other:
                    not_equal.append(other_weight)
            not_equal_weights = tuple(not_equal)
        merit = _info_gain(pre_entropy, [equal_weights, not_equal_weights], min_fraction, seen)
        if merit > best_merit:
            best_merit, best_value = merit, value
    if best_value is _NULL_SPLIT:
        return BranchFactory()
    if best_value is _MULTIWAY_SPLIT:
        return _LazyChildrenSuggestion(
            best_merit, feature, sorted(splitter._att_values), splitter, numerical=False, multiway=True
        )
    return _LazyChildrenSuggestion(best_merit, feature, best_value, splitter, numerical=False, multiway=False)


def _gaussian_split_suggestion(
    splitter: GaussianSplitter, feature: Hashable, pre_entropy: float, min_fraction: float
) -> BranchFactory:
    """``GaussianSplitter.best_evaluated_split_suggestion`` with the info gain criterion: for each of River's
    candidate thresholds, the branches' weights in River's order (``_class_dists_from_binary_split``: per class in
    the splitter's order, its whole weight on one side when the threshold is outside its range, else its Gaussian
    CDF share), compared as River compares them; only the chosen threshold's dict distributions are built."""
    classes = []  # per class: its weight, its range, and the mean and variance River's cdf reads
    for label, estimator in splitter._att_dist_per_class.items():
        var = estimator._var
        mean = var.mean
        low, high = splitter._min_per_class[label], splitter._max_per_class[label]
        classes.append((mean.n, low, high, mean._mean, _variance(var)))
    best_merit, best_value = -math.inf, None
    for split_value in splitter._split_point_suggestions():
        left: list[float] = []
        right: list[float] = []
        for n, low, high, mu, variance in classes:
            if split_value < low:
                right.append(n)
            elif split_value >= high:
                left.append(n)
            else:
                weight = _gaussian_cdf(split_value, mu, variance) * n
                left.append(weight)
                right.append(n - weight)
        merit = _info_gain(pre_entropy, [tuple(left), tuple(right)], min_fraction, None)
        if merit > best_merit:
            best_merit, best_value = merit, split_value
    if best_value is None:
        return BranchFactory()
    return _LazyChildrenSuggestion(best_merit, feature, best_value, splitter, numerical=True, multiway=False)


def _variance(var: Any) -> float:
    """River's ``Var.get()`` (0.0 until the count exceeds ``ddof``), read from its attributes as River does."""
    n = var.mean.n
    return var._S / (n - var.ddof) if n > var.ddof else 0.0


def _gaussian_cdf(value: float, mu: float, variance: float) -> float:
    """River's ``Gaussian.cdf`` (``norm_cdf((x - mu) / sigma)``, 0.0 where sigma is 0) from the estimator's mean and
    variance, which a split attempt reads once per class instead of once per threshold."""
    try:
        return 0.5 * (1.0 + math.erf((value - mu) / variance**0.5 / _SQRT_2))
    except ZeroDivisionError:
        return 0.0


def _update_gaussian(splitter: Any, value: float, label: Hashable, w: float) -> None:
    """``GaussianSplitter.update`` for a value that is not None, with the estimator's update (``Gaussian`` ->
    ``Var`` -> ``Mean``) inlined: the same operations on the same attributes."""
    estimator = splitter._att_dist_per_class.get(label)
    if estimator is None:  # the class's first value here: River creates the estimator
        splitter.update(value, label, w)
        return
    if value < splitter._min_per_class[label]:
        splitter._min_per_class[label] = value
    if value > splitter._max_per_class[label]:
        splitter._max_per_class[label] = value
    var = estimator._var
    mean = var.mean
    mean_old = mean._mean
    mean.n += w
    mean._mean += (w / mean.n) * (value - mean._mean)
    var._S += w * (value - mean_old) * (value - mean._mean)


class _LazyChildrenSuggestion(BranchFactory):
    """River's suggestion whose ``children_stats`` (River's dict distributions, which become the new leaves' class
    counts) are built by River's splitter when first read: a split attempt reads only those of the suggestion it
    splits on, right after the suggestions are made."""

    def __init__(
        self, merit: float, feature: Hashable, split_info: Any, splitter: Any, *, numerical: bool, multiway: bool
    ) -> None:
        self._splitter = splitter
        self._children_stats: list[dict[Hashable, float]] | None = None
        super().__init__(merit, feature, split_info, None, numerical_feature=numerical, multiway_split=multiway)

    @property
    def children_stats(self) -> list[dict[Hashable, float]]:
        if self._children_stats is None:
            splitter = self._splitter
            if self.numerical_feature:
                self._children_stats = splitter._class_dists_from_binary_split(self.split_info)
            elif self.multiway_split:
                self._children_stats = splitter._class_dist_from_multiway_split()
            else:
                self._children_stats = splitter._class_dist_from_binary_split(self.split_info)
        return self._children_stats

    @children_stats.setter
    def children_stats(self, value: list[dict[Hashable, float]] | None) -> None:
        self._children_stats = value


class _FastSplitSuggestions(HTLeaf):
    """River's ``HTLeaf.best_split_suggestions`` with the nominal and Gaussian features' suggestions computed by
    :func:`_nominal_split_suggestion` and :func:`_gaussian_split_suggestion` under the info gain criterion (River's
    default); placed after ``LeafMajorityClass`` in the leaves' method order, so that River's majority-share check
    runs first."""

    def best_split_suggestions(self, criterion: Any, tree: Any) -> list[BranchFactory]:
        if type(criterion) is not InfoGainSplitCriterion:
            return super().best_split_suggestions(criterion, tree)
        suggestions = [BranchFactory()] if tree.merit_preprune else []
        pre_split_dist = self.stats
        pre_entropy = criterion.compute_entropy(pre_split_dist)
        min_fraction = criterion.min_branch_fraction
        for feature, splitter in self.splitters.items():
            kind = type(splitter)
            if kind is NominalSplitterClassif:
                suggestion = _nominal_split_suggestion(splitter, feature, pre_entropy, min_fraction, tree.binary_split)
            elif kind is GaussianSplitter:
                suggestion = _gaussian_split_suggestion(splitter, feature, pre_entropy, min_fraction)
            else:
                suggestion = splitter.best_evaluated_split_suggestion(
                    criterion, pre_split_dist, feature, tree.binary_split
                )
            suggestions.append(suggestion)
        return suggestions


class FastLeafMajorityClass(LeafMajorityClass, _FastSplitSuggestions):
    """River's majority-class leaf; its prediction skips River's deep copy of the class counts, and its split
    attempts compute the nominal and Gaussian features' info gains without River's per-candidate dicts."""

    def prediction(self, x: dict[Hashable, Any], *, tree: Any = None) -> dict[Hashable, float]:
        return _normalized(self.stats)

    def clear_label(self, x: dict[Hashable, Any], *, tree: Any) -> Hashable | None:
        """The class :meth:`prediction` gives the most probability where that can be told without computing the
        probabilities (one class clearly ahead), else None."""
        return _clear_majority(self.stats)


class _Plan(NamedTuple):
    """What a leaf's naive Bayes predictions read until it learns again (:meth:`_CachedNaiveBayes._build_plan`)."""

    classes: list[tuple[float, list[float] | None]]  # per class of stats: (log prior, terms per row or None)
    lookup_features: list[Hashable]  # the nominal features, in the splitters' order
    lookups: list[dict[Any, int]]  # their value -> row maps


class _Memo(NamedTuple):
    """A leaf's naive Bayes computation for the last instance it was asked about, until the leaf learns."""

    x: dict[Hashable, Any]  # a copy of the instance
    votes: list[float]  # per class of stats, the log-likelihood (empty where River's result is kept instead)
    proba: dict[Hashable, float] | None  # the normalised probabilities, once asked for


_ZEROS = itertools.repeat(0)  # the row of a value the leaf never saw, for every nominal feature


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
        self._touched: set[Hashable] = set()  # classes every nominal splitter holds a key for (see _touch_classes)
        self._memo: _Memo | None = None  # the last instance's log-likelihoods and probabilities (see _remembered)
        self._plan: _Plan | None = None  # what every prediction reads until the leaf learns again (see _build_plan)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A leaf pickled by an earlier version (a checkpoint) lacks the caches added since: start them empty."""
        self.__dict__.update(state)
        self.__dict__.setdefault("_touched", set())
        self.__dict__.setdefault("_plan", None)
        self._memo = None  # a cache whose layout changed

    def activate(self) -> None:
        super().activate()
        self._reset_cache()

    def deactivate(self) -> None:
        super().deactivate()
        self._reset_cache()

    def learn_one(self, x: dict[Hashable, Any], y: Hashable, *, w: float = 1.0, tree: Any = None) -> None:
        """River's update (class counts, then ``update_splitters`` below); the terms of ``y`` and the memo are
        stale after it."""
        HTLeaf.learn_one(self, x, y, w=w, tree=tree)
        self._memo = None
        self._plan = None
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
                if value is not None:
                    _update_gaussian(splitter, value, y, w)
                continue
            if value is None:
                splitter._missing_weight_observed += w
            else:
                row = rows.get(value)
                if row is None:  # a value this leaf has not learned yet (a known one is in _att_values already)
                    splitter._att_values.add(value)
                    row = rows[value] = len(self._row_position)
                    self._row_position.append(position)
                    for class_rows in itertools.chain(self._counts.values(), self._terms.values()):
                        class_rows.append(0.0)  # no other class has this value yet: count 0, term 0.0
                class_counts = splitter._att_dist_per_class[y]
                if value in class_counts:
                    class_counts[value] += w
                else:
                    class_counts[value] = w
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
        self._touched.clear()  # the new splitters hold no class yet
        self._plan = None
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
            total = totals[0] if totals else 0.0
            if totals.count(total) == len(totals):  # every feature seen on every instance: one denominator
                try:  # row 0 (an unseen value) counts nothing; where every other row counts something, in C
                    self._terms[label] = [0.0, *map(log, map(operator.truediv, counts[1:], itertools.repeat(total)))]
                except ValueError:  # log(0): a value seen with other classes only
                    self._terms[label] = [log(count / total) if count > 0 else 0.0 for count in counts]
            else:
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
                variance = _variance(gaussian._var)
                if variance > 0.0:
                    entry = (gaussian._var.mean._mean, -2.0 * variance, 0.5 * math.log(variance))
            gaussians.append(entry)
        self._gaussians[label] = gaussians

    def _touch_classes(self, x: dict[Hashable, Any]) -> None:
        """The side effect of River's prediction on its splitters: ``NominalSplitterClassif.cond_proba`` indexes its
        ``defaultdict`` of classes, so each nominal splitter of a feature in ``x`` gets a key (an empty dict) for every
        class of ``stats`` with a positive weight, in ``stats``'s order. The splitters' class order is the order a
        binary split's children hold their class counts in, and the order their probabilities are summed in."""
        stats = self.stats
        if self._touched.issuperset(stats) or all(
            label in self._touched for label, weight in stats.items() if weight > 0
        ):
            return
        labels = [label for label, weight in stats.items() if weight > 0]
        every_feature = True
        for feature, _, _ in self._nominal_lookup:
            if feature not in x:
                every_feature = False
                continue
            per_class = self.splitters[feature]._att_dist_per_class
            for label in labels:
                if label not in per_class:
                    per_class[label] = {}
        if every_feature:
            self._touched.update(labels)

    def _build_plan(self, total_weight: float) -> _Plan:
        """Rebuild the terms of the classes learned since, then gather what predictions read until the leaf learns
        again: per class of ``stats`` (in its order) River's prior ``log(weight / total)`` and its terms (None for a
        class of weight 0, whose vote River leaves at 0.0), and the nominal features' value -> row maps."""
        for label in self._dirty:
            self._refresh(label)
        self._dirty.clear()
        classes: list[tuple[float, list[float] | None]] = [
            (math.log(weight / total_weight), self._terms[label]) if weight > 0 else (0.0, None)
            for label, weight in self.stats.items()
        ]
        features = [feature for feature, _, _ in self._nominal_lookup]
        return _Plan(classes, features, [lookup for _, _, lookup in self._nominal_lookup])

    def _uses_naive_bayes(self, tree: Any) -> bool:
        """Whether the leaf predicts by naive Bayes now (River's rule of each leaf kind), else by majority class."""
        raise NotImplementedError

    def prediction(self, x: dict[Hashable, Any], *, tree: Any = None) -> dict[Hashable, float]:
        return self._naive_bayes(x) if self._uses_naive_bayes(tree) else _normalized(self.stats)

    def clear_label(self, x: dict[Hashable, Any], *, tree: Any) -> Hashable | None:
        return self._naive_bayes_label(x) if self._uses_naive_bayes(tree) else _clear_majority(self.stats)

    def _naive_bayes(self, x: dict[Hashable, Any]) -> dict[Hashable, float]:
        """``do_naive_bayes_prediction(x, self.stats, self.splitters)``, bit for bit, side effect on the splitters
        included."""
        memo = self._remembered(x)
        if memo.proba is None:
            votes = memo.votes
            max_ll = max(votes)
            exp = math.exp
            lse = max_ll + math.log(sum([exp(vote - max_ll) for vote in votes]))
            proba = {label: exp(vote - lse) for label, vote in zip(self.stats, votes, strict=True)}
            self._memo = memo = memo._replace(proba=proba)
        return memo.proba  # type: ignore[return-value]

    def _naive_bayes_label(self, x: dict[Hashable, Any]) -> Hashable | None:
        """The class :meth:`_naive_bayes` gives the most probability, read from the log-likelihoods without
        normalising them; None when no class is ahead of every other by more than ``_CLEAR_LEAD`` (a tie, or too
        close for the rounding of the normalisation to be ruled out), or without classes: ask for the
        probabilities then."""
        votes = self._remembered(x).votes
        if not votes:
            return None
        best = max(votes)
        threshold = best - _CLEAR_LEAD
        leader: Hashable | None = None
        for label, vote in zip(self.stats, votes, strict=True):
            if vote >= threshold:
                if leader is not None or vote != best:
                    return None
                leader = label
        return leader

    def _remembered(self, x: dict[Hashable, Any]) -> _Memo:
        """The naive Bayes computation for ``x`` up to the per-class log-likelihoods (``votes``, in the order of
        ``stats``), kept until ``x`` changes or the leaf learns; River's own result instead where the leaf falls
        back on it, or ``{}`` without classes."""
        memo = self._memo
        if memo is not None and memo.x == x:
            return memo
        stats = self.stats
        total_weight = sum(stats.values())
        if not stats or total_weight == 0:
            self._memo = memo = _Memo(dict(x), [], {})
            return memo
        if len(self._features) != len(self.splitters):
            self._follow_splitters()
        if self._river_only:
            self._memo = memo = _Memo(dict(x), [], do_naive_bayes_prediction(x, stats, self.splitters))
            return memo
        plan = self._plan
        if plan is None:
            plan = self._plan = self._build_plan(total_weight)
        self._touch_classes(x)

        votes: list[float]
        if self._all_nominal:
            rows = list(map(dict.get, plan.lookups, map(x.get, plan.lookup_features), _ZEROS))
            pick = operator.itemgetter(*rows) if len(rows) > 1 else lambda terms: tuple(terms[r] for r in rows)
            votes = [0.0 if terms is None else _sequential_sum(pick(terms), prior) for prior, terms in plan.classes]
        else:
            get = x.get
            values = [get(feature) for feature in self._features]
            rows = [0] * len(values)
            for _, position, lookup in self._nominal_lookup:
                rows[position] = lookup.get(values[position], 0)
            votes = []
            for label, (vote, class_terms) in zip(stats, plan.classes, strict=True):
                if class_terms is None:
                    votes.append(0.0)
                    continue
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

        self._memo = memo = _Memo(dict(x), votes, None)
        return memo


class FastLeafNaiveBayes(_CachedNaiveBayes, LeafNaiveBayes):
    """River's naive Bayes leaf (``leaf_prediction="nb"``) with the cached computation."""

    def _uses_naive_bayes(self, tree: Any) -> bool:
        return self.is_active() and self.total_weight >= tree.nb_threshold


class FastLeafNaiveBayesAdaptive(_CachedNaiveBayes, LeafNaiveBayesAdaptive):
    """River's adaptive naive Bayes leaf (``leaf_prediction="nba"``, the default, as MOA's): naive Bayes while it
    has been right at least as often as the majority class on the instances the leaf learned."""

    def learn_one(self, x: dict[Hashable, Any], y: Hashable, *, w: float = 1.0, tree: Any = None) -> None:
        if self.is_active():
            stats = self.stats
            if not stats or _leading(_clear_majority(stats), lambda: _normalized(stats)) == y:
                self._mc_correct_weight += w
            if _leading(self._naive_bayes_label(x), lambda: self._naive_bayes(x)) == y:
                self._nb_correct_weight += w
        super().learn_one(x, y, w=w, tree=tree)

    def _uses_naive_bayes(self, tree: Any) -> bool:
        return self.is_active() and self._nb_correct_weight >= self._mc_correct_weight


class FastHoeffdingTreeClassifier(HoeffdingTreeClassifier):
    """River's ``HoeffdingTreeClassifier`` (same parameters and defaults, same splits, same probabilities bit for
    bit) with leaves that cache their naive Bayes terms: several times faster where every instance is predicted, and
    the experts of :class:`learners.driftmoe.MoEData` and :class:`learners.driftmoe.MoETask`.

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
        return self._proba_at(self._leaf(x), x)

    def predict_one(self, x: dict[Hashable, Any], **kwargs: Any) -> ClfTarget | None:
        """River's: the class of highest probability (the first in sorted order on a tie), None before any class.
        A naive Bayes leaf with one class clearly ahead answers without normalising its probabilities."""
        leaf = self._leaf(x)
        return _leading(None if leaf is None else leaf.clear_label(x, tree=self), lambda: self._proba_at(leaf, x))

    def _leaf(self, x: dict[Hashable, Any]) -> Any:
        """The leaf ``x`` reaches, None before the first instance."""
        root: Any = self._root
        if root is None:
            return None
        # HTLeaf is an ABC: an isinstance check through its machinery is slow on a path taken every prediction
        return root if HTLeaf in type(root).__mro__ else root.traverse(x, until_leaf=True)

    def _proba_at(self, leaf: Any, x: dict[Hashable, Any]) -> dict[Any, float]:
        """River's ``predict_proba_one`` from the leaf ``x`` reaches."""
        if len(self._sorted_classes) != len(self.classes):  # classes are only ever added
            self._sorted_classes = sorted(self.classes)
        proba = dict.fromkeys(self._sorted_classes, 0.0)
        if leaf is not None:
            proba.update(leaf.prediction(x, tree=self))
        return proba
