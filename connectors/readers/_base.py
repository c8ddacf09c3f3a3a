"""What every reader shares: opening plain or gzipped text lazily, the bad-row policy, and the row iterator.

Readers are iterators of ``(x, y)`` pairs read one line at a time, so a 500k-row benchmark file costs the memory of
one row. A row that cannot be read is either an error naming the file and line (the default: a benchmark run on a
silently truncated stream is worse than no run) or, with ``on_error="skip"``, counted and remembered (the first
few) so that a long replay can go on and say afterwards what it left out.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

Value = float | str | None
"""A feature or label value as read: ``float`` for numeric columns, ``str`` for nominal/string ones, ``None`` when
the file says the value is missing (``?`` in ARFF, an empty cell in CSV)."""

Row = tuple[dict[str, Value], Value]
"""One instance: the features by attribute name, and the target's value."""

OnError = Literal["raise", "skip"]
Source = str | os.PathLike[str] | IO[str]
"""A path (plain or gzip, told apart by the file's magic bytes, not its name) or an open text stream."""

GZIP_MAGIC = b"\x1f\x8b"
MAX_REPORTED = 20
"""How many skipped rows a reader remembers in :attr:`RowReader.bad_rows` (the count has no limit)."""
_SHOWN = 80
logger = logging.getLogger(__name__)


class ReadError(ValueError):
    """A file that cannot be read as its format says; ``str()`` starts with ``file:line:`` when a line is known."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class BadRow:
    """A data row skipped under ``on_error="skip"``: where it is and why it could not be read."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class RowError(ValueError):
    """Raised by a row parser for one bad row; the reader adds the file and line (raise) or counts it (skip)."""


def shown(text: str) -> str:
    """A row or value as quoted in an error message, cut to a readable length."""
    text = text.rstrip("\r\n")
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


def open_text(source: Source, encoding: str) -> tuple[IO[str], str, bool]:
    """Open ``source`` for reading text line by line: ``(stream, name for messages, whether we own the stream)``.

    gzip is recognised by its magic bytes, so ``elecNormNew.arff.gz``, a gzip without the suffix and a plain file
    wrongly named ``.gz`` all read. ``newline=""`` keeps quoted CSV newlines intact for the csv module.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            with path.open("rb") as probe:
                magic = probe.read(2)
        except OSError as exc:
            raise ReadError(str(path), None, f"cannot open: {exc.strerror or exc}") from None
        if magic == GZIP_MAGIC:
            return gzip.open(path, "rt", encoding=encoding, newline=""), str(path), True
        return path.open(encoding=encoding, newline=""), str(path), True
    if isinstance(source, io.TextIOBase) or hasattr(source, "readline"):
        return source, str(getattr(source, "name", "<stream>")), False
    raise TypeError(f"expected a path or a text stream, got {type(source).__name__}")


class RowReader(Iterator[Row]):
    """An iterator of ``(x, y)`` rows over one file, with the bad-row policy and counters.

    Subclasses parse their header in ``__init__`` (so a wrong file fails at once, before any row is used) and
    implement :meth:`_rows`. Use as a context manager, or read to the end, to close the file early or surely.

    Attributes: ``source`` (the file name used in messages), ``target`` (the label's attribute name),
    ``rows`` (rows yielded so far), ``skipped`` (bad rows skipped) and ``bad_rows`` (the first
    :data:`MAX_REPORTED` of them).
    """

    target: str

    def __init__(self, source: Source, *, on_error: OnError = "raise", encoding: str = "utf-8-sig") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip' (got {on_error!r})")
        self.on_error: OnError = on_error
        self.encoding = encoding
        self._stream, self.source, self._owned = open_text(source, encoding)
        self._line = 0
        self.rows = 0
        self.skipped = 0
        self.bad_rows: list[BadRow] = []
        self._iterator: Iterator[Row] | None = None

    def _lines(self) -> Iterator[tuple[int, str]]:
        """The stream's lines with their 1-based numbers; a decoding error becomes a :class:`ReadError`."""
        while True:
            try:
                line = self._stream.readline()
            except UnicodeDecodeError as exc:
                raise ReadError(
                    self.source, self._line + 1, f"not valid {self.encoding} text ({exc.reason}); pass encoding="
                ) from None
            except (OSError, EOFError) as exc:  # a truncated or corrupt gzip member
                raise ReadError(self.source, self._line + 1, f"cannot read on: {exc}") from None
            if not line:
                return
            self._line += 1
            yield self._line, line

    def _bad(self, line: int, message: str) -> None:
        """Raise for a bad data row, or count and remember it when skipping."""
        if self.on_error == "raise":
            raise ReadError(self.source, line, message + " (pass on_error='skip' to skip bad rows and count them)")
        self.skipped += 1
        if len(self.bad_rows) < MAX_REPORTED:
            self.bad_rows.append(BadRow(self.source, line, message))
            logger.warning("skipping %s:%d: %s", self.source, line, message)

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> Row:
        if self._iterator is None:
            self._iterator = self._counted()
        return next(self._iterator)

    def _counted(self) -> Iterator[Row]:
        try:
            for row in self._rows():
                self.rows += 1
                yield row
        finally:
            self._close_stream()

    def _close_stream(self) -> None:
        if self._owned and not self._stream.closed:
            self._stream.close()

    def close(self) -> None:
        """Close the file (when the reader opened it); further reading ends the iteration."""
        iterator, self._iterator = self._iterator, iter(())
        if isinstance(iterator, Generator):
            iterator.close()
        self._close_stream()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
