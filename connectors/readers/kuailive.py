"""KuaiLive's live-streaming logs (spec livestream.md §1): read a folder or a ``.zip`` of them, checking every row.

The files and their columns are :data:`~connectors.sources.live_platform_logs.COLUMNS` (``user.csv``,
``streamer.csv``, ``room.csv``, ``click.csv``, ``comment.csv``, ``like.csv``, ``gift.csv``, ``negative.csv``) and
``title_embeddings*.npy``/``.npz`` (optional). The dataset's own scripts name some things otherwise, and both
spellings are read: the column ``author_id`` for ``streamer_id`` and ``is_live_author`` for ``is_live_streamer``,
the files ``author.csv`` for ``streamer.csv`` and ``mapped_room.csv`` for ``room.csv``. Columns may come in any
order; extra columns are ignored. In a zip the files may sit in a folder.

Every row is checked: as many fields as the header, integers where KuaiLive has numbers (``12.0`` reads as 12),
0/1 flags, timestamps, watch times and gift prices >= 0, a room's end not before its start, ids not repeated in
``user.csv``/``streamer.csv``/``room.csv``, and every interaction's ``live_id`` in ``room.csv`` with the room's
streamer. A bad row is skipped and counted (``skipped``; the first :data:`~connectors.readers.MAX_REPORTED` kept in
``bad_rows`` with the file and line); ``strict=True`` raises :class:`~connectors.readers.ReadError` at the first. A
file that cannot be read at all (missing, no header, a column missing) always raises.

What comes back is :class:`~connectors.sources.live_platform_logs.KuaiLiveLogs`, whose ``messages()`` are the
interactions (to ``live.interactions``, keyed by user) and room starts and ends (to ``live.rooms``) in time order;
that module says how each row becomes a message and how impressions travel.

>>> import tempfile
>>> from connectors.sources.live_platform_logs import KuaiLiveLogs, KuaiLiveTable, write_kuailive
>>> rooms = KuaiLiveTable.from_rows("room", [[20250505, 7, 3, 1, 1746374400000, 1746374460000, "shop", 0]])
>>> clicks = KuaiLiveTable.from_rows("click", [[42, 7, 3, 1746374430000, 2500], [42, 8, 3, 1746374431000, 10]])
>>> with tempfile.TemporaryDirectory() as folder:
...     data = read_kuailive(write_kuailive(KuaiLiveLogs.from_tables({"room": rooms, "click": clicks}), folder))
>>> [(m.message.kind, m.message.ts) for m in data.messages()]
[('start', 1746374400.0), ('click', 1746374430.0), ('end', 1746374460.0)]
>>> data.skipped, str(data.bad_rows[0]).split("/")[-1]
(1, 'click.csv:3: live_id 8 is not in room.csv')
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from connectors.readers._base import MAX_REPORTED, BadRow, ReadError, RowError, shown
from connectors.sources.live_platform_logs import (
    COLUMNS,
    INTERACTION_KINDS,
    ColumnKind,
    KuaiLiveLogs,
    KuaiLiveTable,
    LiveMessage,
)

COLUMN_ALIASES = {"author_id": "streamer_id", "is_live_author": "is_live_streamer"}
"""Other names of KuaiLive columns (the dataset's scripts and older docs use them), read as the name they alias."""
FILE_ALIASES = {"streamer": ("author",), "room": ("mapped_room",)}
"""Other names of KuaiLive files (without ``.csv``), tried when the spec's name is absent."""
_NOT_NEGATIVE = ("timestamp", "start_timestamp", "end_timestamp", "watch_live_time", "gift_price")
_IDS = {"user": "user_id", "streamer": "streamer_id", "room": "live_id"}
logger = logging.getLogger(__name__)

Check = Callable[[dict[str, int | str]], None]
"""A check of one parsed row across its columns; raises :class:`RowError` saying what is wrong."""


@dataclass(frozen=True)
class KuaiLiveData:
    """The logs read, and the rows left out: ``skipped`` counts them, ``bad_rows`` keeps the first few."""

    logs: KuaiLiveLogs
    skipped: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)

    def messages(self) -> Iterator[LiveMessage]:
        """The interactions and room starts/ends as messages, in time order (see ``KuaiLiveLogs.messages``)."""
        return self.logs.messages()


