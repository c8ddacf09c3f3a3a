"""The EasyTPP reader, on files written here in EasyTPP's pickle and JSON layouts (from simulated Hawkes data)."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.readers import (
    MAX_REPORTED,
    ReadError,
    read_easytpp,
    write_easytpp_json,
    write_easytpp_pickle,
)
from connectors.sources import EventSequence, drifting_hawkes, log_likelihood

N_TYPES = 3
Writer = Callable[[Path, list[EventSequence]], Path]


def pickle_file(path: Path, sequences: list[EventSequence]) -> Path:
    return write_easytpp_pickle(path.with_suffix(".pkl"), sequences, N_TYPES, split="train")


def json_file(path: Path, sequences: list[EventSequence]) -> Path:
    return write_easytpp_json(path.with_suffix(".json"), sequences, N_TYPES)


def json_lines_file(path: Path, sequences: list[EventSequence]) -> Path:
    return write_easytpp_json(path.with_suffix(".jsonl"), sequences, N_TYPES, lines=True)


def gzip_pickle_file(path: Path, sequences: list[EventSequence]) -> Path:
    plain = pickle_file(path, sequences)
    zipped = plain.with_name("train.pkl.gz")
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    return zipped


def unnamed_json_file(path: Path, sequences: list[EventSequence]) -> Path:
    """No telling suffix: the layout is recognised by the content."""
    return json_file(path, sequences).rename(path.with_name("sequences.data"))


def unnamed_pickle_file(path: Path, sequences: list[EventSequence]) -> Path:
    return pickle_file(path, sequences).rename(path.with_name("sequences.bin"))


WRITERS = [pickle_file, json_file, json_lines_file, gzip_pickle_file, unnamed_json_file, unnamed_pickle_file]


@pytest.fixture(scope="module")
def sequences() -> list[EventSequence]:
    """Simulated sequences, plus an empty one and one with ties (real logs have both)."""
    periods = drifting_hawkes(N_TYPES, n_periods=2, sequences_per_period=3, t_end=8.0, seed=3)
    tied = EventSequence(np.array([0.0, 0.25, 0.25, 2.0]), np.array([2, 0, 1, 1]), t_end=3.0)
    empty = EventSequence(np.array([]), np.array([], dtype=np.int64), t_end=1.0)
    return [seq for period in periods for seq in period.sequences] + [tied, empty]


def ending_at_last_event(seq: EventSequence) -> EventSequence:
    """What the formats keep of a sequence: the window ends at the last event (0 when empty)."""
    return EventSequence(seq.times, seq.types, float(seq.times[-1]) if len(seq) else 0.0)


@pytest.mark.parametrize("write", WRITERS, ids=lambda w: w.__name__)
def test_written_files_read_back_equal(tmp_path: Path, sequences: list[EventSequence], write: Writer) -> None:
    data = read_easytpp(write(tmp_path / "train", sequences))
    assert data.n_types == N_TYPES
    assert data.sequences == [ending_at_last_event(seq) for seq in sequences]
    assert (data.skipped, data.bad_sequences) == (0, [])


def test_the_true_likelihood_works_on_read_data(tmp_path: Path) -> None:
    period = drifting_hawkes(N_TYPES, n_periods=1, sequences_per_period=2, t_end=20.0, seed=9)[0]
    data = read_easytpp(json_file(tmp_path / "dev", period.sequences))
    for seq, read in zip(period.sequences, data.sequences, strict=True):
        assert log_likelihood(period.params, read) == log_likelihood(period.params, ending_at_last_event(seq))


def gatech_events(times: list[float], types: list[int]) -> list[dict[str, Any]]:
    """Events as the NHP/Gatech files hold them: numpy float32/int32 scalars and two extra keys."""
    events = []
    for index, (time, kind) in enumerate(zip(times, types, strict=True)):
        previous = times[index - 1] if index else 0.0
        events.append(
            {
                "idx_event": index + 1,
                "time_since_start": np.float32(time),
                "time_since_last_event": np.float32(time - previous),
                "time_since_last_same_event": np.float32(0.0),
                "type_event": np.int32(kind),
            }
        )
    return events


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_easytpps_own_pickles_with_numpy_scalars(tmp_path: Path, protocol: int) -> None:
    times = [1.0267814, 1.4297082, 1.4297082, 2.7, 1000.123]
    content = {
        "dim_process": 5,
        "args": None,
        "devtest": [],
        "train": [],
        "dev": [gatech_events(times, [3, 0, 4, 1, 2]), gatech_events([0.0, 0.5], [0, 0])],
        "test": [],
    }
    path = tmp_path / "dev.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    data = read_easytpp(path)
    assert data.n_types == 5 and len(data.sequences) == 2
    np.testing.assert_array_equal(data.sequences[0].times, np.array(times, dtype=np.float32).astype(np.float64))
    assert data.sequences[0].types.tolist() == [3, 0, 4, 1, 2]
    assert data.sequences[1].t_end == 0.5


def test_reads_pickles_made_with_numpy_before_2(tmp_path: Path) -> None:
    """numpy < 2 names its scalar reconstructor numpy.core.multiarray.scalar (protocol 2 spells it out)."""
    raw = pickle.dumps({"dim_process": 2, "test": [gatech_events([0.5], [1])]}, protocol=2)
    assert b"numpy._core.multiarray\nscalar" in raw
    path = tmp_path / "test.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    assert read_easytpp(path).sequences[0].types.tolist() == [1]


def test_reads_files_made_by_pandas_with_float_types(tmp_path: Path) -> None:
    """EasyTPP's earthquake script takes types from a float DataFrame row: 3.0 is type 3."""
    record = {"dim_process": 4, "time_since_start": [0.0, 1.0], "time_since_last_event": [0.0, 1.0]}
    path = tmp_path / "quakes.json"
    path.write_text(json.dumps([{**record, "type_event": [3.0, 1.0]}]))
    assert read_easytpp(path).sequences[0].types.tolist() == [3, 1]


