"""A streaming CSV reader with a header row, for the benchmarks' CSV editions (OpenML, River, Kaggle exports).

Columns are typed once, before the first row is yielded, so that a column never switches between ``float`` and
``str``: a column is numeric when every non-missing value among the first ``sniff`` rows is a finite number, and
nominal (``str``) otherwise, or when it has no value there. ``types`` overrides the guess per column (``"numeric"``,
``"string"``, or the allowed nominal values). A later value that does not fit its column's type is a bad row.
Only ``sniff`` rows are ever held, so memory stays constant on any file size.

>>> import io
>>> rows = read_csv(io.StringIO("a,colour,label\\n1.5,red,yes\\n,\\"dark, blue\\",no\\n"), target="label")
>>> list(rows)
[({'a': 1.5, 'colour': 'red'}, 'yes'), ({'a': None, 'colour': 'dark, blue'}, 'no')]
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence

from connectors.readers._base import OnError, ReadError, Row, RowError, RowReader, Source, Value, shown
from connectors.readers.arff import Attribute, Converter, _converter

MISSING = frozenset({"", "?", "NA", "N/A", "NaN", "nan", "null", "None"})
"""Cell texts read as a missing value by default (after stripping spaces)."""

ColumnType = str | Sequence[str]
"""``"numeric"``, ``"string"``, or a sequence of allowed nominal values."""


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class CsvReader(RowReader):
    """``(x, y)`` rows of a CSV file with a header row, read lazily; see the module docstring for typing rules.

    ``target`` names the label column (default: the last one). ``attributes`` gives every column's resolved type.
    """

    def __init__(
        self,
        source: Source,
        *,
        target: str | None = None,
        on_error: OnError = "raise",
        types: Mapping[str, ColumnType] | None = None,
        missing: Collection[str] = MISSING,
        sniff: int = 1000,
        delimiter: str = ",",
        encoding: str = "utf-8-sig",
    ) -> None:
        super().__init__(source, on_error=on_error, encoding=encoding)
        self._missing = frozenset(missing)
        self._reader = csv.reader((line for _, line in self._lines()), delimiter=delimiter, strict=True)
        self._buffer: deque[tuple[int, list[str]]] = deque()
        try:
            header = self._header()
            self.target = header[-1] if target is None else target
            if self.target not in header:
                raise ReadError(self.source, 1, f"no column {self.target!r} to use as target; has {header}")
            self._header_names = header
            self._sniff(header, sniff)
            self.set_types(types or {})
        except BaseException:
            self.close()
            raise

    def set_types(self, types: Mapping[str, ColumnType]) -> None:
        """Type the columns: ``types`` where given, the sniffed guess elsewhere. Call it before reading rows."""
        header = self._header_names
        unknown = sorted(set(types) - set(header))
        if unknown:
            raise ReadError(self.source, None, f"types names unknown columns {unknown}; the header has {header}")
        self.attributes = tuple(self._attribute(name, types.get(name), index) for index, name in enumerate(header))
        self._converters: list[Converter] = [_converter(a, False) for a in self.attributes]

    def _next_record(self) -> tuple[int, list[str]] | None:
        """The next non-blank record and the line it starts on; csv errors (bad quoting) become bad rows."""
        while True:
            start = self._line + 1
            try:
                record = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                self._bad(start, f"bad CSV quoting: {exc}")
                continue
            if record and any(cell.strip() for cell in record):
                return start, [cell.strip() for cell in record]

    def _header(self) -> list[str]:
        found = self._next_record()
        if found is None:
            raise ReadError(self.source, None, "empty file: a CSV with a header row is expected")
        line, header = found
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated or "" in header:
            problem = f"repeats {duplicated}" if duplicated else "has an empty column name"
            raise ReadError(self.source, line, f"the header row {problem}: {header}")
        return header

    def _sniff(self, header: list[str], rows: int) -> None:
        """Buffer up to ``rows`` records and note which columns hold only numbers there."""
        self._numeric = [True] * len(header)
        self._seen = [False] * len(header)
        while len(self._buffer) < rows:
            found = self._next_record()
            if found is None:
                break
            self._buffer.append(found)
            _, record = found
            if len(record) != len(header):
                continue  # reported when the row is read
            for index, cell in enumerate(record):
                if cell not in self._missing:
                    self._seen[index] = True
                    if self._numeric[index] and not _finite(cell):
                        self._numeric[index] = False

    def _attribute(self, name: str, given: ColumnType | None, index: int) -> Attribute:
        if given is None:
            numeric = self._numeric[index] and self._seen[index]
            return Attribute(name, "numeric" if numeric else "string")
        if given in ("numeric", "string"):
            return Attribute(name, "numeric" if given == "numeric" else "string")
        if isinstance(given, str):
            raise ValueError(f"types[{name!r}] must be 'numeric', 'string' or a list of values (got {given!r})")
        return Attribute(name, "nominal", tuple(given))

    def _rows(self) -> Iterator[Row]:
        names = [attribute.name for attribute in self.attributes]
        count = len(names)
        target_index = names.index(self.target)
        converters = self._converters
        missing = self._missing
        while True:
            found = self._buffer.popleft() if self._buffer else self._next_record()
            if found is None:
                return
            line, record = found
            try:
                if len(record) != count:
                    raise RowError(f"expected {count} columns, found {len(record)} in {shown(','.join(record))}")
                values: list[Value] = [
                    None if cell in missing else convert(cell) for convert, cell in zip(converters, record, strict=True)
                ]
            except RowError as exc:
                self._bad(line, str(exc))
                continue
            label = values[target_index]
            yield (
                {name: value for i, (name, value) in enumerate(zip(names, values, strict=True)) if i != target_index},
                label,
            )


def read_csv(
    source: Source,
    *,
    target: str | None = None,
    on_error: OnError = "raise",
    types: Mapping[str, ColumnType] | None = None,
    missing: Collection[str] = MISSING,
    sniff: int = 1000,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> CsvReader:
    """Read a CSV file with a header row (plain or gzip) as ``(x, y)`` rows; the label is column ``target``.

    Raises :class:`~connectors.readers.ReadError` naming the file and line for a bad row unless
    ``on_error="skip"`` (then see the reader's ``skipped`` and ``bad_rows``).
    """
    return CsvReader(
        source,
        target=target,
        on_error=on_error,
        types=types,
        missing=missing,
        sniff=sniff,
        delimiter=delimiter,
        encoding=encoding,
    )
