"""A live-streaming platform simulator whose optimal live-stream allocation is known (spec livestream.md §2).

The data the allocation learners (SL-MGAC, spec §3) and the live recommenders are tested and demonstrated on:
it writes KuaiLive-format logs (:mod:`connectors.sources.live_platform_logs`), their messages for
``live.interactions`` and ``live.rooms`` in time order, the behaviour policy's propensity at every decision (for
off-policy evaluation), and :mod:`connectors.sources.live_platform_optimal` computes the optimal allocation policy
of a small configuration exactly. numpy only; everything is deterministic for a seed.

The model
---------
**World** (drawn from the seed alone, the same whatever policy runs on it). ``C`` content categories with latent
vectors; ``S`` streamers, each with a category, a latent content vector (its category's plus noise) and a
popularity ``sigmoid(logit)`` whose log-odds take an hourly mean-reverting random step (``popularity_drift``).
Each streamer alternates offline and live periods of exponential lengths (a Poisson schedule, means around
``offline_hours`` and ``live_hours``, started in its stationary state); each live period is a room. ``U`` users,
each in an :class:`ActivityGroup` and with a latent interest vector; ``match(u, s) = sigmoid(1.5 · interest ·
content / sqrt(d))``. Drift events (:class:`StreamerOffline`, :class:`CategoryTrend`) change the world at set hours.

**Sessions.** Each user starts sessions at Poisson times (rate from the group), drawn in advance, so a session
starts at a time independent of everything else (and may, rarely, overlap the user's previous one: a second
device). A session is a run of feed requests. At a request at time ``t``:

1. the candidates are the streamers live at ``t``; the top candidate is the one with the highest
   ``ctr = match(u, s) * popularity_s(t)``. With no room live, nothing is decided;
2. otherwise the policy gets a :class:`RequestState` and returns the probability of inserting the top candidate;
   the simulator draws the decision and logs it with that probability;
3. inserted: the user clicks with probability ``ctr * (1 - fatigue)``. A click opens the room: the user watches for
   an exponential time (mean ``watch_seconds``) cut short if the room ends, and comments, likes and gifts at
   Poisson rates proportional to the match; no click is a ``negative.csv`` impression. Fatigue then rises one level
   (at most ``fatigue_levels``) and the page's short videos lose ``slot_share`` of their time to the live card.
   Not inserted, or no room live: fatigue falls one level (at least 0). ``fatigue = level / fatigue_levels``;
4. the user watches the page's short videos for an exponential time (mean ``video_seconds``, less the slot) and
   leaves with probability ``exit_probability + fatigue_exit * fatigue``: a geometric session budget, shortened by
   allocations that come too often (the long-term cost of allocating).

Every session starts unfatigued. A session that starts before ``hours`` runs to its end (the schedule is drawn
for a day more, and a session still running past that is cut). The reward of a session is its live watch time
plus ``video_weight`` times its short-video time (see :mod:`~connectors.sources.live_platform_optimal`).

**Stepwise play.** :class:`SessionPlay` plays a session one decision at a time for an outside driver: what
:class:`~connectors.sources.live_feed.LiveFeed` does to let an allocation service decide over the bus, and what
:meth:`LivePlatform.run` does with a policy in-process.

>>> platform = LivePlatform(LivePlatformConfig(users=20, streamers=6, hours=6.0), seed=3)
>>> log = platform.run(Threshold(0.2))
>>> len(log.sessions), len(log.decisions), int(log.decisions.inserted.sum()), len(log.kuailive.tables["click"])
(26, 287, 71, 16)
>>> next(m for m in log.messages() if m.message.kind == "click")
LiveMessage(topic='live.interactions', key='17', message=Interaction(user='17', streamer='4', room='1', \
ts=1746374929.317, kind='click', value=108.136, context={}))
>>> log == platform.run(Threshold(0.2))  # deterministic for a seed
True

References
----------
Supervised Learning-enhanced Multi-Group Actor Critic for Live Stream Allocation in Feed (SL-MGAC). Kuaishou,
KDD 2025.
Qu, C., Dai, S., Guo, K., Zhao, L., Niu, Y., Zhang, X., Xu, J. (2025). KuaiLive: A Real-time Interactive Dataset
for Live Streaming Recommendation. arXiv:2508.05633.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from connectors.sources.live_platform_logs import INTERACTION_KINDS, TITLE_DIM, KuaiLiveLogs, KuaiLiveTable, LiveMessage

KUAILIVE_START_MS = 1_746_374_400_000
"""2025-05-05 00:00 in China (UTC+8), where KuaiLive's logs begin: the simulator's time 0."""
CATEGORY_NAMES = ("shop", "game", "chat", "music", "dance", "outdoor", "food", "education")
"""``live_content_category`` of the first categories; more are named ``category8``, ``category9``..."""
GIFT_PRICES = (1, 2, 5, 10, 20, 50, 100)
_GIFT_WEIGHTS = np.array([0.4, 0.2, 0.15, 0.12, 0.07, 0.04, 0.02])
_LATENT_DIM = 8
_MATCH_SCALE = 1.5
_CONTENT_NOISE = 0.5
_POPULARITY_LOGIT = (-1.0, 1.0)  # mean and spread of the streamers' popularity log-odds
_REVERSION = math.exp(-1 / 24)  # hourly pull of popularity back to its level: a one-day time scale
_SCHEDULE_SPREAD = 0.3  # streamers' mean live and offline times vary by this log-normal factor
_TAIL_HOURS = 24.0  # the schedule runs this much past the last session start
_HOUR = 3600.0
_DAY = 86400.0
_MS = 1000.0
_CHINA = datetime.timedelta(hours=8)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ActivityGroup:
    """Users of one activity level (SL-MGAC's groups): how often they come, how long they stay, how they watch.

    ``share`` of the users; ``sessions_per_day``, the Poisson rate of their session starts; ``exit_probability``,
    the chance of leaving after a feed request when unfatigued (the session budget: a geometric number of requests
    with mean ``1 / exit_probability``); ``video_seconds``, the mean short-video time of one feed page;
    ``watch_seconds``, the mean time they watch a live room once in (cut short when the room ends).
    """

    name: str
    share: float
    sessions_per_day: float
    exit_probability: float
    video_seconds: float
    watch_seconds: float


ACTIVITY_GROUPS = (
    ActivityGroup(
        "low", share=0.5, sessions_per_day=2.0, exit_probability=0.12, video_seconds=25.0, watch_seconds=60.0
    ),
    ActivityGroup(
        "mid", share=0.35, sessions_per_day=5.0, exit_probability=0.07, video_seconds=30.0, watch_seconds=120.0
    ),
    ActivityGroup(
        "high", share=0.15, sessions_per_day=12.0, exit_probability=0.04, video_seconds=35.0, watch_seconds=240.0
    ),
)
"""The default groups: half the users come rarely and leave soon, a few come often and watch long."""


@dataclass(frozen=True)
class StreamerOffline:
    """From ``hour`` on, ``streamer`` stops streaming: its room live then ends at once and it starts no other.

    ``streamer=None`` takes the most popular streamer at that hour (among those still streaming).
    """

    hour: float
    streamer: int | None = None


@dataclass(frozen=True)
class CategoryTrend:
    """From ``hour`` on, ``category`` trends: the popularity odds of its streamers are multiplied by ``boost``."""

    hour: float
    category: int
    boost: float = 4.0


DriftEvent = StreamerOffline | CategoryTrend


@dataclass(frozen=True)
class LivePlatformConfig:
    """The sizes and behaviour of a simulated platform; see the module docstring for what each number does.

    ``hours`` is how long sessions keep starting; ``live_hours`` and ``offline_hours`` the mean lengths of a
    streamer's live and offline periods; ``popularity_drift`` the standard deviation of the hourly step of a
    streamer's popularity log-odds; ``fatigue_levels`` the number of allocations that fatigue a user fully;
    ``fatigue_exit`` the exit probability added at full fatigue; ``slot_share`` the share of a page's short-video
    time a live card takes; ``*_per_minute`` the rates of comments, likes and gifts while watching, at a perfect
    match; ``drift`` the drift events; ``start_ms`` the epoch time (ms) of time 0.

    >>> LivePlatformConfig(groups=(ACTIVITY_GROUPS[0],))
    Traceback (most recent call last):
    ...
    ValueError: LivePlatformConfig: the groups' shares must add up to 1 (got 0.5 for ['low'])
    """

    users: int = 200
    streamers: int = 40
    categories: int = 6
    hours: float = 24.0
    groups: tuple[ActivityGroup, ...] = ACTIVITY_GROUPS
    live_hours: float = 2.0
    offline_hours: float = 6.0
    popularity_drift: float = 0.1
    fatigue_levels: int = 4
    fatigue_exit: float = 0.1
    slot_share: float = 0.25
    comments_per_minute: float = 0.3
    likes_per_minute: float = 0.6
    gifts_per_minute: float = 0.05
    drift: tuple[DriftEvent, ...] = ()
    start_ms: int = KUAILIVE_START_MS

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1 (got {value})"
            for name, value in (("users", self.users), ("streamers", self.streamers), ("categories", self.categories))
            if value < 1
        ]
        problems += [
            f"{name} must be finite and > 0 (got {value})"
            for name, value in (("hours", self.hours), ("live_hours", self.live_hours))
            if not (math.isfinite(value) and value > 0)
        ]
        if not (math.isfinite(self.offline_hours) and self.offline_hours > 0):
            problems.append(f"offline_hours must be finite and > 0 (got {self.offline_hours})")
        if not (1 <= len(self.groups) <= 7):
            problems.append(
                f"there must be 1 to 7 activity groups, one user.csv onehot flag each (got {len(self.groups)})"
            )
        elif not math.isclose(sum(group.share for group in self.groups), 1.0, abs_tol=1e-9):
            total = sum(group.share for group in self.groups)
            problems.append(f"the groups' shares must add up to 1 (got {total:g} for {[g.name for g in self.groups]})")
        for group in self.groups:
            if not (group.share >= 0 and group.sessions_per_day > 0 and group.video_seconds > 0):
                problems.append(f"group {group.name!r}: share >= 0, sessions_per_day > 0, video_seconds > 0")
            if not (group.watch_seconds > 0 and 0 < group.exit_probability < 1):
                problems.append(f"group {group.name!r}: watch_seconds > 0 and exit_probability in (0, 1)")
            elif not 0 <= self.fatigue_exit <= 1 - group.exit_probability:
                problems.append(
                    f"fatigue_exit must be in [0, 1 - exit_probability] = [0, {1 - group.exit_probability:g}] for "
                    f"group {group.name!r} (got {self.fatigue_exit})"
                )
        if self.fatigue_levels < 1:
            problems.append(f"fatigue_levels must be >= 1 (got {self.fatigue_levels})")
        if not 0 <= self.slot_share < 1:
            problems.append(f"slot_share must be in [0, 1) (got {self.slot_share})")
        rates = (self.popularity_drift, self.comments_per_minute, self.likes_per_minute, self.gifts_per_minute)
        if not all(math.isfinite(rate) and rate >= 0 for rate in rates):
            problems.append(f"popularity_drift and the *_per_minute rates must be finite and >= 0 (got {rates})")
        for event in self.drift:
            if not 0 <= event.hour <= self.hours:
                problems.append(f"drift event {event} must happen within [0, hours] = [0, {self.hours}]")
            if (
                isinstance(event, StreamerOffline)
                and event.streamer is not None
                and not 0 <= event.streamer < self.streamers
            ):
                problems.append(f"{event} names no streamer: they are 0..{self.streamers - 1}")
            if isinstance(event, CategoryTrend) and not (0 <= event.category < self.categories and event.boost > 0):
                problems.append(f"{event} needs a category in 0..{self.categories - 1} and a boost > 0")
        if problems:
            raise ValueError("LivePlatformConfig: " + "; ".join(problems))

    @classmethod
    def small(cls) -> LivePlatformConfig:
        """A configuration whose allocation problem is solved exactly by value iteration.

        4 streamers (16 live sets), 2 categories, 40 users, no popularity drift (so the per-request dynamics are
        exactly the Markov decision process of :mod:`~connectors.sources.live_platform_optimal`), and rooms of half
        an hour about an hour apart, so that the live set changes within a session.
        """
        return cls(users=40, streamers=4, categories=2, live_hours=0.5, offline_hours=1.0, popularity_drift=0.0)


@dataclass(frozen=True)
class RequestState:
    """What the allocation policy sees at a feed request with a live room: all of it known to the platform.

    ``user`` and its ``group``; ``fatigue`` in ``[0, 1]`` (``level / fatigue_levels``: a function of the session's
    allocations so far); ``live``, the streamers live now (ascending); ``streamer``, the top candidate among them;
    ``ctr``, its click probability before fatigue (``match * popularity``).
    """

    user: int
    group: int
    fatigue: float
    live: tuple[int, ...]
    streamer: int
    ctr: float

    @property
    def click_probability(self) -> float:
        """The chance the user clicks the live card if it is inserted: ``ctr * (1 - fatigue)``."""
        return self.ctr * (1.0 - self.fatigue)


Policy = Callable[[RequestState], float]
"""An allocation policy: the probability, in ``[0, 1]``, of inserting the top live candidate at this request."""


def insert_probability(policy: Policy, state: RequestState) -> float:
    """``policy(state)`` as a float, refused unless it is a probability (NaN, negative or above 1 are errors).

    >>> insert_probability(always, RequestState(user=0, group=0, fatigue=0.0, live=(2,), streamer=2, ctr=0.3))
    1.0
    """
    value = policy(state)
    probability = float(value)
    if not 0.0 <= probability <= 1.0:  # also refuses NaN
        raise ValueError(
            f"the allocation policy returned {value!r} for {state}; a policy returns the probability of inserting "
            "the live room, a number in [0, 1]"
        )
    return probability


def never(state: RequestState) -> float:
    """Never insert a live room: the no-live baseline whose app time the platform constraint protects."""
    return 0.0


def always(state: RequestState) -> float:
    """Insert the top live room at every request that has one."""
    return 1.0


@dataclass(frozen=True)
class Threshold:
    """Insert when the top candidate's click probability ``ctr * (1 - fatigue)`` is at least ``threshold``.

    Greedy on predicted CTR with a tuned threshold, a baseline of spec §3.

    >>> Threshold(0.2)(RequestState(user=0, group=0, fatigue=0.5, live=(1, 3), streamer=3, ctr=0.3))
    0.0
    """

    threshold: float

    def __call__(self, state: RequestState) -> float:
        return 1.0 if state.click_probability >= self.threshold else 0.0


class _Columns:
    """Equal arrays make equal records; the length is the first column's."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        columns = (item.name for item in fields(self))  # type: ignore[arg-type]
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in columns)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Decisions(_Columns):
    """Every allocation decision, one entry per array position, in the order they were simulated (user by user).

    ``ts_ms`` (epoch ms), ``user``, ``group``, ``session`` (index into :class:`Sessions`), ``streamer`` and
    ``live_id`` of the top candidate, ``fatigue`` and ``ctr`` as the policy saw them, ``insert_probability`` (what
    the behaviour policy returned), ``inserted``, ``clicked``, then what the request brought: ``live_seconds``,
    ``video_seconds`` and whether the session ended after it (``exited``).
    """

    ts_ms: IntArray
    user: IntArray
    group: IntArray
    session: IntArray
    streamer: IntArray
    live_id: IntArray
    fatigue: FloatArray
    ctr: FloatArray
    insert_probability: FloatArray
    inserted: BoolArray
    clicked: BoolArray
    live_seconds: FloatArray
    video_seconds: FloatArray
    exited: BoolArray

    @property
    def propensity(self) -> FloatArray:
        """The behaviour policy's probability of the action it took: the importance weights' denominator."""
        return np.where(self.inserted, self.insert_probability, 1.0 - self.insert_probability)


