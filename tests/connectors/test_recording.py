"""Recording files: the kcat envelope, binary round trips, compression, and every kind of bad file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from connectors.recording import (
    SUFFIXES,
    BadLine,
    BadLineError,
    RecordedMessage,
    RecordingError,
    parse_time,
    read_recording,
    write_recording,
)

FRAME = bytes(range(256)) * 3  # every byte value, as a binary frame would carry


def messages() -> list[RecordedMessage]:
    return [
        RecordedMessage("live.clicks", 0, 0, 1_000, b"u1", b'{"user":"u1","caf\xc3\xa9":1}', (("trace", b"abc"),)),
        RecordedMessage("live.clicks", 1, 0, 1_005, None, None),
        RecordedMessage("cam.frames", 0, 7, 1_010, b"\xff\x00key", FRAME, (("bin", b"\xfe\xff"), ("empty", None))),
        RecordedMessage("live.clicks", 0, 1, 1_020, b"u2", b"", (), "logappend"),
    ]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_is_byte_exact_for_every_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    assert write_recording(path, messages()) == 4
    assert list(read_recording(path)) == messages()


def test_lines_use_kcat_field_names_and_base64_only_for_binary(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, messages())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(lines[0]) == ["topic", "partition", "offset", "tstype", "ts", "broker", "headers", "key", "payload"]
    assert lines[0]["payload"] == '{"user":"u1","café":1}' and lines[0]["headers"] == ["trace", "abc"]
    assert lines[1]["key"] is None and lines[1]["payload"] is None and "payload_b64" not in lines[1]
    binary = lines[2]
    assert binary["payload"] is None and binary["key"] is None
    assert binary["payload_b64"] and binary["key_b64"] and binary["headers_b64"][2:] == ["empty", None]
    assert lines[3]["tstype"] == "logappend"


def test_reads_what_kcat_writes_including_raw_binary_and_json_payloads(tmp_path: Path) -> None:
    """kcat -J writes binary payloads as raw bytes inside the JSON string, and -s value=json writes JSON values."""
    path = tmp_path / "kcat.jsonl"
    text = (
        b'{"topic":"t","partition":2,"offset":5,"tstype":"create","ts":1700000000000,"broker":1,'
        b'"headers":["h1","v1","h2",null],"key":"k","payload":"\xff\xferaw"}\n'
        b'{"topic":"t","partition":0,"offset":6,"tstype":"create","ts":1700000000001,"broker":1,'
        b'"key":null,"payload":{"a":[1,2]}}\n'
    )
    path.write_bytes(text)
    first, second = read_recording(path)
    assert first.partition == 2 and first.payload == b"\xff\xferaw" and first.headers == (("h1", b"v1"), ("h2", None))
    assert second.payload == b'{"a":[1,2]}' and second.key is None and second.headers == ()


def test_several_gzip_members_and_zstd_frames_are_one_recording(tmp_path: Path) -> None:
    first, second = (m.to_json().encode() + b"\n" for m in messages()[:2])
    gz = tmp_path / "cat.jsonl.gz"
    gz.write_bytes(gzip.compress(first) + gzip.compress(second))
    zst = tmp_path / "cat.jsonl.zst"
    zst.write_bytes(zstandard.compress(first) + zstandard.compress(second))
    assert list(read_recording(gz)) == list(read_recording(zst)) == messages()[:2]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_is_reported_after_its_last_complete_line(tmp_path: Path, suffix: str) -> None:
    many = [
        RecordedMessage("t", 0, i, i, None, json.dumps({"i": i, "pad": "x" * (i % 40)}).encode()) for i in range(3000)
    ]
    whole = tmp_path / f"whole{suffix}"
    write_recording(whole, many)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadLineError, match="truncated or corrupt") as exc:
        list(read_recording(cut))
    assert "--skip-bad" in str(exc.value)
    bad: list[BadLine] = []
    kept = list(read_recording(cut, bad))
    assert 0 < len(kept) < len(many) and kept == many[: len(kept)]
    assert len(bad) == 1 and bad[0].line == len(kept) + 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("this is not json", "not JSON"),
        ('{"topic": "t", "partition": 0, "ts": 1}', r"missing field\(s\) offset"),
        ('{"topic": "t", "partition": -1, "offset": 0, "ts": 1}', "'partition' must be an integer >= 0"),
        ('{"topic": "", "partition": 0, "offset": 0, "ts": 1}', "'topic' must be a non-empty string"),
        ('{"topic": "t", "partition": 0, "offset": 0, "ts": 1, "payload_b64": "%%%"}', "not valid base64"),
        ('{"topic": "t", "partition": 0, "offset": 0, "ts": 1, "headers": ["odd"]}', "flat \\[name, value"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    good = messages()[0].to_json()
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(BadLineError, match=reason) as exc:
        list(read_recording(path))
    assert exc.value.bad.line == 3 and str(path) in str(exc.value)
    bad: list[BadLine] = []
    assert len(list(read_recording(path, bad))) == 2 and [b.line for b in bad] == [3]


def test_unusable_paths_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"must end in \.jsonl"):
        write_recording(tmp_path / "rec.json", [])
    with pytest.raises(RecordingError, match="does not exist"):
        list(read_recording(tmp_path / "missing.jsonl"))


def test_parse_time_accepts_every_documented_form() -> None:
    now = 1_795_514_400_000
    assert parse_time("now", now) == now
    assert parse_time("-10m", now) == now - 600_000
    assert parse_time("+250ms", now) == now + 250
    assert parse_time("2026-11-24T10:00:00+01:00") == now - 3_600_000
    assert parse_time("2026-11-24T10:00:00") == now
    with pytest.raises(ValueError, match="cannot read time 'yesterday'"):
        parse_time("yesterday")
