"""Readers for the real drift-benchmark formats, on small files written here in their exact public format."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import pytest

from connectors.messages import Event, decode, encode
from connectors.readers import (
    MAX_REPORTED,
    HeaderMismatchError,
    ReadError,
    read_airlines,
    read_arff,
    read_covtype,
    read_csv,
    read_elec2,
    to_events,
)

ELEC2_HEADER = """@relation elecNormNew

@attribute date numeric
@attribute day {1,2,3,4,5,6,7}
@attribute period numeric
@attribute nswprice numeric
@attribute nswdemand numeric
@attribute vicprice numeric
@attribute vicdemand numeric
@attribute transfer numeric
@attribute class {UP,DOWN}

@data
"""
ELEC2_ROWS = """0,2,0,0.056443,0.439155,0.003467,0.422915,0.414912,UP
0,2,0.021277,0.051699,0.415055,0.003467,0.422915,0.414912,UP
0,2,0.042553,0.051489,0.385004,0.003467,0.422915,0.414912,DOWN
"""
CARRIERS = ("9E", "AA", "AS", "B6", "CO", "DL", "EV", "F9", "FL", "HA", "MQ", "OH", "OO", "UA", "US", "WN", "XE", "YV")
AIRPORTS = ("ABE", "ABI", "ABQ", "ATL", "DFW", "IAH", "LAX", "MSP", "SFO", "PHX")
AIRLINES_HEADER = f"""@relation airlines

@attribute Airline {{{",".join(CARRIERS)}}}
@attribute Flight numeric
@attribute AirportFrom {{{",".join(AIRPORTS)}}}
@attribute AirportTo {{{",".join(AIRPORTS)}}}
@attribute DayOfWeek {{1,2,3,4,5,6,7}}
@attribute Time numeric
@attribute Length numeric
@attribute Delay {{0,1}}

@data
"""
AIRLINES_ROWS = "CO,269,SFO,IAH,3,15,205,1\nUS,1558,PHX,ATL,3,15,222,1\nAA,2400,LAX,DFW,3,20,165,0\n"


def covtype_text(rows: int, seed: int = 7, flags_nominal: bool = True) -> str:
    """A covtypeNorm.arff-format file: 10 normalised quantities, 4 + 40 binary flags, class {1..7}."""
    rng = random.Random(seed)
    names = [
        "Elevation",
        "Aspect",
        "Slope",
        "Horizontal_Distance_To_Hydrology",
        "Vertical_Distance_To_Hydrology",
        "Horizontal_Distance_To_Roadways",
        "Hillshade_9am",
        "Hillshade_Noon",
        "Hillshade_3pm",
        "Horizontal_Distance_To_Fire_Points",
    ]
    flag_type = "{0,1}" if flags_nominal else "numeric"
    lines = ["@relation covtypeNorm", ""]
    lines += [f"@attribute {name} numeric" for name in names]
    lines += [f"@attribute Wilderness_Area{i} {flag_type}" for i in range(1, 5)]
    lines += [f"@attribute Soil_Type{i} {flag_type}" for i in range(1, 41)]
    lines += ["@attribute class {1,2,3,4,5,6,7}", "", "@data"]
    for _ in range(rows):
        quantities = [f"{rng.random():.6f}" for _ in range(10)]
        wilderness = ["0"] * 4
        wilderness[rng.randrange(4)] = "1"
        soil = ["0"] * 40
        soil[rng.randrange(40)] = "1"
        lines.append(",".join([*quantities, *wilderness, *soil, str(rng.randint(1, 7))]))
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- ARFF --------------------------------------------------------------------------------------------------------


def test_elec2_arff_values_types_and_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "elecNormNew.arff", ELEC2_HEADER + ELEC2_ROWS)
    rows = list(read_elec2(path))
    assert len(rows) == 3
    x = rows[0][0]
    assert x == {
        "date": 0.0,
        "day": "2",
        "period": 0.0,
        "nswprice": 0.056443,
        "nswdemand": 0.439155,
        "vicprice": 0.003467,
        "vicdemand": 0.422915,
        "transfer": 0.414912,
    }
    assert isinstance(x["date"], float) and isinstance(x["day"], str)
    assert [label for _, label in rows] == ["UP", "UP", "DOWN"]
    assert rows[1][0]["period"] == pytest.approx(0.021277)


def test_plain_and_gzip_read_the_same(tmp_path: Path) -> None:
    text = ELEC2_HEADER + ELEC2_ROWS
    plain = list(read_elec2(write(tmp_path / "elecNormNew.arff", text)))
    gzipped = list(read_elec2(write(tmp_path / "elecNormNew.arff.gz", text)))
    unnamed = write(tmp_path / "elec.gz", text).rename(tmp_path / "elec.data")  # gzip is told by its bytes
    assert gzipped == plain == list(read_elec2(unnamed))


def test_airlines_arff(tmp_path: Path) -> None:
    path = write(tmp_path / "airlines.arff.gz", AIRLINES_HEADER + AIRLINES_ROWS)
    rows = list(read_airlines(path))
    assert rows[0] == (
        {
            "Airline": "CO",
            "Flight": 269.0,
            "AirportFrom": "SFO",
            "AirportTo": "IAH",
            "DayOfWeek": "3",
            "Time": 15.0,
            "Length": 205.0,
        },
        "1",
    )
    assert [label for _, label in rows] == ["1", "1", "0"]


@pytest.mark.parametrize("flags_nominal", [True, False])
def test_covtype_arff_reads_flags_as_floats(tmp_path: Path, flags_nominal: bool) -> None:
    path = write(tmp_path / "covtypeNorm.arff", covtype_text(20, flags_nominal=flags_nominal))
    reader = read_covtype(path)
    rows = list(reader)
    assert len(rows) == 20 and reader.rows == 20 and reader.skipped == 0
    for x, y in rows:
        assert len(x) == 54 and all(isinstance(value, float) for value in x.values())
        assert [x[f"Soil_Type{i}"] for i in range(1, 41)].count(1.0) == 1
        assert [x[f"Wilderness_Area{i}"] for i in range(1, 5)].count(1.0) == 1
        assert y in {"1", "2", "3", "4", "5", "6", "7"}


def test_quoted_values_comments_and_missing(tmp_path: Path) -> None:
    text = """% a comment before the header
