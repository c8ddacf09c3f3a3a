"""Live-platform logs in KuaiLive's format: the tables, their messages in time order, and writing them as files.

KuaiLive (spec livestream.md §1) is a folder of CSV files plus the room titles' embeddings:

* ``user.csv`` and ``streamer.csv``: side information, one row per id (text ranges such as ``"24-30"``, dates,
  0/1 flags);
* ``room.csv``: one row per live session (``live_id``), its streamer, start and end (epoch ms), content category
  and title id (``live_name_id``, the row of ``title_embeddings.npy``, 128 floats each);
* ``click.csv`` (+ ``watch_live_time``, ms), ``comment.csv``, ``like.csv``, ``gift.csv`` (+ ``gift_price``) and
  ``negative.csv`` (impressions without a click): ``user_id, live_id, streamer_id, timestamp`` (epoch ms).

:class:`KuaiLiveLogs` holds every file as a :class:`KuaiLiveTable` of columns; the simulator
(:mod:`connectors.sources.live_platform`) makes one, :func:`write_kuailive` writes it to a folder or a ``.zip``, and
:func:`connectors.readers.read_kuailive` reads such files back into the same tables.

How the logs travel as messages (:meth:`KuaiLiveLogs.messages`):

* every interaction becomes an :class:`~connectors.messages.Interaction` on ``live.interactions`` keyed by the user:
  ``room`` is the ``live_id``, ``ts`` the timestamp in epoch seconds, ``kind`` the file's (``negative.csv`` gives
  ``"impression"``), ``value`` the watch time in seconds for a click, the gift price for a gift, 0 otherwise;
* **impressions**: an ``impression`` is a live card shown and *not* clicked (a ``negative.csv`` row). A click
  implies its impression, which is not sent again, so the exposures are the impressions plus the clicks and a
  click-through rate is ``clicks / (clicks + impressions)``;
* every room becomes two :class:`~connectors.messages.Room` messages on ``live.rooms`` keyed by the ``live_id``:
  ``"start"`` at its start and ``"end"`` at its end, both with the category and ``context`` holding ``live_type``
  and ``live_name_id``. A start does not carry the end (a replay would leak the future);
* the order is by time; at one millisecond, room starts come first, then impressions, clicks, comments, likes and
  gifts, then room ends (an interaction at a room's first or last millisecond sees it live); ties keep file order.

Ids travel as decimal strings. numpy and the standard library only.

>>> rooms = KuaiLiveTable.from_rows("room", [[20250505, 7, 3, 1, 1746374400000, 1746374460000, "shop", 0]])
>>> clicks = KuaiLiveTable.from_rows("click", [[42, 7, 3, 1746374430000, 2500]])
>>> logs = KuaiLiveLogs.from_tables({"room": rooms, "click": clicks})
>>> [(m.topic, m.key, m.message.kind, m.message.ts) for m in logs.messages()]
[('live.rooms', '7', 'start', 1746374400.0), ('live.interactions', '42', 'click', 1746374430.0), \
('live.rooms', '7', 'end', 1746374460.0)]
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from connectors.messages import Interaction, Room, Scalar

ColumnKind = Literal["int", "flag", "text"]
"""``int``: an int64 number; ``flag``: an int64 that is 0 or 1; ``text``: a string (ranges, dates, names)."""

_SIDE_FLAGS: tuple[tuple[str, ColumnKind], ...] = tuple((f"onehot_feat{i}", "flag") for i in range(7))
_INTERACTION: tuple[tuple[str, ColumnKind], ...] = (
    ("user_id", "int"),
    ("live_id", "int"),
    ("streamer_id", "int"),
    ("timestamp", "int"),
)
COLUMNS: dict[str, tuple[tuple[str, ColumnKind], ...]] = {
    "user": (
        ("user_id", "int"),
        ("age", "text"),
        ("gender", "text"),
        ("country", "text"),
        ("device_brand", "text"),
        ("device_price", "text"),
        ("reg_timestamp", "text"),
        ("fans_num", "text"),
        ("follow_num", "text"),
        ("first_watch_live_timestamp", "text"),
        ("accu_watch_live_cnt", "text"),
        ("accu_watch_live_duration", "text"),
        ("is_live_streamer", "flag"),
        ("is_photo_author", "flag"),
        *_SIDE_FLAGS,
    ),
    "streamer": (
        ("streamer_id", "int"),
        ("gender", "text"),
        ("age", "text"),
        ("country", "text"),
        ("device_brand", "text"),
        ("device_price", "text"),
        ("live_operation_tag", "text"),
        ("fans_user_num", "text"),
        ("fans_group_fans_num", "text"),
        ("follow_user_num", "text"),
        ("first_live_timestamp", "text"),
        ("accu_live_cnt", "text"),
        ("accu_live_duration", "text"),
        ("accu_play_cnt", "text"),
        ("accu_play_duration", "text"),
        ("reg_timestamp", "text"),
        *_SIDE_FLAGS,
    ),
    "room": (
        ("p_date", "int"),
        ("live_id", "int"),
        ("streamer_id", "int"),
        ("live_type", "int"),
        ("start_timestamp", "int"),
        ("end_timestamp", "int"),
        ("live_content_category", "text"),
        ("live_name_id", "int"),
    ),
    "click": (*_INTERACTION, ("watch_live_time", "int")),
    "comment": _INTERACTION,
    "like": _INTERACTION,
    "gift": (*_INTERACTION, ("gift_price", "int")),
    "negative": _INTERACTION,
}
"""Every KuaiLive CSV file (``<name>.csv``) with its columns in file order and their kinds."""

INTERACTION_KINDS: dict[str, Literal["impression", "click", "comment", "like", "gift"]] = {
    "negative": "impression",
    "click": "click",
    "comment": "comment",
    "like": "like",
    "gift": "gift",
}
"""The interaction files and the ``Interaction.kind`` each becomes, in the order ties are sent."""

VALUE_COLUMNS = {"click": "watch_live_time", "gift": "gift_price"}
"""The file whose rows carry a value, and the column: it becomes ``Interaction.value``."""

TITLE_EMBEDDINGS = "title_embeddings.npy"
TITLE_DIM = 128
INTERACTIONS_TOPIC = "live.interactions"
ROOMS_TOPIC = "live.rooms"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


class LiveMessage(NamedTuple):
    """One message to produce: the topic, the key (user id or live id) and the message."""

    topic: str
    key: str
    message: Interaction | Room


def _column(kind: ColumnKind, values: Sequence[object]) -> npt.NDArray[Any]:
    if kind == "text":
        column = np.empty(len(values), dtype=object)
        column[:] = [str(value) for value in values]
        return column
    return np.asarray(values, dtype=np.int64).reshape(len(values))


@dataclass(frozen=True, eq=False)
class KuaiLiveTable:
    """One KuaiLive file as columns: int64 arrays for ``int``/``flag`` columns, object arrays of ``str`` for text.

    ``name`` is the file's name without ``.csv`` (a key of :data:`COLUMNS`), whose columns the table has, in order.
    Equal when the name and every value are equal.

    >>> likes = KuaiLiveTable.from_rows("like", [[42, 7, 3, 1746374400000]])
    >>> len(likes), likes["live_id"].tolist(), next(likes.rows())
    (1, [7], ['42', '7', '3', '1746374400000'])
    """

    name: str
    columns: Mapping[str, npt.NDArray[Any]]

    def __post_init__(self) -> None:
        spec = COLUMNS.get(self.name)
        if spec is None:
            raise ValueError(f"no KuaiLive file {self.name!r}; the files are {list(COLUMNS)}")
        names = [name for name, _ in spec]
        if list(self.columns) != names:
            raise ValueError(f"{self.name}.csv has the columns {names}, in that order (got {list(self.columns)})")
        lengths = {len(column) for column in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"{self.name}.csv: columns of different lengths {sorted(lengths)}")

    @classmethod
    def from_rows(cls, name: str, rows: Sequence[Sequence[object]]) -> KuaiLiveTable:
        """A table from rows given in the file's column order (numbers for ``int``/``flag``, text otherwise)."""
        spec = COLUMNS[name]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in spec]
        if len(columns) != len(spec):
            raise ValueError(f"{name}.csv rows have {len(spec)} fields (got {len(columns)})")
        return cls(name, {column: _column(kind, values) for (column, kind), values in zip(spec, columns, strict=True)})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, column: str) -> npt.NDArray[Any]:
        return self.columns[column]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KuaiLiveTable):
            return NotImplemented
        return self.name == other.name and all(
            np.array_equal(self.columns[name], other.columns[name]) for name in self.columns
        )

    __hash__ = None  # type: ignore[assignment]  # mutable numpy columns: equal tables need not hash alike

    def rows(self) -> Iterator[list[str]]:
        """The rows as the CSV cells they are written as."""
        for row in zip(*(column.tolist() for column in self.columns.values()), strict=True):
            yield [str(value) for value in row]


