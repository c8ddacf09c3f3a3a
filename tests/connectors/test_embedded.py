"""Embedded services: readiness, sharing through <home>/<name>.json, clean stops, no orphans."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from connectors.embedded import (
    REDIS,
    TANSU,
    ServiceProcess,
    ensure_service,
    free_port,
    pid_alive,
    port_open,
    running_record,
    stop_recorded,
)
from connectors.settings import Settings, SettingsError


def test_ensure_service_starts_once_and_is_shared(tmp_path: Path) -> None:
    url, owned = ensure_service(REDIS, tmp_path)
    assert owned is not None
    try:
        again, second = ensure_service(REDIS, tmp_path)
        assert again == url and second is None  # the second caller reuses the first one's service
        record = running_record(REDIS, tmp_path)
        assert record is not None and record.url == url and port_open(record.port)
    finally:
        owned.stop()
    assert running_record(REDIS, tmp_path) is None
    assert not (tmp_path / "redis.json").exists()


def test_stale_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "broker.json").write_text(
        json.dumps(
            {
                "name": "broker",
                "pid": 999999,
                "port": free_port(),
                "url": "kafka://x:1",
                "detached": True,
                "started_at": 0,
            }
        )
    )
    assert running_record(TANSU, tmp_path) is None
    assert not (tmp_path / "broker.json").exists()


def test_parent_crash_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGKILL the process that started the broker: the kernel stops the broker too (PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from connectors.embedded import TANSU, ServiceProcess, free_port
        service = ServiceProcess(TANSU, Path({str(tmp_path)!r}), free_port()).start()
        print(service.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert pid_alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive_not_zombie(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive_not_zombie(child_pid)


def _alive_not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_detached_service_outlives_its_starter_until_stopped(tmp_path: Path) -> None:
    _url, owned = ensure_service(REDIS, tmp_path, detached=True)
    assert owned is not None and owned.detached
    record = running_record(REDIS, tmp_path)
    assert record is not None and record.detached
    assert stop_recorded(REDIS, tmp_path)
    assert not pid_alive(record.pid)
    assert not stop_recorded(REDIS, tmp_path)


def test_restart_keeps_port_and_data(tmp_path: Path) -> None:
    import redis

    service = ServiceProcess(REDIS, tmp_path, free_port()).start()
    try:
        redis.Redis.from_url(service.url).set("k", b"v")
        service.restart()
        assert redis.Redis.from_url(service.url).get("k") == b"v"
    finally:
        service.stop()


def test_settings_reject_bad_urls_and_thread_counts() -> None:
    assert Settings.from_env({}).broker == "embedded"
    assert Settings.from_env({"EDDY_BROKER": "kafka://h:9092"}).broker == "kafka://h:9092"
    with pytest.raises(SettingsError, match="EDDY_BROKER"):
        Settings.from_env({"EDDY_BROKER": "localhost:9092"})
    with pytest.raises(SettingsError, match="EDDY_STATE"):
        Settings.from_env({"EDDY_STATE": "memcached://x"})
    with pytest.raises(SettingsError, match="EDDY_REGISTRY"):
        Settings.from_env({"EDDY_REGISTRY": "postgres://x"})
    assert Settings.from_env({}).torch_threads == 1
    assert Settings.from_env({"EDDY_TORCH_THREADS": "4"}).torch_threads == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(SettingsError, match="EDDY_TORCH_THREADS must be a whole number >= 1"):
            Settings.from_env({"EDDY_TORCH_THREADS": bad})
    assert Settings(home=Path("/tmp/h")).registry_uri == "sqlite:////tmp/h/mlflow.db"
