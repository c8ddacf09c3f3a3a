"""ContinualTPP: an attention TPP that learns period after period, with prompt pools or with one of two baselines.

The three strategies share one model, one training loop and one checkpoint; they differ only in what is trained:

- ``"prompt"`` (PromptTPP): prompt pools on every layer's K and V, loss
  ``NLL - cos_weight * sum cos(query, selected keys)``. On the first period the base model and the pools learn
  together at ``lr`` / ``pool_lr`` (the initial fit: there is no earlier knowledge to protect yet). From the second
  period on, **asynchronous refresh**: the pools learn on even batches only, the base model on odd batches only, at
  the small ``base_lr`` (continual fine-tuning).
- ``"finetune"``: the base model alone, every batch, at ``lr``, on every period (naive fine-tuning).
- ``"frozen"``: as ``"finetune"`` on the first period, then never trained again (train once, then frozen).

No strategy keeps old sequences: each ``fit_period`` sees only the sequences it is given. The loss is the negative
log-likelihood per event of the batch (sum over its sequences / its number of events); the cosine term is the mean
over the batch's histories (one per event position: the query is causal, see :mod:`learners.tpp.prompts`) of the
summed similarities of all selected keys (2 pools x ``n_layers`` x ``top_n``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from learners._state import check_state, require
from learners.tpp.model import MIN_INTENSITY, AttentionTPP, Prefix
from learners.tpp.prompts import PromptPools
from learners.tpp.sequences import (
    EventBatch,
    EventSequenceLike,
    pad_sequences,
    validate_sequence,
    validate_sequences,
)

__all__ = ["ContinualTPP", "NextEvent", "Strategy"]

Strategy = Literal["prompt", "finetune", "frozen"]
STATE_FORMAT = 1
EVAL_SEED_OFFSET = 7_919  # evaluation draws its Monte-Carlo times from seed + this, never from the training RNG
GRID_POINTS = 256  # points of the survival grid in predict_next
HORIZON_GAPS = 30.0  # predict_next integrates the survival function over this many mean inter-event times


@dataclass(frozen=True)
class NextEvent:
    """A next-event prediction: the expected time, the most intense type there, and the type distribution there."""

    time: float
    type: int
    type_probs: np.ndarray


class ContinualTPP:
    """A continuous-time attention TPP trained on a stream of periods, with PromptTPP or a baseline strategy.

    Parameters
    ----------
    n_types
        Number of event types ``K``; types are ints in ``[0, K)``.
    strategy
        ``"prompt"`` (PromptTPP), ``"finetune"`` or ``"frozen"`` (see the module docstring).
    d_model, n_layers, n_heads
        Size of the attention model (:class:`learners.tpp.model.AttentionTPP`).
    time_scale
        Typical inter-event time in the data's unit: the unit of the temporal encoding.
    mc_samples
        Monte-Carlo samples per gap for the integral of the intensity (the spec asks for at least 20).
    pool_size, prompt_length, top_n
        ``M``, ``L_p`` and ``N`` of the prompt pools (``"prompt"`` only).
    cos_weight
        Weight of the key-query cosine term in the PromptTPP loss.
    lr
        Adam learning rate of the base model under ``"finetune"`` and ``"frozen"``, and under ``"prompt"`` on the
        first period.
    base_lr
        Learning rate of the base model under ``"prompt"`` after the first period (continual fine-tuning).
    pool_lr
        Learning rate of the prompt pools (keys, prompts, prompt weights).
    batch_size
        Sequences per gradient step.
    grad_clip
        Maximum global gradient norm per step.
    seed
        Seeds the initial weights, the batch order and the Monte-Carlo times: same seed and data, same numbers.

    Examples
    --------
    >>> from learners.tpp.sequences import ValidSequence
    >>> rng = np.random.default_rng(0)
    >>> def poisson(rate, t_end=20.0):  # a two-type Poisson process, type 0 three times as frequent
    ...     times = np.sort(rng.uniform(0.0, t_end, rng.poisson(rate * t_end)))
    ...     return ValidSequence(times, (rng.random(len(times)) < 0.25).astype(np.int64), t_end)
    >>> sequences = [poisson(1.0) for _ in range(32)]
    >>> model = ContinualTPP(n_types=2, strategy="finetune", d_model=16, n_layers=1, seed=0)
    >>> before = model.log_likelihood(sequences)
    >>> _ = model.fit_period(sequences, epochs=3)
    >>> after = model.log_likelihood(sequences)
    >>> after[1] == before[1], after[0] > before[0]
    (True, True)
    >>> prediction = model.predict_next(sequences[0].times[:5], sequences[0].types[:5])
    >>> bool(prediction.time > sequences[0].times[4]), prediction.type in (0, 1)
    (True, True)

    References
    ----------
    Xue, S., Wang, Y., Chu, Z., Shi, X., Jiang, C., Hao, H., Jiang, G., Feng, X., Zhang, J., Zhou, J. (2023).
    Prompt-augmented Temporal Point Process for Streaming Event Sequence. NeurIPS.
    Yang, C., Mei, H., Eisner, J. (2022). Transformer Embeddings of Irregularly Spaced Events and Their
    Participants (AttNHP). ICLR.
    """

    def __init__(
        self,
        n_types: int,
        strategy: Strategy = "prompt",
        *,
        d_model: int = 32,
        n_layers: int = 1,
        n_heads: int = 2,
        time_scale: float = 1.0,
        mc_samples: int = 20,
        pool_size: int = 10,
        prompt_length: int = 5,
        top_n: int = 5,
        cos_weight: float = 0.1,
        lr: float = 3e-3,
        base_lr: float = 3e-4,
        pool_lr: float = 1e-2,
        batch_size: int = 16,
        grad_clip: float = 1.0,
        seed: int = 0,
    ) -> None:
        name = type(self).__name__
        for label, value in (
            ("n_types", n_types),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("mc_samples", mc_samples),
            ("pool_size", pool_size),
            ("prompt_length", prompt_length),
            ("batch_size", batch_size),
        ):
            require(isinstance(value, int) and value >= 1, f"{name}: {label} must be an int >= 1 (got {value!r})")
        require(
            strategy in get_args(Strategy),
            f"{name}: strategy must be one of {', '.join(get_args(Strategy))} (got {strategy!r})",
        )
        require(
            isinstance(d_model, int) and d_model >= 2 and d_model % (2 * n_heads) == 0,
            f"{name}: d_model must be an int divisible by 2 * n_heads = {2 * n_heads} (got {d_model!r}), e.g. 32",
        )
        require(
            isinstance(top_n, int) and 1 <= top_n <= pool_size,
            f"{name}: top_n must be an int between 1 and pool_size={pool_size} (got {top_n!r}); the spec uses 5",
        )
        for label, number in (
            ("time_scale", time_scale),
            ("lr", lr),
            ("base_lr", base_lr),
            ("pool_lr", pool_lr),
            ("grad_clip", grad_clip),
        ):
            require(
                isinstance(number, int | float) and math.isfinite(number) and number > 0,
                f"{name}: {label} must be a positive number (got {number!r})",
            )
        require(
            isinstance(cos_weight, int | float) and math.isfinite(cos_weight) and cos_weight >= 0,
            f"{name}: cos_weight must be a number >= 0 (got {cos_weight!r}); the spec uses 0.1",
        )
        require(isinstance(seed, int), f"{name}: seed must be an int (got {seed!r})")
        self._params: dict[str, Any] = {
            "n_types": n_types,
            "strategy": strategy,
            "d_model": d_model,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "time_scale": float(time_scale),
            "mc_samples": mc_samples,
            "pool_size": pool_size,
            "prompt_length": prompt_length,
            "top_n": top_n,
            "cos_weight": float(cos_weight),
            "lr": float(lr),
            "base_lr": float(base_lr),
            "pool_lr": float(pool_lr),
            "batch_size": batch_size,
            "grad_clip": float(grad_clip),
            "seed": seed,
        }
        self.n_types = n_types
        self.strategy: Strategy = strategy
        with torch.random.fork_rng(devices=[]):  # seeded default initialisation, global RNG left as it was
            torch.manual_seed(seed)
            self.network = AttentionTPP(n_types, d_model, n_layers, n_heads, time_scale)
            self.pools = None
            if strategy == "prompt":
                self.pools = PromptPools(n_layers, d_model, n_heads, pool_size, prompt_length, top_n)
        groups: list[dict[str, Any]] = [{"params": list(self.network.parameters()), "lr": lr, "name": "base"}]
        if self.pools is not None:
            groups.append({"params": list(self.pools.parameters()), "lr": pool_lr, "name": "pools"})
        self.optimizer = torch.optim.Adam(groups)
        self.generator = torch.Generator().manual_seed(seed)
        self.periods_seen = 0
        self.periods_trained = 0
        self.batches_seen = 0
        self._observed_time = 0.0
        self._observed_events = 0

    # -- training --------------------------------------------------------------------------------------------------

    def fit_period(self, sequences: Sequence[EventSequenceLike], epochs: int = 5) -> float | None:
        """Train on one period's sequences for ``epochs`` passes in seeded random order.

        Returns the mean training loss of the last epoch, or ``None`` when the strategy ignores the period
        (``"frozen"`` after its first period).
        """
        name = type(self).__name__
        require(isinstance(epochs, int) and epochs >= 1, f"{name}: epochs must be an int >= 1 (got {epochs!r})")
        checked = validate_sequences(sequences, self.n_types, f"{name}.fit_period")
        self.periods_seen += 1
        if self.strategy == "frozen" and self.periods_trained:
            return None
        continual = self.strategy == "prompt" and self.periods_trained > 0
        self.optimizer.param_groups[0]["lr"] = self._params["base_lr" if continual else "lr"]
        batch_size = self._params["batch_size"]
        losses: list[float] = []
        for _ in range(epochs):
            losses = []
            order = torch.randperm(len(checked), generator=self.generator).tolist()
            for start in range(0, len(checked), batch_size):
                batch = pad_sequences([checked[i] for i in order[start : start + batch_size]], self.n_types)
                losses.append(self._step(batch))
        self.periods_trained += 1
        self._observed_time += sum(seq.t_end for seq in checked)
        self._observed_events += sum(len(seq) for seq in checked)
        return float(np.mean(losses))

    def _step(self, batch: EventBatch) -> float:
        """One gradient step. Under ``"prompt"`` after the first period, only the pools (even batches) or only the
        base model (odd batches) get gradients; parameters that get none are left alone by Adam."""
        alternate = self.pools is not None and self.periods_trained > 0
        train_pools = self.pools is not None and (not alternate or self.batches_seen % 2 == 0)
        self.network.requires_grad_(not alternate or not train_pools)
        if self.pools is not None:
            self.pools.requires_grad_(train_pools)
        try:
            prompts, similarity = self._prompts(batch, training=True)
            log_likelihood = self.network.log_likelihood(batch, self._params["mc_samples"], self.generator, prompts)
            loss = -log_likelihood.sum() / batch.counts.sum().clamp_min(1)
            if similarity is not None:  # mean over the batch's histories
                loss = loss - self._params["cos_weight"] * similarity[batch.valid].mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trained = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(trained, self._params["grad_clip"])
            self.optimizer.step()
        finally:
            self.network.requires_grad_(True)
            if self.pools is not None:
                self.pools.requires_grad_(True)
        self.batches_seen += 1
        return float(loss.detach())

    def _prompts(self, batch: EventBatch, training: bool = False) -> tuple[list[Prefix] | None, torch.Tensor | None]:
        """Under ``"prompt"``: the retrieved prefix per layer, one set of prompts per history (event position), and
        the selected keys' summed cosine per history, (B, N + 1); otherwise ``(None, None)``. The queries come from
        a no-grad pass of the base model without prompts, standardised by the pools' running statistics (updated
        only when ``training``)."""
        if self.pools is None:
            return None, None
        with torch.no_grad():
            query = self.pools.standardise(self.network.history_summaries(batch), batch.valid, update=training)
        return self.pools.retrieve(query)

    # -- evaluation ------------------------------------------------------------------------------------------------

    def log_likelihood(self, sequences: Sequence[EventSequenceLike]) -> tuple[float, int]:
        """Total log-likelihood (natural log) of ``sequences`` under the model, and their number of events.

        Divide the two for the per-event figure. The Monte-Carlo times come from a generator seeded afresh on every
        call, so the same model gives the same number for the same sequences, and evaluating never changes what
        training draws next.
        """
        checked = validate_sequences(sequences, self.n_types, f"{type(self).__name__}.log_likelihood")
        generator = torch.Generator().manual_seed(self._params["seed"] + EVAL_SEED_OFFSET)
        total = 0.0
        batch_size = 2 * self._params["batch_size"]
        with torch.no_grad():
            for start in range(0, len(checked), batch_size):
                batch = pad_sequences(checked[start : start + batch_size], self.n_types)
                prompts, _ = self._prompts(batch)
                total += float(self.network.log_likelihood(batch, self._params["mc_samples"], generator, prompts).sum())
        return total, sum(len(seq) for seq in checked)

    def predict_next(self, times: Any, types: Any, now: float | None = None) -> NextEvent:
        """Predict the next event after a history (times from the sequence's start at 0, types in ``[0, K)``).

        The time is the expected next-event time under the model, ``start + ∫_0^∞ S(s) ds`` with the survival
        ``S(s) = exp(-∫_0^s Σ_k λ_k(start + u) du)`` and ``start`` the last event time (or ``now``, when given and
        later: the prediction is then conditioned on no event in between). ``S`` is integrated by the trapezoid
        rule on a grid of 256 times, quadratically denser near ``start``, over 30 mean inter-event times seen in
        training (``time_scale`` before any training); the mass left beyond it is added as ``S(end) / λ(end)``
        (constant intensity from there on). The type is the argmax of the intensities at the predicted time, and
        ``type_probs`` their normalised values there, both linearly interpolated between grid points. One no-grad
        forward pass of the single sequence (plus one for the prompt query under ``"prompt"``).
        """
        history = validate_sequence(times, types, now, self.n_types, f"{type(self).__name__}.predict_next", "now")
        start = history.t_end
        mean_gap = self._observed_time / self._observed_events if self._observed_events else self._params["time_scale"]
        offsets = HORIZON_GAPS * mean_gap * torch.linspace(1.0 / GRID_POINTS, 1.0, GRID_POINTS) ** 2
        batch = pad_sequences([history], self.n_types)
        with torch.no_grad():
            prompts, _ = self._prompts(batch)
            _, hidden = self.network.hidden(batch, (start + offsets)[None, None], batch.counts[:, None], prompts)
            grid_intensity = self.network.intensities(hidden)[0, 0].double().numpy()
        # the grid starts just after ``start`` (at ``start`` itself the last event would not be strictly before):
        # λ(start+) is taken as λ at the first grid point
        grid = np.concatenate([[0.0], offsets.double().numpy()])
        intensity = np.concatenate([grid_intensity[:1], grid_intensity])
        total = intensity.sum(-1)
        steps = np.diff(grid)
        survival = np.exp(-np.concatenate([[0.0], np.cumsum(steps * (total[1:] + total[:-1]) / 2.0)]))
        tail = survival[-1] / max(total[-1], MIN_INTENSITY)
        expected = float(np.sum(steps * (survival[1:] + survival[:-1]) / 2.0) + tail)
        at_time = np.array([np.interp(expected, grid, column) for column in intensity.T])
        probs = at_time / at_time.sum()
        return NextEvent(time=start + expected, type=int(np.argmax(probs)), type_probs=probs)

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: parameters, weights, Adam state, RNG state and counters
        (tensors and plain Python values only, loadable with ``torch.load(weights_only=True)``)."""
        return copy.deepcopy(
            {
                "format": STATE_FORMAT,
                "learner": type(self).__name__,
                "params": self._params,
                "network": self.network.state_dict(),
                "pools": None if self.pools is None else self.pools.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": self.generator.get_state(),
                "counters": {
                    "periods_seen": self.periods_seen,
                    "periods_trained": self.periods_trained,
                    "batches_seen": self.batches_seen,
                    "observed_time": self._observed_time,
                    "observed_events": self._observed_events,
                },
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a learner built with the same parameters."""
        check_state(state, type(self).__name__, STATE_FORMAT, self._params)
        state = copy.deepcopy(state)
        self.network.load_state_dict(state["network"])
        if self.pools is not None:
            self.pools.load_state_dict(state["pools"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        counters = state["counters"]
        self.periods_seen = counters["periods_seen"]
        self.periods_trained = counters["periods_trained"]
        self.batches_seen = counters["batches_seen"]
        self._observed_time = counters["observed_time"]
        self._observed_events = counters["observed_events"]
