"""Readers for the real drift-benchmark streams' formats (DESIGN.md §10): ARFF and CSV, plain or gzip, lazily.

Every reader is an iterator of ``(x, y)`` pairs: ``x`` maps attribute names to ``float`` (numeric), ``str``
(nominal, string) or ``None`` (missing), ``y`` is the target attribute's value. Files are read one line at a time
(constant memory). A bad row raises :class:`ReadError` naming ``file:line``, or with ``on_error="skip"`` is
counted in ``reader.skipped`` (the first few kept in ``reader.bad_rows``). :func:`to_events` turns rows into
:class:`~connectors.messages.Event` messages for a topic. Standard library only (no pandas, scipy or torch).

EasyTPP's event-sequence files (pickle or JSON) are another kind: :func:`read_easytpp` reads one split whole into
:class:`~connectors.sources.hawkes.EventSequence` objects (numpy arrays), skipping bad sequences the same way.

>>> import io
>>> arff = io.StringIO(
...     "% a tiny Elec2-like stream\\n"
...     "@relation tiny\\n"
...     "@attribute price numeric\\n"
...     "@attribute 'day name' {'mon day', tue}\\n"
...     "@attribute class {UP,DOWN}\\n"
...     "@data\\n"
...     "0.5,'mon day',UP\\n"
...     "?,tue,DOWN\\n"
... )
>>> reader = read_arff(arff)
>>> [attribute.name for attribute in reader.header.attributes], reader.target
(['price', 'day name', 'class'], 'class')
>>> rows = list(reader)
>>> rows
[({'price': 0.5, 'day name': 'mon day'}, 'UP'), ({'price': None, 'day name': 'tue'}, 'DOWN')]
>>> [(event.features, event.label) for event in to_events(rows, key="tiny")]
[({'price': 0.5, 'day name': 'mon day'}, 'UP'), ({'day name': 'tue'}, 'DOWN')]
"""

from connectors.readers._base import MAX_REPORTED, BadRow, OnError, ReadError, Row, RowReader, Source, Value
from connectors.readers.arff import ArffHeader, ArffReader, Attribute, parse_header, read_arff
from connectors.readers.csvfile import MISSING, ColumnType, CsvReader, read_csv
from connectors.readers.easytpp import (
    BadSequence,
    EasyTPPData,
    read_easytpp,
    write_easytpp_json,
    write_easytpp_pickle,
)
from connectors.readers.events import to_event, to_events
from connectors.readers.kuailive import KuaiLiveData, read_kuailive
from connectors.readers.presets import (
    AIRLINES,
    COVTYPE,
    ELEC2,
    PRESETS,
    HeaderMismatchError,
    Preset,
    read_airlines,
    read_covtype,
    read_elec2,
    read_preset,
)

__all__ = [
    "AIRLINES",
    "COVTYPE",
    "ELEC2",
    "MAX_REPORTED",
    "MISSING",
    "PRESETS",
    "ArffHeader",
    "ArffReader",
    "Attribute",
    "BadRow",
    "BadSequence",
    "ColumnType",
    "CsvReader",
    "EasyTPPData",
    "HeaderMismatchError",
    "KuaiLiveData",
    "OnError",
    "Preset",
    "ReadError",
    "Row",
    "RowReader",
    "Source",
    "Value",
    "parse_header",
    "read_airlines",
    "read_arff",
    "read_covtype",
    "read_csv",
    "read_easytpp",
    "read_elec2",
    "read_kuailive",
    "read_preset",
    "to_event",
    "to_events",
    "write_easytpp_json",
    "write_easytpp_pickle",
]
