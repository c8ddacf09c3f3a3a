"""The real drift-benchmark streams in their usual public formats: Elec2, Airlines and CovType.

Each ``read_*`` checks that the file's header is the one the benchmark ships with, and fails at once naming the
first difference, because a reordered or renamed column would otherwise quietly train on the wrong features.
Nominal features come back as ``str``, numeric ones as ``float``, the label as the nominal ``str`` the file
declares (``"UP"``/``"DOWN"``, ``"0"``/``"1"``, ``"1"``..``"7"``). A path ending in ``.csv`` (or ``.csv.gz``) is
read as the header-row CSV edition of the same data (OpenML/River exports); anything else as ARFF. Plain or gzip.

* Elec2 (``elecNormNew.arff``, 45,312 rows): date, day {1..7}, period, nswprice, nswdemand, vicprice, vicdemand,
  transfer -> class {UP, DOWN}.
* Airlines (MOA ``airlines.arff``, 539,383 rows): Airline, Flight, AirportFrom, AirportTo, DayOfWeek {1..7},
  Time, Length -> Delay {0, 1}. The carrier and airport lists are not checked (editions differ), only their kind.
* CovType (``covtypeNorm.arff``, 581,012 rows): 10 quantitative attributes, 4 wilderness and 40 soil flags
  (``numeric`` or ``{0,1}``, read as floats either way) -> a class {1..7} last. Names differ between editions
  (``Elevation`` / ``elevation`` / ``Att1``...), so only the shape and kinds are checked and the file's names kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from connectors.readers._base import OnError, ReadError, RowReader, Source
from connectors.readers.arff import ArffReader, Attribute
from connectors.readers.csvfile import ColumnType, CsvReader

ExpectedKind = Literal["numeric", "nominal", "flag"]
Format = Literal["arff", "csv"]
DAYS = tuple(str(day) for day in range(1, 8))
COVTYPE_QUANTITATIVE = 10
COVTYPE_FLAGS = 4 + 40


class HeaderMismatchError(ReadError):
    """A file whose header is not the benchmark's: the message names the first difference."""


@dataclass(frozen=True)
class Expected:
    """One attribute a preset expects: its name (``None``: any), kind, and for a nominal its exact value set."""

    name: str | None
    kind: ExpectedKind
    values: tuple[str, ...] | None = None

    def describe(self) -> str:
        name = repr(self.name) if self.name is not None else "any name"
        if self.kind == "nominal":
            return f"{name} nominal" + (" {" + ",".join(self.values) + "}" if self.values is not None else "")
        return f"{name} {'numeric or {0,1}' if self.kind == 'flag' else self.kind}"


@dataclass(frozen=True)
class Preset:
    """A benchmark stream's expected layout; the label is the last attribute."""

    title: str
    file: str
    attributes: tuple[Expected, ...]

    def check(self, source: str, found: Sequence[Attribute]) -> None:
        """Raise :class:`HeaderMismatchError` at the first attribute that differs from the expected layout."""
        self._check_count(source, len(found))
        intro = f"not the {self.title} format ({self.file})"
        for position, (attribute, expected) in enumerate(zip(found, self.attributes, strict=True), start=1):
            problem = _difference(attribute, expected)
            if problem:
                raise HeaderMismatchError(
                    source,
                    None,
                    f"{intro}: attribute {position} is {attribute.describe()}, expected {expected.describe()}"
                    f" ({problem})",
                )

    def check_names(self, source: str, names: Sequence[str]) -> None:
        """Raise :class:`HeaderMismatchError` unless a CSV header has the expected column names and count."""
        self._check_count(source, len(names))
        for position, (name, expected) in enumerate(zip(names, self.attributes, strict=True), start=1):
            if expected.name is not None and name != expected.name:
                raise HeaderMismatchError(
                    source,
                    1,
                    f"not the {self.title} format (CSV edition of {self.file}): column {position} is {name!r}, "
                    f"expected {expected.name!r}",
                )

    def _check_count(self, source: str, count: int) -> None:
        if count != len(self.attributes):
            names = [e.name for e in self.attributes]
            listed = f" ({', '.join(map(str, names))})" if None not in names else ""
            raise HeaderMismatchError(
                source,
                None,
                f"not the {self.title} format ({self.file}): it has {count} attributes, "
                f"{self.title} has {len(self.attributes)}{listed}",
            )