@dataclass(frozen=True, eq=False)
class KuaiLiveLogs:
    """A live platform's logs: every file of :data:`COLUMNS` as a :class:`KuaiLiveTable`, and the title embeddings.

    ``title_embeddings`` is ``(titles, 128)`` float32, row ``i`` the title of the rooms whose ``live_name_id`` is
    ``i``; it may be ``None`` when the logs came without it. Equal when every table and the embeddings are equal.
    """

    tables: Mapping[str, KuaiLiveTable]
    title_embeddings: FloatArray | None = field(default=None)

    def __post_init__(self) -> None:
        if sorted(self.tables) != sorted(COLUMNS):
            raise ValueError(f"KuaiLive logs hold the files {list(COLUMNS)} (got {list(self.tables)})")
        wrong = [name for name, table in self.tables.items() if table.name != name]
        if wrong:
            raise ValueError(f"tables filed under another file's name: {wrong}")
        if self.title_embeddings is not None and (
            self.title_embeddings.ndim != 2 or self.title_embeddings.shape[1] != TITLE_DIM
        ):
            raise ValueError(f"title_embeddings must be (titles, {TITLE_DIM}) (got {self.title_embeddings.shape})")

    @classmethod
    def from_tables(
        cls, tables: Mapping[str, KuaiLiveTable], title_embeddings: FloatArray | None = None
    ) -> KuaiLiveLogs:
        """Logs from the tables given; every other file is empty."""
        full = {name: tables[name] if name in tables else KuaiLiveTable.from_rows(name, []) for name in COLUMNS}
        return cls(full, title_embeddings)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KuaiLiveLogs):
            return NotImplemented
        mine, theirs = self.title_embeddings, other.title_embeddings
        same_titles = mine is None if theirs is None else mine is not None and np.array_equal(mine, theirs)
        return same_titles and all(self.tables[name] == other.tables[name] for name in COLUMNS)

    __hash__ = None  # type: ignore[assignment]

    def messages(self) -> Iterator[LiveMessage]:
        """Every interaction and room start/end as the message to produce, in time order (see the module doc)."""
        rooms = self.tables["room"]
        sources: list[tuple[KuaiLiveTable, str, Callable[[int], LiveMessage]]] = [
            (rooms, "start_timestamp", _RoomMessages(rooms, "start"))
        ]
        for name in INTERACTION_KINDS:
            table = self.tables[name]
            sources.append((table, "timestamp", _InteractionMessages(table, name)))
        sources.append((rooms, "end_timestamp", _RoomMessages(rooms, "end")))
        times = np.concatenate([table[column] for table, column, _ in sources]).astype(np.int64)
        ranks = np.concatenate(
            [np.full(len(table), rank, dtype=np.int64) for rank, (table, _, _) in enumerate(sources)]
        )
        rows = np.concatenate([np.arange(len(table), dtype=np.int64) for table, _, _ in sources])
        order = np.lexsort((rows, ranks, times))
        makers = [maker for _, _, maker in sources]
        for rank, row in zip(ranks[order].tolist(), rows[order].tolist(), strict=True):
            yield makers[rank](row)