def test_the_split_is_chosen_by_name_content_or_argument(tmp_path: Path, sequences: list[EventSequence]) -> None:
    path = write_easytpp_pickle(tmp_path / "taxi-small.pkl", sequences[:2], N_TYPES, split="test")
    assert len(read_easytpp(path).sequences) == 2  # the only split with sequences
    assert len(read_easytpp(path, "test").sequences) == 2
    with pytest.raises(ReadError, match=r"no split 'train' in the file; it has \['test'\]"):
        read_easytpp(path, "train")
    both = tmp_path / "both.pkl"
    both.write_bytes(pickle.dumps({"dim_process": 1, "train": [[]], "dev": [[]]}))
    with pytest.raises(ReadError, match=r"which split\? the file has \['dev', 'train'\]; pass split="):
        read_easytpp(both)
    named = both.rename(tmp_path / "dev.pkl")
    assert len(read_easytpp(named).sequences) == 1
    with pytest.raises(ValueError, match="a JSON file holds one split"):
        read_easytpp(json_file(tmp_path / "dev", sequences), split="dev")


def good_record(index: int = 0) -> dict[str, Any]:
    return {
        "dim_process": N_TYPES,
        "seq_len": 3,
        "seq_idx": index,
        "time_since_start": [0.5, 1.0, 2.5],
        "time_since_last_event": [0.5, 0.5, 1.5],
        "type_event": [0, 2, 1],
    }


BAD_RECORDS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("decreasing", lambda r: r.update(time_since_start=[0.5, 2.5, 1.0]), "goes back at event 2 .1.0 after 2.5."),
    ("negative", lambda r: r.update(time_since_start=[-0.5, 1.0, 2.5]), r"time_since_start\[0\] is -0.5"),
    ("not a number", lambda r: r["time_since_start"].__setitem__(1, "1.0"), r"time_since_start\[1\] is '1.0'"),
    ("infinite", lambda r: r["time_since_last_event"].__setitem__(1, math.inf), "not a finite number"),
    ("delta", lambda r: r.update(time_since_last_event=[0.5, 0.5, 1.0]), r"time_since_last_event\[2\] is 1.0 but"),
    ("first delta", lambda r: r["time_since_last_event"].__setitem__(0, -1.0), r"time_since_last_event\[0\] is -1"),
    ("type too big", lambda r: r.update(type_event=[0, 3, 1]), r"type_event\[1\] is 3; types must be .* in 0..2"),
    ("negative type", lambda r: r.update(type_event=[0, 1, -1]), r"type_event\[2\] is -1"),
    ("fractional type", lambda r: r.update(type_event=[0.5, 1, 1]), r"type_event\[0\] is 0.5"),
    ("boolean type", lambda r: r.update(type_event=[True, 1, 1]), r"type_event\[0\] is True"),
    ("seq_len", lambda r: r.update(seq_len=4), "seq_len is 4 but the sequence has 3 events"),
    ("lengths", lambda r: r.update(type_event=[0, 1]), "have 3, 3 and 2 values; they must be equally long"),
    ("dim_process", lambda r: r.update(dim_process=4), "dim_process is 4, but the file's is 3"),
    ("missing key", lambda r: r.pop("type_event"), r"has no \['type_event'\]"),
    ("not a list", lambda r: r.update(type_event=1), "must be JSON arrays"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in BAD_RECORDS], ids=[i for i, _, _ in BAD_RECORDS])
@pytest.mark.parametrize("lines", [False, True], ids=["array", "lines"])
def test_each_bad_sequence_is_named_or_skipped(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str, lines: bool
) -> None:
    records = [good_record(index) for index in range(4)]
    change(records[2])
    path = tmp_path / ("dev.jsonl" if lines else "dev.json")
    path.write_text("\n".join(map(json.dumps, records)) if lines else json.dumps(records))
    where = f"{path}:3" if lines else str(path)
    with pytest.raises(ReadError, match=f"^{re.escape(where)}: sequence 2: .*{message}.*pass on_error='skip'"):
        read_easytpp(path)
    data = read_easytpp(path, on_error="skip")
    assert len(data.sequences) == 3 and data.skipped == 1
    (bad,) = data.bad_sequences
    assert (bad.index, bad.line) == (2, 3 if lines else None)
    assert str(bad).startswith(f"{where}: sequence 2: ")


