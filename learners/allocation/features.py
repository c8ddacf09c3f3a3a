"""What an allocation policy sees, as numbers: the request's features and the user's recent behaviour.

A :class:`Request` is anything with the fields of the simulator's ``RequestState`` (user, activity group, fatigue,
the streamers live, the top candidate and its CTR): learners/ does not import connectors/, so the type is
structural. :class:`RequestFeaturizer` turns one into a flat float row laid out as :class:`FeatureLayout` says;
the network splits the row again (ids for the embeddings, the behaviour sequence for the target attention, the
dense features for the trunk), and the replay buffer stores rows, so a transition costs one array row.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from learners._state import require

__all__ = ["FeatureLayout", "Request", "RequestFeaturizer"]

FloatArray = npt.NDArray[np.float32]


class Request(Protocol):
    """A feed request with a live candidate, as the platform shows it to the allocation policy.

    ``fatigue`` in ``[0, 1]`` grows with the allocations made so far in the session; ``live`` the streamers live
    now; ``streamer`` the top candidate; ``ctr`` its click probability before fatigue.
    """

    @property
    def user(self) -> int: ...
    @property
    def group(self) -> int: ...
    @property
    def fatigue(self) -> float: ...
    @property
    def live(self) -> tuple[int, ...]: ...
    @property
    def streamer(self) -> int: ...
    @property
    def ctr(self) -> float: ...


@dataclass(frozen=True)
class FeatureLayout:
    """Where each part sits in a feature row: ``[group, user id, candidate id, dense..., history ids...,
    history clicks..., history watch..., history mask...]`` (ids already reduced to their embedding buckets)."""

    dense: int
    history: int

    @property
    def width(self) -> int:
        """The length of a row."""
        return 3 + self.dense + 4 * self.history

    def split(self, rows: Any) -> tuple[Any, ...]:
        """``(group, user, candidate, dense, history ids, history outcomes (…, K, 2), history mask)`` of ``rows``
        (an array or tensor whose last axis is a row), the ids and the group as they are stored (floats)."""
        k, d = self.history, self.dense
        ids = rows[..., 3 + d : 3 + d + k]
        outcomes = rows[..., 3 + d + k : 3 + d + 3 * k]
        outcomes = outcomes.reshape(*outcomes.shape[:-1], 2, k).transpose(-1, -2)
        mask = rows[..., 3 + d + 3 * k :]
        return rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3 : 3 + d], ids, outcomes, mask


class RequestFeaturizer:
    """Features of a request and a per-user memory of the user's last ``history`` live-card outcomes.

    Dense features: the activity group one-hot, fatigue, the candidate's CTR and click probability
    ``ctr * (1 - fatigue)``, which streamers are live (multi-hot over ``streamers`` buckets), how many are live, and
    the user's click rate and mean watch time over the remembered outcomes. The ids (user, candidate streamer)
    are reduced modulo ``user_buckets`` and ``streamers`` for the embeddings. The behaviour sequence holds, per
    remembered card, the streamer bucket, whether it was clicked and the watch time over ``watch_scale`` seconds.

    The memory changes only through :meth:`remember` (the agent calls it as it observes outcomes), so the features
    of a request depend only on what was observed before it. It holds the ``max_users`` users remembered most
    recently: on an endless stream of new users the least recently remembered are forgotten (they look new again).

    >>> from types import SimpleNamespace
    >>> featurizer = RequestFeaturizer(groups=2, streamers=4, user_buckets=8, history=2)
    >>> request = SimpleNamespace(user=3, group=1, fatigue=0.25, live=(0, 2), streamer=2, ctr=0.4)
    >>> featurizer.remember(3, 2, clicked=True, watch_seconds=60.0)
    >>> row = featurizer(request)
    >>> row.shape, row[:3].tolist(), featurizer.layout.width
    ((23,), [1.0, 3.0, 2.0], 23)
    """

    def __init__(
        self,
        *,
        groups: int,
        streamers: int,
        user_buckets: int,
        history: int,
        max_users: int = 100_000,
        watch_scale: float = 100.0,
    ) -> None:
        sizes = (("groups", groups), ("streamers", streamers), ("user_buckets", user_buckets), ("max_users", max_users))
        for name, value in sizes:
            require(value >= 1, f"RequestFeaturizer: {name} must be >= 1 (got {value})")
        require(history >= 1, f"RequestFeaturizer: history must be >= 1 (got {history}); it is the sequence length")
        require(watch_scale > 0, f"RequestFeaturizer: watch_scale must be > 0 seconds (got {watch_scale})")
        self.groups, self.streamers, self.user_buckets, self.history = groups, streamers, user_buckets, history
        self.max_users, self.watch_scale = max_users, float(watch_scale)
        self.layout = FeatureLayout(dense=groups + 3 + streamers + 1 + 2, history=history)
        self._live = 3 + groups + 3  # where the live multi-hot starts in a row
        self._memory: OrderedDict[int, deque[tuple[int, float, float]]] = OrderedDict()  # least recent first
        self._behaviour: dict[int, FloatArray] = {}  # per user, the row's tail that the memory determines

    def __call__(self, request: Request) -> FloatArray:
        """The feature row of ``request`` (float32, :attr:`layout`).

        Called for every decision and twice per observed transition, so it writes only the request's own entries
        into a zero row and copies the user's behaviour part, which :meth:`remember` precomputes.
        """
        group = int(request.group)
        if not 0 <= group < self.groups:
            raise ValueError(
                f"RequestFeaturizer: group {group} is outside 0..{self.groups - 1}; build the agent with groups= "
                "the platform's number of activity groups"
            )
        fatigue, ctr = float(request.fatigue), float(request.ctr)
        if not (0.0 <= fatigue <= 1.0 and 0.0 <= ctr <= 1.0):
            raise ValueError(
                f"RequestFeaturizer: fatigue and ctr must be in [0, 1] (got {fatigue}, {ctr}) for user {request.user}"
            )
        s, user, live, start = self.streamers, int(request.user), request.live, self._live
        row = np.zeros(self.layout.width, dtype=np.float32)
        row[0], row[1], row[2] = group, user % self.user_buckets, int(request.streamer) % s
        row[3 + group] = 1.0
        row[start - 3], row[start - 2], row[start - 1] = fatigue, ctr, ctr * (1.0 - fatigue)
        for streamer in live:
            row[start + int(streamer) % s] = 1.0
        row[start + s] = len(live) / s
        behaviour = self._behaviour.get(user)
        if behaviour is not None:
            row[start + s + 1 :] = behaviour
        return row

    def remember(self, user: int, streamer: int, *, clicked: bool, watch_seconds: float) -> None:
        """Add an inserted live card's outcome to ``user``'s behaviour sequence (the oldest leaves past ``history``);
        past ``max_users`` users, the least recently remembered one is forgotten."""
        user = int(user)
        memory = self._memory.setdefault(user, deque(maxlen=self.history))
        self._memory.move_to_end(user)
        memory.append((int(streamer) % self.streamers, float(clicked), float(watch_seconds) / self.watch_scale))
        self._remake(user)
        if len(self._memory) > self.max_users:
            forgotten, _ = self._memory.popitem(last=False)
            del self._behaviour[forgotten]

    def _remake(self, user: int) -> None:
        """Precompute the part of ``user``'s rows that the memory determines: the click rate and mean watch time
        over the remembered cards, then the behaviour sequence (streamers, clicks, watch times, mask)."""
        seen = np.array(self._memory[user], dtype=np.float32)
        k, n = self.history, len(seen)
        behaviour = np.zeros(2 + 4 * k, dtype=np.float32)
        behaviour[:2] = seen[:, 1].mean(), seen[:, 2].mean()
        for part in range(3):
            behaviour[2 + part * k : 2 + part * k + n] = seen[:, part]
        behaviour[2 + 3 * k : 2 + 3 * k + n] = 1.0
        self._behaviour[user] = behaviour

    def state_dict(self) -> dict[str, Any]:
        """The behaviour memory, as plain lists, least recently remembered user first."""
        return {"memory": {user: [list(item) for item in items] for user, items in self._memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._memory = OrderedDict(
            (int(user), deque((tuple(item) for item in items), maxlen=self.history))
            for user, items in list(state["memory"].items())[-self.max_users :]
        )
        self._behaviour = {}
        for user in self._memory:
            self._remake(user)