@dataclass(frozen=True, eq=False)
class Sessions(_Columns):
    """Every session's totals: ``user``, ``group``, ``start_ms``, the number of ``requests``, ``decisions`` (requests
    with a live room), ``allocations`` and ``clicks``, and the seconds of live and short-video watching."""

    user: IntArray
    group: IntArray
    start_ms: IntArray
    requests: IntArray
    decisions: IntArray
    allocations: IntArray
    clicks: IntArray
    live_seconds: FloatArray
    video_seconds: FloatArray


@dataclass(frozen=True, eq=False)
class LivePlatformLog:
    """One run of a policy: the KuaiLive-format logs, the allocation decisions and the sessions' totals."""

    kuailive: KuaiLiveLogs
    decisions: Decisions
    sessions: Sessions

    def messages(self) -> Iterator[LiveMessage]:
        """The interactions and room starts/ends as messages for ``live.interactions``/``live.rooms``, in time order.

        A caller produces them with :mod:`connectors.bus` (``message.topic``, ``message.key``, ``encode(...)``).
        """
        return self.kuailive.messages()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LivePlatformLog):
            return NotImplemented
        return self.kuailive == other.kuailive and self.decisions == other.decisions and self.sessions == other.sessions

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ScheduledSession:
    """A session of the platform's schedule: ``index``, its position in :meth:`LivePlatform.session_schedule`
    (user by user, each user's in start order: the order :meth:`LivePlatform.run` plays them in), the ``user``, the
    user's session ``number`` (which seeds the session's draws) and its ``start`` (seconds from time 0)."""

    index: int
    user: int
    number: int
    start: float


