"""The KuaiLive reader, on files the simulator writes in KuaiLive's format: round trips through a folder and a
zip, the dataset's other spellings, and every kind of bad row reported with its file and line."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from connectors.readers import MAX_REPORTED, ReadError, read_kuailive
from connectors.sources import (
    KuaiLiveLogs,
    LivePlatform,
    LivePlatformConfig,
    LivePlatformLog,
    Threshold,
    write_kuailive,
)

Edit = Callable[[list[str]], list[str]]


@pytest.fixture(scope="module")
def log() -> LivePlatformLog:
    run = LivePlatform(LivePlatformConfig(users=40, streamers=8, hours=8.0), seed=5).run(Threshold(0.15))
    assert all(len(run.kuailive.tables[name]) >= 3 for name in ("click", "comment", "like", "gift", "negative"))
    return run


@pytest.fixture
def folder(log: LivePlatformLog, tmp_path: Path) -> Path:
    return write_kuailive(log.kuailive, tmp_path / "KuaiLive")


def edit(folder: Path, name: str, change: Edit) -> None:
    path = folder / name
    path.write_text("".join(line + "\n" for line in change(path.read_text().splitlines())))


def rename_column(old: str, new: str) -> Edit:
    return lambda lines: [lines[0].replace(old, new), *lines[1:]]


# -- round trips -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["KuaiLive", "KuaiLive.zip"])
def test_what_the_simulator_writes_reads_back_the_same(log: LivePlatformLog, tmp_path: Path, target: str) -> None:
    written = write_kuailive(log.kuailive, tmp_path / target)
    data = read_kuailive(written, strict=True)
    assert data.skipped == 0 and data.bad_rows == []
    assert data.logs == log.kuailive
    assert data.logs.title_embeddings is not None and data.logs.title_embeddings.shape == (
        len(log.kuailive.tables["room"]),
        128,
    )
    assert list(data.messages()) == list(log.messages())


def test_the_files_are_kuailives(folder: Path) -> None:
    assert sorted(path.name for path in folder.iterdir()) == [
        "click.csv",
        "comment.csv",
        "gift.csv",
        "like.csv",
        "negative.csv",
        "room.csv",
        "streamer.csv",
        "title_embeddings.npy",
        "user.csv",
    ]
    lines = (folder / "click.csv").read_text().splitlines()
    assert lines[0] == "user_id,live_id,streamer_id,timestamp,watch_live_time"
    assert (
        (folder / "room.csv")
        .read_text()
        .startswith(
            "p_date,live_id,streamer_id,live_type,start_timestamp,end_timestamp,live_content_category,live_name_id\n2025050"
        )
    )
    user_header = (folder / "user.csv").read_text().splitlines()[0].split(",")
    assert (
        user_header[:3] == ["user_id", "age", "gender"] and user_header[-1] == "onehot_feat6" and len(user_header) == 21
    )
    assert len((folder / "streamer.csv").read_text().splitlines()[0].split(",")) == 23


def test_the_datasets_other_spellings_read_the_same(log: LivePlatformLog, folder: Path) -> None:
    for name in ("click.csv", "gift.csv", "room.csv", "streamer.csv"):
        edit(folder, name, rename_column("streamer_id", "author_id"))
    edit(folder, "user.csv", rename_column("is_live_streamer", "is_live_author"))
    (folder / "streamer.csv").rename(folder / "author.csv")
    (folder / "room.csv").rename(folder / "mapped_room.csv")
    assert read_kuailive(folder, strict=True).logs == log.kuailive


def test_columns_in_another_order_extra_columns_and_blank_lines_are_fine(log: LivePlatformLog, folder: Path) -> None:
    def shuffle(lines: list[str]) -> list[str]:
        rows = [line.split(",") for line in lines]
        return [",".join([row[3], row[0], "extra", *row[1:3], row[4]]) for row in rows] + ["", " , , , , , "]

    edit(folder, "click.csv", shuffle)
    edit(folder, "like.csv", lambda lines: [*lines[:2], "", *lines[2:]])
    edit(folder, "gift.csv", lambda lines: [lines[0], *(line + ".0" for line in lines[1:])])  # 5.0: an integer
    assert read_kuailive(folder, strict=True).logs == log.kuailive


def test_a_zip_with_a_top_folder_reads(log: LivePlatformLog, folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in folder.iterdir():
            zipped.write(path, f"KuaiLive/{path.name}")
    assert read_kuailive(archive).logs == log.kuailive


def test_title_embeddings_are_optional_and_an_npz_reads(log: LivePlatformLog, folder: Path) -> None:
    titles = np.load(folder / "title_embeddings.npy")
    (folder / "title_embeddings.npy").unlink()
    assert read_kuailive(folder).logs.title_embeddings is None
    np.savez(folder / "title_embeddings.pca128.npz", titles)
    assert read_kuailive(folder).logs == log.kuailive


# -- bad rows --------------------------------------------------------------------------------------------------------

ROW = 3
"""The data row the bad-row cases break: line 4 of its file (line 1 is the header)."""


def change_row(name: str, change: Callable[[list[str]], list[str]]) -> tuple[str, Edit]:
    def apply(lines: list[str]) -> list[str]:
        lines = list(lines)
        lines[ROW] = ",".join(change(lines[ROW].split(",")))
        return lines

    return name, apply


def put(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda fields: [*fields[:index], value, *fields[index + 1 :]]


BAD_ROWS: dict[str, tuple[tuple[str, Edit], str]] = {
    "truncated": (change_row("click.csv", lambda fields: fields[:3]), "expected 5 fields, found 3"),
    "text-timestamp": (change_row("comment.csv", put(3, "noon")), "timestamp is 'noon', not an integer"),
    "unknown-live-id": (change_row("like.csv", put(1, "987654")), "live_id 987654 is not in room.csv"),
    "wrong-streamer": (change_row("negative.csv", put(2, "987")), "streamer_id is 987 but room"),
    "negative-watch": (change_row("click.csv", put(4, "-5")), "watch_live_time is -5; it must be >= 0"),
    "fraction-price": (change_row("gift.csv", put(4, "2.5")), "gift_price is '2.5', not an integer"),
    "flag": (change_row("user.csv", put(12, "2")), "is_live_streamer is '2'; it must be 0 or 1"),
    "repeated-user": (change_row("user.csv", put(0, "0")), "user_id 0 repeats an earlier row's"),
    "room-ends-first": (change_row("room.csv", put(5, "1")), "end_timestamp 1 is before start_timestamp"),
    "quoting": (change_row("streamer.csv", put(1, '"M"x')), "bad CSV quoting"),
}


@pytest.mark.parametrize(("case", "message"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_a_bad_row_is_skipped_and_reported_with_file_and_line(
    log: LivePlatformLog, folder: Path, case: tuple[str, Edit], message: str
) -> None:
    name, change = case
    edit(folder, name, change)
    data = read_kuailive(folder)
    assert data.skipped >= 1
    first = data.bad_rows[0]
    assert (Path(first.source).name, first.line) == (name, ROW + 1)
    assert message in first.message
    assert str(first).endswith(f"{name}:{ROW + 1}: {first.message}")
    table = name.removesuffix(".csv")
    assert len(data.logs.tables[table]) == len(log.kuailive.tables[table]) - 1


@pytest.mark.parametrize(("case", "message"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_strict_stops_at_the_first_bad_row(folder: Path, case: tuple[str, Edit], message: str) -> None:
    name, change = case
    edit(folder, name, change)
    with pytest.raises(ReadError, match=rf"{name}:{ROW + 1}: .*read with strict=False to skip bad rows") as info:
        read_kuailive(folder, strict=True)
    assert message in str(info.value) and info.value.line == ROW + 1


def test_a_bad_room_takes_its_interactions_with_it(log: LivePlatformLog, folder: Path) -> None:
    clicks = log.kuailive.tables["click"]
    live_id = int(clicks["live_id"][0])
    rooms = (folder / "room.csv").read_text().splitlines()
    line = next(index for index, row in enumerate(rooms) if index and row.split(",")[1] == str(live_id))
    edit(folder, "room.csv", lambda lines: [*lines[:line], lines[line].replace(",", ",x", 1), *lines[line + 1 :]])
    data = read_kuailive(folder)
    orphans = sum(
        int(np.sum(log.kuailive.tables[name]["live_id"] == live_id))
        for name in ("click", "comment", "like", "gift", "negative")
    )
    assert data.skipped == 1 + orphans and orphans >= 1
    assert all(f"live_id {live_id} is not in room.csv" in bad.message for bad in data.bad_rows[1:])


def test_many_bad_rows_are_all_counted_and_the_first_few_kept(folder: Path, log: LivePlatformLog) -> None:
    edit(folder, "negative.csv", lambda lines: [lines[0], *(line + ",1" for line in lines[1:])])
    data = read_kuailive(folder)
    assert data.skipped == len(log.kuailive.tables["negative"]) > MAX_REPORTED
    assert len(data.bad_rows) == MAX_REPORTED
    assert [bad.line for bad in data.bad_rows] == list(range(2, MAX_REPORTED + 2))


# -- broken files: always an error -----------------------------------------------------------------------------------


def test_a_missing_column_is_an_error_even_when_skipping(folder: Path) -> None:
    edit(folder, "click.csv", lambda lines: [",".join(line.split(",")[:3] + line.split(",")[4:]) for line in lines])
    for strict in (False, True):
        with pytest.raises(ReadError, match=r"click.csv:1: the header missing the column\(s\) \['timestamp'\]"):
            read_kuailive(folder, strict=strict)


def test_a_missing_file_or_a_wrong_path_is_an_error(folder: Path, tmp_path: Path) -> None:
    (folder / "gift.csv").unlink()
    with pytest.raises(ReadError, match=r"no gift.csv among \['click.csv'"):
        read_kuailive(folder)
    with pytest.raises(ReadError, match=r"does not exist; pass the folder of KuaiLive's CSV files or a \.zip"):
        read_kuailive(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ReadError, match="is neither a folder nor a zip"):
        read_kuailive(tmp_path / "notes.txt")


def test_title_embeddings_of_the_wrong_shape_are_an_error(folder: Path) -> None:
    np.save(folder / "title_embeddings.npy", np.zeros((3, 64), dtype=np.float32))
    with pytest.raises(ReadError, match=r"title_embeddings.npy: expected \(titles, 128\) floats, found \(3, 64\)"):
        read_kuailive(folder)


def test_logs_hold_every_file_and_embeddings_of_128_columns(log: LivePlatformLog) -> None:
    tables = dict(log.kuailive.tables)
    del tables["like"]
    with pytest.raises(ValueError, match="KuaiLive logs hold the files"):
        KuaiLiveLogs(tables)
    with pytest.raises(ValueError, match=r"title_embeddings must be \(titles, 128\)"):
        KuaiLiveLogs(log.kuailive.tables, np.zeros((2, 3), dtype=np.float32))
