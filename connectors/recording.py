"""Topic recordings: one JSON object per message, in the envelope ``kcat -C -J`` prints.

A line looks like ``{"topic": "live.clicks", "partition": 0, "offset": 42, "tstype": "create", "ts": 1764000000000,
"broker": -1, "headers": ["h", "v"], "key": "u1", "payload": "{...}"}``. Headers are kcat's flat
``[name, value, ...]`` list. A key, payload or header value that is not valid UTF-8 is written as ``null`` with its
bytes base64-encoded under ``key_b64`` / ``payload_b64`` / ``headers_b64``, so binary frames round-trip byte for
byte. Files written by kcat read back here (kcat writes binary as raw bytes inside the JSON string; those lines are
read with ``surrogateescape`` so their bytes survive too).

``.jsonl``, ``.jsonl.gz`` and ``.jsonl.zst`` are read and written by suffix.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import io
import json
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import zstandard

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
_DURATION = re.compile(r"^([+-])(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_REQUIRED = ("topic", "partition", "offset", "ts")


class RecordingError(ValueError):
    """A recording file that cannot be used as a whole (wrong suffix, missing, unreadable)."""


@dataclass(frozen=True)
class BadLine:
    """A line of a recording that is not a valid message: where it is and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class BadLineError(ValueError):
    """Raised for the first bad line when bad lines are not skipped."""

    def __init__(self, bad: BadLine) -> None:
        super().__init__(f"{bad} (fix the line, or pass --skip-bad to skip and count bad lines)")
        self.bad = bad


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """One Kafka message as recorded: where it was, when (ms since the epoch), and its bytes."""

    topic: str
    partition: int
    offset: int
    ts: int
    key: bytes | None
    payload: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    tstype: str = "create"

    def to_json(self) -> str:
        """The kcat envelope of this message, one line (no newline)."""
        envelope: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "tstype": self.tstype,
            "ts": self.ts,
            "broker": -1,
        }
        if self.headers:
            if any(raw is not None and _text(raw) is None for _, raw in self.headers):
                envelope["headers_b64"] = [
                    part for name, raw in self.headers for part in (name, None if raw is None else _b64(raw))
                ]
            else:
                envelope["headers"] = [part for name, raw in self.headers for part in (name, _text(raw))]
        for field, raw in (("key", self.key), ("payload", self.payload)):
            text = _text(raw)
            envelope[field] = text
            if raw is not None and text is None:
                envelope[f"{field}_b64"] = _b64(raw)
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> RecordedMessage:
        """Parse one envelope; raises ``ValueError`` saying what is wrong with it."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}; each line needs {', '.join(_REQUIRED)}")
        topic, partition, offset, ts = (data[name] for name in _REQUIRED)
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"'topic' must be a non-empty string (got {topic!r})")
        for name, value in (("partition", partition), ("offset", offset), ("ts", ts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name!r} must be an integer >= 0 (got {value!r})")
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            ts=ts,
            key=_bytes_field(data, "key"),
            payload=_bytes_field(data, "payload"),
            headers=_headers(data),
            tstype=str(data.get("tstype", "create")),
        )


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(field: str, text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{field!r} must be a base64 string (got {text!r})")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{field!r} is not valid base64") from None


def _bytes_field(data: dict[str, Any], field: str) -> bytes | None:
    encoded = data.get(f"{field}_b64")
    if encoded is not None:
        return _unb64(f"{field}_b64", encoded)
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    # kcat -J with a JSON deserializer (-s value=json) writes the value itself; keep it as compact JSON text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _headers(data: dict[str, Any]) -> tuple[tuple[str, bytes | None], ...]:
    field = "headers_b64" if "headers_b64" in data else "headers"
    items = data.get(field)
    if items is None:
        return ()
    if isinstance(items, dict):  # the form kcat's usage text shows
        items = [part for pair in items.items() for part in pair]
    if not isinstance(items, list) or len(items) % 2:
        raise ValueError(f"{field!r} must be a flat [name, value, ...] list (got {items!r})")
    headers: list[tuple[str, bytes | None]] = []
    for name, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(name, str) or not (value is None or isinstance(value, str)):
            raise ValueError(f"{field!r} must hold string names and string-or-null values (got {name!r}: {value!r})")
        if value is None:
            headers.append((name, None))
        elif field == "headers_b64":
            headers.append((name, _unb64(field, value)))
        else:
            headers.append((name, value.encode("utf-8", "surrogateescape")))
    return tuple(headers)


# -- files ----------------------------------------------------------------------------------------------------------


def check_recording_path(path: str | Path) -> Path:
    """``path`` as a Path if its suffix is one we read and write, else :class:`RecordingError`."""
    p = Path(path)
    if not p.name.endswith(SUFFIXES):
        raise RecordingError(f"recording {str(p)!r} must end in {', '.join(SUFFIXES)} (the suffix picks compression)")
    return p


def _open_for_writing(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "wb"))
    if path.name.endswith(".zst"):
        return cast(IO[bytes], zstandard.ZstdCompressor(level=3).stream_writer(path.open("wb"), closefd=True))
    return path.open("wb")


class RecordingWriter(AbstractContextManager["RecordingWriter"]):
    """Appends messages to a new recording file; ``with RecordingWriter(path) as w: w.write(message)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_recording_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = _open_for_writing(self.path)
        self._text = io.TextIOWrapper(self._raw, encoding="utf-8", errors="surrogateescape", newline="\n")
        self.count = 0

    def write(self, message: RecordedMessage) -> None:
        """Write one message as one line."""
        self._text.write(message.to_json())
        self._text.write("\n")
        self.count += 1

    def close(self) -> None:
        """Flush and close the file (and finish its compressed stream)."""
        self._text.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_recording(path: str | Path, messages: Sequence[RecordedMessage]) -> int:
    """Write ``messages`` to a new recording; returns how many were written."""
    with RecordingWriter(path) as writer:
        for message in messages:
            writer.write(message)
        return writer.count


