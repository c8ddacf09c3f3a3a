"""A streaming reader for Weka/MOA ARFF files, the format the drift benchmarks (Elec2, Airlines, CovType) ship in.

The header (``@relation``, ``@attribute name type``, ``@data``) is read when the reader is made, so a wrong file
fails before any row is used; the data rows are then read one line at a time. Supported: attribute types
``numeric``/``real``/``integer`` (read as ``float``), nominal ``{a, b, 'c d'}`` (read as ``str``, checked against
the declared values), ``string`` and ``date`` (read as ``str``, dates unparsed); ``%`` comments; values quoted with
``'`` or ``"`` (backslash escapes inside); ``?`` for a missing value (``None``); sparse rows ``{index value, ...}``
(an omitted numeric value is 0, an omitted nominal value the first declared one, as in Weka); and the optional
instance weight ``{w}`` at a row's end (ignored). ``relational`` attributes are refused.

>>> import io
>>> text = "@relation t\\n@attribute a numeric\\n@attribute c {yes,no}\\n@data\\n1.5,yes\\n?,no\\n{0 2}\\n"
>>> list(read_arff(io.StringIO(text)))
[({'a': 1.5}, 'yes'), ({'a': None}, 'no'), ({'a': 2.0}, 'yes')]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from connectors.readers._base import OnError, ReadError, Row, RowError, RowReader, Source, Value, shown

Kind = Literal["numeric", "nominal", "string", "date"]
NUMERIC_TYPES = frozenset({"numeric", "real", "integer"})
_QUOTES = "'\""
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_ESCAPE = re.compile(r"\\(.)")
_TOKEN = re.compile(
    r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([,{}])|(%.*)|([^,{}'"%]+))""",
    re.DOTALL,
)
_NAME = re.compile(r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^\s{]+))""")


@dataclass(frozen=True)
class Attribute:
    """One declared column: its name, kind and, for a nominal attribute, its values in declared order."""

    name: str
    kind: Kind
    values: tuple[str, ...] = ()
    date_format: str | None = None

    def describe(self) -> str:
        """The attribute as a header would declare it (for error messages)."""
        if self.kind == "nominal":
            return f"{self.name!r} {{{','.join(self.values)}}}"
        return f"{self.name!r} {self.kind}"


@dataclass(frozen=True)
class ArffHeader:
    """An ARFF file's header: relation name, attributes in file order, and the line where ``@data`` stands."""

    relation: str
    attributes: tuple[Attribute, ...]
    data_line: int

    @property
    def names(self) -> tuple[str, ...]:
        """The attribute names in file order."""
        return tuple(attribute.name for attribute in self.attributes)


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda match: _ESCAPES.get(match.group(1), match.group(1)), text) if "\\" in text else text


def _tokens(line: str) -> list[tuple[str, str]]:
    """Split a line into ``(kind, text)`` tokens: ``q`` quoted, ``w`` bare word, or the punctuation ``,{}``.

    A bare word runs to the next ``,{}`` or quote and is stripped (inner spaces kept); ``%`` outside quotes ends the
    line. Raises :class:`RowError` for an unterminated quote.
    """
    tokens: list[tuple[str, str]] = []
    position, end = 0, len(line)
    while position < end:
        match = _TOKEN.match(line, position)
        if match is None:
            if line[position:].strip() == "":
                break
            quote = line[position:].lstrip()[:1]
            raise RowError(f"unterminated {quote} quote in {shown(line)}")
        position = match.end()
        single, double, punct, comment, word = match.groups()
        if comment is not None:
            break
        if single is not None or double is not None:
            tokens.append(("q", _unescape(single if single is not None else double)))
        elif punct is not None:
            tokens.append((punct, punct))
        elif word is not None and word.strip():
            tokens.append(("w", word.strip()))
    return tokens


def _values(tokens: Sequence[tuple[str, str]], line: str) -> tuple[list[str | None], int]:
    """The comma-separated values at the start of ``tokens`` (``None`` for a bare ``?``) and where they stop."""
    values: list[str | None] = []
    index = 0
    while True:
        if index >= len(tokens) or tokens[index][0] not in ("q", "w"):
            raise RowError(f"empty value at position {len(values) + 1} in {shown(line)}")
        kind, text = tokens[index]
        values.append(None if kind == "w" and text == "?" else text)
        index += 1
        if index >= len(tokens) or tokens[index][0] != ",":
            return values, index
        index += 1
        if index < len(tokens) and tokens[index][0] == "{":  # ", {weight}" closes a row
            return values, index - 1


