"""Offline training of the streamer recommender that ``mode: recommend`` serves, and publishing it to the registry.

Each user's interactions (of the kinds that count, in time order) make a sequence of streamer ids, taken from
KuaiLive logs (:func:`connectors.readers.read_kuailive`) or straight from a live-platform simulator run
(:class:`connectors.sources.live_platform.LivePlatform`), through the same messages the pipeline reads
(:meth:`~connectors.sources.live_platform_logs.KuaiLiveLogs.messages`), so training sees what serving sees.

Streamers seen at least ``min_count`` times get tokens ``1..``; token 0 (:data:`UNKNOWN`) stands for every other
streamer (and pads short sequences on the left), so a streamer the model never saw still advances the user's
stream at serving time. The vocabulary travels with the weights in :class:`RecommenderModel`: a newer version may
number streamers differently, which is why the pipeline keeps streamer ids, not tokens, per user.

Held out: each user's last interaction (users with at least three). The model trains on the rest (fixed-length
windows, full causal attention, :func:`~inference.sequence_recommender.train_next_item`) and the version's metrics
report the next-streamer loss and hit-rate@k of those held-out interactions over every known streamer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from connectors.messages import Interaction, ModelUpdate
from connectors.registry import ModelRegistry, ModelVersionInfo
from connectors.sources.live_platform_logs import KuaiLiveLogs
from inference.sequence_recommender import SequenceTransformer, train_next_item
from pipelines.serialization import dump_state

UNKNOWN = 0
"""The token of streamers outside the vocabulary (and of the left padding of short training sequences)."""
DEFAULT_KINDS = ("click", "comment", "like", "gift", "follow")
"""Interaction kinds that say a user chose a streamer: they make the sequences (impressions do not)."""


@dataclass(frozen=True)
class RecommenderModel:
    """What a registry version of the recommender holds: the transformer, its streamer vocabulary and the kinds it
    was trained on. Streamer ``streamers[i]`` is token ``i + 1``; every other streamer is :data:`UNKNOWN`.

    >>> bundle = RecommenderModel(SequenceTransformer(vocab=3, dim=8, layers=1, heads=2), ("7", "9"), ("click",))
    >>> bundle.token("9"), bundle.token("nobody"), bundle.streamer(1)
    (2, 0, '7')
    """

    model: SequenceTransformer
    streamers: tuple[str, ...]
    kinds: tuple[str, ...]
    _tokens: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.model.vocab != len(self.streamers) + 1:
            raise ValueError(
                f"RecommenderModel: the model has {self.model.vocab} tokens but the vocabulary {len(self.streamers)} "
                "streamers; it needs one token per streamer plus the unknown token 0"
            )
        object.__setattr__(self, "_tokens", {s: i + 1 for i, s in enumerate(self.streamers)})

    def token(self, streamer: str) -> int:
        """The token of ``streamer`` (:data:`UNKNOWN` when the vocabulary lacks it)."""
        return self._tokens.get(streamer, UNKNOWN)

    def streamer(self, token: int) -> str:
        """The streamer id of a known token (``1..``)."""
        return self.streamers[token - 1]


@dataclass(frozen=True)
class TrainedRecommender:
    """A trained model and what training measured (the version's metrics) and used (its params)."""

    bundle: RecommenderModel
    metrics: dict[str, float]
    params: dict[str, str | int | float]


def user_sequences(logs: KuaiLiveLogs, kinds: Sequence[str] = DEFAULT_KINDS) -> dict[str, list[str]]:
    """Each user's streamer ids in time order, from the interactions of ``kinds`` in ``logs``.

    >>> from connectors.sources.live_platform_logs import KuaiLiveTable
    >>> clicks = KuaiLiveTable.from_rows("click", [[1, 5, 7, 2000, 10], [1, 6, 8, 1000, 10], [2, 5, 7, 1500, 10]])
    >>> user_sequences(KuaiLiveLogs.from_tables({"click": clicks}))
    {'1': ['8', '7'], '2': ['7']}
    """
    sequences: dict[str, list[str]] = {}
    for message in logs.messages():
        interaction = message.message
        if isinstance(interaction, Interaction) and interaction.kind in kinds:
            sequences.setdefault(interaction.user, []).append(interaction.streamer)
    return sequences


def vocabulary(sequences: Iterable[Sequence[str]], min_count: int = 1) -> tuple[str, ...]:
    """Streamers seen at least ``min_count`` times, most frequent first (ties by id): token ``i + 1`` each.

    >>> vocabulary([["7", "9", "7"], ["3"]], min_count=1)
    ('7', '3', '9')
    """
    counts = Counter(streamer for sequence in sequences for streamer in sequence)
    return tuple(s for s, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_count)


def training_windows(token_sequences: Iterable[Sequence[int]], length: int) -> torch.Tensor:
    """Fixed-length windows ``[n, length]`` for next-token training: every ``length // 2`` tokens along each
    sequence plus one ending at its last token; sequences shorter than ``length`` are padded on the left with
    :data:`UNKNOWN`; sequences of fewer than two tokens teach nothing and are left out.

    >>> training_windows([[1, 2, 3, 4, 5], [6, 7]], length=4).tolist()
    [[1, 2, 3, 4], [2, 3, 4, 5], [0, 0, 6, 7]]
    """
    if length < 2:
        raise ValueError(f"training_windows: length must be >= 2 tokens (got {length})")
    windows: list[list[int]] = []
    for tokens in token_sequences:
        if len(tokens) < 2:
            continue
        if len(tokens) <= length:
            windows.append([UNKNOWN] * (length - len(tokens)) + list(tokens))
            continue
        starts = list(range(0, len(tokens) - length + 1, max(1, length // 2)))
        if starts[-1] != len(tokens) - length:
            starts.append(len(tokens) - length)
        windows.extend(list(tokens[s : s + length]) for s in starts)
    if not windows:
        raise ValueError(
            "training_windows: no user has two interactions to learn from; simulate more users or hours, or give "
            "logs with more interactions"
        )
    return torch.tensor(windows, dtype=torch.long)


@torch.no_grad()
def held_out_metrics(
    model: SequenceTransformer, contexts: Sequence[Sequence[int]], targets: Sequence[int], k: int
) -> dict[str, float]:
    """Next-streamer cross-entropy and hit-rate@k of ``targets`` after ``contexts`` (full causal attention),
    ranked among the known streamers (the unknown token never counts as a recommendation).

    A target the training data never showed (:data:`UNKNOWN`: no model could rank it) counts as a miss in the hit
    rate and is left out of the loss, which would be infinite; ``heldout_unseen`` is their share.

    >>> model = SequenceTransformer(3, dim=8, layers=1, heads=1, seed=0)
    >>> metrics = held_out_metrics(model, [[1, 2], [2]], [1, UNKNOWN], k=1)
    >>> metrics["heldout_unseen"], metrics["heldout_loss"] < float("inf")
    (0.5, True)
    """
    if not targets:
        return {}
    losses, hits = [], 0
    model.eval()
    for context, target in zip(contexts, targets, strict=True):
        if target == UNKNOWN:
            continue
        logits = model.logits(model(torch.tensor([list(context)]))[0, -1])
        logits[UNKNOWN] = -torch.inf
        losses.append(F.cross_entropy(logits.unsqueeze(0), torch.tensor([target])).item())
        hits += int(target in logits.topk(min(k, model.vocab - 1)).indices.tolist())
    metrics = {f"heldout_hit_rate_at_{k}": hits / len(targets), "heldout_unseen": 1.0 - len(losses) / len(targets)}
    if losses:
        metrics["heldout_loss"] = sum(losses) / len(losses)
    return metrics


def train_recommender(
    sequences: Mapping[str, Sequence[str]],
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    dim: int = 32,
    layers: int = 2,
    heads: int = 2,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    length: int = 32,
    min_count: int = 1,
    k: int = 10,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainedRecommender:
    """Train a :class:`SequenceTransformer` on users' streamer sequences (CPU, seeded), holding out each user's last
    interaction (users with at least three) to measure it; see the module docstring.

    >>> trained = train_recommender({"u1": ["1", "2", "1", "2"], "u2": ["2", "1", "2"]}, dim=8, steps=5, length=4)
    >>> trained.bundle.streamers, sorted(trained.metrics)[:3]
    (('1', '2'), ['heldout_hit_rate_at_10', 'heldout_loss', 'heldout_unseen'])
    """
    held = {user: seq for user, seq in sequences.items() if len(seq) >= 3}
    training = {user: list(seq[:-1]) if user in held else list(seq) for user, seq in sequences.items()}
    streamers = vocabulary(training.values(), min_count)
    if not streamers:
        raise ValueError(f"train_recommender: no streamer was seen {min_count} times; lower min_count or add data")
    bundle = RecommenderModel(
        SequenceTransformer(len(streamers) + 1, dim=dim, layers=layers, heads=heads, seed=seed), streamers, tuple(kinds)
    )
    encoded = {user: [bundle.token(s) for s in seq] for user, seq in training.items()}
    windows = training_windows(encoded.values(), length)
    losses = train_next_item(
        bundle.model, windows, steps=steps, batch_size=batch_size, lr=lr, seed=seed, on_step=on_step
    )
    contexts = [encoded[user][-(length - 1) :] for user in held]
    targets = [bundle.token(seq[-1]) for seq in held.values()]
    tail = losses[-max(1, len(losses) // 10) :]
    metrics = {
        "train_loss": sum(tail) / len(tail),
        **held_out_metrics(bundle.model, contexts, targets, k),
        "users": float(len(sequences)),
        "interactions": float(sum(len(seq) for seq in sequences.values())),
        "streamers": float(len(streamers)),
    }
    params: dict[str, str | int | float] = {
        "dim": dim,
        "layers": layers,
        "heads": heads,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "length": length,
        "min_count": min_count,
        "seed": seed,
        "kinds": ",".join(kinds),
    }
    return TrainedRecommender(bundle, metrics, params)


def publish_recommender(
    registry: ModelRegistry, name: str, trained: TrainedRecommender, secret: bytes, *, alias: str | None = "champion"
) -> tuple[ModelVersionInfo, ModelUpdate | None]:
    """Register ``trained`` as the next version of ``name`` (signed with ``secret``, like learn mode's versions),
    pointing ``alias`` at it; returns the version and the update to announce on ``eddy.models`` (None without an
    alias), which recommend pipelines following the alias pick up."""
    info = registry.publish(
        name,
        dump_state(trained.bundle, secret),
        params={"operator": "inference.sequence_recommender:SequenceTransformer", **trained.params},
        metrics=trained.metrics,
        offsets={},
        events=int(trained.metrics["interactions"]),
        alias=alias,
    )
    update = None if alias is None else ModelUpdate(model=info.model, version=info.version, alias=alias, uri=info.uri)
    return info, update
