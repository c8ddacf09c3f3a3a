"""Next-item recommendation over endless interaction streams: a small causal transformer with a rolling KV cache.

:class:`SequenceTransformer` is a SASRec-style model (items or streamers as tokens, pre-norm transformer blocks,
item embeddings shared with the output) that uses rotary position embeddings only, so a token's keys and values
depend on its context but not on its position: that is what lets :class:`~inference.rolling_cache.RollingKVCache`
cache keys before RoPE and re-place them as the window rolls (StreamingLLM). It can

- prefill a stream's ids into a cache slot (:meth:`SequenceTransformer.prefill`),
- advance a batch of streams by one token each through the cache (:meth:`SequenceTransformer.decode`, attention by
  :func:`kernels.sink_window_attention.sink_window_decode_attention`),
- score candidate items and keep the top k (:meth:`SequenceTransformer.top_k`),
- recompute everything from the ids (:meth:`SequenceTransformer.forward`): plain causal attention, or with
  ``sinks``/``window`` exactly the attention that decoding through the cache computes.

:class:`SequenceRecommender` is the operator: per batch of interactions (one per stream) it assigns cache slots,
rebuilds streams that were evicted from their ids, decodes one step for all, and returns the top-k items.
:func:`train_next_item` trains the model offline on sequences; :func:`rolling_next_item_loss` scores it the way it
serves.

References
----------
Kang, W.-C., McAuley, J. (2018). Self-Attentive Sequential Recommendation. ICDM. arXiv:1808.09781.
Xiao, G., Tian, Y., Chen, B., Han, S., Lewis, M. (2023). Efficient Streaming Language Models with Attention Sinks.
arXiv:2309.17453.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from inference.rolling_cache import RollingKVCache
from kernels.sink_window_attention import ROPE_BASE, apply_rope, sink_window_decode_attention


class _Block(nn.Module):
    """One pre-norm transformer block; attention is done by the caller (full or through the cache)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (before RoPE) of ``x`` ``[..., dim]``, each ``[..., heads, head_dim]``."""
        q, k, v = self.qkv(self.attention_norm(x)).unflatten(-1, (3, self.heads, -1)).unbind(-3)
        return q, k, v

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output from its input and the attention output ``[..., heads, head_dim]``."""
        x = x + self.out(attended.flatten(-2))
        return x + self.mlp(self.mlp_norm(x))