@dataclass(frozen=True)
class DecisionOutcome:
    """What followed a decision until the session's next decision or its end: whether the live card was
    ``inserted`` (the action taken), whether the user ``clicked`` it, the ``live_seconds`` watched, the
    ``video_seconds`` of short videos (over every request up to the next decision, also those without a live room)
    and whether the session then ended by the user's choice (``exited``; False at the last decision of a session cut
    at the schedule's end)."""

    inserted: bool
    clicked: bool
    live_seconds: float
    video_seconds: float
    exited: bool


class DecisionPoint(NamedTuple):
    """A decision a session waits for: its ``time`` (seconds from time 0), what the policy sees (``state``) and the
    outcome of the session's ``previous`` decision (None at the first)."""

    time: float
    state: RequestState
    previous: DecisionOutcome | None


Answer = tuple[float, bool | None]
"""What a session is told at a decision: the insert probability, and the decision when the driver made it (None:
the session draws it with that probability)."""


class SessionPlay:
    """One session played decision by decision, for a driver that answers each decision when it can.

    :attr:`request` is the decision the session waits for (None once the session has ended); :meth:`answer` gives
    the insert probability, and the decision itself when the driver made it, and plays on to the next decision.
    :meth:`LivePlatform.run` answers from a policy in-process; :class:`~connectors.sources.live_feed.LiveFeed` plays
    many sessions at once against an allocation service over the bus. Both play sessions with this code, so a
    session told the same decisions has the same outcome whoever decides: the session draws the uniform that decides
    in :meth:`LivePlatform.run` even when the driver decides, keeping its later draws where they were.

    Until it ends, the session's rows accumulate: :attr:`interactions` (``(file, row)`` in simulation order, a row
    of ``click.csv``, ``negative.csv``...) and :attr:`decisions` (:class:`Decisions` rows but for the ``session``
    column, which :meth:`LivePlatform.log` fills); at its end :attr:`end` (seconds from time 0), :attr:`outcome` (of
    the last decision, None when there was none) and :attr:`totals` (its :class:`Sessions` row) are set.

    >>> platform = LivePlatform(LivePlatformConfig.small(), seed=1)
    >>> play = SessionPlay(platform, platform.session_schedule()[5])
    >>> play.request.time, play.request.state.streamer, play.request.previous
    (12477.566..., 2, None)
    >>> while play.request is not None:  # the driver decides: insert where a click is likely
    ...     inserted = play.request.state.click_probability > 0.2
    ...     _ = play.answer(float(inserted), inserted)
    >>> len(play.decisions), play.outcome
    (5, DecisionOutcome(inserted=True, clicked=False, live_seconds=0.0, video_seconds=22.475..., exited=True))
    """

    def __init__(self, platform: LivePlatform, session: ScheduledSession) -> None:
        self.session = session
        self.group = int(platform.user_group[session.user])
        self.interactions: list[tuple[str, tuple[int, ...]]] = []
        self.decisions: list[tuple[Any, ...]] = []
        self.end: float | None = None
        self.outcome: DecisionOutcome | None = None
        self.totals: tuple[Any, ...] | None = None
        self._steps = platform._play(self)
        self.request: DecisionPoint | None = next(self._steps, None)

    def answer(self, probability: float, inserted: bool | None = None) -> DecisionPoint | None:
        """Decide :attr:`request`: insert with ``probability`` (drawn here), or as ``inserted`` says when the driver
        decided (with ``probability`` the chance it gave that). Returns the next decision, None at the session's end.
        """
        if self.request is None:
            raise RuntimeError(f"session {self.session.index} of user {self.session.user} has ended: nothing to answer")
        if not 0.0 <= probability <= 1.0:  # also refuses NaN
            raise ValueError(f"an insert probability is a number in [0, 1] (got {probability!r})")
        if inserted is not None and probability == (0.0 if inserted else 1.0):
            raise ValueError(
                f"inserted={inserted} with insert probability {probability}: the action taken must have had a "
                "positive probability"
            )
        try:
            self.request = self._steps.send((probability, inserted))
        except StopIteration:
            self.request = None
        return self.request