class _RoomMessages:
    """Builds the start (or end) message of a room.csv row; columns converted to Python values once."""

    def __init__(self, table: KuaiLiveTable, kind: Literal["start", "end"]) -> None:
        self.kind: Literal["start", "end"] = kind
        self.live = table["live_id"].tolist()
        self.streamer = table["streamer_id"].tolist()
        self.ts = table["start_timestamp" if kind == "start" else "end_timestamp"].tolist()
        self.category = table["live_content_category"].tolist()
        self.live_type = table["live_type"].tolist()
        self.title = table["live_name_id"].tolist()

    def __call__(self, row: int) -> LiveMessage:
        context: dict[str, Scalar] = {"live_type": self.live_type[row], "live_name_id": self.title[row]}
        room = Room(
            room=str(self.live[row]),
            streamer=str(self.streamer[row]),
            ts=self.ts[row] / 1000,
            kind=self.kind,
            category=self.category[row],
            context=context,
        )
        return LiveMessage(ROOMS_TOPIC, room.room, room)


class _InteractionMessages:
    """Builds the Interaction of a row of one interaction file; columns converted to Python values once."""

    def __init__(self, table: KuaiLiveTable, name: str) -> None:
        self.kind = INTERACTION_KINDS[name]
        self.user = table["user_id"].tolist()
        self.live = table["live_id"].tolist()
        self.streamer = table["streamer_id"].tolist()
        self.ts = table["timestamp"].tolist()
        value = VALUE_COLUMNS.get(name)
        scale = 1000 if name == "click" else 1  # watch_live_time is in ms, Interaction.value in seconds
        self.values = [v / scale for v in table[value].tolist()] if value else None

    def __call__(self, row: int) -> LiveMessage:
        user = str(self.user[row])
        message = Interaction(
            user=user,
            streamer=str(self.streamer[row]),
            room=str(self.live[row]),
            ts=self.ts[row] / 1000,
            kind=self.kind,
            value=0.0 if self.values is None else self.values[row],
        )
        return LiveMessage(INTERACTIONS_TOPIC, user, message)


def _csv_text(table: KuaiLiveTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows())
    return buffer.getvalue()


def _npy_bytes(array: FloatArray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_kuailive(logs: KuaiLiveLogs, path: str | Path) -> Path:
    """Write the logs as KuaiLive files: into the folder ``path`` (created), or into a zip when it ends in ``.zip``.

    Writes ``<name>.csv`` for every file of :data:`COLUMNS` (header row, then the table's rows in order) and
    ``title_embeddings.npy`` when the logs have embeddings. Returns the path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = write_kuailive(KuaiLiveLogs.from_tables({}), Path(folder, "logs.zip"))
    ...     sorted(zipfile.ZipFile(written).namelist())[:3]
    ['click.csv', 'comment.csv', 'gift.csv']
    """
    target = Path(path)
    files: dict[str, bytes] = {f"{name}.csv": _csv_text(logs.tables[name]).encode() for name in COLUMNS}
    if logs.title_embeddings is not None:
        files[TITLE_EMBEDDINGS] = _npy_bytes(logs.title_embeddings)
    if target.suffix.lower() == ".zip":
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
    return target