class _Truncated(ValueError):
    """A compressed stream that ends early or is corrupt; ``line`` is where the next line would have been."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


_CHUNK = 1 << 20


def _decompressed(path: Path) -> Iterator[bytes]:
    """The file's bytes, decompressed chunk by chunk; every complete byte comes out before a truncation is raised."""
    with path.open("rb") as handle:
        chunks = iter(lambda: handle.read(_CHUNK), b"")
        if not path.name.endswith((".gz", ".zst")):
            yield from chunks
            return
        gz = path.name.endswith(".gz")

        def fresh() -> Any:
            return zlib.decompressobj(wbits=31) if gz else zstandard.ZstdDecompressor().decompressobj()

        decoder, fed = fresh(), False
        for chunk in chunks:
            while chunk:  # a file may hold several gzip members or zstd frames back to back
                if decoder.eof:
                    decoder, fed = fresh(), False
                fed = True
                yield decoder.decompress(chunk)
                chunk = decoder.unused_data if decoder.eof else b""
        if fed and not decoder.eof:
            raise EOFError("the compressed stream ends before its end marker")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a recording; a truncated or corrupt compressed stream raises :class:`_Truncated`."""
    number, pending = 0, b""
    try:
        for block in _decompressed(path):
            *complete, pending = (pending + block).split(b"\n")
            for line in complete:
                number += 1
                yield number, line.decode("utf-8", "surrogateescape")
    except (EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise _Truncated(number + 1, f"file is truncated or corrupt after line {number} ({exc})") from None
    if pending:
        yield number + 1, pending.decode("utf-8", "surrogateescape")


def read_recording(path: str | Path, bad: list[BadLine] | None = None) -> Iterator[RecordedMessage]:
    """Messages of one recording in file order.

    With ``bad`` a list, bad lines are appended to it and skipped; without, the first one raises
    :class:`BadLineError` naming the file and line. Blank lines are ignored.
    """
    p = check_recording_path(path)
    if not p.is_file():
        raise RecordingError(f"recording {str(p)!r} does not exist")
    lines = _lines(p)
    while True:
        try:
            number, line = next(lines)
        except StopIteration:
            return
        except _Truncated as exc:
            problem = BadLine(str(p), exc.line, exc.reason)
            if bad is None:
                raise BadLineError(problem) from None
            bad.append(problem)
            return
        if not line.strip():
            continue
        try:
            yield RecordedMessage.from_json(line)
        except ValueError as exc:
            problem = BadLine(str(p), number, str(exc))
            if bad is None:
                raise BadLineError(problem) from None
            bad.append(problem)


# -- times ----------------------------------------------------------------------------------------------------------


def parse_time(text: str, now_ms: int | None = None) -> int:
    """A point in time as milliseconds since the epoch.

    Accepts ``now``, a duration relative to now (``-10m`` ago, ``+30s`` from now; units ms, s, m, h, d), an ISO-8601
    date-time (UTC unless it names a zone), or epoch milliseconds.

    >>> parse_time("2026-11-24T10:00:00Z")
    1795514400000
    >>> parse_time("-1.5s", now_ms=10_000), parse_time("+2m", now_ms=0), parse_time("1795514400000")
    (8500, 120000, 1795514400000)
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    if value == "now":
        return now
    if match := _DURATION.match(value):
        sign, amount, unit = match.groups()
        delta = int(float(amount) * _UNIT_MS[unit])
        return now + delta if sign == "+" else now - delta
    if value.isdigit():
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use 'now', a relative time like '-10m' or '+30s', "
            "an ISO-8601 date-time like '2026-11-24T10:00:00Z', or epoch milliseconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


__all__ = [
    "SUFFIXES",
    "BadLine",
    "BadLineError",
    "RecordedMessage",
    "RecordingError",
    "RecordingWriter",
    "check_recording_path",
    "parse_time",
    "read_recording",
    "write_recording",
]