class LivePlatform:
    """The simulated platform of one configuration and seed: users, streamers, their schedule and popularity.

    Drawing the world needs no policy, so every policy :meth:`run` plays meets the same users, rooms and popularity
    (common random numbers: compare policies on one platform). Each session draws from its own seed too, so a
    policy change alters only the sessions it touches.

    Attributes (index ``u`` a user, ``s`` a streamer, ``r`` a room; times in seconds from time 0):
    ``user_group[u]``, ``match[u, s]``, ``category[s]``, ``live_seconds[s]`` and ``offline_seconds[s]`` (the mean
    lengths of its live and offline periods), ``room_streamer[r]``, ``room_start[r]``, ``room_end[r]`` (rooms in
    start order: ``r`` is the ``live_id``), and ``offline_from`` (streamer -> the time it stopped streaming).
    """

    def __init__(self, config: LivePlatformConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.horizon = config.hours * _HOUR
        self.schedule_end = self.horizon + _TAIL_HOURS * _HOUR
        world = self._rng("world")
        n_users, n_streamers = config.users, config.streamers
        shares = np.array([group.share for group in config.groups])
        self.user_group: IntArray = world.choice(len(config.groups), size=n_users, p=shares / shares.sum())
        self.category: IntArray = world.permutation(np.arange(n_streamers) % config.categories)
        category_vectors = world.normal(size=(config.categories, _LATENT_DIM))
        self.content: FloatArray = category_vectors[self.category] + _CONTENT_NOISE * world.normal(
            size=(n_streamers, _LATENT_DIM)
        )
        interests = world.normal(size=(n_users, _LATENT_DIM))
        self.match: FloatArray = _sigmoid(_MATCH_SCALE * interests @ self.content.T / math.sqrt(_LATENT_DIM))
        spread = np.exp(_SCHEDULE_SPREAD * world.normal(size=(2, n_streamers)))
        self.live_seconds: FloatArray = config.live_hours * _HOUR * spread[0]
        self.offline_seconds: FloatArray = config.offline_hours * _HOUR * spread[1]
        self.live_type: IntArray = world.integers(1, 4, size=n_streamers)
        self._popularity_path(world)
        self._schedule()
        self._titles = self._title_embeddings()

    def _rng(self, purpose: str, *keys: int) -> np.random.Generator:
        """A generator for one purpose (and user, session...), independent of every other purpose's."""
        tag = {"world": 0, "schedule": 1, "popularity": 2, "sessions": 3, "profiles": 4, "play": 5}[purpose]
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(tag, *keys)))

    def _popularity_path(self, world: np.random.Generator) -> None:
        mean, spread = _POPULARITY_LOGIT
        level = mean + spread * world.normal(size=self.config.streamers)
        ticks = math.ceil(self.schedule_end / _HOUR) + 1
        steps = self._rng("popularity").normal(size=(ticks, self.config.streamers)) * self.config.popularity_drift
        logits = np.empty((ticks, self.config.streamers))
        logits[0] = level
        for tick in range(1, ticks):
            logits[tick] = level + _REVERSION * (logits[tick - 1] - level) + steps[tick]
        self._logits = logits
        trends = sorted((e for e in self.config.drift if isinstance(e, CategoryTrend)), key=lambda e: e.hour)
        self._trend_times = np.array([trend.hour * _HOUR for trend in trends])
        offsets = np.zeros((len(trends) + 1, self.config.streamers))
        for index, trend in enumerate(trends, start=1):
            offsets[index] = offsets[index - 1] + math.log(trend.boost) * (self.category == trend.category)
        self._trend_offsets = offsets
        self._popularity: dict[tuple[int, int], FloatArray] = {}

    def popularity_at(self, t: float) -> FloatArray:
        """Every streamer's popularity at time ``t`` (seconds): hourly drift, plus the trends begun by then.

        The array is shared (read-only): copy it to change it.
        """
        tick = min(max(int(t // _HOUR), 0), len(self._logits) - 1)
        trend = int(np.searchsorted(self._trend_times, t, side="right"))
        cached = self._popularity.get((tick, trend))
        if cached is None:
            cached = self._popularity[tick, trend] = _sigmoid(self._logits[tick] + self._trend_offsets[trend])
            cached.flags.writeable = False
        return cached

    def _schedule(self) -> None:
        """Each streamer's rooms: alternating exponential offline/live periods, started in the stationary state."""
        starts: list[float] = []
        ends: list[float] = []
        owners: list[int] = []
        cut = self._offline_times()
        for streamer in range(self.config.streamers):
            rng = self._rng("schedule", streamer)
            on, off = float(self.live_seconds[streamer]), float(self.offline_seconds[streamer])
            stop = min(self.schedule_end, cut.get(streamer, math.inf))
            now = 0.0
            if rng.random() < on / (on + off):  # live at time 0: its age and its rest are exponential too
                begin, now = -rng.exponential(on), rng.exponential(on)
                starts.append(begin)
                ends.append(min(now, stop))
                owners.append(streamer)
            while True:
                now += rng.exponential(off)
                if now >= stop:
                    break
                begin, now = now, now + rng.exponential(on)
                starts.append(begin)
                ends.append(min(now, stop))
                owners.append(streamer)
        order = np.lexsort((np.array(owners), np.array(starts)))
        self.room_start: FloatArray = np.array(starts)[order]
        self.room_end: FloatArray = np.array(ends)[order]
        self.room_streamer: IntArray = np.array(owners, dtype=np.int64)[order]
        self.offline_from = cut
        # One sorted key per room, streamer by streamer (``start + streamer * span``), so that one searchsorted finds
        # every streamer's latest room at a time.
        earliest = float(self.room_start.min(initial=0.0))
        span = self.schedule_end - earliest + 1.0
        self._by_streamer = np.lexsort((self.room_start, self.room_streamer))
        self._keys = self.room_start[self._by_streamer] - earliest + self.room_streamer[self._by_streamer] * span
        self._offsets = np.arange(self.config.streamers) * span - earliest

    def _offline_times(self) -> dict[int, float]:
        """Which streamer each :class:`StreamerOffline` event takes off, and when (the first event per streamer)."""
        cut: dict[int, float] = {}
        for event in sorted((e for e in self.config.drift if isinstance(e, StreamerOffline)), key=lambda e: e.hour):
            at = event.hour * _HOUR
            streamer = event.streamer
            if streamer is None:
                popularity = self.popularity_at(at).copy()
                popularity[list(cut)] = -np.inf
                streamer = int(np.argmax(popularity))
            cut.setdefault(streamer, at)
        return cut

    def live_at(self, t: float) -> tuple[IntArray, IntArray]:
        """The streamers live at time ``t`` (ascending) and the ``live_id`` of each one's room.

        >>> platform = LivePlatform(LivePlatformConfig.small(), seed=1)
        >>> streamers, rooms = platform.live_at(0.0)
        >>> streamers.tolist(), bool(platform.room_start[rooms[0]] <= 0.0 < platform.room_end[rooms[0]])
        ([0], True)
        """
        latest = self._by_streamer[np.maximum(np.searchsorted(self._keys, t + self._offsets, side="right") - 1, 0)]
        live = (self.room_streamer[latest] == np.arange(self.config.streamers)) & (self.room_start[latest] <= t)
        live &= self.room_end[latest] > t
        streamers = np.flatnonzero(live)
        return streamers, latest[streamers]

    def session_starts(self, user: int) -> FloatArray:
        """The times (seconds) at which ``user`` starts sessions: a Poisson process over ``[0, hours)``."""
        rng = self._rng("sessions", user)
        rate = self.config.groups[int(self.user_group[user])].sessions_per_day / _DAY
        return np.sort(rng.uniform(0.0, self.horizon, size=rng.poisson(rate * self.horizon)))

    def session_schedule(self) -> list[ScheduledSession]:
        """Every session of the run, user by user and each user's in start order: the order :meth:`run` plays."""
        schedule: list[ScheduledSession] = []
        for user in range(self.config.users):
            for number, start in enumerate(self.session_starts(user).tolist()):
                schedule.append(ScheduledSession(len(schedule), user, number, start))
        return schedule

    def run(self, policy: Policy) -> LivePlatformLog:
        """Play ``policy`` on every user's sessions; the logs, decisions and sessions of the run."""
        plays = []
        for session in self.session_schedule():
            play = SessionPlay(self, session)
            while play.request is not None:
                play.answer(insert_probability(policy, play.request.state))
            plays.append(play)
        return self.log(plays)

    def _play(self, play: SessionPlay) -> Generator[DecisionPoint, Answer, None]:
        """The session of ``play``, yielding at each decision and told the answer (see :class:`SessionPlay`)."""
        config = self.config
        user, group = play.session.user, play.group
        params = config.groups[group]
        levels = config.fatigue_levels
        rng = self._rng("play", user, play.session.number)
        match = self.match[user]
        now, level = play.session.start, 0
        requests = decisions = allocations = clicks = 0
        live_total = video_total = 0.0
        outcome: DecisionOutcome | None = None
        while now < self.schedule_end:
            requests += 1
            streamers, rooms = self.live_at(now)
            video_mean, watched = params.video_seconds, 0.0
            inserted = clicked = False
            decision: tuple[Any, ...] = ()
            if len(streamers):
                decisions += 1
                ctrs = match[streamers] * self.popularity_at(now)[streamers]
                top = int(np.argmax(ctrs))
                streamer, room, ctr = int(streamers[top]), int(rooms[top]), float(ctrs[top])
                fatigue = level / levels
                state = RequestState(user, group, fatigue, tuple(streamers.tolist()), streamer, ctr)
                probability, decided = yield DecisionPoint(now, state, outcome)
                drawn = bool(rng.random() < probability)
                inserted = drawn if decided is None else decided
                clicked = inserted and bool(rng.random() < ctr * (1.0 - fatigue))
                if clicked:
                    watched = min(rng.exponential(params.watch_seconds), float(self.room_end[room]) - now)
                    self._watch(play, rng, (user, room, streamer), now, watched, float(match[streamer]))
                elif inserted:
                    play.interactions.append(("negative", (user, room, streamer, self.epoch_ms(now))))
                if inserted:
                    video_mean *= 1.0 - config.slot_share
                allocations += inserted
                clicks += clicked
                decision = (self.epoch_ms(now), user, group, streamer, room, fatigue, ctr, probability)
            level = min(level + 1, levels) if inserted else max(level - 1, 0)
            video = rng.exponential(video_mean)
            now += watched + video
            live_total += watched
            video_total += video
            exited = bool(rng.random() < params.exit_probability + config.fatigue_exit * level / levels)
            if decision:
                play.decisions.append((*decision, inserted, clicked, watched, video, exited))
                outcome = DecisionOutcome(inserted, clicked, watched, video, exited)
            elif outcome is not None:
                outcome = dataclasses.replace(outcome, video_seconds=outcome.video_seconds + video, exited=exited)
            if exited:
                break
        play.end, play.outcome = now, outcome
        play.totals = (
            user,
            group,
            self.epoch_ms(play.session.start),
            requests,
            decisions,
            allocations,
            clicks,
            live_total,
            video_total,
        )

    def _watch(
        self,
        play: SessionPlay,
        rng: np.random.Generator,
        row: tuple[int, int, int],
        now: float,
        watched: float,
        match: float,
    ) -> None:
        """Log a click and what the user does in the room while watching (Poisson in time, scaled by the match)."""
        play.interactions.append(("click", (*row, self.epoch_ms(now), round(watched * _MS))))
        minutes = watched / 60.0 * match
        config = self.config
        for name, rate in (
            ("comment", config.comments_per_minute),
            ("like", config.likes_per_minute),
            ("gift", config.gifts_per_minute),
        ):
            times = np.sort(rng.uniform(now, now + watched, size=rng.poisson(rate * minutes)))
            for time_ms in map(self.epoch_ms, times.tolist()):
                if name == "gift":
                    price = GIFT_PRICES[int(rng.choice(len(GIFT_PRICES), p=_GIFT_WEIGHTS))]
                    play.interactions.append((name, (*row, time_ms, price)))
                else:
                    play.interactions.append((name, (*row, time_ms)))

    def epoch_ms(self, t: float) -> int:
        """The epoch time (ms) of ``t`` seconds from time 0: how every log and message tells time."""
        return self.config.start_ms + round(t * _MS)

    def log(self, plays: Sequence[SessionPlay]) -> LivePlatformLog:
        """The logs of these ended sessions, which take the positions they have in ``plays`` (:meth:`run` gives
        them all, in schedule order); the room table holds the rooms started by the last session's end (or by
        ``hours``, if later)."""
        interactions: dict[str, list[tuple[int, ...]]] = {name: [] for name in INTERACTION_KINDS}
        decisions: list[tuple[Any, ...]] = []
        sessions: list[tuple[Any, ...]] = []
        for position, play in enumerate(plays):
            if play.totals is None:
                raise ValueError(
                    f"session {play.session.index} (user {play.session.user}) has not ended; a log holds ended "
                    "sessions only"
                )
            for name, row in play.interactions:
                interactions[name].append(row)
            decisions += [(*row[:3], position, *row[3:]) for row in play.decisions]
            sessions.append(play.totals)
        last = max((play.end for play in plays if play.end is not None), default=0.0)
        rooms = int(
            np.searchsorted(self.room_start, max(self.horizon, (self.epoch_ms(last) - self.config.start_ms) / _MS))
        )
        tables: dict[str, KuaiLiveTable] = {}
        for name, rows in interactions.items():
            rows.sort(key=lambda row: row[3])  # by timestamp; the sort is stable, so ties keep simulation order
            tables[name] = KuaiLiveTable.from_rows(name, rows)
        tables["room"] = self.room_table(rooms)
        tables["user"], tables["streamer"] = _profiles(self, self._rng("profiles", 0))
        return LivePlatformLog(
            KuaiLiveLogs(tables, self._titles[:rooms]),
            Decisions(*_arrays(decisions, "iiiiiifffbbffb")),
            Sessions(*_arrays(sessions, "iiiiiiiff")),
        )

    def room_table(self, rooms: int) -> KuaiLiveTable:
        """``room.csv`` of the first ``rooms`` rooms (by start; ``live_id`` is the row)."""
        start = np.array([self.epoch_ms(t) for t in self.room_start[:rooms].tolist()], dtype=np.int64)
        end = np.array([self.epoch_ms(t) for t in self.room_end[:rooms].tolist()], dtype=np.int64)
        days = np.datetime_as_string(
            (start + _CHINA // datetime.timedelta(milliseconds=1)).astype("datetime64[ms]"), "D"
        )
        streamer = self.room_streamer[:rooms]
        live_type = self.live_type[streamer]
        names = [_category_name(int(c)) for c in self.category[streamer].tolist()]
        ids = np.arange(rooms)
        p_date = [int(day.replace("-", "")) for day in days.tolist()]
        rows = zip(
            p_date, ids.tolist(), streamer.tolist(), live_type.tolist(), start, end, names, ids.tolist(), strict=True
        )
        return KuaiLiveTable.from_rows("room", list(rows))

    def _title_embeddings(self) -> npt.NDArray[np.float32]:
        """One 128-d title embedding per room: a fixed projection of its streamer's content, plus noise, unit length."""
        rng = self._rng("profiles", 1)
        projection = rng.normal(size=(_LATENT_DIM, TITLE_DIM)) / math.sqrt(_LATENT_DIM)
        rooms = len(self.room_start)
        titles = self.content[self.room_streamer] @ projection + 0.3 * rng.normal(size=(rooms, TITLE_DIM))
        norms = np.linalg.norm(titles, axis=1, keepdims=True)
        return (titles / np.maximum(norms, 1e-12)).astype(np.float32)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _arrays(rows: Sequence[tuple[Any, ...]], kinds: str) -> list[npt.NDArray[Any]]:
    """The columns of ``rows`` as int64 (``i``), float64 (``f``) or bool (``b``) arrays, also when there are none."""
    dtypes = {"i": np.int64, "f": np.float64, "b": np.bool_}
    columns = zip(*rows, strict=True) if rows else [()] * len(kinds)
    return [np.array(column, dtype=dtypes[kind]) for column, kind in zip(columns, kinds, strict=True)]


def _category_name(category: int) -> str:
    return CATEGORY_NAMES[category] if category < len(CATEGORY_NAMES) else f"category{category}"


_AGES = ("0-17", "18-23", "24-30", "31-40", "41-49", "50+")
_GENDERS = ("M", "F")
_BRANDS = ("APPLE", "HUAWEI", "XIAOMI", "OPPO", "VIVO", "HONOR", "DESKTOP")
_PRICES = ("0", "0-1000", "1000-2000", "2000-3000", "3000-5000", "5000+")
_COUNTS = ("0-10", "10-100", "100-1000", "1000-10000", "10000-100000", "100000+")
_DURATIONS = ("0-100000000", "100000000-1000000000", "1000000000-10000000000", "10000000000+")
_OPERATION_TAGS = ("Relationship", "Entertainment", "Commerce", "Gaming", "Knowledge")
_SIDE_FLAGS = 7


def _profiles(platform: LivePlatform, rng: np.random.Generator) -> tuple[KuaiLiveTable, KuaiLiveTable]:
    """``user.csv`` and ``streamer.csv``: plausible side information, drawn from the seed alone.

    A user's ``onehot_feat0..`` flags one-hot encode its activity group (the rest are random bits) and its
    ``accu_watch_live_*`` ranges grow with the group; a streamer's ``fans_user_num`` range grows with its popularity.
    """

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    def past_date(latest: datetime.date, days: int) -> datetime.date:
        return latest - datetime.timedelta(days=int(rng.integers(0, days)))

    config = platform.config
    today = (datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=config.start_ms) + _CHINA).date()
    groups = len(config.groups)
    users = []
    for user, group in enumerate(platform.user_group.tolist()):
        registered = past_date(today - datetime.timedelta(days=30), 3000)
        first_watch = past_date(today, (today - registered).days)
        activity = min(group + int(rng.integers(0, 2)), len(_DURATIONS) - 1)
        flags = [int(index == group) for index in range(groups)] + rng.integers(0, 2, _SIDE_FLAGS - groups).tolist()
        users.append(
            [
                *(user, pick(_AGES), pick(_GENDERS), "China", pick(_BRANDS), pick(_PRICES), registered.isoformat()),
                *(pick(_COUNTS[:3]), pick(_COUNTS[:4]), first_watch.isoformat()),
                *(_COUNTS[activity], _DURATIONS[activity], int(rng.random() < 0.05), int(rng.random() < 0.2), *flags),
            ]
        )
    fame = np.argsort(np.argsort(platform.popularity_at(0.0))) * len(_COUNTS) // config.streamers
    streamers = []
    for streamer in range(config.streamers):
        registered = past_date(today - datetime.timedelta(days=30), 3000)
        first_live = past_date(today, (today - registered).days)
        fans = _COUNTS[int(fame[streamer])]
        streamers.append(
            [
                *(streamer, pick(_GENDERS), pick(_AGES[1:]), "China", pick(_BRANDS), pick(_PRICES)),
                *(pick(_OPERATION_TAGS), fans, pick(_COUNTS[:3]), pick(_COUNTS[:4]), first_live.isoformat()),
                *(pick(_COUNTS[1:4]), pick(_DURATIONS), pick(_COUNTS[2:]), pick(_DURATIONS), registered.isoformat()),
                *rng.integers(0, 2, _SIDE_FLAGS).tolist(),
            ]
        )
    return KuaiLiveTable.from_rows("user", users), KuaiLiveTable.from_rows("streamer", streamers)
