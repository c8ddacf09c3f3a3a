"""Diag-LinUCB (YouTube's "Online Matching"): a bandit recommender over (user cluster, item) edges, the baseline for
exploring fresh streamers (spec livestream.md §4).

LinUCB fits, per item ``i``, a ridge regression of the reward on the user's context ``x`` (here: the user's weights
on a few clusters) and ranks items by the estimate plus ``alpha`` times its standard error,
``x·θ_i + alpha·√(xᵀ A_i⁻¹ x)`` with ``A_i = ridge·I + Σ x xᵀ``. Online Matching keeps only the diagonal of ``A_i``:
each (cluster ``c``, item ``i``) edge holds two numbers, ``d += w_c²`` and ``b += w_c·r`` per reward ``r``, so an
update touches only the user's own edges (no matrix, no cross-cluster lock) and the score is

    ``Σ_c w_c·b_ci/d_ci + alpha·√(Σ_c w_c²/d_ci)``.

An edge never updated counts as ``d = ridge, b = 0``: its estimate is 0 and its exploration bonus the largest, so a
fresh item outranks one known to be bad, and the bonus shrinks as ``1/√d`` with the item's exposures.

Clusters. A caller with a user clustering (Online Matching's come from a two-tower model's user embeddings, soft
assigned to their nearest clusters) passes the user's ``{cluster: weight}``. Without one, each user has two
clusters: its own (``("user", user)``, weight ``own_weight``), which learns that user's taste, and a global one
(``GLOBAL_CLUSTER``, weight ``global_weight``) shared by everyone, so a new user still gets every item's overall
reward rate and a new item is explored for everyone at once. With the diagonal approximation the terms add up (a
regular user of an item counts both its own and the global rate): the score ranks, it is not a calibrated
probability.

Memory. Edges unused (not updated) for ``expire_after`` seconds of event time are dropped, as the embedding table
drops idle rows: on an endless stream of new streamers and users the recommender holds only the edges updated in
the last ``expire_after`` seconds. A dropped edge is back at the prior: an item gone quiet is explored again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

from learners._state import check_state, require
from learners.ctr.ranking import live_only
from learners.ctr.table import Vector

STATE_FORMAT = 1
GLOBAL_CLUSTER: Hashable = ("global",)
"""The cluster every user belongs to by default: it carries each item's overall reward rate."""


def _frozen(value: Any) -> Any:
    """``value`` with its lists turned into tuples, recursively: ids saved as tuples come back from JSON as lists."""
    return tuple(_frozen(part) for part in value) if isinstance(value, list) else value


