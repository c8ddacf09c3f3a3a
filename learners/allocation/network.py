"""SL-MGAC's networks: a shared LayerNorm trunk over the request and the user's behaviour (target attention), with
one actor and one critic head per activity group, auxiliary supervised heads, and a small student for serving."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from learners.allocation.features import FeatureLayout

__all__ = ["AllocationNetwork", "Heads", "RunningScaler", "StudentPolicy"]

_EMBEDDING_STD = 0.1
"""The user and streamer embeddings start at this scale (PyTorch's default is 1), a tenth of the standardised dense
features', so that early on the trunk reads the features that decide an allocation rather than random ids."""

AUXILIARY = ("click", "watch", "video", "end")
"""The immediate outcomes the supervised heads predict, per action: click (logit), the step's live watch time and
short-video time (in units of the reward scale), and the session's end before the next decision (logit)."""


@dataclass(frozen=True)
class Heads:
    """One forward pass, every head selected by the request's group: ``actor`` logits (B, 2); ``critic`` (B, 2,
    out) per action, ``out`` the bins (distributional) or 1; ``auxiliary`` (B, 2, 4) per action
    (:data:`AUXILIARY`), or None."""

    actor: torch.Tensor
    critic: torch.Tensor
    auxiliary: torch.Tensor | None


class TargetAttention(nn.Module):
    """Attention over the user's behaviour sequence with the candidate as the query (as in DIN / SL-MGAC): the
    candidate's embedding scores each remembered card (its streamer embedding plus its outcome); the weighted sum
    of the cards summarises how this user responded to similar rooms. An empty sequence gives zeros."""

    def __init__(self, embed: int) -> None:
        super().__init__()
        self.outcome = nn.Linear(2, embed)
        self.query = nn.Linear(embed, embed, bias=False)
        self.key = nn.Linear(embed, embed, bias=False)
        self.value = nn.Linear(embed, embed, bias=False)
        self.scale = 1.0 / math.sqrt(embed)

    def forward(
        self, candidate: torch.Tensor, items: torch.Tensor, outcomes: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        cards = items + self.outcome(outcomes)  # (B, K, E)
        scores = torch.einsum("be,bke->bk", self.query(candidate), self.key(cards)) * self.scale
        scores = scores.masked_fill(mask <= 0, -1e9)
        weights = torch.softmax(scores, dim=-1) * (mask > 0)
        return torch.einsum("bk,bke->be", weights, self.value(cards))


class RunningScaler(nn.Module):
    """Standardises the dense features with a running mean and variance of the rows the agent trains on.

    The dense features live on very different scales (a group one-hot, a click probability of 0.05, a count of
    live rooms); unscaled, the small ones (fatigue, the click probability: what the allocation hinges on) barely
    move the trunk beside the embeddings. The statistics follow the training batches with an exponential moving
    average (``rate`` per batch; the first batch sets them), since the policy keeps changing which states are seen.

    >>> scaler = RunningScaler(2)
    >>> scaler.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
    >>> scaler(torch.tensor([[2.0, 30.0]])).round(decimals=3).tolist()  # the first batch sets mean and variance
    [[1.0, 1.0]]
    """

    mean: torch.Tensor
    variance: torch.Tensor
    batches: torch.Tensor

    def __init__(self, width: int, *, rate: float = 0.01, floor: float = 1e-4) -> None:
        super().__init__()
        self.rate, self.floor = rate, floor
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("variance", torch.ones(width))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, dense: torch.Tensor) -> None:
        """Move the statistics towards those of a batch of dense rows (B, width)."""
        rate = 1.0 if int(self.batches) == 0 else self.rate
        self.mean.lerp_(dense.mean(0), rate)
        self.variance.lerp_(dense.var(0, unbiased=False), rate)
        self.batches += 1

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return (dense - self.mean) / torch.sqrt(self.variance + self.floor)


class AllocationNetwork(nn.Module):
    """Trunk and heads of an allocation agent.

    Input: feature rows (:class:`~learners.allocation.features.FeatureLayout`). The trunk takes the dense features
    standardised (:class:`RunningScaler`, which the agent updates from its training batches), embeds the user and
    the candidate streamer (``embed`` wide, drawn small so that at first the dense features lead), attends over the
    behaviour sequence with the candidate as target, and runs ``depth`` blocks of Linear → LayerNorm → ReLU
    (``hidden`` wide; LayerNorm off only when ``layer_norm`` is False). Heads: ``heads`` actor heads (2 logits
    each) and critic heads (2 actions x ``out`` each), selected by the group when ``heads > 1`` (head 0 for every
    request otherwise); with ``auxiliary``, one head per group (2 actions x 4) for the click, watch time,
    short-video time and session end of :data:`AUXILIARY`, each plus a linear function of the standardised dense
    features (wide and deep, one linear map per group): the immediate outcomes follow fatigue and the click
    probability almost linearly, and a linear path learns that directly, where the trunk, shared with the critic,
    did not.

    >>> layout = FeatureLayout(dense=5, history=3)
    >>> net = AllocationNetwork(layout, user_buckets=4, streamers=2, heads=2, out=11, auxiliary=True)
    >>> rows = torch.zeros(6, layout.width)
    >>> rows[3:, 0] = 1.0  # the last three requests come from group 1
    >>> heads = net(rows)
    >>> tuple(heads.actor.shape), tuple(heads.critic.shape), tuple(heads.auxiliary.shape)
    ((6, 2), (6, 2, 11), (6, 2, 4))
    """

    def __init__(
        self,
        layout: FeatureLayout,
        *,
        user_buckets: int,
        streamers: int,
        heads: int,
        out: int,
        auxiliary: bool,
        embed: int = 8,
        hidden: int = 64,
        depth: int = 2,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.layout, self.heads, self.out = layout, heads, out
        self.scaler = RunningScaler(layout.dense)
        self.users = nn.Embedding(user_buckets, embed)
        self.streamers = nn.Embedding(streamers, embed)
        for table in (self.users, self.streamers):
            nn.init.normal_(table.weight, std=_EMBEDDING_STD)
        self.attention = TargetAttention(embed)
        blocks: list[nn.Module] = []
        width = layout.dense + 3 * embed
        for _ in range(depth):
            blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden) if layer_norm else nn.Identity(), nn.ReLU()]
            width = hidden
        self.trunk = nn.Sequential(*blocks)
        self.actor = nn.Linear(hidden, heads * 2)
        self.critic = nn.Linear(hidden, heads * 2 * out)
        self.auxiliary = nn.Linear(hidden, heads * 2 * len(AUXILIARY)) if auxiliary else None
        self.wide = nn.Linear(layout.dense, heads * 2 * len(AUXILIARY)) if auxiliary else None
        if self.wide is not None:  # starts as no correction: the deep heads alone
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)

    def forward(self, rows: torch.Tensor) -> Heads:
        group, user, candidate, dense, items, outcomes, mask = self.layout.split(rows)
        dense = self.scaler(dense)
        candidate_embedding = self.streamers(candidate.long())
        behaviour = self.attention(candidate_embedding, self.streamers(items.long()), outcomes, mask)
        hidden = self.trunk(torch.cat([dense, self.users(user.long()), candidate_embedding, behaviour], dim=-1))
        head = group.long() if self.heads > 1 else torch.zeros_like(group, dtype=torch.long)
        batch = torch.arange(len(rows))
        actor = self.actor(hidden).view(-1, self.heads, 2)[batch, head]
        critic = self.critic(hidden).view(-1, self.heads, 2, self.out)[batch, head]
        auxiliary = None
        if self.auxiliary is not None and self.wide is not None:
            deep = self.auxiliary(hidden).view(-1, self.heads, 2, len(AUXILIARY))[batch, head]
            auxiliary = deep + self.wide(dense).view(-1, self.heads, 2, len(AUXILIARY))[batch, head]
        return Heads(actor, critic, auxiliary)


class StudentPolicy(nn.Module):
    """The serving policy distilled from the actor: one small LayerNorm MLP on the dense features only (no
    embeddings, no attention), ``hidden`` wide, giving the two action logits.

    >>> student = StudentPolicy(FeatureLayout(dense=5, history=3), hidden=16)
    >>> tuple(student(torch.zeros(4, 20)).shape)
    (4, 2)
    """

    def __init__(self, layout: FeatureLayout, *, hidden: int = 16) -> None:
        super().__init__()
        self.layout = layout
        self.net = nn.Sequential(nn.Linear(layout.dense, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(rows[..., 3 : 3 + self.layout.dense])  # the dense part of the layout
        return logits