@RELATION 'quoted relation'
@ATTRIBUTE 'city name' {'New York', "Los Angeles", Boston}
@attribute speed REAL
@attribute count integer
@attribute note string
@attribute when date "yyyy-MM-dd"
@attribute label {yes,no}
@data
% a comment among the rows

'New York', 1.5, 3, 'it\\'s, quoted', '2024-01-31', yes
"Los Angeles",?,?,?,?,no % trailing comment
Boston , -2e-3 , 7 , plain , 2024-02-01 , ?
"""
    path = write(tmp_path / "quoted.arff", text)
    reader = read_arff(path)
    assert reader.header.relation == "quoted relation"
    assert reader.header.attributes[0].values == ("New York", "Los Angeles", "Boston")
    assert reader.header.attributes[4].date_format == "yyyy-MM-dd"
    rows = list(reader)
    assert rows == [
        ({"city name": "New York", "speed": 1.5, "count": 3.0, "note": "it's, quoted", "when": "2024-01-31"}, "yes"),
        ({"city name": "Los Angeles", "speed": None, "count": None, "note": None, "when": None}, "no"),
        ({"city name": "Boston", "speed": -0.002, "count": 7.0, "note": "plain", "when": "2024-02-01"}, None),
    ]


def test_sparse_rows_and_instance_weights() -> None:
    text = """@relation sparse
