"""PromptTPP's retrieval prompt pools: per attention layer, one pool for keys and one for values.

A pool holds ``M`` (key vector, prompt) pairs; a prompt is ``L_p`` vectors of the model width. A query (the mean of
the hidden states of a history, from a pass of the base model without prompts) picks the ``N`` entries whose keys
are most cosine-similar; their prompts, concatenated, are prepended to that layer's key (or value) inputs. Queries
are per history, one per event position of a sequence (the events up to it), so that the prompts behind ``λ(t)``
never depend on events after ``t``. The selected similarities enter the loss as ``- cos_weight · Σ cos(query,
key)``, which pulls the chosen keys towards the queries that chose them, so that histories of one regime come to
share prompts. Top-N selection is not differentiable: the NLL trains the selected prompts, the cosine term trains
the selected keys.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from learners.tpp.model import Prefix

__all__ = ["LayerPrompts", "PromptPool", "PromptPools"]

QUERY_MOMENTUM = 0.1  # weight of each training batch in the running query statistics


class PromptPool(nn.Module):
    """``pool_size`` (key, prompt) pairs, initialised uniformly in ``[-1, 1]`` as in L2P."""

    def __init__(self, pool_size: int, prompt_length: int, d_model: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.rand(pool_size, d_model) * 2.0 - 1.0)
        self.prompts = nn.Parameter(torch.rand(pool_size, prompt_length, d_model) * 2.0 - 1.0)

    def retrieve(self, query: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For queries (..., d): the selected prompts concatenated, (..., top_n · L_p, d), and the selected keys'
        cosine similarities (..., top_n), most similar first."""
        similarity = F.cosine_similarity(query[..., None, :], self.keys, dim=-1)
        selected, index = similarity.topk(top_n, dim=-1)
        return self.prompts[index].flatten(-3, -2), selected


class LayerPrompts(nn.Module):
    """The key pool and the value pool of one attention layer, and the per-head log-weight of prompt positions."""

    def __init__(self, pool_size: int, prompt_length: int, d_model: int, n_heads: int, n_selected: int) -> None:
        super().__init__()
        self.key_pool = PromptPool(pool_size, prompt_length, d_model)
        self.value_pool = PromptPool(pool_size, prompt_length, d_model)
        self.log_weight = nn.Parameter(torch.full((n_heads,), -math.log(n_selected)))


class PromptPools(nn.Module):
    """One :class:`LayerPrompts` per attention layer, queried together.

    Parameters
    ----------
    n_layers, d_model
        The base model's depth and width.
    pool_size, prompt_length, top_n
        ``M``, ``L_p`` and ``N`` of the spec (10, 5, 5).
    """

    query_mean: torch.Tensor
    query_var: torch.Tensor
    queries_seen: torch.Tensor

    def __init__(
        self, n_layers: int, d_model: int, n_heads: int, pool_size: int, prompt_length: int, top_n: int
    ) -> None:
        super().__init__()
        self.top_n = top_n
        self.layers = nn.ModuleList(
            LayerPrompts(pool_size, prompt_length, d_model, n_heads, top_n * prompt_length) for _ in range(n_layers)
        )
        self.register_buffer("query_mean", torch.zeros(d_model))
        self.register_buffer("query_var", torch.ones(d_model))
        self.register_buffer("queries_seen", torch.zeros((), dtype=torch.int64))

    def standardise(self, query: torch.Tensor, valid: torch.Tensor, update: bool) -> torch.Tensor:
        """Centre and scale raw queries (..., d) by running statistics of the training queries.

        Mean-pooled hidden states share a dominant common component (pairwise cosine about 0.97 measured on
        Hawkes data), so raw cosine similarity sends every sequence to the same keys. Standardised, the cosine
        compares what differs between histories. With ``update`` (training), the statistics first move towards
        those of this batch's ``valid`` queries (a boolean mask of ``query.shape[:-1]``): an exponential moving
        average with weight ``QUERY_MOMENTUM``, started at the first batch.
        """
        if update:
            seen = query[valid]
            mean, var = seen.mean(0), seen.var(0, unbiased=False)
            weight = 1.0 if int(self.queries_seen) == 0 else QUERY_MOMENTUM
            self.query_mean.lerp_(mean, weight)
            self.query_var.lerp_(var, weight)
            self.queries_seen += len(seen)
        return (query - self.query_mean) / (self.query_var + 1e-6).sqrt()

    def retrieve(self, query: torch.Tensor) -> tuple[list[Prefix], torch.Tensor]:
        """Per layer the prefix for (standardised) queries (B, N + 1, d), one per history; and per query the sum of
        the cosine similarities of every selected key over all pools, (B, N + 1)."""
        prefixes: list[Prefix] = []
        similarity = query.new_zeros(query.shape[:-1])
        for module in self.layers:
            layer = cast(LayerPrompts, module)
            key_prompts, key_similarity = layer.key_pool.retrieve(query, self.top_n)
            value_prompts, value_similarity = layer.value_pool.retrieve(query, self.top_n)
            prefixes.append(Prefix(key_prompts, value_prompts, layer.log_weight))
            similarity = similarity + key_similarity.sum(-1) + value_similarity.sum(-1)
        return prefixes, similarity
