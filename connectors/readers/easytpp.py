"""EasyTPP's event-sequence files (ant-research/EasyTemporalPointProcess): read them, and write our own in kind.

Two layouts, told apart by the file name (``.pkl``/``.pickle``, ``.json``/``.jsonl``) or else by the content:

* **pickle** (the "Gatech" format of the Taxi, Taobao, StackOverflow, Retweet, Amazon... files): a dict holding
  ``dim_process`` (the number of event types) and one split key (``"train"``, ``"dev"`` or ``"test"``) holding a
  list of sequences, each a list of events ``{"time_since_start", "time_since_last_event", "type_event"}`` (older
  files add ``idx_event`` and ``time_since_last_same_event``, and empty ``"args"``/``"devtest"`` keys; ignored).
  Values may be numpy scalars (``np.float32``, ``np.int32``).
* **JSON** (EasyTPP's Hugging Face layout, ``make_hf_dataset.py``): one record per sequence with ``dim_process``,
  ``seq_len``, ``seq_idx`` and the lists ``time_since_start``, ``time_since_last_event``, ``type_event``; a file
  is a JSON array of records (what EasyTPP writes) or JSON lines (what ``datasets`` writes); both read.

Each sequence becomes an :class:`~connectors.sources.hawkes.EventSequence`. The formats keep no observation
window, so ``t_end`` is the last event's time (0 for an empty sequence): a likelihood on re-read data covers
``[0, last event]``. Ties (equal times, ``time_since_last_event`` 0) are kept, as real logs have them.

A sequence is checked: times finite, >= 0 and non-decreasing; ``time_since_last_event[i]`` equal to
``time_since_start[i] - time_since_start[i-1]`` within ``tolerance`` (relative to the time, at least absolute; the
first event's may be 0 or its time since the window start, so it only has to be >= 0); types integers in
``[0, dim_process)``; ``seq_len`` (when present) the length; ``dim_process`` the file's. A bad sequence raises
:class:`~connectors.readers.ReadError` naming the file (and line, for JSON lines) and the sequence's index, or with
``on_error="skip"`` is counted in ``skipped`` (the first few kept in ``bad_sequences``). A broken file (not a
pickle or JSON, no ``dim_process``, no such split) always raises.

Unpickling can run code, so read only pickles you chose to trust; even so :func:`read_easytpp` unpickles with a
restricted unpickler that builds containers, numbers, strings and numpy scalars only and refuses anything else.

>>> import tempfile
>>> import numpy as np
>>> from connectors.sources.hawkes import EventSequence
>>> seq = EventSequence(np.array([0.5, 1.25, 1.25, 3.0]), np.array([1, 0, 2, 1]), t_end=4.0)
>>> with tempfile.TemporaryDirectory() as folder:
...     data = read_easytpp(write_easytpp_pickle(Path(folder, "dev.pkl"), [seq], n_types=3, split="dev"))
...     again = read_easytpp(write_easytpp_json(Path(folder, "dev.json"), [seq], n_types=3))
>>> data.n_types, data.sequences[0].times.tolist(), data.sequences[0].types.tolist(), data.sequences[0].t_end
(3, [0.5, 1.25, 1.25, 3.0], [1, 0, 2, 1], 3.0)
>>> again.sequences == data.sequences
True
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
import math
import os
import pickle
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from connectors.readers._base import GZIP_MAGIC, MAX_REPORTED, OnError, ReadError, RowError
from connectors.sources.hawkes import EventSequence

Format = Literal["pickle", "json"]
PathLike = str | os.PathLike[str]
EVENT_KEYS = ("time_since_start", "time_since_last_event", "type_event")
"""What every event carries, in both layouts (per event in a pickle, as parallel lists in a JSON record)."""
DEFAULT_TOLERANCE = 1e-5
"""How far ``time_since_last_event`` may be from the difference of ``time_since_start``, relative to the time
(EasyTPP's files hold float32 values, computed separately)."""

_SUFFIXES: dict[str, Format] = {".pkl": "pickle", ".pickle": "pickle", ".json": "json", ".jsonl": "json"}
_PICKLE_PROTOCOL = 4
_SAFE_GLOBALS = frozenset(
    {
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),  # numpy < 2 writes this name, numpy 2 the next one
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles carry a numpy scalar's bytes
    }
)
"""The only globals a pickle may name: what a numpy scalar needs. Containers, numbers and strings need none."""
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadSequence:
    """A sequence skipped under ``on_error="skip"``: the file, its index in the split (and line), and why."""

    source: str
    index: int
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: sequence {self.index}: {self.message}"


