"""A continuous-time attention temporal point process (AttNHP-style) whose attention takes prompts on K and V.

Events are embedded as ``type embedding + sinusoidal encoding of the absolute time``, behind a beginning-of-sequence
(BOS) event at time 0. The hidden state at any time ``t`` comes from a *time query*: the temporal encoding of ``t``
plus a learned "no event here" vector, which attends to the events strictly before ``t`` (AttNHP, Yang et al.
2022). Events are encoded by causal self-attention (each sees itself and the events before it); at every layer the
time queries attend to the event representations of the layer below, so ``h(t)`` depends on ``t`` through its own
query and on the history through the keys. Intensities are ``λ_k(t) = softplus(w_k · h(t) + b_k)``.

Time queries come in groups: group ``g`` of a sequence holds times in one gap between events, ``query_gaps[b, g]``
(gap ``i`` runs from event ``i`` to event ``i + 1``, position 0 being BOS), so the likelihood asks for the event
time and the Monte-Carlo samples of every gap, and a next-event prediction for a grid in the last gap.

Two additions to plain attention, both measured on exact Hawkes data (see :class:`PrefixAttentionLayer`):

- a learned per-head **recency bias** ``-r_h (t - t_j)`` on the scores of event keys, which lets one layer express
  exponential excitation; without it a stationary 3-type Hawkes fit stayed 7% below the true log-likelihood per
  event after 6 epochs, with it 1-2%;
- a learned per-head **log-weight of the prompt positions**, started at ``-log(P)`` so that the ``P`` prompt
  positions together start with the weight of one key: with plain weight 0, 25 random prompts drown the events and
  a first period fitted 0.026 nats/event worse than the same model without prompts; with it, 0.004.

Prompts are prepended to the *inputs of the key and value projections* only (prefix tuning as in DualPrompt and
PromptTPP): queries stay the sequence's own, every query sees every prompt position, padding stays hidden. They are
given **per history**: the prompts a query sees are those retrieved for the events before it (one set per event
position), never for the whole sequence, or events after ``t`` would leak into ``λ(t)`` (a whole-sequence query
made a prompt model score 0.5% *above* the true process's log-likelihood, which no model can do in expectation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from learners.tpp.sequences import EventBatch

__all__ = ["AttentionTPP", "Prefix", "PrefixAttentionLayer", "TemporalEncoding", "visibility", "widened_mask"]

MIN_INTENSITY = 1e-9  # floor under λ before the log: softplus underflows to 0 for very negative pre-activations


@dataclass(frozen=True)
class Prefix:
    """What the prompt pools give one layer: per event position ``i`` (B, N + 1), the prompt vectors prepended to
    the key and value inputs of every query whose history ends at event ``i``, ``(B, N + 1, P, d_model)`` each, and
    the per-head log-weight ``(n_heads,)`` added to the attention scores of every prompt position."""

    keys: torch.Tensor
    values: torch.Tensor
    log_weight: torch.Tensor


class TemporalEncoding(nn.Module):
    """Sinusoidal encoding of an absolute time: ``[sin(ω_i t), cos(ω_i t)]`` for ``d_model / 2`` frequencies.

    The frequencies fall geometrically from ``1 / time_scale`` to ``1 / (10_000 · time_scale)`` (the Transformer's
    positional encoding with time in units of ``time_scale``), so gaps of about ``time_scale`` are resolved and
    horizons far longer still get distinct codes.
    """

    frequencies: torch.Tensor

    def __init__(self, d_model: int, time_scale: float) -> None:
        super().__init__()
        half = d_model // 2
        exponents = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
        self.register_buffer("frequencies", 10_000.0**-exponents / time_scale, persistent=False)

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        angles = times[..., None] * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass(frozen=True)
class AttentionContext:
    """What every layer's attention needs besides its inputs, built once per forward pass.

    Queries are the ``N + 1`` event positions followed by the ``G x S`` time queries (group-major). ``mask``
    (B, 1, Q, P + N + 1) is additive: 0 where a query sees a key, ``-inf`` where it does not; its first ``P``
    columns are the prompt positions, 0 for every query (:func:`widened_mask`; ``P = 0`` without prompts).
    ``query_times`` (B, Q) holds each query's time; ``key_decays`` (B, N + 1) is 1 for the keys the recency bias
    applies to (events), 0 for the timeless BOS and padding, and ``key_times`` (B, N + 1) the event times times
    ``key_decays``. ``query_gaps`` (B, G) is the gap of each group of time queries.
    """

    mask: torch.Tensor
    query_times: torch.Tensor
    key_times: torch.Tensor
    key_decays: torch.Tensor
    query_gaps: torch.Tensor


class PrefixAttentionLayer(nn.Module):
    """Multi-head attention of event and time queries over the events (plus prompts), then a feed-forward block.

    Each head adds ``-r_h · (t_query - t_key)`` to its scores for event keys, with a learned decay rate ``r_h > 0``
    per head (initialised from ``1 / time_scale`` down by halves): a continuous-time recency bias in the manner of
    ALiBi. With timeless keys (BOS, prompts) as a sink in the softmax, an attention output is then close to
    ``v_sink + Σ_j c · exp(-r_h (t - t_j)) (v_j - v_sink)`` for sparse histories, which is the exponential Hawkes
    form; without it, absolute encodings must learn decay through their projections, and fits were far from the
    true likelihood. The bias is folded into the dot product (two extra dimensions: ``[-r_h t_q, r_h]`` on the query
    side, ``[d_j, d_j t_j]`` on the key side with ``d_j`` = ``key_decays``), so it costs no (B, H, Q, N) tensor.

    With a :class:`Prefix`, each query also scores the ``P`` prompt keys ``W_k p_K`` of its own history (an event
    query those of its position, a time query those of its group's gap), plus the prefix's per-head log-weight;
    one softmax runs over prompts and events together, and the prompt values ``W_v p_V`` join the events' in the
    output. Post-norm residual blocks, as in the Transformer Hawkes process.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, time_scale: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        decays = -math.log(time_scale) - math.log(2.0) * torch.arange(n_heads, dtype=torch.float32)
        self.log_decay = nn.Parameter(decays)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.norm_attention = nn.LayerNorm(d_model)
        self.norm_ffn = nn.LayerNorm(d_model)

    def forward(
        self, events: torch.Tensor, queries: torch.Tensor, context: AttentionContext, prefix: Prefix | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``events`` (B, N + 1, d) and time ``queries`` (B, G, S, d) to their next-layer representations."""
        n_events, (batch, groups, per_group, width) = events.shape[1], queries.shape
        x = torch.cat([events, queries.flatten(1, 2)], dim=1)
        q = self._heads(self.query(x)) / math.sqrt(width // self.n_heads)
        rate = self.log_decay.exp()[None, :, None, None].expand(batch, -1, x.shape[1], 1)
        decays = context.key_decays[:, None, :, None].expand(-1, self.n_heads, -1, -1)
        times = context.key_times[:, None, :, None].expand(-1, self.n_heads, -1, -1)
        q_time = torch.cat([q, -rate * context.query_times[:, None, :, None], rate], dim=-1)
        k_time = torch.cat([self._heads(self.key(events)), decays, times], dim=-1)
        scores = q_time @ k_time.mT
        values = self._heads(self.value(events))
        if prefix is None:
            attended = torch.softmax(scores + context.mask, dim=-1) @ values
        else:
            prompt_keys = self._prompt_heads(self.key(prefix.keys))
            prompt_values = self._prompt_heads(self.value(prefix.values))
            by_gap = context.query_gaps[:, None, :, None, None]
            group_keys = torch.take_along_dim(prompt_keys, by_gap, dim=2)  # (B, H, G, P, d_head)
            group_values = torch.take_along_dim(prompt_values, by_gap, dim=2)
            q_events, q_groups = q[:, :, :n_events], q[:, :, n_events:].unflatten(2, (groups, per_group))
            prompt_scores = torch.cat(
                [
                    torch.einsum("bhnd,bhnpd->bhnp", q_events, prompt_keys),
                    torch.einsum("bhgsd,bhgpd->bhgsp", q_groups, group_keys).flatten(2, 3),
                ],
                dim=2,
            )
            prompt_scores = prompt_scores + prefix.log_weight[None, :, None, None]
            weights = torch.softmax(torch.cat([prompt_scores, scores], dim=-1) + context.mask, dim=-1)
            n_prompts = prompt_scores.shape[-1]
            to_prompts, to_events = weights[..., :n_prompts], weights[..., n_prompts:]
            from_prompts = torch.cat(
                [
                    torch.einsum("bhnp,bhnpd->bhnd", to_prompts[:, :, :n_events], prompt_values),
                    torch.einsum(
                        "bhgsp,bhgpd->bhgsd",
                        to_prompts[:, :, n_events:].unflatten(2, (groups, per_group)),
                        group_values,
                    ).flatten(2, 3),
                ],
                dim=2,
            )
            attended = to_events @ values + from_prompts
        mixed = self.norm_attention(x + self.out(attended.transpose(1, 2).flatten(2)))
        mixed = self.norm_ffn(mixed + self.ffn(mixed))
        return mixed[:, :n_events], mixed[:, n_events:].unflatten(1, (groups, per_group))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` to ``(B, heads, L, d / heads)``."""
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def _prompt_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N + 1, P, d)`` to ``(B, heads, N + 1, P, d / heads)``."""
        return x.unflatten(-1, (self.n_heads, -1)).permute(0, 3, 1, 2, 4)


def widened_mask(visible: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """The additive mask (B, 1, Q, n_prompts + N) for a boolean visibility (B, Q, N): ``n_prompts`` columns of 0 in
    front (every query sees every prompt position), then 0 where ``visible`` and ``-inf`` elsewhere (what was hidden,
    padding included, stays hidden)."""
    events = torch.zeros(visible.shape, dtype=torch.float32, device=visible.device).masked_fill(~visible, -math.inf)
    return torch.cat([events.new_zeros(*visible.shape[:2], n_prompts), events], dim=-1)[:, None]


def visibility(batch: EventBatch, last_visible: torch.Tensor, query_times: torch.Tensor | None = None) -> torch.Tensor:
    """Which events each query sees, (B, Q, N + 1): position ``j`` is visible iff ``j <= last_visible`` (B, Q) and
    ``j`` is not padding, and, for time queries (``query_times`` given), the event is strictly earlier than the
    query, so that tied events do not see each other (as in the Hawkes ground truth). BOS (position 0) is always
    visible, so no query row is empty.
    """
    positions = torch.arange(batch.n_positions, device=last_visible.device)
    visible = (positions[None, None, :] <= last_visible[:, :, None]) & batch.valid[:, None, :]
    if query_times is not None:
        visible &= (batch.times[:, None, :] < query_times[:, :, None]) | (positions == 0)
    return visible


class AttentionTPP(nn.Module):
    """The base model: event encoder, time queries and per-type softplus intensities.

    Parameters
    ----------
    n_types
        Number of event types ``K``.
    d_model, n_layers, n_heads
        Width (even, divisible by ``n_heads``), depth and heads of the attention stack.
    time_scale
        Typical inter-event time, the unit of the temporal encoding.
    """

    def __init__(self, n_types: int, d_model: int, n_layers: int, n_heads: int, time_scale: float) -> None:
        super().__init__()
        self.n_types = n_types
        self.d_model = d_model
        self.type_embedding = nn.Embedding(n_types + 1, d_model)  # index n_types: BOS (and padding)
        self.query_embedding = nn.Parameter(torch.zeros(d_model))
        self.encoding = TemporalEncoding(d_model, time_scale)
        self.layers = nn.ModuleList(
            PrefixAttentionLayer(d_model, n_heads, 2 * d_model, time_scale) for _ in range(n_layers)
        )
        self.intensity_head = nn.Linear(d_model, n_types)

    def hidden(
        self,
        batch: EventBatch,
        query_times: torch.Tensor,
        query_gaps: torch.Tensor,
        prompts: Sequence[Prefix] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Event representations (B, N + 1, d) and hidden states at ``query_times`` (B, G, S, d).

        ``query_times`` (B, G, S) holds ``G`` groups of ``S`` times; group ``g`` lies in gap ``query_gaps[b, g]``
        and sees BOS and the events among ``1..query_gaps[b, g]`` strictly before its time. An event sees itself
        and the events before it. ``prompts`` holds one :class:`Prefix` per layer.
        """
        n, (size, _, per_group) = batch.n_positions, query_times.shape
        flat_times = query_times.flatten(1)
        events = self.type_embedding(batch.types) + self.encoding(batch.times)
        queries = self.query_embedding + self.encoding(query_times)
        own = torch.arange(n).expand(size, n)
        flat_gaps = query_gaps.repeat_interleave(per_group, dim=1)
        visible = torch.cat([visibility(batch, own), visibility(batch, flat_gaps, flat_times)], dim=1)
        is_event = (batch.valid & (torch.arange(n) > 0)).float()
        context = AttentionContext(
            mask=widened_mask(visible, 0 if prompts is None else prompts[0].keys.shape[2]),
            query_times=torch.cat([batch.times, flat_times], dim=1),
            key_times=batch.times * is_event,
            key_decays=is_event,
            query_gaps=query_gaps,
        )
        for index, layer in enumerate(self.layers):
            events, queries = layer(events, queries, context, None if prompts is None else prompts[index])
        return events, queries

    def history_summaries(self, batch: EventBatch) -> torch.Tensor:
        """Per event position ``i``, the mean of the top-layer representations of BOS and events ``1..i`` from a
        pass without prompts, (B, N + 1, d): the prompt-retrieval query of every time whose history ends at ``i``
        (causal: it never sees a later event)."""
        empty = batch.times.new_zeros(batch.times.shape[0], 0, 1)
        events, _ = self.hidden(batch, empty, empty[..., 0].long())
        weights = batch.valid.to(events.dtype)[..., None]
        return (events * weights).cumsum(1) / weights.cumsum(1)

    def intensities(self, hidden: torch.Tensor) -> torch.Tensor:
        """``λ_k = softplus(w_k · h + b_k)`` for every type: (..., d) to (..., K)."""
        return F.softplus(self.intensity_head(hidden))

    def log_likelihood(
        self,
        batch: EventBatch,
        samples_per_gap: int,
        generator: torch.Generator,
        prompts: Sequence[Prefix] | None = None,
    ) -> torch.Tensor:
        """Log-likelihood of each sequence over ``[0, t_end]``: (B,).

        ``Σ_i log λ_{k_i}(t_i) - ∫_0^{t_end} Σ_k λ_k(t) dt``, the integral estimated gap by gap (the tail gap
        ``(t_n, t_end]`` included) with ``samples_per_gap`` stratified uniform samples: the gap is cut into equal
        strata and one time drawn uniformly in each, which is unbiased and has lower variance than i.i.d. samples.
        All samples and the event times are queried in one pass, one group of times per gap.
        """
        n = batch.n_positions
        gaps = torch.arange(n)
        is_event_gap = gaps[None, :] < batch.counts[:, None]  # gap i ends at event i + 1
        next_times = torch.cat([batch.times[:, 1:], batch.t_end[:, None]], dim=1)
        ends = torch.where(is_event_gap, next_times, batch.t_end[:, None])
        lengths = (ends - batch.times).clamp_min(0.0) * batch.valid
        strata = torch.arange(samples_per_gap, dtype=torch.float32)
        offsets = (strata + torch.rand(*lengths.shape, samples_per_gap, generator=generator)) / samples_per_gap
        samples = batch.times[..., None] + offsets * lengths[..., None]
        query_times = torch.cat([ends[..., None], samples], dim=-1)
        _, hidden = self.hidden(batch, query_times, gaps.expand(len(lengths), -1), prompts)
        intensity = self.intensities(hidden)  # (B, N + 1, S + 1, K)
        next_types = torch.cat([batch.types[:, 1:], batch.types[:, :1]], dim=1).clamp_max(self.n_types - 1)
        at_events = intensity[:, :, 0].gather(-1, next_types[..., None]).squeeze(-1)
        event_term = torch.where(is_event_gap, at_events.clamp_min(MIN_INTENSITY).log(), 0.0).sum(1)
        integral = torch.where(batch.valid, intensity[:, :, 1:].sum(-1).mean(-1) * lengths, 0.0).sum(1)
        return event_term - integral
