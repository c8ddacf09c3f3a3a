"""Record and replay against the embedded broker: order, partitions, pacing, filters, dedupe, bad files, Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.bus import BusError, KafkaBus
from connectors.embedded import ServiceProcess
from connectors.recording import BadLineError, RecordedMessage, read_recording, write_recording
from connectors.replay import (
    DEDUPE_HEADER,
    ReplayDeduper,
    parse_topic_map,
    plan_replay,
    record_topics,
    replay_plan,
)
from pipelines.cli import main

EDDY = str(Path(sys.executable).parent / "eddy")
Topics = Callable[..., str]


def by_partition(records: list) -> dict[int, list[tuple[bytes | None, bytes]]]:
    grouped: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped[record.partition].append((record.key, record.value))
    return dict(grouped)


def spaced(topic: str, n: int, gap_ms: int, partitions: int = 1) -> list[RecordedMessage]:
    """``n`` recorded messages ``gap_ms`` apart, round-robin over partitions, keyed by partition."""
    return [
        RecordedMessage(topic, i % partitions, i // partitions, 1_000_000 + i * gap_ms, f"k{i % partitions}".encode(),
                        json.dumps({"i": i}).encode())
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def cli_env(eddy_broker: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI pointed at the test broker."""
    values = {"EDDY_BROKER": eddy_broker.url, "EDDY_HOME": str(tmp_path / "home")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


def test_record_then_replay_keeps_partitions_order_keys_and_headers(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    src, dst = eddy_topic_factory("src", partitions=3), eddy_topic_factory("dst", partitions=3)
    producer = eddy_bus.producer()
    for i in range(90):
        producer.send(
            src, key=f"user-{i % 7}".encode(), value=json.dumps({"i": i}).encode(), headers=[("n", b"%d" % i)]
        )
    producer.flush()
    summary = record_topics(eddy_bus, [src], tmp_path / "src.jsonl.gz", until_ms=None, limit=90)
    assert summary.written == 90 and summary.per_topic == {src: 90}

    plan = plan_replay([tmp_path / "src.jsonl.gz"], topic_map={src: dst})
    result = replay_plan(eddy_bus, plan, speed=None)
    assert result.complete and result.produced == 90 and result.per_topic == {dst: 90}

    original, replayed = eddy_bus.read(src, 90), eddy_bus.read(dst, 90)
    assert by_partition(replayed) == by_partition(original)
    assert {r.partition for r in replayed if r.key == b"user-3"} == {
        r.partition for r in original if r.key == b"user-3"
    }
    assert sorted(r.headers for r in replayed) == sorted(r.headers for r in original)


def test_binary_frames_round_trip_byte_for_byte_through_record_and_replay(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    src, dst = eddy_topic_factory("frames"), eddy_topic_factory("frames-copy")
    frames = [bytes((i * 7 + j) % 256 for j in range(4096)) for i in range(5)]
    eddy_bus.produce(src, frames, keys=[b"\xffcam" for _ in frames])
    record_topics(eddy_bus, [src], tmp_path / "frames.jsonl.zst", limit=5)
    replay_plan(eddy_bus, plan_replay([tmp_path / "frames.jsonl.zst"], topic_map={src: dst}), speed=None)
    assert [(r.key, r.value) for r in eddy_bus.read(dst, 5)] == [(b"\xffcam", f) for f in frames]


def test_replay_paces_sends_by_recorded_timestamps(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    topic = eddy_topic_factory("paced")
    write_recording(tmp_path / "paced.jsonl", spaced(topic, 5, gap_ms=100))
    summary = replay_plan(eddy_bus, plan_replay([tmp_path / "paced.jsonl"]), speed=4.0)
    # 400 ms of recorded time at 4x is 100 ms of sending: a replay cannot be faster than its schedule
    assert summary.complete and summary.elapsed_s >= 0.1 and len(summary.lateness_ms) == 5


def test_partition_order_survives_timestamps_that_go_backwards(tmp_path: Path) -> None:
    messages = [
        RecordedMessage("t", 0, 0, 1_000, None, b"a"),
        RecordedMessage("t", 0, 1, 900, None, b"b"),  # a producer clock that stepped back
        RecordedMessage("t", 1, 0, 950, None, b"c"),
        RecordedMessage("t", 0, 2, 1_100, None, b"d"),
    ]
    write_recording(tmp_path / "r.jsonl", messages)
    plan = plan_replay([tmp_path / "r.jsonl"])
    assert [p.message.payload for p in plan.messages] == [b"c", b"a", b"b", b"d"]
    assert [p.at_ms for p in plan.messages] == [0.0, 50.0, 50.0, 150.0]


def test_since_until_and_keys_select_messages(tmp_path: Path) -> None:
    write_recording(tmp_path / "r.jsonl", spaced("t", 10, gap_ms=10, partitions=2))
    plan = plan_replay([tmp_path / "r.jsonl"], since_ms=1_000_020, until_ms=1_000_060, keys=["k1"])
    assert [json.loads(p.message.payload or b"")["i"] for p in plan.messages] == [3, 5]
    assert plan.filtered == 8
    with pytest.raises(ValueError, match=r"--until .* is before --since"):
        plan_replay([tmp_path / "r.jsonl"], since_ms=5, until_ms=4)


def test_topic_map_syntax_errors_say_the_form() -> None:
    assert parse_topic_map(None) == {}
    with pytest.raises(ValueError, match="must look like 'old=new'"):
        parse_topic_map("live.clicks")
    with pytest.raises(BusError, match="invalid topic name"):
        parse_topic_map("a=b c")


def test_missing_or_too_small_target_topic_stops_before_producing(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    small = eddy_topic_factory("small", partitions=1)
    write_recording(tmp_path / "r.jsonl", spaced("live.clicks", 6, gap_ms=1, partitions=3))
    plan = plan_replay([tmp_path / "r.jsonl"])
    with pytest.raises(BusError, match=r"topic 'live.clicks' does not exist; create it with .*--partitions 3"):
        replay_plan(eddy_bus, plan)
    plan = plan_replay([tmp_path / "r.jsonl"], topic_map={"live.clicks": small})
    with pytest.raises(BusError, match="has 1 partitions but the recording holds partition 2"):
        replay_plan(eddy_bus, plan)
    assert eddy_bus.read(small, 1, timeout_s=0.5) == []


def test_dedupe_header_lets_a_consumer_drop_a_restarted_replay(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    topic = eddy_topic_factory("dedupe", partitions=2)
    write_recording(tmp_path / "r.jsonl", spaced(topic, 20, gap_ms=1, partitions=2))
    plan = plan_replay([tmp_path / "r.jsonl"])
    interrupted = dataclasses.replace(plan, messages=plan.messages[:7])  # what a Ctrl-C after 7 messages sent
    first = replay_plan(eddy_bus, interrupted, speed=None, dedupe=True)
    assert first.produced == 7
    assert replay_plan(eddy_bus, plan, speed=None, dedupe=True).complete  # started again from the top
    records = eddy_bus.read(topic, first.produced + 20)
    assert len(records) == first.produced + 20
    deduper = ReplayDeduper()
    kept = [r for r in sorted(records, key=lambda r: (r.partition, r.offset)) if not deduper.is_duplicate(r.headers)]
    assert sorted(json.loads(r.value)["i"] for r in kept) == list(range(20))
    assert all(dict(r.headers)[DEDUPE_HEADER].startswith(topic.encode()) for r in records)
    assert not ReplayDeduper().is_duplicate(None) and not ReplayDeduper().is_duplicate([("other", b"x")])


def test_cli_replay_stops_on_a_bad_line_before_producing_and_skip_bad_counts_it(
    cli_env: dict[str, str],
    eddy_bus: KafkaBus,
    eddy_topic_factory: Topics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = eddy_topic_factory("bad")
    path = tmp_path / "r.jsonl"
    lines = [m.to_json() for m in spaced(topic, 4, gap_ms=1)]
    path.write_text("\n".join([*lines[:3], '{"topic": "x"}', lines[3]]) + "\n")
    assert main(["replay", str(path), "--max-speed"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: missing field(s)" in err and "--skip-bad" in err
    assert eddy_bus.read(topic, 1, timeout_s=0.5) == []
    assert main(["replay", str(path), "--max-speed", "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "1 bad lines skipped" in err and "produced 4 of 4" in err
    assert len(eddy_bus.read(topic, 4)) == 4


def test_cli_record_flags_select_by_time_and_count(
    cli_env: dict[str, str], eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    topic = eddy_topic_factory("timed")
    producer = eddy_bus.producer()
    for i in range(10):
        producer.send(topic, value=b"%d" % i, timestamp_ms=1_000_000 + i)
    producer.flush()
    out = tmp_path / "window.jsonl"
    assert main(["record", topic, "--out", str(out), "--since", "1000003", "--until", "1000005"]) == 0
    assert [m.payload for m in read_recording(out)] == [b"3", b"4", b"5"]
    assert main(["record", topic, "--out", str(out), "--from-beginning", "--limit", "4"]) == 0
    assert [m.offset for m in read_recording(out)] == [0, 1, 2, 3]
    assert main(["record", topic, "--out", str(out), "--from-beginning", "--until", "now"]) == 0
    assert len(list(read_recording(out))) == 10
    assert main(["record", "no.such.topic", "--out", str(out), "--limit", "1"]) == 2


def test_record_by_default_takes_only_new_messages(
    eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    topic = eddy_topic_factory("live")
    eddy_bus.produce(topic, [b"old-1", b"old-2"])
    done: list[int] = []
    started = threading.Event()

    def record() -> None:
        summary = record_topics(eddy_bus, [topic], tmp_path / "new.jsonl", since_ms=_now_ms(), limit=2,
                                progress=lambda n: started.set())  # fmt: skip
        done.append(summary.written)

    thread = threading.Thread(target=record)
    thread.start()
    assert started.wait(30)
    eddy_bus.produce(topic, [b"new-1", b"new-2"])
    thread.join(30)
    assert done == [2] and [m.payload for m in read_recording(tmp_path / "new.jsonl")] == [b"new-1", b"new-2"]


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def test_ctrl_c_mid_replay_leaves_whole_messages_and_a_clear_summary(
    cli_env: dict[str, str], eddy_bus: KafkaBus, eddy_topic_factory: Topics, tmp_path: Path
) -> None:
    topic = eddy_topic_factory("interrupted")
    recorded = spaced(topic, 400, gap_ms=25)  # 10 s at speed 1
    write_recording(tmp_path / "r.jsonl.gz", recorded)
    process = subprocess.Popen(
        [EDDY, "replay", str(tmp_path / "r.jsonl.gz")], env=cli_env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert len(eddy_bus.read(topic, 20, timeout_s=30)) == 20  # it is producing
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    summary = " ".join(err.split())
    produced = int(summary.split("replay interrupted: produced ")[1].split(" of 400")[0])
    assert 20 <= produced < 400 and "--dedupe" in summary
    records = eddy_bus.read(topic, 400, timeout_s=2)
    assert [r.value for r in records] == [m.payload for m in recorded[:produced]]


def test_cli_replay_missing_file_and_bad_suffix_are_user_errors(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["replay", str(tmp_path / "wrong.csv")]) == 2
    with pytest.raises(BadLineError):
        plan_replay([_write(tmp_path / "x.jsonl", "nope\n")])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cli_replay_flags_map_filter_and_pace(
    cli_env: dict[str, str],
    eddy_bus: KafkaBus,
    eddy_topic_factory: Topics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = eddy_topic_factory("mapped", partitions=2)
    write_recording(tmp_path / "r.jsonl.zst", spaced("live.clicks", 12, gap_ms=10, partitions=2))
    args = ["replay", str(tmp_path / "r.jsonl.zst"), "--topic-map", f"live.clicks={target}", "--speed", "20"]
    assert main([*args, "--keys", "k0", "--since", "1000020", "--until", "1000080"]) == 0
    assert "produced 4 of 4" in capsys.readouterr().err  # i = 2, 4, 6, 8
    records = eddy_bus.read(target, 4)
    assert sorted(json.loads(r.value)["i"] for r in records) == [2, 4, 6, 8] and {r.partition for r in records} == {0}