def _difference(attribute: Attribute, expected: Expected) -> str:
    if expected.name is not None and attribute.name != expected.name:
        return "another name"
    if expected.kind == "numeric" and attribute.kind != "numeric":
        return "another type"
    if expected.kind == "flag" and not (
        attribute.kind == "numeric" or (attribute.kind == "nominal" and set(attribute.values) <= {"0", "1"})
    ):
        return "another type"
    if expected.kind == "nominal":
        if attribute.kind not in ("nominal", "string"):
            return "another type"
        if expected.values is not None and set(attribute.values) != set(expected.values):
            return "other values"
    return ""


def _numeric(*names: str) -> tuple[Expected, ...]:
    return tuple(Expected(name, "numeric") for name in names)


ELEC2 = Preset(
    "Elec2",
    "elecNormNew.arff",
    (
        Expected("date", "numeric"),
        Expected("day", "nominal", DAYS),
        *_numeric("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"),
        Expected("class", "nominal", ("UP", "DOWN")),
    ),
)
AIRLINES = Preset(
    "Airlines",
    "airlines.arff",
    (
        Expected("Airline", "nominal"),
        Expected("Flight", "numeric"),
        Expected("AirportFrom", "nominal"),
        Expected("AirportTo", "nominal"),
        Expected("DayOfWeek", "nominal", DAYS),
        *_numeric("Time", "Length"),
        Expected("Delay", "nominal", ("0", "1")),
    ),
)
COVTYPE = Preset(
    "CovType",
    "covtypeNorm.arff",
    (
        *(Expected(None, "numeric") for _ in range(COVTYPE_QUANTITATIVE)),
        *(Expected(None, "flag") for _ in range(COVTYPE_FLAGS)),
        Expected(None, "nominal", DAYS),
    ),
)
PRESETS = {"elec2": ELEC2, "airlines": AIRLINES, "covtype": COVTYPE}
"""Every preset by its short name."""


def _is_csv(source: Source, format: Format | None) -> bool:
    if format is not None:
        if format not in ("arff", "csv"):
            raise ValueError(f"format must be 'arff', 'csv' or None (got {format!r})")
        return format == "csv"
    if not isinstance(source, str | Path):
        return False
    return str(source).lower().removesuffix(".gz").endswith(".csv")


def read_preset(
    preset: Preset, source: Source, *, on_error: OnError = "raise", format: Format | None = None
) -> RowReader:
    """Read ``source`` as ``preset``'s stream after checking its header; see the module docstring.

    ``format`` is told from the file name when ``None`` (``.csv``/``.csv.gz``: CSV, else ARFF).
    """
    if _is_csv(source, format):
        return _read_csv(preset, source, on_error)
    reader = ArffReader(source, on_error=on_error)
    try:
        preset.check(reader.source, reader.header.attributes)
        flags = [a.name for a, e in zip(reader.header.attributes, preset.attributes, strict=True) if e.kind == "flag"]
        reader.read_as_numbers([a.name for a in reader.header.attributes if a.name in flags and a.kind == "nominal"])
    except BaseException:
        reader.close()
        raise
    return reader


def _read_csv(preset: Preset, source: Source, on_error: OnError) -> CsvReader:
    """The CSV edition: header names and count checked, columns typed by the preset (no guessing)."""
    reader = CsvReader(source, on_error=on_error, sniff=0)
    try:
        names = [attribute.name for attribute in reader.attributes]
        preset.check_names(reader.source, names)
        types: dict[str, ColumnType] = {}
        for name, expected in zip(names, preset.attributes, strict=True):
            if expected.kind == "nominal":
                types[name] = expected.values if expected.values is not None else "string"
            else:
                types[name] = "numeric"
        reader.set_types(types)
    except BaseException:
        reader.close()
        raise
    return reader


def read_elec2(source: Source, *, on_error: OnError = "raise", format: Format | None = None) -> RowReader:
    """Elec2 (``elecNormNew.arff`` or its CSV edition) as ``(x, y)`` rows, ``y`` in ``{"UP", "DOWN"}``."""
    return read_preset(ELEC2, source, on_error=on_error, format=format)


def read_airlines(source: Source, *, on_error: OnError = "raise", format: Format | None = None) -> RowReader:
    """Airlines (MOA ``airlines.arff`` or its CSV edition) as ``(x, y)`` rows, ``y`` in ``{"0", "1"}`` (delayed)."""
    return read_preset(AIRLINES, source, on_error=on_error, format=format)


def read_covtype(source: Source, *, on_error: OnError = "raise", format: Format | None = None) -> RowReader:
    """CovType (``covtypeNorm.arff`` or its CSV edition) as ``(x, y)`` rows, ``y`` in ``{"1", ..., "7"}``."""
    return read_preset(COVTYPE, source, on_error=on_error, format=format)