class DiagLinUCB:
    """Diag-LinUCB over (user cluster, item) edges: ``update`` with each reward, ``score``/``recommend`` items.

    Parameters
    ----------
    alpha
        Width of the exploration bonus (standard errors added to the estimate); 0 ranks by the estimate alone. Scale
        it to the rewards: with clicks (a 10% click rate) the default 0.1 gives a streamer never shown a bonus of
        about 0.14, comparable to the estimates; docs/benchmarks.md (``ctr``) measures what larger ones cost.
    ridge
        The prior ``d`` of an edge (LinUCB's ridge ``λ``): larger shrinks early estimates harder towards 0.
    own_weight, global_weight
        The default clusters' weights: the user's own cluster and ``GLOBAL_CLUSTER`` (unused when a call passes
        ``clusters``).
    expire_after
        Seconds of event time without an update after which an edge is dropped; ``None`` keeps every edge (memory
        then grows with the number of (cluster, item) pairs ever rewarded).

    Examples
    --------
    Twenty users see streamer ``old`` and never click: for a new user a streamer never shown yet ranks first.

    >>> bandit = DiagLinUCB(alpha=0.5, expire_after=3600.0)
    >>> for t in range(20):
    ...     bandit.update(f"user{t}", "old", 0.0, t=float(t))
    >>> [(item, round(score, 3)) for item, score in bandit.recommend("ann", live=["old", "new"], k=2)]
    [('new', 0.707), ('old', 0.512)]

    Then forty users see ``new`` and every other one clicks: it now beats a streamer never shown.

    >>> for t in range(20, 60):
    ...     bandit.update(f"user{t}", "new", float(t % 2), t=float(t))
    >>> [item for item, _ in bandit.recommend("bob", live=["old", "new", "newer"], k=3)]
    ['new', 'newer', 'old']
    >>> len(bandit)
    62
    >>> bandit.update("carl", "new", 1.0, t=7200.0)  # after two idle hours every older edge has expired
    >>> len(bandit)
    2

    References
    ----------
    Yi, X., Wang, S.-C., He, R., Chandrasekaran, H., Wu, C., Heldt, L., Hong, L., Chen, M., Chi, E. H. (2023).
    Online Matching: A Real-time Bandit System for Large-scale Recommendations. RecSys. arXiv:2307.15893.
    Li, L., Chu, W., Langford, J., Schapire, R. E. (2010). A Contextual-Bandit Approach to Personalized News
    Article Recommendation. WWW.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        ridge: float = 1.0,
        own_weight: float = 1.0,
        global_weight: float = 1.0,
        expire_after: float | None = None,
    ) -> None:
        name = type(self).__name__
        require(
            _is_number(alpha) and alpha >= 0.0,
            f"{name}: alpha must be a finite number >= 0 (got {alpha!r}); 0 turns exploration off",
        )
        require(
            _is_number(ridge) and ridge > 0.0,
            f"{name}: ridge must be a finite number > 0 (got {ridge!r}), e.g. 1.0: the prior d of every edge",
        )
        for label, weight in (("own_weight", own_weight), ("global_weight", global_weight)):
            require(
                _is_number(weight) and weight >= 0.0,
                f"{name}: {label} must be a finite number >= 0 (got {weight!r}); 0 leaves that cluster out",
            )
        require(
            own_weight + global_weight > 0.0,
            f"{name}: own_weight and global_weight are both 0, so a user would belong to no cluster; make one > 0",
        )
        require(
            expire_after is None or (_is_number(expire_after) and expire_after > 0.0),
            f"{name}: expire_after must be a positive number of seconds or None (got {expire_after!r}), e.g. 86400",
        )
        self.params: dict[str, Any] = {
            "alpha": alpha,
            "ridge": ridge,
            "own_weight": own_weight,
            "global_weight": global_weight,
            "expire_after": expire_after,
        }
        self.clock = -math.inf
        # (cluster, item) -> [d, b, last update]; in order of last update, the stalest first (expiry pops from there)
        self._edges: OrderedDict[tuple[Hashable, Hashable], list[float]] = OrderedDict()

    def __len__(self) -> int:
        """The number of (cluster, item) edges held."""
        return len(self._edges)

    # -- inputs --------------------------------------------------------------------------------------------------

    def clusters_of(self, user: Hashable, clusters: Mapping[Hashable, float] | None = None) -> dict[Hashable, float]:
        """The user's cluster weights: ``clusters`` when given (checked), else its own cluster and the global one.

        >>> DiagLinUCB(global_weight=0.5).clusters_of("ann")
        {('user', 'ann'): 1.0, ('global',): 0.5}
        """
        name = type(self).__name__
        if clusters is None:
            require(_is_hashable(user), f"{name}: the user must be a hashable id such as a str (got {user!r})")
            default = {("user", user): self.params["own_weight"], GLOBAL_CLUSTER: self.params["global_weight"]}
            return {cluster: weight for cluster, weight in default.items() if weight > 0.0}
        require(
            isinstance(clusters, Mapping) and len(clusters) > 0,
            f"{name}: clusters must be a non-empty mapping cluster -> weight (got {clusters!r}), e.g. {{'c3': 1.0}}",
        )
        bad = {cluster: weight for cluster, weight in clusters.items() if not (_is_number(weight) and weight > 0.0)}
        require(not bad, f"{name}: cluster weights must be finite numbers > 0 (got {bad}); leave such clusters out")
        return {cluster: float(weight) for cluster, weight in clusters.items()}

    def _check_items(self, items: Any) -> list[Hashable]:
        require(
            isinstance(items, Iterable) and not isinstance(items, (str, bytes)),
            f"{type(self).__name__}: items must be a sequence of item ids (got {items!r}); wrap one id in a list",
        )
        checked = list(items)
        bad = [item for item in checked if not _is_hashable(item)]
        require(not bad, f"{type(self).__name__}: item ids must be hashable, such as str (got {bad})")
        return checked

    # -- learning ------------------------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Move the event-time clock to ``t`` (never backwards: a late event does not rewind it) and drop the edges
        not updated for more than ``expire_after`` seconds."""
        require(_is_number(t), f"{type(self).__name__}: event time t must be a finite number of seconds (got {t!r})")
        self.clock = max(self.clock, t)
        expire_after = self.params["expire_after"]
        if expire_after is None:
            return
        horizon = self.clock - expire_after
        while self._edges and next(iter(self._edges.values()))[2] < horizon:
            self._edges.popitem(last=False)

    def update(
        self,
        user: Hashable,
        item: Hashable,
        reward: float,
        *,
        t: float,
        clusters: Mapping[Hashable, float] | None = None,
    ) -> None:
        """Learn that ``item``, shown to ``user`` at event time ``t``, earned ``reward`` (1.0 a click, 0.0 an
        impression without one, or watch seconds): ``d += w²`` and ``b += w·reward`` on each of the user's edges
        to ``item``."""
        weights = self.clusters_of(user, clusters)
        name = type(self).__name__
        require(_is_hashable(item), f"{name}: the item must be a hashable id such as a str (got {item!r})")
        require(
            _is_number(reward),
            f"{name}: the reward must be a finite number (got {reward!r}), e.g. 1.0 for a click",
        )
        self.advance(t)
        for cluster, weight in weights.items():
            edge = self._edges.pop((cluster, item), None) or [self.params["ridge"], 0.0, self.clock]
            edge[0] += weight * weight
            edge[1] += weight * reward
            edge[2] = self.clock
            self._edges[(cluster, item)] = edge  # re-inserted last: the most recently updated

    # -- scoring -------------------------------------------------------------------------------------------------

    def estimate(
        self, user: Hashable, items: Sequence[Hashable], *, clusters: Mapping[Hashable, float] | None = None
    ) -> tuple[Vector, Vector]:
        """Per item, the estimate ``Σ w·b/d`` and its standard error ``√(Σ w²/d)`` (the bonus per unit of alpha)."""
        weights = self.clusters_of(user, clusters)
        checked = self._check_items(items)
        prior = (self.params["ridge"], 0.0)
        mean, variance = np.zeros(len(checked)), np.zeros(len(checked))
        for j, item in enumerate(checked):
            for cluster, weight in weights.items():
                d, b = self._edges.get((cluster, item), prior)[:2]
                mean[j] += weight * b / d
                variance[j] += weight * weight / d
        return mean, np.sqrt(variance)

    def score(
        self, user: Hashable, items: Sequence[Hashable], *, clusters: Mapping[Hashable, float] | None = None
    ) -> Vector:
        """The upper confidence bound ``Σ w·b/d + alpha·√(Σ w²/d)`` of each of ``items`` for ``user``, in order."""
        mean, width = self.estimate(user, items, clusters=clusters)
        return mean + self.params["alpha"] * width

    def recommend(
        self,
        user: Hashable,
        live: Iterable[Hashable],
        k: int,
        *,
        clusters: Mapping[Hashable, float] | None = None,
    ) -> list[tuple[Hashable, float]]:
        """The ``k`` live items with the highest :meth:`score`, best first, as ``(item, score)``; ties keep the
        order of ``live`` (:func:`~learners.ctr.ranking.live_only`). Only ``live`` items are candidates: pass the
        rooms live at the request time."""
        candidates = list(dict.fromkeys(self._check_items(live)))
        scores = self.score(user, candidates, clusters=clusters)
        return live_only(dict(zip(candidates, scores.tolist(), strict=True)), candidates, k)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot in plain data (dicts, lists, floats and the ids): the parameters, the clock and the edges as
        ``[cluster, item, d, b, last update]`` in expiry order. JSON-safe when the ids are strings, numbers or
        tuples of them (tuples come back as lists; :meth:`load_state_dict` turns them back)."""
        return {
            "format": STATE_FORMAT,
            "learner": type(self).__name__,
            "params": dict(self.params),
            "clock": self.clock,
            "edges": [[cluster, item, *edge] for (cluster, item), edge in self._edges.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a recommender built with the same parameters."""
        name = type(self).__name__
        check_state(state, name, STATE_FORMAT, self.params)
        edges: Any = state.get("edges")
        require(
            isinstance(edges, list)
            and all(isinstance(edge, (list, tuple)) and len(edge) == 5 and _is_number(edge[2]) for edge in edges),
            f"{name}: the state's 'edges' must be a list of [cluster, item, d, b, last update]; load what "
            f"{name}.state_dict() returned",
        )
        clock: Any = state.get("clock")
        require(
            isinstance(clock, Real) and not math.isnan(clock),
            f"{name}: the state's clock must be a number (got {clock!r}); load what {name}.state_dict() returned",
        )
        self.clock = float(clock)
        self._edges = OrderedDict(
            ((_frozen(cluster), _frozen(item)), [float(d), float(b), float(last)])
            for cluster, item, d, b, last in edges
        )


def _is_number(value: Any) -> bool:
    """A finite real number (numpy's included; a bool counts as 0 or 1: a click label is a reward)."""
    return isinstance(value, Real) and math.isfinite(value)


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
