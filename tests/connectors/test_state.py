"""The Redis state store against a real redis-server: round trips, atomic checkpoints, Redis going away."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from connectors.embedded import ServiceProcess
from connectors.state import Checkpoint, StateStore, StateUnavailableError, offset_key, parse_offset_key

# -- per-key state ---------------------------------------------------------------------------------------------------


def test_put_get_delete_round_trip(eddy_state: StateStore) -> None:
    assert eddy_state.get("users", "u1") is None
    eddy_state.put("users", "u1", b"\x00\xffstate")
    assert eddy_state.get("users", "u1") == b"\x00\xffstate"
    eddy_state.put("users", "u1", b"newer")
    assert eddy_state.get("users", "u1") == b"newer"
    eddy_state.delete("users", "u1")
    eddy_state.delete("users", "u1")  # deleting a missing key is fine
    assert eddy_state.get("users", "u1") is None


def test_get_many_put_many_and_keys(eddy_state: StateStore) -> None:
    items = {f"room:{i}": bytes([i]) * i for i in range(50)} | {"glob*[?]": b"literal"}
    eddy_state.put_many("rooms", items)
    eddy_state.put_many("rooms", {})
    assert eddy_state.get_many("rooms", [*items, "missing"]) == {**items, "missing": None}
    assert eddy_state.get_many("rooms", []) == {}
    assert eddy_state.keys("rooms") == sorted(items)
    assert eddy_state.keys("other") == []


def test_namespaces_are_separate(eddy_state: StateStore) -> None:
    eddy_state.put("a", "k", b"in a")
    eddy_state.put("ab", "k", b"in ab")
    assert eddy_state.get("a", "k") == b"in a"
    assert eddy_state.keys("a") == ["k"]
    assert StateStore.kv_key("a", "k:1") == "eddy:a:kv:k:1"


# -- checkpoints -----------------------------------------------------------------------------------------------------


def _checkpoint(n: int, pipeline: str = "live-ctr", writer: str = "w") -> Checkpoint:
    return Checkpoint(
        pipeline=pipeline,
        state=f"state-{n}".encode(),
        offsets={offset_key("live.interactions", 0): n, offset_key("live.interactions", 1): 2 * n},
        events=n,
        created_at=1000.0 + n,
        meta={"writer": writer, "n": str(n)},
    )


def test_checkpoint_round_trip_keeps_previous(eddy_state: StateStore) -> None:
    assert eddy_state.read_checkpoint("live-ctr") is None
    first, second = _checkpoint(1), _checkpoint(2)
    eddy_state.write_checkpoint(first)
    assert eddy_state.read_checkpoint("live-ctr") == first
    assert eddy_state.read_checkpoint("live-ctr", previous=True) is None
    eddy_state.write_checkpoint(second)
    assert eddy_state.read_checkpoint("live-ctr") == second
    assert eddy_state.read_checkpoint("live-ctr", previous=True) == first
    assert eddy_state.read_checkpoint("other") is None
    eddy_state.delete_checkpoint("live-ctr")
    assert eddy_state.read_checkpoint("live-ctr") is None
    assert eddy_state.read_checkpoint("live-ctr", previous=True) is None
    assert eddy_state.read_offsets("live-ctr") == {}


def test_offsets_merge_across_the_checkpoints_of_workers_that_share_a_pipeline(eddy_state: StateStore) -> None:
    """Each worker's checkpoint covers its own partitions; the offsets hash holds every partition's progress."""

    def covering(partitions: dict[int, int], writer: str) -> Checkpoint:
        offsets = {offset_key("live.interactions", p): o for p, o in partitions.items()}
        return Checkpoint(pipeline="live-ctr", state=writer.encode(), offsets=offsets, events=0, created_at=1.0)

    eddy_state.write_checkpoint(covering({0: 10, 1: 11, 2: 12}, "a"))
    eddy_state.write_checkpoint(covering({3: 30, 4: 31}, "b"))
    eddy_state.write_checkpoint(covering({0: 15, 1: 16}, "a"))  # a kept 0 and 1; 2 went to b and is b's now
    eddy_state.write_checkpoint(covering({2: 20, 3: 33, 4: 34}, "b"))
    assert eddy_state.read_offsets("live-ctr") == {
        f"live.interactions:{p}": o for p, o in enumerate([15, 16, 20, 33, 34])
    }
    checkpoint = eddy_state.read_checkpoint("live-ctr")
    assert checkpoint is not None and checkpoint.state == b"b"  # the newest operator state, whoever wrote it
    assert eddy_state.read_offsets("other") == {}
    eddy_state.delete_checkpoint("live-ctr")
    assert eddy_state.read_offsets("live-ctr") == {}


def test_checkpoint_writes_per_key_entries_in_its_transaction(eddy_state: StateStore) -> None:
    eddy_state.write_checkpoint(_checkpoint(1), {"user-1": b"a", "user-2": b"b"})
    assert eddy_state.get_many("live-ctr", ["user-1", "user-2", "user-3"]) == {
        "user-1": b"a",
        "user-2": b"b",
        "user-3": None,
    }
    eddy_state.write_checkpoint(_checkpoint(2), {"user-1": b"c"})
    assert eddy_state.get("live-ctr", "user-1") == b"c" and eddy_state.get("live-ctr", "user-2") == b"b"
    with pytest.raises(ValueError, match="bytes"):
        eddy_state.write_checkpoint(_checkpoint(3), {"user-1": "not bytes"})  # type: ignore[dict-item]
    checkpoint = eddy_state.read_checkpoint("live-ctr")
    assert checkpoint is not None and checkpoint.events == 2  # the refused write changed nothing


def test_checkpoint_write_is_atomic_under_concurrent_writers(eddy_state: StateStore) -> None:
    """Two writers and a reader: every checkpoint read has the offsets, events and meta of its own state."""
    writes_per_thread = 300
    stop = threading.Event()
    seen: list[Checkpoint] = []
    errors: list[BaseException] = []

    def write(writer: str, start: int) -> None:
        try:
            for n in range(start, start + writes_per_thread):
                eddy_state.write_checkpoint(_checkpoint(n, writer=writer))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                for previous in (False, True):
                    cp = eddy_state.read_checkpoint("live-ctr", previous=previous)
                    if cp is not None:
                        seen.append(cp)
        except BaseException as exc:
            errors.append(exc)

    eddy_state.write_checkpoint(_checkpoint(0))
    writers = [threading.Thread(target=write, args=(name, start)) for name, start in (("a", 1), ("b", 100_000))]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()

    assert not errors
    assert len(seen) > 10
    for cp in seen:
        n = cp.events
        assert cp == _checkpoint(n, writer=cp.meta["writer"]), cp
        assert cp.meta["writer"] == ("w" if n == 0 else "a" if n < 100_000 else "b")


def test_offset_keys_round_trip() -> None:
    for topic, partition in [("live.interactions", 0), ("rl.cart-pole.obs", 17), ("a_b-c.d", 123456)]:
        assert parse_offset_key(offset_key(topic, partition)) == (topic, partition)


# -- Redis going away ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_put_waits_for_a_stopped_server_and_lands(eddy_redis_factory: Callable[[], ServiceProcess], fault: str) -> None:
    server = eddy_redis_factory()
    waiting = threading.Event()
    attempts: list[int] = []

    def on_retry(exc: Exception, attempt: int) -> None:
        attempts.append(attempt)
        waiting.set()

    store = StateStore(server.url, on_retry=on_retry)
    store.put("users", "before", b"1")
    getattr(server, fault)()

    errors: list[BaseException] = []

    def put() -> None:
        try:
            store.put("users", "during", b"2")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=put)
    thread.start()
    assert waiting.wait(timeout=30), "put did not retry against the stopped server"
    assert thread.is_alive()
    server.restart()  # same port, same data directory
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert not errors
    assert store.get("users", "during") == b"2"
    assert store.get("users", "before") == b"1"  # appendonly: survived the stop or the SIGKILL
    assert store.retries > 0
    assert attempts == list(range(1, len(attempts) + 1))
    store.close()


def test_gives_up_after_retry_timeout(eddy_redis_factory: Callable[[], ServiceProcess]) -> None:
    server = eddy_redis_factory()
    store = StateStore(server.url, retry_timeout_s=0.3)
    server.stop()
    with pytest.raises(StateUnavailableError, match=r"127\.0\.0\.1:\d+/0 unreachable for"):
        store.get("users", "u1")
    assert store.retries > 0
    assert not store.ping()


def test_data_persists_across_server_restart(eddy_redis_factory: Callable[[], ServiceProcess]) -> None:
    server = eddy_redis_factory()
    store = StateStore(server.url)
    store.put_many("users", {"u1": b"one", "u2": b"two"})
    store.write_checkpoint(_checkpoint(7))
    server.restart()
    assert store.get_many("users", ["u1", "u2"]) == {"u1": b"one", "u2": b"two"}
    assert store.read_checkpoint("live-ctr") == _checkpoint(7)
    assert store.ping()
    store.close()


# -- bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.get("", "k"), "namespace must be a non-empty string"),
        (lambda s: s.get("a:b", "k"), "must not contain ':'"),
        (lambda s: s.put("ns", "", b"v"), "key must be a non-empty string"),
        (lambda s: s.put("ns", "k", "text"), "must be bytes \\(got str\\)"),
        (lambda s: s.put_many("ns", {"k": 1}), "must be bytes \\(got int\\)"),
        (lambda s: s.keys(""), "namespace must be a non-empty string"),
        (lambda s: s.read_checkpoint(""), "pipeline must be a non-empty string"),
        (lambda s: s.write_checkpoint({"pipeline": "p"}), "takes a Checkpoint"),
    ],
)
def test_bad_input_is_refused(eddy_state: StateStore, call: Callable[[StateStore], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(eddy_state)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty string"),
        ("embedded", "ensure_service"),
        ("http://localhost:6379/0", "must start with redis://"),
        ("redis://localhost:port/0", "port that is not a number"),
        ("redis://localhost:6379/zero", "database number"),
    ],
)
def test_bad_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StateStore(url)


def test_password_is_not_shown_in_errors() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*") as info:
        StateStore("http://user:s3cret@localhost:6379/0")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pipeline": "p", "state": b"", "offsets": {"no-partition": 1}},
        {"pipeline": "p", "state": b"", "offsets": {"t:0": -1}},
        {"pipeline": "p:q", "state": b""},
        {"pipeline": "p", "state": b"", "events": -1},
    ],
)
def test_bad_checkpoint_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Checkpoint(**kwargs)


@pytest.mark.parametrize(
    "call", [lambda: offset_key("a:b", 0), lambda: offset_key("t", -1), lambda: parse_offset_key("t:x")]
)
def test_bad_offset_keys_are_refused(call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="got"):
        call()
