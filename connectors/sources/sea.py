"""The drifting SEA stream of the demo and the benchmarks: a known drift schedule, generated, never downloaded."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from river.datasets import synth

from connectors.messages import Event

SEA_VARIANTS = (0, 1, 2, 3)


def drifting_sea(seed: int = 42, drift_every: int = 20_000, width: int = 1_000, keys: int = 16) -> Iterator[Event]:
    """An endless SEA stream whose concept moves to the next SEA variant every ``drift_every`` events.

    Each segment is River's ``ConceptDriftStream`` from one SEA variant to the next, centred on the segment's
    end with a gradual drift of ``width`` events, so a learner sees a known drift schedule. Events are keyed by
    one of ``keys`` stream ids (``s0``...). Deterministic for a seed.

    >>> events = list(itertools.islice(drifting_sea(seed=1, drift_every=100, width=10), 3))
    >>> [sorted(e.features) for e in events][0], type(events[0].label).__name__
    (['x0', 'x1', 'x2'], 'bool')
    """
    if drift_every < 2 or width < 1 or keys < 1:
        raise ValueError(f"drift_every must be >= 2, width >= 1 and keys >= 1 (got {drift_every}, {width}, {keys})")
    count = 0
    for segment in itertools.count():
        old = SEA_VARIANTS[segment % len(SEA_VARIANTS)]
        new = SEA_VARIANTS[(segment + 1) % len(SEA_VARIANTS)]
        stream = synth.ConceptDriftStream(
            stream=synth.SEA(variant=old, seed=seed + segment),
            drift_stream=synth.SEA(variant=new, seed=seed + segment + 1),
            position=drift_every - min(width, drift_every // 2),
            width=min(width, drift_every // 2),
            seed=seed + segment,
        )
        for x, y in stream.take(drift_every):
            yield Event(key=f"s{count % keys}", features={f"x{k}": float(v) for k, v in x.items()}, label=bool(y))
            count += 1