@attribute a numeric
@attribute b numeric
@attribute colour {red,'light blue'}
@attribute c numeric
@attribute y {neg,pos}
@data
{1 2.5, 4 pos}
{0 ?, 2 'light blue', 3 -1}
{}
{4 neg}, {0.5}
1,2,red,3,pos,{2}
"""
    rows = list(read_arff(io.StringIO(text)))
    assert rows == [
        ({"a": 0.0, "b": 2.5, "colour": "red", "c": 0.0}, "pos"),
        ({"a": None, "b": 0.0, "colour": "light blue", "c": -1.0}, "neg"),
        ({"a": 0.0, "b": 0.0, "colour": "red", "c": 0.0}, "neg"),
        ({"a": 0.0, "b": 0.0, "colour": "red", "c": 0.0}, "neg"),
        ({"a": 1.0, "b": 2.0, "colour": "red", "c": 3.0}, "pos"),
    ]


def test_target_by_name() -> None:
    text = "@relation t\n@attribute y {a,b}\n@attribute x numeric\n@data\nb,1\n"
    assert list(read_arff(io.StringIO(text), target="y")) == [({"x": 1.0}, "b")]
    with pytest.raises(ReadError, match="no attribute 'z' to use as target"):
        read_arff(io.StringIO(text), target="z")


BAD_ELEC2 = (
    ELEC2_HEADER
    + "0,2,0,0.05,0.43,0.003,0.42,0.41,UP\n"
    + "0,2,0,0.05,0.43,0.003,0.42,UP\n"  # one value short
    + "0,2,0,abc,0.43,0.003,0.42,0.41,UP\n"  # not a number
    + "0,9,0,0.05,0.43,0.003,0.42,0.41,UP\n"  # day 9 is not declared
    + "0,2,0,0.05,0.43,0.003,0.42,0.41,SIDEWAYS\n"  # nor is this class
    + "0,2,0,0.05,0.43,0.003,0.42,0.41,DOWN\n"
)
FIRST_DATA_LINE = ELEC2_HEADER.count("\n") + 1


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (1, "expected 9 values, found 8"),
        (2, "nswprice: 'abc' is not a number"),
        (3, r"day: '9' is not one of the declared values \{1,2,3,4,5,6,7\}"),
        (4, r"class: 'SIDEWAYS' is not one of the declared values \{UP,DOWN\}"),
    ],
)
def test_bad_arff_rows_raise_with_file_and_line(tmp_path: Path, offset: int, message: str) -> None:
    lines = BAD_ELEC2.splitlines(keepends=True)
    data = lines[FIRST_DATA_LINE - 1 :]
    text = "".join([*lines[: FIRST_DATA_LINE - 1], data[0], data[offset], data[-1]])
    path = write(tmp_path / "elecNormNew.arff", text)
    reader = read_elec2(path)
    assert next(reader)[1] == "UP"
    with pytest.raises(ReadError, match=message) as caught:
        next(reader)
    assert str(caught.value).startswith(f"{path}:{FIRST_DATA_LINE + 1}: ")
    assert caught.value.line == FIRST_DATA_LINE + 1 and "on_error='skip'" in str(caught.value)


def test_bad_arff_rows_skipped_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "elecNormNew.arff.gz", BAD_ELEC2)
    reader = read_elec2(path, on_error="skip")
    labels = [label for _, label in reader]
    assert labels == ["UP", "DOWN"]
    assert reader.rows == 2 and reader.skipped == 4
    assert [bad.line for bad in reader.bad_rows] == list(range(FIRST_DATA_LINE + 1, FIRST_DATA_LINE + 5))
    assert str(reader.bad_rows[1]) == f"{path}:{FIRST_DATA_LINE + 2}: nswprice: 'abc' is not a number"


def test_skipped_rows_remembered_up_to_a_limit() -> None:
    text = "@relation t\n@attribute x numeric\n@attribute y {a}\n@data\n" + "oops,a\n" * (MAX_REPORTED + 5) + "1,a\n"
    reader = read_arff(io.StringIO(text), on_error="skip")
    assert list(reader) == [({"x": 1.0}, "a")]
    assert reader.skipped == MAX_REPORTED + 5 and len(reader.bad_rows) == MAX_REPORTED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@relation t\n@attribute x numeric\n1,2\n", "3: bad ARFF header: expected @relation, @attribute or @data"),
        ("@relation t\n@attribute x numeric\n", "no @data line"),
        ("@relation t\n@attribute x blob\n@data\n", "2: bad ARFF header: attribute 'x' has unknown type 'blob'"),
        ("@relation t\n@attribute x numeric\n@attribute x numeric\n@data\n", "3: .*declared twice"),
        ("@relation t\n@attribute x {a,b\n@data\n", "no closing brace"),
        ("@relation t\n@attribute x relational\n@data\n", "relational attributes are not supported"),
    ],
)
def test_bad_arff_headers(text: str, message: str) -> None:
    with pytest.raises(ReadError, match=message):
        read_arff(io.StringIO(text))


def test_unterminated_quote_and_bad_sparse_index() -> None:
    text = "@relation t\n@attribute x string\n@attribute y {a}\n@data\n'open,a\n{7 1}\n{0 'ok', 1 a}\n"
    reader = read_arff(io.StringIO(text), on_error="skip")
    assert list(reader) == [({"x": "ok"}, "a")]
    assert [bad.line for bad in reader.bad_rows] == [5, 6]
    assert "unterminated ' quote" in reader.bad_rows[0].message
    assert "sparse index 7 is out of range 0..1" in reader.bad_rows[1].message


# --- presets: header checks ----------------------------------------------------------------------------------------


def test_preset_header_mismatch_names_the_difference(tmp_path: Path) -> None:
    renamed = write(tmp_path / "elec.arff", ELEC2_HEADER.replace("vicprice", "vic_price") + ELEC2_ROWS)
    with pytest.raises(HeaderMismatchError, match=r"attribute 6 is 'vic_price' numeric, expected 'vicprice'"):
        read_elec2(renamed)
    classes = write(tmp_path / "elec2.arff", ELEC2_HEADER.replace("{UP,DOWN}", "{UP,DOWN,FLAT}") + ELEC2_ROWS)
    with pytest.raises(HeaderMismatchError, match=r"attribute 9 is 'class' \{UP,DOWN,FLAT\}.*other values"):
        read_elec2(classes)
    with pytest.raises(HeaderMismatchError, match=r"not the Elec2 format.*has 8 attributes, Elec2 has 9"):
        read_elec2(write(tmp_path / "airlines.arff", AIRLINES_HEADER + AIRLINES_ROWS))
    with pytest.raises(
        HeaderMismatchError, match=r"attribute 2 is 'Flight' \{1,2\}, expected 'Flight' numeric \(another type\)"
    ):
        read_airlines(write(tmp_path / "air.arff", AIRLINES_HEADER.replace("Flight numeric", "Flight {1,2}")))
    with pytest.raises(HeaderMismatchError, match=r"not the CovType format.*it has 9 attributes, CovType has 55"):
        read_covtype(write(tmp_path / "cov.arff", ELEC2_HEADER))


# --- CSV -----------------------------------------------------------------------------------------------------------

ELEC2_CSV = """date,day,period,nswprice,nswdemand,vicprice,vicdemand,transfer,class
0,2,0,0.056443,0.439155,0.003467,0.422915,0.414912,UP
0,2,0.021277,0.051699,0.415055,0.003467,0.422915,0.414912,UP
0,2,0.042553,0.051489,0.385004,0.003467,0.422915,0.414912,DOWN
"""


def test_csv_detects_numeric_columns_and_missing_values(tmp_path: Path) -> None:
    text = 'price,city,code,empty,label\n1.5,"New York, NY",001,,yes\n,Boston,002,NA,no\n2,?,x3,,yes\n'
    reader = read_csv(write(tmp_path / "mixed.csv.gz", text), target="label")
    assert [(a.name, a.kind) for a in reader.attributes] == [
        ("price", "numeric"),
        ("city", "string"),
        ("code", "string"),  # "x3" makes the column nominal, so "001" keeps its zeros
        ("empty", "string"),
        ("label", "string"),
    ]
    assert list(reader) == [
        ({"price": 1.5, "city": "New York, NY", "code": "001", "empty": None}, "yes"),
        ({"price": None, "city": "Boston", "code": "002", "empty": None}, "no"),
        ({"price": 2.0, "city": None, "code": "x3", "empty": None}, "yes"),
    ]


def test_csv_types_override_and_target_default(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,4,1\n")
    assert list(read_csv(path)) == [({"a": 1.0, "b": 2.0}, 0.0), ({"a": 3.0, "b": 4.0}, 1.0)]
    rows = list(read_csv(path, types={"b": "string", "y": ["0", "1"]}))
    assert rows == [({"a": 1.0, "b": "2"}, "0"), ({"a": 3.0, "b": "4"}, "1")]


def test_csv_bad_rows_raise_or_skip(tmp_path: Path) -> None:
    text = 'x,colour,y\n1,red,a\n2,red\nabc,red,b\n4,green,c\n5,"unclosed,b\n'
    path = write(tmp_path / "bad.csv", text)
    reader = read_csv(path, types={"colour": ["red", "blue"]}, sniff=1)
    assert next(reader) == ({"x": 1.0, "colour": "red"}, "a")
    with pytest.raises(ReadError, match=rf"^{path}:3: expected 3 columns, found 2"):
        next(reader)
    skipping = read_csv(path, types={"colour": ["red", "blue"]}, sniff=1, on_error="skip")
    assert list(skipping) == [({"x": 1.0, "colour": "red"}, "a")]
    assert skipping.skipped == 4
    assert [(bad.line, bad.message.split(":")[0]) for bad in skipping.bad_rows] == [
        (3, "expected 3 columns, found 2 in '2,red'"),
        (4, "x"),
        (5, "colour"),
        (6, "bad CSV quoting"),
    ]
    assert "'green' is not one of the declared values {red,blue}" in skipping.bad_rows[2].message


def test_csv_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    path = write(tmp_path / "multi.csv", 'note,x\n"two\nlines",1\nok,zz\n')
    with pytest.raises(ReadError, match=rf"^{path}:4: x: 'zz' is not a number"):
        list(read_csv(path, types={"x": "numeric"}, target="note"))


def test_elec2_and_airlines_csv_editions(tmp_path: Path) -> None:
    arff_rows = list(read_elec2(write(tmp_path / "elecNormNew.arff", ELEC2_HEADER + ELEC2_ROWS)))
    assert list(read_elec2(write(tmp_path / "electricity.csv.gz", ELEC2_CSV))) == arff_rows
    header = "Airline,Flight,AirportFrom,AirportTo,DayOfWeek,Time,Length,Delay\n"
    csv_rows = list(read_airlines(write(tmp_path / "airlines.csv", header + AIRLINES_ROWS)))
    assert csv_rows == list(read_airlines(write(tmp_path / "airlines.arff", AIRLINES_HEADER + AIRLINES_ROWS)))
    with pytest.raises(HeaderMismatchError, match="column 4 is 'AirportTwo', expected 'AirportTo'"):
        read_airlines(write(tmp_path / "bad.csv", header.replace("AirportTo", "AirportTwo") + AIRLINES_ROWS))
    bad_class = write(tmp_path / "elec_bad.csv", ELEC2_CSV.replace("DOWN", "down"))
    with pytest.raises(ReadError, match=r"elec_bad.csv:4: class: 'down' is not one of the declared values"):
        list(read_elec2(bad_class))


# --- events --------------------------------------------------------------------------------------------------------


def test_rows_become_events_without_missing_features(tmp_path: Path) -> None:
    text = ELEC2_HEADER + "0,2,0,?,0.43,0.003,0.42,0.41,UP\n0,3,0.5,0.05,0.43,0.003,0.42,0.41,?\n"
    events = list(to_events(read_elec2(write(tmp_path / "elecNormNew.arff", text)), key="elec2"))
    assert [event.ts for event in events] == [0.0, 1.0]
    assert "nswprice" not in events[0].features and events[0].features["day"] == "2"
    assert events[0].label == "UP" and events[1].label is None and events[1].key == "elec2"
    assert decode(encode(events[0]), "event/v1") == events[0]


def test_events_keyed_and_timed_by_functions(tmp_path: Path) -> None:
    rows = read_airlines(write(tmp_path / "airlines.arff", AIRLINES_HEADER + AIRLINES_ROWS))
    events = list(to_events(rows, key=lambda i, x: str(x["Airline"]), ts=lambda i, x: 1000.0 + 60 * i))
    assert [(e.key, e.ts) for e in events] == [("CO", 1000.0), ("US", 1060.0), ("AA", 1120.0)]
    assert all(isinstance(e, Event) for e in events)


def test_reader_closes_its_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elecNormNew.arff", ELEC2_HEADER + ELEC2_ROWS)
    with read_elec2(path) as reader:
        next(reader)
    assert list(reader) == []
    reader = read_elec2(path)
    list(reader)
    assert reader._stream.closed