class _Archive:
    """The files of a folder or a zip, found by name (in a zip at any depth: the shallowest of a name wins)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self._names = {entry.name: entry.name for entry in path.iterdir() if entry.is_file()}
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            members = [info.filename for info in self._zip.infolist() if not info.is_dir()]
            self._names = {}
            for member in sorted(members, key=lambda name: name.count("/")):
                self._names.setdefault(PurePosixPath(member).name, member)
        else:
            problem = "does not exist" if not path.exists() else "is neither a folder nor a zip"
            raise ReadError(str(path), None, f"{problem}; pass the folder of KuaiLive's CSV files or a .zip of them")

    def find(self, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` present."""
        return next((name for name in names if name in self._names), None)

    def names(self) -> list[str]:
        return sorted(self._names)

    def source(self, name: str) -> str:
        """How messages name a file: its path, or the zip's path and the member."""
        return str(self.path / self._names[name])

    def open_text(self, name: str) -> IO[str]:
        if self._zip is not None:
            return io.TextIOWrapper(self._zip.open(self._names[name]), encoding="utf-8-sig", newline="")
        return (self.path / name).open(encoding="utf-8-sig", newline="")

    def load_array(self, name: str) -> np.ndarray:
        """A ``.npy`` (memory-mapped from a folder) or the only array of a ``.npz``."""
        try:
            if self._zip is not None:
                loaded = np.load(io.BytesIO(self._zip.read(self._names[name])), allow_pickle=False)
            else:
                loaded = np.load(self.path / name, mmap_mode="r" if name.endswith(".npy") else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ReadError(self.source(name), None, f"not a readable numpy file ({exc})") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return np.asarray(loaded)
        with loaded:
            if len(loaded.files) != 1:
                raise ReadError(self.source(name), None, f"holds the arrays {loaded.files}; expected one")
            return np.asarray(loaded[loaded.files[0]])

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


class _BadRows:
    """The bad-row policy: raise at the first (strict) or count and remember the first few."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.count = 0
        self.rows: list[BadRow] = []

    def __call__(self, source: str, line: int, message: str) -> None:
        if self.strict:
            raise ReadError(source, line, message + " (read with strict=False to skip bad rows and count them)")
        self.count += 1
        if len(self.rows) < MAX_REPORTED:
            self.rows.append(BadRow(source, line, message))
            logger.warning("skipping %s:%d: %s", source, line, message)


def _integer(column: str, cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        number = float(cell)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise RowError(f"{column} is {shown(cell)}, not an integer")
    return int(number)


def _value(column: str, kind: ColumnKind, cell: str) -> int | str:
    if kind == "text":
        return cell.strip()
    value = _integer(column, cell.strip())
    if kind == "flag" and value not in (0, 1):
        raise RowError(f"{column} is {shown(cell)}; it must be 0 or 1")
    if value < 0 and column in _NOT_NEGATIVE:
        raise RowError(f"{column} is {value}; it must be >= 0")
    return value


def _read_table(archive: _Archive, name: str, bad: _BadRows, check: Check | None) -> KuaiLiveTable:
    """One file's rows that pass every check, as a table; bad rows go to ``bad``."""
    found = archive.find((f"{name}.csv", *(f"{alias}.csv" for alias in FILE_ALIASES.get(name, ()))))
    if found is None:
        raise ReadError(str(archive.path), None, f"no {name}.csv among {archive.names()}; is this KuaiLive's folder?")
    source = archive.source(found)
    spec = COLUMNS[name]
    rows: list[list[int | str]] = []
    stream = archive.open_text(found)
    try:
        reader = csv.reader(stream, strict=True)
        header = [COLUMN_ALIASES.get(cell.strip(), cell.strip()) for cell in next(reader, [])]
        if not header:
            raise ReadError(source, 1, f"no header row; KuaiLive's {name}.csv starts with {[c for c, _ in spec]}")
        missing = [column for column, _ in spec if column not in header]
        repeated = sorted({column for column in header if header.count(column) > 1})
        if missing or repeated:
            problem = f"missing the column(s) {missing}" if missing else f"repeating the column(s) {repeated}"
            raise ReadError(
                source, 1, f"the header {problem}: {header}; KuaiLive's {name}.csv has {[c for c, _ in spec]}"
            )
        positions = [header.index(column) for column, _ in spec]
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                bad(source, reader.line_num, f"bad CSV quoting: {exc}")
                continue
            if not any(cell.strip() for cell in record):
                continue
            try:
                if len(record) != len(header):
                    raise RowError(f"expected {len(header)} fields, found {len(record)} in {shown(','.join(record))}")
                parsed = {
                    column: _value(column, kind, record[at]) for (column, kind), at in zip(spec, positions, strict=True)
                }
                if check is not None:
                    check(parsed)
            except RowError as exc:
                bad(source, reader.line_num, str(exc))
                continue
            rows.append(list(parsed.values()))
    except UnicodeDecodeError as exc:
        raise ReadError(source, None, f"not UTF-8 text ({exc.reason})") from None
    finally:
        stream.close()
    return KuaiLiveTable.from_rows(name, rows)


def _unique(column: str) -> Check:
    """Refuse a row whose ``column`` repeats an earlier row's."""
    seen: set[int | str] = set()

    def check(row: dict[str, int | str]) -> None:
        value = row[column]
        if value in seen:
            raise RowError(f"{column} {value} repeats an earlier row's")
        seen.add(value)

    return check


def _room_checks() -> Check:
    unique = _unique("live_id")

    def check(row: dict[str, int | str]) -> None:
        if int(row["end_timestamp"]) < int(row["start_timestamp"]):
            raise RowError(f"end_timestamp {row['end_timestamp']} is before start_timestamp {row['start_timestamp']}")
        unique(row)

    return check


def _in_rooms(rooms: KuaiLiveTable) -> Check:
    """Refuse an interaction whose room is not in room.csv, or that names another streamer than the room's."""
    owner = dict(zip(rooms["live_id"].tolist(), rooms["streamer_id"].tolist(), strict=True))

    def check(row: dict[str, int | str]) -> None:
        streamer = owner.get(row["live_id"])
        if streamer is None:
            raise RowError(f"live_id {row['live_id']} is not in room.csv")
        if streamer != row["streamer_id"]:
            raise RowError(f"streamer_id is {row['streamer_id']} but room {row['live_id']} is streamer {streamer}'s")

    return check


def _title_embeddings(archive: _Archive) -> np.ndarray | None:
    names = [
        name for name in archive.names() if name.startswith("title_embeddings") and name.endswith((".npy", ".npz"))
    ]
    if not names:
        return None
    array = archive.load_array(names[0])
    if array.ndim != 2 or array.shape[1] != 128 or array.dtype.kind != "f":
        raise ReadError(
            archive.source(names[0]), None, f"expected (titles, 128) floats, found {array.shape} {array.dtype}"
        )
    return array.astype(np.float32, copy=False)


def read_kuailive(path: str | os.PathLike[str], *, strict: bool = False) -> KuaiLiveData:
    """Read KuaiLive's files from a folder or a ``.zip``; see the module docstring for what is checked.

    Bad rows are skipped and counted unless ``strict``, which raises :class:`~connectors.readers.ReadError`
    (``file:line: what is wrong``) at the first.
    """
    archive = _Archive(Path(path))
    bad = _BadRows(strict)
    try:
        tables = {name: _read_table(archive, name, bad, _unique(_IDS[name])) for name in ("user", "streamer")}
        tables["room"] = _read_table(archive, "room", bad, _room_checks())
        in_rooms = _in_rooms(tables["room"])
        for name in INTERACTION_KINDS:
            tables[name] = _read_table(archive, name, bad, in_rooms)
        titles = _title_embeddings(archive)
    finally:
        archive.close()
    return KuaiLiveData(KuaiLiveLogs(tables, titles), bad.count, bad.rows)