class SequenceTransformer(nn.Module):
    """A SASRec-style causal transformer over item ids with rotary positions, servable through a rolling KV cache.

    Parameters
    ----------
    vocab
        Number of token ids (items, streamers, and any marker such as a session start).
    dim, layers, heads
        Width, depth and attention heads (``dim`` divisible by ``heads``, ``dim / heads`` even for RoPE).
    rope_base
        Base of the rotary frequencies.
    seed
        Seeds the initial weights (without touching the global RNG).

    Examples
    --------
    Decoding through the cache computes what the windowed forward recomputes from the ids:

    >>> model = SequenceTransformer(vocab=10, dim=8, layers=2, heads=2)
    >>> ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    >>> cache = RollingKVCache(1, 2, 2, 4, window=3, sinks=1)
    >>> slot = torch.tensor([cache.assign(["ann"])[0].slot])
    >>> steps = torch.stack([model.decode(cache, slot, ids[:, t]) for t in range(7)], dim=1)
    >>> torch.allclose(steps, model(ids, sinks=1, window=3), atol=1e-5)
    True
    >>> model.top_k(steps[:, -1], k=2, candidates=torch.tensor([2, 4, 8]))[1].shape
    torch.Size([1, 2])
    """

    def __init__(
        self, vocab: int, *, dim: int = 64, layers: int = 2, heads: int = 2, rope_base: float = ROPE_BASE, seed: int = 0
    ) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(
                f"SequenceTransformer: dim must split into heads of an even size for RoPE (got dim={dim}, "
                f"heads={heads}); e.g. dim=64, heads=2"
            )
        self.vocab, self.dim, self.heads, self.head_dim = vocab, dim, heads, dim // heads
        self.rope_base = rope_base
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embedding = nn.Embedding(vocab, dim)
            nn.init.normal_(self.embedding.weight, std=dim**-0.5)
            self.blocks = nn.ModuleList(_Block(dim, heads, 4 * dim) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, *, sinks: int = 0, window: int | None = None) -> torch.Tensor:
        """Hidden states ``[batch, tokens, dim]`` of ``ids`` ``[batch, tokens]``, recomputed from scratch.

        With ``window=None``, plain causal attention at positions ``0 .. tokens-1`` (training, and the sliding-window
        recompute baseline when given the last ids only). With ``window``, every token attends as it would through
        a :class:`RollingKVCache` of ``sinks + window`` entries: to the first ``sinks`` tokens and the last
        ``window`` (itself included), at their places in that cache, so the result equals :meth:`decode` over the
        same ids one by one. That costs ``tokens ** 2`` scores: meant for tests and short sequences.
        """
        return self._forward(ids, sinks, window)[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every id from hidden states (``[..., dim]`` → ``[..., vocab]``), the embeddings shared."""
        return hidden @ self.embedding.weight.T

    def top_k(
        self, hidden: torch.Tensor, k: int, candidates: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best of ``candidates`` (ids, default all) for each row of ``hidden`` ``[batch, dim]``.

        Returns ``(scores, ids)``, both ``[batch, k]``, best first; a score is the dot product of the hidden state
        with the item's embedding.
        """
        items = torch.arange(self.vocab, device=hidden.device) if candidates is None else candidates.to(hidden.device)
        if not 1 <= k <= len(items):
            raise ValueError(f"top_k: k must be in [1, {len(items)}], the number of candidates (got {k})")
        scores, index = (hidden @ self.embedding.weight[items].T).topk(k, dim=-1)
        return scores, items[index]

    @torch.no_grad()
    def prefill(self, cache: RollingKVCache, slot: int, ids: torch.Tensor) -> torch.Tensor:
        """Set cache row ``slot`` to the state decoding ``ids`` (``[tokens]``, stream order) would leave, in one
        forward; returns the hidden states ``[tokens, dim]``."""
        self._check_cache(cache)
        hidden, keys, values = self._forward(ids.to(cache.data.device).unsqueeze(0), cache.sinks, cache.window)
        cache.fill(slot, torch.stack(keys)[:, 0], torch.stack(values)[:, 0])
        return hidden[0]

    @torch.no_grad()
    def decode(self, cache: RollingKVCache, slots: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Append one token per stream (``ids[i]`` to the stream in cache row ``slots[i]``, rows distinct) and
        return their hidden states ``[batch, dim]``."""
        self._check_cache(cache)
        slots, ids = slots.to(cache.data.device), ids.to(cache.data.device)
        seen = cache.advance(slots)
        x = self.embedding(ids)
        for layer, block in enumerate(self._layers()):
            q, k, v = block.project(x)
            cache.store(slots, layer, k, v)
            keys, values = cache.layer(layer)
            attended = sink_window_decode_attention(
                q.to(keys.dtype), keys, values, slots, seen, sinks=cache.sinks, rope_base=self.rope_base
            )
            x = block.finish(x, attended.to(x.dtype))
        return self.norm(x)

    def _forward(
        self, ids: torch.Tensor, sinks: int, window: int | None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Hidden states and every layer's keys (before RoPE) and values, ``[batch, heads, tokens, head_dim]``."""
        if (window is None and sinks) or (window is not None and (window < 1 or sinks < 0)):
            raise ValueError(
                f"SequenceTransformer: sinks go with a window of at least 1 token, and sinks >= 0 (got sinks={sinks}, "
                f"window={window}); pass window= with sinks=, or neither for full causal attention"
            )
        x = self.embedding(ids)
        keys, values = [], []
        for block in self._layers():
            q, k, v = (t.transpose(1, 2) for t in block.project(x))
            keys.append(k)
            values.append(v)
            x = block.finish(x, self._attend(q, k, v, sinks, window).transpose(1, 2))
        return self.norm(x), keys, values

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: int, window: int | None
    ) -> torch.Tensor:
        """Causal attention over ``[batch, heads, tokens, head_dim]``, optionally as through a sink+window cache.

        Through the cache, query ``t`` sits at place ``min(t, sinks + window - 1)`` and a window key ``u`` at a
        place ``t - u`` below it, which is what rotating both at their stream positions gives; only the sink keys
        (at places ``0 .. sinks-1``) need the query rotated at its place in the cache instead.
        """
        position = torch.arange(q.shape[2], device=q.device)
        q_rot, k_rot = apply_rope(q, position, self.rope_base), apply_rope(k, position, self.rope_base)
        if window is None:
            return F.scaled_dot_product_attention(q_rot, k_rot, v.float(), is_causal=True)
        scores = q_rot @ k_rot.transpose(-1, -2)
        if sinks:
            q_place = apply_rope(q, position.clamp(max=sinks + window - 1), self.rope_base)
            scores[..., :sinks] = q_place @ k_rot[..., :sinks, :].transpose(-1, -2)
        query, key = position.unsqueeze(1), position.unsqueeze(0)
        visible = (key <= query) & ((key < sinks) | (key > query - window))
        scores = scores.masked_fill(~visible, -math.inf) * self.head_dim**-0.5
        return torch.softmax(scores, dim=-1) @ v.float()

    def _layers(self) -> list[_Block]:
        return [cast(_Block, block) for block in self.blocks]

    def _check_cache(self, cache: RollingKVCache) -> None:
        _, layers, _, heads, _, head_dim = cache.data.shape
        if (layers, heads, head_dim) != (len(self.blocks), self.heads, self.head_dim):
            raise ValueError(
                f"SequenceTransformer: the cache holds {layers} layers x {heads} heads x {head_dim} dims but the "
                f"model has {len(self.blocks)} x {self.heads} x {self.head_dim}; build the cache with the model's"
            )


def train_next_item(
    model: SequenceTransformer,
    sequences: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` (in place) to predict each next id of ``sequences`` ``[n, tokens]``, full causal attention.

    Adam on the mean cross-entropy of random batches (drawn with ``seed``); returns the loss of every step and calls
    ``on_step(step, loss)`` after each (a progress bar).

    >>> model = SequenceTransformer(vocab=5, dim=8, layers=1, heads=1)
    >>> losses = train_next_item(model, torch.tensor([[1, 2, 3, 4] * 3] * 8), steps=60, batch_size=4)
    >>> losses[-1] < losses[0] / 4
    True
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = sequences[torch.randint(len(sequences), (batch_size,), generator=generator)]
        logits = model.logits(model(batch[:, :-1]))
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def rolling_next_item_loss(model: SequenceTransformer, ids: torch.Tensor, *, window: int, sinks: int) -> torch.Tensor:
    """Next-item loss at every step of ``ids`` ``[streams, tokens]`` served one token at a time through a
    :class:`RollingKVCache` of ``sinks + window`` entries: ``[tokens - 1]``, the mean over streams.

    >>> model = SequenceTransformer(vocab=5, dim=8, layers=1, heads=1)
    >>> rolling_next_item_loss(model, torch.tensor([[1, 2, 3, 4, 1, 2]]), window=2, sinks=1).shape
    torch.Size([5])
    """
    streams, tokens = ids.shape
    device = model.embedding.weight.device
    cache = RollingKVCache(
        streams, len(model.blocks), model.heads, model.head_dim, window=window, sinks=sinks, device=device
    )
    slots = torch.tensor([a.slot for a in cache.assign(range(streams))], device=device)
    ids = ids.to(device)
    losses = [
        F.cross_entropy(model.logits(model.decode(cache, slots, ids[:, t])), ids[:, t + 1]) for t in range(tokens - 1)
    ]
    return torch.stack(losses) if losses else torch.zeros(0, device=device)


@dataclass(frozen=True)
class Recommendations:
    """One batch's answer: per stream, the top-k ``items`` and their ``scores`` (``[batch, k]``, best first), and
    the streams whose caches were evicted to make room (the pipeline may drop their in-memory state)."""

    items: torch.Tensor
    scores: torch.Tensor
    evicted: list[Hashable]


class SequenceRecommender:
    """Per interaction, one decode step through the stream's rolling cache, batched across streams; top-k items.

    Parameters
    ----------
    model
        The trained :class:`SequenceTransformer`.
    cache
        A :class:`RollingKVCache` shaped for the model (its slots are the streams served at once).
    history
        ``history(key)``: the ids of stream ``key`` before the current interaction, as the pipeline keeps them (a
        Redis list per stream holding its first ``cache.sinks`` ids and its last ``cache.window``); ``[]`` for a
        new stream. Called only when a stream gets a slot it did not have (first seen, or evicted since): its cache
        is rebuilt by one prefill of those ids. The rebuilt cache holds the same ids at the same places; its first
        layer's keys and values are the ones the stream had (they depend on the token only), deeper layers'
        are recomputed from the kept ids, so a stream no longer than ``sinks + window`` comes back exactly.

    Examples
    --------
    >>> model = SequenceTransformer(vocab=10, dim=8, layers=1, heads=2)
    >>> kept = {"ann": [3, 1, 4]}
    >>> recommender = SequenceRecommender(
    ...     model, RollingKVCache(2, 1, 2, 4, window=8), history=lambda key: kept.get(key, [])
    ... )
    >>> out = recommender.step(["ann", "bob"], [1, 5], k=3)
    >>> out.items.shape, out.evicted, recommender.cache.seen.tolist()
    (torch.Size([2, 3]), [], [4, 1])
    """

    def __init__(
        self, model: SequenceTransformer, cache: RollingKVCache, history: Callable[[Hashable], Sequence[int]]
    ) -> None:
        self.model, self.cache, self.history = model, cache, history

    def step(
        self, keys: Sequence[Hashable], items: Sequence[int], *, k: int, candidates: torch.Tensor | None = None
    ) -> Recommendations:
        """Append ``items[i]`` to stream ``keys[i]`` (distinct keys, at most ``cache`` slots of them) and return the
        top ``k`` of ``candidates`` (default: every id) for each stream."""
        hidden, evicted = self.advance(keys, items)
        scores, top = self.model.top_k(hidden, k, candidates)
        return Recommendations(top, scores, evicted)

    def advance(self, keys: Sequence[Hashable], items: Sequence[int]) -> tuple[torch.Tensor, list[Hashable]]:
        """Append ``items[i]`` to stream ``keys[i]`` (as :meth:`step`) and return the hidden states ``[batch, dim]``
        and the evicted streams, for callers that score each stream against candidates of its own."""
        if len(keys) != len(items):
            raise ValueError(f"SequenceRecommender.step: got {len(keys)} keys but {len(items)} items; pass one each")
        assignments = self.cache.assign(keys)
        for assignment in assignments:
            if assignment.fresh:
                kept = list(self.history(assignment.key))
                if kept:
                    self.model.prefill(self.cache, assignment.slot, torch.tensor(kept))
        device = self.cache.data.device
        slots = torch.tensor([a.slot for a in assignments], device=device)
        hidden = self.model.decode(self.cache, slots, torch.tensor(list(items), device=device))
        return hidden, [a.evicted for a in assignments if a.evicted is not None]
