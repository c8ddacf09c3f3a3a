"""The live rooms a recommend pipeline may recommend: a follower of ``live.rooms`` (``room/v1`` starts and ends).

Every worker reads the rooms topic from the beginning, in a thread of its own and without a consumer group (as
:mod:`pipelines.follower` reads ``eddy.models``), so each one knows every room whichever interaction partitions it
holds. The candidates of an interaction at event time ``t`` are the streamers with a room that started at or before
``t`` and has not ended before ``t`` *as far as the rooms read so far show*: a start not read yet leaves its
streamer out, an end not read yet leaves the room live.

That is a race between the two topics: a worker that reads interactions faster than rooms recommends from an older
view of the live set (at event time ``t``, never from a later one). Rooms are announced when they start, before
anyone interacts with them, so in a live deployment the follower is ahead; a replay should produce the rooms first.
Tests avoid the race by producing the rooms, waiting until :attr:`LiveRooms.read` reaches their count, and only then
producing interactions.

Ended rooms are forgotten ``retention_s`` after their end, measured against the newest event time asked about (not
the newest room read, so rooms produced well ahead of the interactions stay), which keeps the follower's memory
bounded on a topic that never ends; an interaction more than ``retention_s`` older than the newest sees fewer rooms.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from connectors.bus import KafkaBus
from connectors.messages import DecodeError, Room, decode

log = logging.getLogger(__name__)


@dataclass
class _Live:
    streamer: str
    start: float
    end: float | None = None


class LiveRooms:
    """Rooms by id with their start and end, fed by :meth:`apply` (from the follower thread or directly).

    >>> rooms = LiveRooms("live.rooms")
    >>> rooms.apply(Room(room="1", streamer="7", ts=10.0, kind="start"))
    >>> rooms.apply(Room(room="2", streamer="9", ts=12.0, kind="start"))
    >>> rooms.apply(Room(room="1", streamer="7", ts=20.0, kind="end"))
    >>> rooms.live_at(15.0), rooms.live_at(25.0), rooms.live_at(5.0)
    (['7', '9'], ['9'], [])
    """

    def __init__(self, topic: str, retention_s: float = 86_400.0) -> None:
        self.topic = topic
        self.retention_s = retention_s
        self.read = 0  # room records read (bad ones included): tests wait on it
        self.bad = 0
        self._rooms: dict[str, _Live] = {}
        self._newest = float("-inf")  # the newest event time asked about
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, bus: KafkaBus) -> None:
        """Follow the topic from its beginning in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(bus,), name=f"eddy-rooms-{self.topic}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following (the thread ends within a poll interval)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)

    def apply(self, room: Room) -> None:
        """Take one start or end (an end without its start is a room that ended: nothing to add)."""
        with self._lock:
            if room.kind == "start":
                self._rooms[room.room] = _Live(room.streamer, room.ts)
            elif room.room in self._rooms:
                self._rooms[room.room].end = room.ts

    def live_at(self, ts: float) -> list[str]:
        """The streamers with a room live at ``ts`` (start <= ts <= end), sorted, each once."""
        with self._lock:
            if ts > self._newest:
                self._newest = ts
                horizon = ts - self.retention_s
                for gone in [r for r, live in self._rooms.items() if live.end is not None and live.end < horizon]:
                    del self._rooms[gone]
            return sorted(
                {r.streamer for r in self._rooms.values() if r.start <= ts and (r.end is None or ts <= r.end)}
            )

    def _run(self, bus: KafkaBus) -> None:
        bus.create_topics([self.topic])
        bus.follow(self.topic, self._handle, self._stop)

    def _handle(self, raw: bytes) -> None:
        try:
            room = decode(raw, Room.schema_name)
        except DecodeError as exc:
            log.warning("ignoring a bad record on %s: %s", self.topic, exc.detail)
            self.bad += 1
        else:
            assert isinstance(room, Room)
            self.apply(room)
        self.read += 1
