"""The streaming protocol for TPP learners: evaluate each period before training on it, then train on it.

Per period ``p`` (in order):

1. **prequential scores** on all of ``p``'s sequences, before any training on them: log-likelihood per event,
   RMSE of the predicted next-event time and accuracy of the predicted next-event type. These are the headline.
2. train on ``p``'s training sequences (all but the held-out tail);
3. **after-training score** ``a[p][p]``: log-likelihood per event on ``p``'s held-out sequences.

After the last period ``T``, every period's held-out sequences are scored again (``a[T][p]``), and

    average forgetting = mean over p < T of (a[p][p] - a[T][p])

the drop, in nats per event, of each earlier period's score between right after it was learned and the end of the
stream (positive: forgotten; negative: later periods helped, backward transfer). This is the continual-learning
convention of scores measured after training on held-out data (Chaudhry et al., 2018, take the best score seen
instead of the one right after training; with a baseline that stops training, that would make negative values
impossible). With ``holdout=0`` the after-training scores use the training sequences themselves.

Next-event predictions are made from prefixes ``events[:i]`` (``i`` from 0, the empty history, to ``n - 1``) of
the period's sequences, at most ``max_predictions`` prefixes per period drawn without replacement by a seeded
``numpy`` generator (every prefix when there are fewer), since each takes its own forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from learners.tpp.continual import ContinualTPP
from learners.tpp.sequences import EventSequenceLike

__all__ = ["PeriodScores", "ProtocolResult", "evaluate", "run_protocol"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodScores:
    """Scores of a model on one period's sequences."""

    log_likelihood: float  # per event, natural log
    rmse: float  # of the predicted next-event time
    type_accuracy: float  # of the predicted next-event type
    n_events: int
    n_predictions: int


@dataclass(frozen=True)
class ProtocolResult:
    """What :func:`run_protocol` measured: per period the prequential scores, and the held-out log-likelihood per
    event right after training on the period and at the end of the stream."""

    prequential: tuple[PeriodScores, ...]
    after_training: tuple[float, ...]
    final: tuple[float, ...]

    @property
    def mean_log_likelihood(self) -> float:
        """Mean over periods of the prequential log-likelihood per event."""
        return float(np.mean([scores.log_likelihood for scores in self.prequential]))

    @property
    def forgetting(self) -> float:
        """Average forgetting (module docstring); NaN with a single period."""
        drops = [after - final for after, final in zip(self.after_training[:-1], self.final[:-1], strict=True)]
        return float(np.mean(drops)) if drops else float("nan")


def log_likelihood_per_event(model: ContinualTPP, sequences: Sequence[EventSequenceLike]) -> float:
    """The model's log-likelihood of ``sequences`` divided by their number of events (NaN without events)."""
    total, n_events = model.log_likelihood(sequences)
    return total / n_events if n_events else float("nan")


def evaluate(
    model: ContinualTPP, sequences: Sequence[EventSequenceLike], max_predictions: int, rng: np.random.Generator
) -> PeriodScores:
    """Score ``model`` on ``sequences`` without training it (see the module docstring for the prefixes)."""
    total, n_events = model.log_likelihood(sequences)
    prefixes = [(s, i) for s, seq in enumerate(sequences) for i in range(len(seq.times))]
    chosen = rng.choice(len(prefixes), size=min(max_predictions, len(prefixes)), replace=False)
    errors, hits = [], []
    for index in sorted(chosen.tolist()):
        s, i = prefixes[index]
        seq = sequences[s]
        prediction = model.predict_next(seq.times[:i], seq.types[:i])
        errors.append(prediction.time - float(seq.times[i]))
        hits.append(prediction.type == int(seq.types[i]))
    return PeriodScores(
        log_likelihood=total / n_events if n_events else float("nan"),
        rmse=float(np.sqrt(np.mean(np.square(errors)))) if errors else float("nan"),
        type_accuracy=float(np.mean(hits)) if hits else float("nan"),
        n_events=n_events,
        n_predictions=len(errors),
    )


def run_protocol(
    model: ContinualTPP,
    periods: Sequence[Sequence[EventSequenceLike]],
    epochs: int = 5,
    *,
    holdout: float = 0.2,
    max_predictions: int = 200,
    seed: int = 0,
) -> ProtocolResult:
    """Run the streaming protocol (module docstring) on ``periods``, each a list of sequences in arrival order.

    ``holdout`` is the fraction of each period's sequences, taken from its end, that is never trained on and gives
    the after-training and final scores (at least one sequence when > 0, and at least one left to train on).
    """
    if not periods:
        raise ValueError("run_protocol: periods is empty; pass one list of sequences per period")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"run_protocol: holdout must be in [0, 1) (got {holdout!r}), e.g. 0.2")
    if max_predictions < 0:
        raise ValueError(f"run_protocol: max_predictions must be >= 0 (got {max_predictions!r})")
    splits = []
    for index, sequences in enumerate(periods):
        if len(sequences) < (2 if holdout else 1):
            raise ValueError(
                f"run_protocol: period {index} has {len(sequences)} sequences; it needs at least "
                f"{2 if holdout else 1} (one to train on{' and one to hold out' if holdout else ''})"
            )
        n_held = min(max(round(holdout * len(sequences)), 1), len(sequences) - 1) if holdout else 0
        cut = len(sequences) - n_held
        splits.append((sequences[:cut], sequences[cut:] if n_held else sequences))
    rng = np.random.default_rng(seed)
    prequential, after_training = [], []
    for index, (sequences, (train, held_out)) in enumerate(zip(periods, splits, strict=True)):
        scores = evaluate(model, sequences, max_predictions, rng)
        prequential.append(scores)
        model.fit_period(train, epochs=epochs)
        after_training.append(log_likelihood_per_event(model, held_out))
        logger.info(
            "period %d: prequential LL/event %.4f, after training %.4f",
            index,
            scores.log_likelihood,
            after_training[-1],
            extra={"period": index, "strategy": model.strategy, "log_likelihood": scores.log_likelihood},
        )
    final = [log_likelihood_per_event(model, held_out) for _, held_out in splits]
    return ProtocolResult(tuple(prequential), tuple(after_training), tuple(final))
