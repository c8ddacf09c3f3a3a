"""Turn read rows into Eddy :class:`~connectors.messages.Event` messages, ready to produce onto a topic.

``Event.features`` holds JSON scalars only (``None`` is not a feature value), so a missing value is left out of
the features: online learners read an absent key as "unknown", which is what the file said. A missing label
becomes an unlabelled event (``label=None``), which learners predict on but do not learn from.

Event times default to the row's position (0.0, 1.0, 2.0, ...), not the wall clock, so that producing the same
file twice gives the same records and a benchmark replay is reproducible.

>>> rows = [({"a": 1.5, "colour": "red", "b": None}, "UP"), ({"a": 2.0, "colour": None, "b": 3.0}, None)]
>>> [(e.key, e.ts, e.features, e.label) for e in to_events(rows, key="elec2")]
[('elec2', 0.0, {'a': 1.5, 'colour': 'red'}, 'UP'), ('elec2', 1.0, {'a': 2.0, 'b': 3.0}, None)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from connectors.messages import Event
from connectors.readers._base import Value

KeyFunction = Callable[[int, Mapping[str, Value]], str | None]
TimeFunction = Callable[[int, Mapping[str, Value]], float]


def to_event(
    index: int,
    x: Mapping[str, Value],
    y: Value,
    *,
    key: str | KeyFunction | None = None,
    ts: TimeFunction | None = None,
) -> Event:
    """One row as an :class:`Event` (missing features left out); see :func:`to_events` for ``key`` and ``ts``."""
    return Event(
        key=key(index, x) if callable(key) else key,
        ts=float(index) if ts is None else ts(index, x),
        features={name: value for name, value in x.items() if value is not None},
        label=y,
    )


def to_events(
    rows: Iterable[tuple[Mapping[str, Value], Value]],
    *,
    key: str | KeyFunction | None = None,
    ts: TimeFunction | None = None,
) -> Iterator[Event]:
    """The rows of a reader as events, lazily.

    ``key``: the message key, the same for every event (a stream name such as ``"elec2"``), or a function of the
    row's index and features (e.g. ``lambda i, x: str(x["Airline"])`` to partition Airlines by carrier), or
    ``None``. ``ts``: a function of the index and features giving the event time; by default the row's index.
    """
    for index, (x, y) in enumerate(rows):
        yield to_event(index, x, y, key=key, ts=ts)