def _skip_weight(tokens: Sequence[tuple[str, str]], index: int, line: str) -> None:
    """Accept the end of a row, or an instance weight ``, {w}`` there; anything else is an error."""
    rest = [kind for kind, _ in tokens[index:]]
    if not rest or (rest == [",", "{", "w", "}"] and _is_number(tokens[index + 2][1])):
        return
    raise RowError(f"unexpected {tokens[index][1]!r} after the values in {shown(line)}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_header(lines: Iterator[tuple[int, str]], source: str) -> ArffHeader:
    """Read ``@relation``/``@attribute`` lines up to and including ``@data``; raise :class:`ReadError` otherwise."""
    relation: str | None = None
    attributes: list[Attribute] = []
    seen: set[str] = set()
    for number, raw in lines:
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        keyword, rest = [*line.split(None, 1), ""][:2]
        keyword = keyword.lower()
        try:
            if keyword == "@relation":
                relation = _name(rest)[0]
            elif keyword == "@attribute":
                attribute = _attribute(rest)
                if attribute.name in seen:
                    raise RowError(f"attribute {attribute.name!r} is declared twice")
                seen.add(attribute.name)
                attributes.append(attribute)
            elif keyword == "@data":
                if not attributes:
                    raise RowError("@data before any @attribute")
                return ArffHeader(relation or "", tuple(attributes), number)
            elif keyword == "@end":  # the end of a relational attribute's block: never reached, as we refuse those
                raise RowError("relational attributes are not supported")
            else:
                raise RowError(f"expected @relation, @attribute or @data, got {shown(line)}")
        except RowError as exc:
            raise ReadError(source, number, f"bad ARFF header: {exc}") from None
    raise ReadError(source, None, "no @data line: not an ARFF file, or the header is cut short")


def _name(text: str) -> tuple[str, str]:
    """A possibly quoted name at the start of ``text`` and what follows it."""
    match = _NAME.match(text)
    if match is None or not text.strip():
        raise RowError("a name is missing")
    single, double, bare = match.groups()
    name = _unescape(single if single is not None else double) if bare is None else bare
    return name, text[match.end() :].strip()


def _attribute(text: str) -> Attribute:
    name, spec = _name(text)
    if not spec:
        raise RowError(f"attribute {name!r} has no type")
    if spec.startswith("{"):
        tokens = _tokens(spec)
        if tokens[-1:] != [("}", "}")]:
            raise RowError(f"nominal attribute {name!r} has no closing brace: {shown(spec)}")
        if len(tokens) == 2:
            raise RowError(f"nominal attribute {name!r} declares no values")
        values, stop = _values(tokens[1:], spec)
        if stop != len(tokens) - 2 or any(value is None for value in values):
            raise RowError(f"bad value list for nominal attribute {name!r}: {shown(spec)}")
        return Attribute(name, "nominal", tuple(value for value in values if value is not None))
    kind, _, rest = spec.partition(" ")
    kind = kind.lower()
    if kind in NUMERIC_TYPES:
        return Attribute(name, "numeric")
    if kind == "string":
        return Attribute(name, "string")
    if kind == "date":
        return Attribute(name, "date", date_format=_name(rest)[0] if rest.strip() else None)
    if kind == "relational":
        raise RowError(f"attribute {name!r} is relational; relational attributes are not supported")
    raise RowError(f"attribute {name!r} has unknown type {kind!r} (numeric, real, integer, string, date or {{...}})")


Converter = Callable[[str], Value]


def _converter(attribute: Attribute, as_number: bool) -> Converter:
    """The function turning one raw (non-missing) value into the attribute's Python value; raises RowError."""
    name = attribute.name
    if attribute.kind == "numeric" or (attribute.kind == "nominal" and as_number):
        allowed = frozenset(attribute.values) if attribute.kind == "nominal" else None

        def number(text: str) -> Value:
            if allowed is not None and text not in allowed:
                raise RowError(f"{name}: {text!r} is not one of the declared values {_listed(attribute.values)}")
            try:
                value = float(text)
            except ValueError:
                raise RowError(f"{name}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise RowError(f"{name}: {text!r} is not a finite number (use ? for a missing value)")
            return value

        return number
    if attribute.kind == "nominal":
        allowed = frozenset(attribute.values)

        def nominal(text: str) -> Value:
            if text not in allowed:
                raise RowError(f"{name}: {text!r} is not one of the declared values {_listed(attribute.values)}")
            return text

        return nominal
    return str


def _listed(values: Sequence[str], limit: int = 10) -> str:
    shown_values = ",".join(values[:limit]) + (f",... ({len(values)} values)" if len(values) > limit else "")
    return "{" + shown_values + "}"


class ArffReader(RowReader):
    """``(x, y)`` rows of an ARFF file, read lazily; see the module docstring for what is supported.

    ``target`` names the label's attribute (default: the last one); ``x`` holds every other attribute, ``None``
    where the value is missing. ``as_numbers`` names nominal attributes to read as floats (binary ``{0,1}`` flags
    such as CovType's). ``header`` is available as soon as the reader exists.
    """

    def __init__(
        self,
        source: Source,
        *,
        target: str | None = None,
        on_error: OnError = "raise",
        as_numbers: Collection[str] = (),
        encoding: str = "utf-8-sig",
    ) -> None:
        super().__init__(source, on_error=on_error, encoding=encoding)
        try:
            self._line_iterator = self._lines()
            self.header = parse_header(self._line_iterator, self.source)
            names = self.header.names
            self.target = names[-1] if target is None else target
            if self.target not in names:
                raise ReadError(self.source, None, f"no attribute {self.target!r} to use as target; has {list(names)}")
            self.read_as_numbers(as_numbers)
        except BaseException:
            self.close()
            raise

    def read_as_numbers(self, names: Collection[str]) -> None:
        """Read the nominal attributes ``names`` (numeric values only, e.g. ``{0,1}`` flags) as floats.

        Call it before reading rows; it replaces any earlier choice.
        """
        unknown = sorted(set(names) - set(self.header.names))
        if unknown:
            raise ReadError(self.source, None, f"as_numbers names unknown attributes {unknown}")
        for attribute in self.header.attributes:
            if attribute.name in names and not all(_is_number(v) for v in attribute.values):
                raise ReadError(
                    self.source, None, f"as_numbers: attribute {attribute.describe()} has non-numeric values"
                )
        self._converters = [_converter(a, a.name in names) for a in self.header.attributes]
        self._defaults = [_sparse_default(a, a.name in names) for a in self.header.attributes]

    def _rows(self) -> Iterator[Row]:
        names = self.header.names
        count = len(names)
        target_index = names.index(self.target)
        converters = self._converters
        for number, raw in self._line_iterator:
            line = raw.strip()
            if not line or line[0] == "%":
                continue
            try:
                if line[0] == "{":
                    values = self._sparse(line)
                else:
                    cells: list[str | None]
                    if "'" in line or '"' in line or "%" in line or "{" in line:
                        tokens = _tokens(line)
                        cells, stop = _values(tokens, line)
                        _skip_weight(tokens, stop, line)
                    else:
                        bare = [cell.strip() for cell in line.split(",")]
                        if "" in bare:
                            raise RowError(f"empty value at position {bare.index('') + 1} in {shown(line)}")
                        cells = [None if cell == "?" else cell for cell in bare]
                    if len(cells) != count:
                        raise RowError(f"expected {count} values, found {len(cells)} in {shown(line)}")
                    values = [
                        None if cell is None else convert(cell) for convert, cell in zip(converters, cells, strict=True)
                    ]
            except RowError as exc:
                self._bad(number, str(exc))
                continue
            label = values[target_index]
            yield (
                {name: value for i, (name, value) in enumerate(zip(names, values, strict=True)) if i != target_index},
                label,
            )

    def _sparse(self, line: str) -> list[Value]:
        """The values of a sparse row ``{index value, ...}``: omitted attributes take their default."""
        tokens = _tokens(line)
        values = list(self._defaults)
        index = 1
        while index < len(tokens) and tokens[index][0] != "}":
            kind, text = tokens[index]
            if kind != "w":
                raise RowError(f"expected 'index value' at {text!r} in {shown(line)}")
            position_text, raw = [*text.split(None, 1), ""][:2]
            value: str | None
            if raw:
                value = None if raw == "?" else raw
                index += 1
            elif index + 1 < len(tokens) and tokens[index + 1][0] == "q":
                value = tokens[index + 1][1]
                index += 2
            else:
                raise RowError(f"sparse entry {text!r} has no value in {shown(line)}")
            try:
                position = int(position_text)
            except ValueError:
                raise RowError(f"sparse index {position_text!r} is not an integer in {shown(line)}") from None
            if not 0 <= position < len(values):
                raise RowError(f"sparse index {position} is out of range 0..{len(values) - 1} in {shown(line)}")
            values[position] = None if value is None else self._converters[position](value)
            if index < len(tokens) and tokens[index][0] == ",":
                index += 1
            elif index < len(tokens) and tokens[index][0] != "}":
                raise RowError(f"expected ',' or '}}' after sparse entry {text!r} in {shown(line)}")
        if index >= len(tokens):
            raise RowError(f"sparse row has no closing brace: {shown(line)}")
        _skip_weight(tokens, index + 1, line)
        return values


def _sparse_default(attribute: Attribute, as_number: bool) -> Value:
    """What a sparse row means by leaving an attribute out: Weka's internal value 0."""
    if attribute.kind == "numeric":
        return 0.0
    if attribute.kind == "nominal":
        return float(attribute.values[0]) if as_number else attribute.values[0]
    return None


def read_arff(
    source: Source,
    *,
    target: str | None = None,
    on_error: OnError = "raise",
    as_numbers: Collection[str] = (),
    encoding: str = "utf-8-sig",
) -> ArffReader:
    """Read an ARFF file (plain or gzip) as ``(x, y)`` rows; the label is ``target`` (default: the last attribute).

    Raises :class:`~connectors.readers.ReadError` naming the file and line for a bad header, and for a bad row
    unless ``on_error="skip"`` (then see the reader's ``skipped`` and ``bad_rows``).
    """
    return ArffReader(source, target=target, on_error=on_error, as_numbers=as_numbers, encoding=encoding)