@dataclass(frozen=True)
class EasyTPPData:
    """One split of an EasyTPP dataset: ``n_types`` (``dim_process``) and the sequences in file order.

    ``skipped`` counts the sequences left out under ``on_error="skip"``; ``bad_sequences`` keeps the first
    :data:`~connectors.readers.MAX_REPORTED` of them.
    """

    n_types: int
    sequences: list[EventSequence]
    skipped: int = 0
    bad_sequences: list[BadSequence] = field(default_factory=list)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle naming a class or function outside :data:`_SAFE_GLOBALS`."""


class _SafeUnpickler(pickle.Unpickler):
    """Builds only containers, numbers, strings and numpy scalars; refuses every other global before loading it."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


@dataclass(frozen=True)
class _Record:
    """One sequence as found in a file, before checking: where it is, its raw columns and declared sizes."""

    index: int
    line: int | None
    times: list[Any]
    deltas: list[Any]
    types: list[Any]
    dim_process: Any
    seq_len: Any = None


_Found = _Record | BadSequence
"""What a layout's parser yields per sequence: the raw record, or why it could not even be taken apart."""


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data
    except (OSError, EOFError) as exc:  # EOFError: a truncated gzip
        raise ReadError(str(path), None, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _format(path: Path, data: bytes, format: Format | None) -> Format:
    """The layout: as asked, else by the suffix (under any ``.gz``), else by the first bytes."""
    if format is not None:
        if format not in ("pickle", "json"):
            raise ValueError(f"format must be 'pickle', 'json' or None (got {format!r})")
        return format
    suffix = Path(path.name.lower().removesuffix(".gz")).suffix
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if data[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 or later
        return "pickle"
    if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in (b"[", b"{"):
        return "json"
    raise ReadError(str(path), None, "neither a pickle nor JSON by its name or content; pass format='pickle' or 'json'")


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (numpy scalars included, bool excluded), else ``None``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is integral (``3``, or ``3.0`` as pandas-made files have it), else ``None``."""
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _dim_process(value: Any, source: str, line: int | None = None) -> int:
    n_types = _integer(value)
    if n_types is None or n_types < 1:
        raise ReadError(source, line, f"dim_process is {reprlib.repr(value)}; it must be an integer >= 1")
    return n_types


def _column(values: list[Any], name: str) -> np.ndarray:
    numbers = [_number(value) for value in values]
    for position, (number, value) in enumerate(zip(numbers, values, strict=True)):
        if number is None or not math.isfinite(number):
            raise RowError(f"{name}[{position}] is {reprlib.repr(value)}, not a finite number")
    return np.array(numbers, dtype=np.float64)


def _sequence(record: _Record, n_types: int, tolerance: float) -> EventSequence:
    """Check one record (see the module docstring) and build its sequence; a :class:`RowError` says what is wrong."""
    if _integer(record.dim_process) != n_types:
        raise RowError(f"dim_process is {reprlib.repr(record.dim_process)}, but the file's is {n_types}")
    if not len(record.times) == len(record.deltas) == len(record.types):
        raise RowError(
            f"time_since_start, time_since_last_event and type_event have {len(record.times)}, "
            f"{len(record.deltas)} and {len(record.types)} values; they must be equally long"
        )
    if record.seq_len is not None and _integer(record.seq_len) != len(record.times):
        raise RowError(f"seq_len is {reprlib.repr(record.seq_len)} but the sequence has {len(record.times)} events")
    times = _column(record.times, "time_since_start")
    deltas = _column(record.deltas, "time_since_last_event")
    if times.size and times[0] < 0:
        raise RowError(f"time_since_start[0] is {times[0]}; times must be >= 0")
    steps = np.diff(times)
    if np.any(steps < 0):
        position = int(np.argmax(steps < 0)) + 1
        raise RowError(
            f"time_since_start goes back at event {position} ({times[position]} after {times[position - 1]}); "
            "events must be in time order"
        )
    if deltas.size and deltas[0] < 0:
        raise RowError(f"time_since_last_event[0] is {deltas[0]}; it must be >= 0")
    off = np.abs(deltas[1:] - steps) > tolerance * np.maximum(1.0, np.abs(times[1:]))
    if np.any(off):
        position = int(np.argmax(off)) + 1
        raise RowError(
            f"time_since_last_event[{position}] is {deltas[position]} but time_since_start goes from "
            f"{times[position - 1]} to {times[position]} (a step of {steps[position - 1]:.6g})"
        )
    types = [_integer(value) for value in record.types]
    for position, (kind, value) in enumerate(zip(types, record.types, strict=True)):
        if kind is None or not 0 <= kind < n_types:
            raise RowError(
                f"type_event[{position}] is {reprlib.repr(value)}; types must be integers in 0..{n_types - 1} "
                f"(dim_process {n_types})"
            )
    return EventSequence(times, np.array(types, dtype=np.int64), float(times[-1]) if times.size else 0.0)


def _load_pickle(data: bytes, source: str) -> Any:
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()  # latin1: Python 2 pickles (NHP's data)
    except _RefusedGlobal as exc:
        raise ReadError(
            source,
            None,
            f"refusing to unpickle {exc}: EasyTPP pickles hold only dicts, lists, numbers and numpy scalars, and "
            "loading other objects can run code",
        ) from None
    except Exception as exc:  # a damaged pickle fails in many ways: each is one unreadable file
        raise ReadError(source, None, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def _pickle_records(content: Any, source: str, split: str | None, stem: str) -> tuple[int, Iterator[_Found]]:
    """``dim_process`` and the sequences of one split of an EasyTPP pickle."""
    if not isinstance(content, dict) or "dim_process" not in content:
        found = f"keys {sorted(map(str, content))}" if isinstance(content, dict) else type(content).__name__
        raise ReadError(source, None, f"not an EasyTPP pickle: expected a dict with 'dim_process', found {found}")
    n_types = _dim_process(content["dim_process"], source)
    splits = sorted(key for key, value in content.items() if isinstance(key, str) and isinstance(value, list))
    if split is None:
        filled = [key for key in splits if content[key]]
        if stem in splits:
            split = stem
        elif len(filled) == 1:
            split = filled[0]
        else:
            raise ReadError(source, None, f"which split? the file has {splits}; pass split=")
    elif split not in splits:
        raise ReadError(source, None, f"no split {split!r} in the file; it has {splits}")
    return n_types, _pickle_sequences(content[split], content["dim_process"], source)


def _pickle_sequences(sequences: list[Any], dim_process: Any, source: str) -> Iterator[_Found]:
    for index, events in enumerate(sequences):
        if not isinstance(events, list):
            yield BadSequence(source, index, f"is a {type(events).__name__}, expected a list of event dicts")
            continue
        broken = next(
            (
                (position, event)
                for position, event in enumerate(events)
                if not (isinstance(event, dict) and all(key in event for key in EVENT_KEYS))
            ),
            None,
        )
        if broken is not None:
            position, event = broken
            yield BadSequence(
                source, index, f"event {position} is {reprlib.repr(event)}, expected a dict with {list(EVENT_KEYS)}"
            )
            continue
        times, deltas, types = ([event[key] for event in events] for key in EVENT_KEYS)
        yield _Record(index, None, times, deltas, types, dim_process)


def _json_records(data: bytes, source: str) -> Iterator[_Found]:
    """The sequences of a JSON array or JSON lines file, one record each."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(source, None, f"not valid UTF-8 text ({exc.reason})") from None
    numbered: Iterable[tuple[int | None, Any]]
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReadError(source, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
        numbered = ((None, record) for record in records)
    else:
        numbered = ((number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip())
    for index, (line, item) in enumerate(numbered):
        record = item
        if line is not None:
            try:
                record = json.loads(item)
            except json.JSONDecodeError as exc:
                yield BadSequence(source, index, f"not valid JSON: {exc.msg} (column {exc.colno})", line)
                continue
        if not isinstance(record, dict):
            yield BadSequence(source, index, f"is {reprlib.repr(record)}, expected a JSON object", line)
        elif missing := [key for key in ("dim_process", *EVENT_KEYS) if key not in record]:
            yield BadSequence(source, index, f"has no {missing} (it has {sorted(record)})", line)
        elif not all(isinstance(record[key], list) for key in EVENT_KEYS):
            yield BadSequence(source, index, f"{list(EVENT_KEYS)} must be JSON arrays", line)
        else:
            times, deltas, types = (record[key] for key in EVENT_KEYS)
            yield _Record(index, line, times, deltas, types, record["dim_process"], record.get("seq_len"))


def _json_dim_process(records: Iterator[_Found], source: str) -> tuple[int, Iterator[_Found]]:
    """The file's ``dim_process`` (the first well-formed record's: every record repeats it) and all the records."""
    seen: list[_Found] = []
    for record in records:
        seen.append(record)
        if isinstance(record, _Record):
            return _dim_process(record.dim_process, source, record.line), itertools.chain(seen, records)
    raise ReadError(source, None, "no sequence record with dim_process: an empty file, or not EasyTPP's JSON layout")


def read_easytpp(
    path: PathLike,
    split: str | None = None,
    *,
    on_error: OnError = "raise",
    format: Format | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> EasyTPPData:
    """Read one split of an EasyTPP dataset file (pickle or JSON, plain or gzip); see the module docstring.

    ``split`` names the pickle's split key; by default the file's stem when it is one (``dev.pkl``: ``"dev"``),
    else the only non-empty split. A JSON file holds one split, so ``split`` must be ``None`` for it. ``format``
    overrides the detection. ``tolerance`` bounds how far ``time_since_last_event`` may stray from the differences
    of ``time_since_start`` (``math.inf``: do not check). Raises :class:`~connectors.readers.ReadError` for a broken
    file, and for a bad sequence unless ``on_error="skip"``.

    Only read pickles you trust: unpickling is restricted here to containers, numbers and numpy scalars, but the
    pickle format was never meant to be safe.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip' (got {on_error!r})")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (got {tolerance})")
    file = Path(path)
    source = str(file)
    data = _read_bytes(file)
    if _format(file, data, format) == "pickle":
        stem = file.name.split(".")[0]
        n_types, records = _pickle_records(_load_pickle(data, source), source, split, stem)
    elif split is not None:
        raise ValueError(f"a JSON file holds one split; read it with split=None (got split={split!r})")
    else:
        n_types, records = _json_dim_process(_json_records(data, source), source)
    sequences: list[EventSequence] = []
    bad: list[BadSequence] = []
    skipped = 0
    for record in records:
        if isinstance(record, _Record):
            try:
                sequences.append(_sequence(record, n_types, tolerance))
                continue
            except RowError as exc:
                record = BadSequence(source, record.index, str(exc), record.line)
        if on_error == "raise":
            raise ReadError(
                source, record.line, f"sequence {record.index}: {record.message} (pass on_error='skip' to skip it)"
            )
        skipped += 1
        if len(bad) < MAX_REPORTED:
            bad.append(record)
            logger.warning("skipping %s", record)
    return EasyTPPData(n_types, sequences, skipped, bad)


def _columns(sequences: Iterable[EventSequence], n_types: int) -> Iterator[tuple[list[float], list[float], list[int]]]:
    """Each sequence's ``time_since_start``, ``time_since_last_event`` (the first: its time) and ``type_event``."""
    if n_types < 1:
        raise ValueError(f"n_types must be >= 1 (got {n_types})")
    for index, seq in enumerate(sequences):
        if len(seq) and int(seq.types.max()) >= n_types:
            raise ValueError(f"sequence {index} has event type {int(seq.types.max())}, but n_types is {n_types}")
        yield seq.times.tolist(), np.diff(seq.times, prepend=0.0).tolist(), seq.types.tolist()


def write_easytpp_pickle(
    path: PathLike, sequences: Iterable[EventSequence], n_types: int, split: str = "train"
) -> Path:
    """Write ``sequences`` as an EasyTPP pickle ``{"dim_process": n_types, split: [[event, ...], ...]}``.

    Events hold plain Python floats and ints; the first event's ``time_since_last_event`` is its time (since the
    window start at 0), as in the NHP files. Returns the path.
    """
    if not split or split == "dim_process":
        raise ValueError(f"split must name the split, such as 'train', 'dev' or 'test' (got {split!r})")
    content = {
        "dim_process": n_types,
        split: [
            [
                {"time_since_start": t, "time_since_last_event": d, "type_event": k}
                for t, d, k in zip(times, deltas, types, strict=True)
            ]
            for times, deltas, types in _columns(sequences, n_types)
        ],
    }
    file = Path(path)
    with file.open("wb") as stream:
        pickle.dump(content, stream, protocol=_PICKLE_PROTOCOL)
    return file


def write_easytpp_json(
    path: PathLike, sequences: Iterable[EventSequence], n_types: int, *, lines: bool = False
) -> Path:
    """Write ``sequences`` in EasyTPP's Hugging Face layout: a JSON array of records, or JSON lines with ``lines``.

    Each record holds ``dim_process``, ``seq_len``, ``seq_idx`` and the three event lists. Returns the path.
    """
    records = [
        {
            "dim_process": n_types,
            "seq_len": len(types),
            "seq_idx": index,
            "time_since_start": times,
            "time_since_last_event": deltas,
            "type_event": types,
        }
        for index, (times, deltas, types) in enumerate(_columns(sequences, n_types))
    ]
    file = Path(path)
    with file.open("w", encoding="utf-8") as stream:
        if lines:
            stream.writelines(json.dumps(record) + "\n" for record in records)
        else:
            json.dump(records, stream)
    return file
