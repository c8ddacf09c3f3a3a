"""KeyedEntries: per-key operator state cached in the worker, written with checkpoints."""

from __future__ import annotations

import pytest

from pipelines.keyed import KeyedEntries


def _store(stored: dict[str, bytes], calls: list[list[str]]) -> KeyedEntries:
    entries = KeyedEntries(capacity=2)

    def load(keys: list[str]) -> dict[str, bytes | None]:
        calls.append(keys)
        return {k: stored.get(k) for k in keys}

    entries.bind(load)
    return entries


def test_missing_entries_are_read_once_per_batch_and_cached() -> None:
    calls: list[list[str]] = []
    entries = _store({"a": b"1"}, calls)
    entries.prefetch(["a", "b", "a"])
    entries.prefetch(["a", "b"])
    assert calls == [["a", "b"]] and entries.get("a") == b"1" and entries.get("b") is None


def test_changed_entries_stay_in_memory_until_written_then_lru_clean_ones_leave() -> None:
    calls: list[list[str]] = []
    entries = _store({}, calls)
    for key in ("a", "b", "c"):
        entries.put(key, key.encode())
    assert len(entries) == 3  # over capacity, but nothing is stored yet
    changes = entries.pending()
    assert changes == {"a": b"a", "b": b"b", "c": b"c"}
    entries.get("a")  # a is now the most recently used
    entries.written(changes)
    assert len(entries) == 2 and entries.pending() == {}
    entries.get("b")  # b was evicted: read again from the store
    assert calls[-1] == ["b"]


def test_forget_drops_unwritten_changes_and_binding_is_required() -> None:
    calls: list[list[str]] = []
    entries = _store({"a": b"stored"}, calls)
    entries.put("a", b"unwritten")
    entries.forget()
    assert entries.pending() == {} and entries.get("a") == b"stored"
    with pytest.raises(RuntimeError, match="bind"):
        KeyedEntries().get("x")
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        KeyedEntries(capacity=0)
