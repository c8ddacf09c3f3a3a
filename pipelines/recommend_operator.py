"""``mode: recommend``: top-k live streamers per interaction from a causal transformer over each user's stream.

The model is a :class:`~pipelines.recommender_training.RecommenderModel` (a
:class:`~inference.sequence_recommender.SequenceTransformer` and its streamer vocabulary) trained offline
(``eddy recommender train``) and followed through ``registry.model`` + ``registry.follow`` like serve mode: the
runtime swaps in a newer version between batches, and a swap drops every cache (they hold the old weights' keys and
values); users are rebuilt from their kept ids on their next interaction.

For each interaction of ``recommend.kinds`` (``interaction/v1``), in order:

1. the user's previous recommendation is scored against the streamer they chose now (prequential hit-rate@k);
2. the streamer is appended to the user's stream: one decode step through the user's rolling KV cache
   (:class:`~inference.sequence_recommender.SequenceRecommender`), batched across the users of the micro-batch;
3. the hidden state scores the streamers live at the interaction's event time (:class:`~pipelines.live_rooms.
   LiveRooms`, which explains the race with ``live.rooms`` and how tests avoid it) and the top ``recommend.k``
   go out as ``recommendation/v1`` on ``recommendations``, keyed by user.

Per user, two kinds of state. The cache slot (keys and values of the first ``sinks`` and last ``window``
streamers) is **soft state** in the worker: LRU-evicted when more than ``recommend.slots`` users are active, never
checkpointed. What rebuilds it is in the state store through :class:`~pipelines.keyed.KeyedEntries`, written with
the checkpoints: the user's first ``sinks`` and last ``window`` streamer ids, their count, and the last
recommendation. Ids, not tokens, because a newer version may number streamers differently. A user whose slot was
evicted, or a worker that restarted, prefills the slot from those ids; for a stream of at most ``sinks + window``
interactions that gives exactly the cache it had (deeper layers of longer streams are recomputed from the kept ids
only). A cached user whose kept count differs from the one the cache was built for (their partition was processed
by another worker meanwhile) makes the worker drop its caches and rebuild.

A streamer outside the model's vocabulary is decoded as the unknown token (rare streamers were trained as it) and
the user still gets a recommendation; live streamers outside the vocabulary cannot be scored and are never
recommended. With no scorable streamer live, the recommendation is empty. Kinds in ``recommend.skip`` are read
and counted, not answered; other kinds, and interactions without a user or streamer, go to the dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from connectors.bus import KafkaBus
from connectors.messages import Interaction, Message, Recommendation, encode
from inference.rolling_cache import RollingKVCache
from inference.sequence_recommender import SequenceRecommender
from pipelines.keyed import KeyedEntries
from pipelines.live_rooms import LiveRooms
from pipelines.recommender_training import UNKNOWN, RecommenderModel
from pipelines.records import BatchResult, Output, Record, RecordRejected
from pipelines.spec import PipelineSpec, RecommendSpec, primary_output

OUTPUT = primary_output("recommend")


@dataclass(frozen=True)
class UserStream:
    """A user's kept streamer ids (the first ``sinks`` in ``head``, the last ``window`` after them in ``tail``), how
    many interactions the stream has, and the items of their last recommendation.

    >>> UserStream().appended("7", sinks=1, window=2).appended("8", 1, 2).appended("9", 1, 2).kept
    ['7', '8', '9']
    >>> UserStream.from_bytes(UserStream(("7",), ("8", "9"), 5).appended("4", 1, 2).to_bytes())
    UserStream(head=('7',), tail=('9', '4'), count=6, previous=None)
    """

    head: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    count: int = 0
    previous: tuple[str, ...] | None = None

    @property
    def kept(self) -> list[str]:
        """The kept ids in stream order: what rebuilds the user's cache."""
        return [*self.head, *self.tail]

    def appended(self, streamer: str, sinks: int, window: int) -> UserStream:
        """This stream with one more streamer (the recommendation is dropped; set it with ``previous``)."""
        if len(self.head) < sinks:
            return UserStream((*self.head, streamer), self.tail, self.count + 1)
        return UserStream(self.head, (*self.tail, streamer)[-window:], self.count + 1)

    def to_bytes(self) -> bytes:
        """The state-store entry."""
        return json.dumps(
            {"head": self.head, "tail": self.tail, "count": self.count, "previous": self.previous}
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserStream:
        """An entry read back (an empty stream for a user never seen)."""
        if raw is None:
            return cls()
        data = json.loads(raw)
        previous = data["previous"]
        return cls(
            tuple(data["head"]), tuple(data["tail"]), data["count"], None if previous is None else tuple(previous)
        )


@dataclass
class RecommendOperator:
    """Serves the followed recommender per interaction through per-user rolling caches (module docstring)."""

    spec: PipelineSpec
    settings: RecommendSpec
    rooms: LiveRooms
    device: torch.device
    entries: KeyedEntries = field(default_factory=KeyedEntries)
    model: RecommenderModel | None = None
    version: str | None = None
    recommender: SequenceRecommender | None = None
    cached: dict[Hashable, int] = field(default_factory=dict)  # user -> stream count their cache slot holds
    recommended: int = 0
    skipped: int = 0
    scored: int = 0
    hits: int = 0
    evictions: int = 0
    unknown_streamers: int = 0
    cache_resets: int = 0

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> RecommendOperator:
        """No model yet (the runtime swaps the followed version in before the first batch); the rooms follower
        starts with the worker (:meth:`start`)."""
        settings = spec.recommend or RecommendSpec()
        wanted = settings.device
        device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")
        return cls(spec, settings, LiveRooms(settings.rooms_topic, settings.room_retention_s), device)

    def start(self, bus: KafkaBus) -> None:
        """Follow the rooms topic (the runtime calls it when the worker starts)."""
        self.rooms.start(bus)

    def close(self) -> None:
        """Stop following the rooms topic."""
        self.rooms.stop()

    def swap(self, model: Any, version: str) -> None:
        """Serve ``model`` from now on, with empty caches (called by the runtime between batches only)."""
        if not isinstance(model, RecommenderModel):
            raise TypeError(
                f"pipeline {self.spec.name!r}: registry model {self.spec.followed_model_uri} version {version} is a "
                f"{type(model).__name__}, not a RecommenderModel; publish one with 'eddy recommender train'"
            )
        model.model.to(self.device).eval()
        self.model, self.version = model, version
        self._reset_caches()

    def _reset_caches(self) -> None:
        assert self.model is not None
        net = self.model.model
        cache = RollingKVCache(
            self.settings.slots,
            len(net.blocks),
            net.heads,
            net.head_dim,
            window=self.settings.window,
            sinks=self.settings.sinks,
            device=self.device,
        )
        self.recommender = SequenceRecommender(net, cache, self._history)
        self.cached = {}

    def _history(self, user: Hashable) -> list[int]:
        assert self.model is not None and isinstance(user, str)
        return [self.model.token(s) for s in UserStream.from_bytes(self.entries.get(user)).kept]

    def validate(self, message: Message) -> None:
        """Interactions of ``recommend.kinds`` or ``recommend.skip`` that name a user and a streamer."""
        if not isinstance(message, Interaction):
            raise RecordRejected("wrong_schema", f"mode recommend takes interaction/v1 (got {message.schema_name})")
        if message.kind not in self.settings.kinds and message.kind not in self.settings.skip:
            raise RecordRejected(
                "unknown_kind",
                f"kind {message.kind!r} is neither answered ({', '.join(self.settings.kinds)}) nor skipped "
                f"({', '.join(self.settings.skip)}); add it to recommend.kinds or recommend.skip",
            )
        if not message.user or not message.streamer:
            raise RecordRejected(
                "missing_id", f"an interaction needs a user and a streamer (got {message.user!r}, {message.streamer!r})"
            )

    def process(self, records: Sequence[Record]) -> BatchResult:
        """One recommendation per answered interaction, in input order (module docstring)."""
        if self.model is None or self.recommender is None:
            raise RuntimeError(f"pipeline {self.spec.name!r}: no recommender model to serve yet")
        answered = [r for r in records if _interaction(r).kind in self.settings.kinds]
        self.skipped += len(records) - len(answered)
        self.entries.prefetch(_interaction(r).user for r in answered)
        outputs: list[Output] = []
        for step in self._steps(answered):
            outputs.extend(self._step(step))
        return BatchResult(outputs)

    def _steps(self, records: Sequence[Record]) -> list[list[Record]]:
        """Consecutive runs of records with distinct users, at most ``slots`` each: one decode step per run keeps
        each user's interactions in order."""
        steps: list[list[Record]] = []
        users: set[str] = set()
        for record in records:
            user = _interaction(record).user
            if not steps or user in users or len(steps[-1]) >= self.settings.slots:
                steps.append([])
                users = set()
            steps[-1].append(record)
            users.add(user)
        return steps

    def _step(self, records: Sequence[Record]) -> list[Output]:
        assert self.model is not None and self.recommender is not None
        messages = [_interaction(r) for r in records]
        streams = [UserStream.from_bytes(self.entries.get(m.user)) for m in messages]
        if any(self.cached.get(m.user, s.count) != s.count for m, s in zip(messages, streams, strict=True)):
            self._reset_caches()  # another worker extended a stream this one has cached: rebuild from the store
            self.cache_resets += 1
        tokens = [self.model.token(m.streamer) for m in messages]
        self.unknown_streamers += tokens.count(UNKNOWN)
        hidden, evicted = self.recommender.advance([m.user for m in messages], tokens)
        self.evictions += len(evicted)
        for user in evicted:
            self.cached.pop(user, None)
        logits = self.model.model.logits(hidden)
        outputs = []
        for record, message, stream, row in zip(records, messages, streams, logits, strict=True):
            if stream.previous is not None:
                self.scored += 1
                self.hits += message.streamer in stream.previous
            items, scores, candidates = self._top_k(row, message.ts)
            extended = stream.appended(message.streamer, self.settings.sinks, self.settings.window)
            self.entries.put(
                message.user, UserStream(extended.head, extended.tail, extended.count, tuple(items)).to_bytes()
            )
            self.cached[message.user] = extended.count
            self.recommended += 1
            outputs.append(self._output(record, message, items, scores, candidates))
        return outputs

    def _top_k(self, logits: torch.Tensor, ts: float) -> tuple[list[str], list[float], int]:
        """The best ``k`` streamers live at ``ts`` that the model knows, best first, and how many it could score."""
        assert self.model is not None
        known = [t for t in map(self.model.token, self.rooms.live_at(ts)) if t != UNKNOWN]
        if not known:
            return [], [], 0
        candidates = torch.tensor(known, device=logits.device)
        scores, index = logits[candidates].topk(min(self.settings.k, len(known)))
        items = [self.model.streamer(t) for t in candidates[index].tolist()]
        return items, scores.tolist(), len(known)

    def _output(
        self, record: Record, message: Interaction, items: list[str], scores: list[float], candidates: int
    ) -> Output:
        recommendation = Recommendation(
            pipeline=self.spec.name,
            user=message.user,
            ts=message.ts,
            source_topic=record.source.topic,
            source_partition=record.source.partition,
            source_offset=record.source.offset,
            items=items,
            scores=scores,
            candidates=candidates,
            model_version=self.version,
        )
        return Output(OUTPUT, message.user.encode(), encode(recommendation), record.source.timestamp_ms)

    def state(self) -> Any:
        """The counters (the model comes from the registry, per-user streams are entries, caches are soft)."""
        return {
            "recommended": self.recommended,
            "skipped": self.skipped,
            "scored": self.scored,
            "hits": self.hits,
            "evictions": self.evictions,
            "unknown_streamers": self.unknown_streamers,
            "cache_resets": self.cache_resets,
        }

    def load_state(self, state: Any) -> None:
        """Resume the counters from a checkpoint."""
        self.recommended = state["recommended"]
        self.skipped = state["skipped"]
        self.scored = state["scored"]
        self.hits = state["hits"]
        self.evictions = state["evictions"]
        self.unknown_streamers = state["unknown_streamers"]
        self.cache_resets = state["cache_resets"]

    def scores(self) -> dict[str, float]:
        """Prequential hit-rate@k (the previous recommendation held the streamer chosen next) and the counters."""
        return {
            f"hit_rate_at_{self.settings.k}": self.hits / self.scored if self.scored else 0.0,
            "recommended": float(self.recommended),
            "evictions": float(self.evictions),
            "unknown_streamers": float(self.unknown_streamers),
            "cache_resets": float(self.cache_resets),
        }


def _interaction(record: Record) -> Interaction:
    message = record.message
    assert isinstance(message, Interaction)
    return message