def test_bad_records_in_other_shapes(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(good_record()) + "\n\n{not json\n[1, 2]\n" + json.dumps(good_record(3)) + "\n")
    data = read_easytpp(path, on_error="skip")
    assert len(data.sequences) == 2
    assert [(b.index, b.line) for b in data.bad_sequences] == [(1, 3), (2, 4)]
    assert "not valid JSON" in data.bad_sequences[0].message
    assert "expected a JSON object" in data.bad_sequences[1].message


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        ({"time_since_start": 1.0}, r"is a dict, expected a list of event dicts"),
        ([{"time_since_start": 1.0, "type_event": 0}], r"event 0 is .* expected a dict with \['time_since_start'"),
        ([[1.0, 1.0, 0]], "event 0 is .* expected a dict"),
        (gatech_events([1.0, 0.5], [0, 0]), "goes back at event 1"),
    ],
)
def test_bad_pickled_sequences_are_named_or_skipped(tmp_path: Path, sequence: object, message: str) -> None:
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 2, "train": [gatech_events([0.5], [1]), sequence]}))
    with pytest.raises(ReadError, match=f"^{re.escape(str(path))}: sequence 1: .*{message}"):
        read_easytpp(path)
    data = read_easytpp(path, on_error="skip")
    assert len(data.sequences) == 1 and data.skipped == 1 and data.bad_sequences[0].index == 1


def test_skipping_counts_all_but_keeps_the_first_few(tmp_path: Path) -> None:
    bad = {**good_record(), "type_event": [0, 9, 0]}
    path = tmp_path / "many.json"
    path.write_text(json.dumps([good_record()] + [bad] * (MAX_REPORTED + 5)))
    data = read_easytpp(path, on_error="skip")
    assert len(data.sequences) == 1 and data.skipped == MAX_REPORTED + 5
    assert [b.index for b in data.bad_sequences] == list(range(1, MAX_REPORTED + 1))


def test_float32_rounding_is_within_the_tolerance_and_the_check_can_be_turned_off(tmp_path: Path) -> None:
    record = {**good_record(), "time_since_start": [500.1, 600.3, 700.7], "time_since_last_event": [500.1, 100.2, 1]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(ReadError, match=r"time_since_last_event\[2\] is 1.0 but .* from 600.3 to 700.7"):
        read_easytpp(path)
    assert len(read_easytpp(path, tolerance=math.inf).sequences) == 1
    record["time_since_last_event"][2] = float(np.float32(700.7) - np.float32(600.3))
    path.write_text(json.dumps([record]))
    assert len(read_easytpp(path).sequences) == 1


def test_a_pickle_may_not_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 1, "train": [Payload()]}))
    with pytest.raises(ReadError, match=r"refusing to unpickle builtins.exec: .* can run code"):
        read_easytpp(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.pkl", b"not a pickle", "not a readable pickle"),
        ("train.pkl", pickle.dumps([1, 2]), "not an EasyTPP pickle: expected a dict with 'dim_process', found list"),
        ("train.pkl", pickle.dumps({"train": []}), r"found keys \['train'\]"),
        ("train.pkl", pickle.dumps({"dim_process": 0, "train": []}), "dim_process is 0; it must be an integer >= 1"),
        ("train.pkl", pickle.dumps({"dim_process": "3", "train": []}), "dim_process is '3'"),
        ("dev.json", b'[{"dim_process": 2,\n  "type_event": [0]', r"^\S*dev.json:2: not valid JSON"),
        ("dev.json", b"[]", "no sequence record with dim_process"),
        ("dev.json", b"\xff\xfe[]", "not valid UTF-8"),
        ("dev.json", json.dumps([{**good_record(), "dim_process": -1}]).encode(), "dim_process is -1"),
        ("dev.data", b"dim_process,train\n", "neither a pickle nor JSON .* pass format="),
    ],
)
def test_broken_files_are_refused(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReadError, match=message):
        read_easytpp(path, on_error="skip")


def test_bad_arguments_are_refused(tmp_path: Path, sequences: list[EventSequence]) -> None:
    with pytest.raises(ReadError, match="cannot read"):
        read_easytpp(tmp_path / "missing.pkl")
    path = json_file(tmp_path / "dev", sequences)
    assert len(read_easytpp(path.rename(tmp_path / "dev.txt"), format="json").sequences) == len(sequences)
    with pytest.raises(ValueError, match="format must be 'pickle', 'json' or None"):
        read_easytpp(tmp_path / "dev.txt", format="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        read_easytpp(tmp_path / "dev.txt", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        read_easytpp(tmp_path / "dev.txt", tolerance=-1.0)
    with pytest.raises(ValueError, match="sequence 0 has event type 2, but n_types is 2"):
        write_easytpp_json(tmp_path / "x.json", sequences, n_types=2)
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ValueError, match="n_types must be >= 1"):
        write_easytpp_pickle(tmp_path / "x.pkl", sequences, n_types=0)
    with pytest.raises(ValueError, match="split must name the split"):
        write_easytpp_pickle(tmp_path / "x.pkl", sequences, N_TYPES, split="dim_process")
