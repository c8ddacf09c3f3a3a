"""Signed state blobs: round trip, tampering, wrong secret, per-project secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipelines.serialization import SignatureError, dump_state, load_state, project_secret


def test_round_trip_and_tamper_detection() -> None:
    blob = dump_state({"w": [1.0, 2.0]}, b"s1")
    assert load_state(blob, b"s1") == {"w": [1.0, 2.0]}
    with pytest.raises(SignatureError, match="EDDY_SECRET"):
        load_state(blob, b"other")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SignatureError):
        load_state(tampered, b"s1")
    with pytest.raises(SignatureError, match="not an Eddy-signed blob"):
        load_state(b"\x80\x04K\x01.", b"s1")


def test_project_secret_is_created_once_and_private(tmp_path: Path) -> None:
    first = project_secret("", tmp_path)
    assert project_secret("", tmp_path) == first and len(first) == 64
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert project_secret("configured", tmp_path) == b"configured"
