"""The Redis state store behind pipelines: per-key operator state and checkpoints.

Values are opaque bytes: callers serialise (and sign, DESIGN.md §5) before they store anything.

Key layout (``namespace`` and ``pipeline`` never contain ``:``, so no two layouts can collide):

| what                         | Redis key                          | type   |
|------------------------------|------------------------------------|--------|
| per-key state                | ``eddy:<namespace>:kv:<key>``      | string |
| newest checkpoint            | ``eddy:<pipeline>:checkpoint``     | hash   |
| the checkpoint before it     | ``eddy:<pipeline>:checkpoint:prev`` | hash   |
| next offset per partition    | ``eddy:<pipeline>:offsets``        | hash   |

A checkpoint hash has the fields ``state`` (bytes), ``offsets`` (JSON ``{"topic:partition": next_offset}``),
``events``, ``created_at`` and ``meta`` (JSON). :meth:`StateStore.write_checkpoint` copies the newest one to
``:prev`` and writes the new one in a single MULTI/EXEC, so a reader (HGETALL, one command) never sees the state of
one checkpoint with the offsets of another.

The same transaction merges the checkpoint's offsets into the pipeline's offsets hash (one field per
``topic:partition``). When several workers of one pipeline share its partitions, each checkpoint covers only the
partitions of its writer: the offsets hash holds every partition's progress whoever wrote it, and a worker that
takes over a partition resumes from there (:meth:`StateStore.read_offsets`), together with the per-key state
written in the same transactions.

Redis going away must not lose anything or crash a worker: every operation retries on connection errors and
timeouts with exponential backoff (50 ms doubling to 2 s) until ``retry_timeout_s`` (None: forever), then raises
:class:`StateUnavailableError`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import BaseModel, Field, field_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

KEY_PREFIX = "eddy"
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 2.0
SOCKET_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 10
_SCAN_COUNT = 1000
_URL_SCHEMES = ("redis", "rediss", "unix")
_RETRIED_ERRORS = (redis.ConnectionError, redis.TimeoutError)

P = ParamSpec("P")
T = TypeVar("T")


class StateUnavailableError(RuntimeError):
    """Redis stayed unreachable for longer than ``retry_timeout_s``; the message says which URL and how long."""


def offset_key(topic: str, partition: int) -> str:
    """The checkpoint offsets key for one topic partition: ``"topic:partition"``.

    >>> offset_key("live.interactions", 3)
    'live.interactions:3'
    """
    if not topic or ":" in topic:
        raise ValueError(
            f"topic must be a non-empty name without ':' (got {topic!r}); Kafka topic names never have one"
        )
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be an int >= 0 (got {partition!r})")
    return f"{topic}:{partition}"


def parse_offset_key(text: str) -> tuple[str, int]:
    """The ``(topic, partition)`` of an offsets key made by :func:`offset_key`.

    >>> parse_offset_key("rl.cart-pole.obs:12")
    ('rl.cart-pole.obs', 12)
    """
    topic, sep, partition = text.rpartition(":")
    if not sep or not topic or ":" in topic or not partition.isdigit():
        raise ValueError(f"offsets key must look like 'topic:partition', e.g. 'live.interactions:0' (got {text!r})")
    return topic, int(partition)


def _check_name(what: str, value: object) -> str:
    """A namespace or pipeline name: non-empty text without ':' (the key separator)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string (got {value!r})")
    if ":" in value:
        raise ValueError(f"{what} must not contain ':' because it separates the parts of Redis keys (got {value!r})")
    return value


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string (got {key!r})")
    return key


def _check_value(key: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(
            f"value for key {key!r} must be bytes (got {type(value).__name__}); serialise it first, "
            "e.g. json.dumps(obj).encode() or a signed pickle"
        )
    return value


class CheckpointError(RuntimeError):
    """A pipeline's newest checkpoint exists but cannot be restored (written with another secret, by a learner whose
    state format changed, or naming a class that moved): its worker stops rather than learn anew over it."""


class Checkpoint(BaseModel):
    """Operator state plus the input offsets it covers; both are written in one transaction."""

    pipeline: str
    state: bytes
    offsets: dict[str, int] = Field(default_factory=dict)
    events: int = 0
    created_at: float = Field(default_factory=time.time)
    meta: dict[str, str] = Field(default_factory=dict)
    replayed: dict[str, int] = Field(
        default_factory=dict, description="Highest replayed offset seen per recorded partition (replay dedupe)."
    )

    @field_validator("pipeline")
    @classmethod
    def _check_pipeline(cls, value: str) -> str:
        return _check_name("pipeline", value)

    @field_validator("offsets")
    @classmethod
    def _check_offsets(cls, value: dict[str, int]) -> dict[str, int]:
        for key, offset in value.items():
            parse_offset_key(key)
            if offset < 0:
                raise ValueError(f"offset for {key!r} must be >= 0 (got {offset})")
        return value

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"events must be >= 0 (got {value})")
        return value

    def to_fields(self) -> dict[str, bytes]:
        """The Redis hash fields of this checkpoint."""
        return {
            "state": self.state,
            "offsets": json.dumps(self.offsets, sort_keys=True).encode(),
            "events": str(self.events).encode(),
            "created_at": repr(self.created_at).encode(),
            "meta": json.dumps(self.meta, sort_keys=True).encode(),
            "replayed": json.dumps(self.replayed, sort_keys=True).encode(),
        }

    @classmethod
    def from_fields(cls, pipeline: str, fields: Mapping[bytes, bytes]) -> Checkpoint:
        """The checkpoint stored in a Redis hash (as HGETALL returns it)."""
        try:
            return cls(
                pipeline=pipeline,
                state=fields[b"state"],
                offsets=json.loads(fields[b"offsets"]),
                events=int(fields[b"events"]),
                created_at=float(fields[b"created_at"]),
                meta=json.loads(fields[b"meta"]),
                replayed=json.loads(fields.get(b"replayed", b"{}")),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"checkpoint of pipeline {pipeline!r} in Redis is malformed ({exc}); "
                f"delete it with `eddy checkpoints delete {pipeline}` and let the pipeline write a new one"
            ) from exc


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise ValueError(f"state URL must be a non-empty string like 'redis://host:6379/0' (got {url!r})")
    if url == "embedded":
        raise ValueError(
            "state URL 'embedded' must be resolved first: "
            "connectors.embedded.ensure_service(REDIS, home) returns the redis:// URL of the embedded server"
        )
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        raise ValueError(f"state URL must start with redis://, rediss:// or unix:// (got {redact_url(url)!r})")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"state URL has a port that is not a number (got {redact_url(url)!r})") from None
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"state URL must end with a database number, e.g. '/0' (got {redact_url(url)!r})")
    return url


def _retried(method: Callable[Concatenate[StateStore, P], T]) -> Callable[Concatenate[StateStore, P], T]:
    """Run a :class:`StateStore` method through :meth:`StateStore._call_with_retry` (the one retry mechanism)."""

    @functools.wraps(method)
    def wrapper(self: StateStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call_with_retry(method.__name__.lstrip("_"), lambda: method(self, *args, **kwargs))

    return wrapper


class StateStore:
    """Per-key operator state and checkpoints in Redis (see the module docstring for the key layout).

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` for TLS, ``unix:///path.sock``).
    retry_timeout_s
        How long an operation keeps retrying while Redis is unreachable before it raises
        :class:`StateUnavailableError`; None waits forever (a worker should rather stall than lose state).
    on_retry
        Called with the error and the attempt number (1, 2, ...) before each retry; an exception it raises
        aborts the operation.
    """

    def __init__(
        self,
        url: str,
        *,
        retry_timeout_s: float | None = None,
        on_retry: Callable[[Exception, int], None] | None = None,
    ) -> None:
        self.url = _check_url(url)
        if retry_timeout_s is not None and retry_timeout_s < 0:
            raise ValueError(f"retry_timeout_s must be >= 0 or None to wait forever (got {retry_timeout_s})")
        self.retry_timeout_s = retry_timeout_s
        self.on_retry = on_retry
        self.retries = 0
        self._retries_lock = threading.Lock()
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=SOCKET_TIMEOUT_S,
                health_check_interval=HEALTH_CHECK_INTERVAL_S,
                retry=Retry(NoBackoff(), 0),  # our retry loop is the only one, so every retry is counted
            )
        except ValueError as exc:
            raise ValueError(f"state URL {redact_url(url)!r} is not usable: {exc}") from exc

    def __repr__(self) -> str:
        return f"StateStore({redact_url(self.url)!r})"

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; the store can not be used afterwards."""
        self._redis.close()

    def ping(self) -> bool:
        """True when Redis answers right now (no retries: health checks want the current truth)."""
        try:
            return bool(self._redis.ping())
        except _RETRIED_ERRORS:
            return False

    # -- the one retry mechanism ------------------------------------------------------------------------------------

    def _call_with_retry(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying on connection errors and timeouts with exponential backoff."""
        attempt = 0
        started = time.monotonic()
        delay = RETRY_FIRST_DELAY_S
        while True:
            try:
                result = operation()
            except _RETRIED_ERRORS as exc:
                attempt += 1
                waited = time.monotonic() - started
                if self.retry_timeout_s is not None and waited >= self.retry_timeout_s:
                    raise StateUnavailableError(
                        f"Redis state store at {redact_url(self.url)} unreachable for {waited:.1f}s "
                        f"({attempt} attempts at {what}, last error: {exc}); check that redis-server is running "
                        f"there, or raise retry_timeout_s (now {self.retry_timeout_s}s, None waits forever)"
                    ) from exc
                with self._retries_lock:
                    self.retries += 1
                if attempt == 1:
                    log.warning(
                        "Redis state store at %s unreachable during %s, retrying: %s",
                        redact_url(self.url),
                        what,
                        exc,
                        extra={"url": redact_url(self.url), "operation": what},
                    )
                if self.on_retry is not None:
                    self.on_retry(exc, attempt)
                pause = delay
                if self.retry_timeout_s is not None:
                    pause = min(pause, max(0.0, started + self.retry_timeout_s - time.monotonic()))
                time.sleep(pause)
                delay = min(delay * 2, RETRY_MAX_DELAY_S)
                continue
            if attempt:
                log.info(
                    "Redis state store at %s is back after %.1fs (%d retries during %s)",
                    redact_url(self.url),
                    time.monotonic() - started,
                    attempt,
                    what,
                    extra={"url": redact_url(self.url), "operation": what, "attempts": attempt},
                )
            return result

    # -- per-key state ----------------------------------------------------------------------------------------------

    @staticmethod
    def kv_key(namespace: str, key: str) -> str:
        """The Redis key of one state entry: ``eddy:<namespace>:kv:<key>``."""
        return f"{KEY_PREFIX}:{_check_name('namespace', namespace)}:kv:{_check_key(key)}"

    def get(self, namespace: str, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        return self._get(self.kv_key(namespace, key))

    @_retried
    def _get(self, redis_key: str) -> bytes | None:
        value: bytes | None = self._redis.get(redis_key)
        return value

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (overwrites)."""
        self._put_many({self.kv_key(namespace, key): _check_value(key, value)})

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, bytes | None]:
        """The values of several keys in one round trip; missing ones map to None."""
        wanted = list(keys)
        redis_keys = [self.kv_key(namespace, key) for key in wanted]
        if not redis_keys:
            return {}
        return dict(zip(wanted, self._mget(redis_keys), strict=True))

    @_retried
    def _mget(self, redis_keys: list[str]) -> list[bytes | None]:
        values: list[bytes | None] = self._redis.mget(redis_keys)
        return values

    def put_many(self, namespace: str, items: Mapping[str, bytes]) -> None:
        """Store several values in one pipelined MULTI/EXEC: all of them or (on an error) none."""
        checked = {self.kv_key(namespace, key): _check_value(key, value) for key, value in items.items()}
        if checked:
            self._put_many(checked)

    @_retried
    def _put_many(self, items: dict[str, bytes]) -> None:
        if len(items) == 1:
            [(redis_key, value)] = items.items()
            self._redis.set(redis_key, value)
            return
        with self._redis.pipeline(transaction=True) as pipe:
            for redis_key, value in items.items():
                pipe.set(redis_key, value)
            pipe.execute()

    def delete(self, namespace: str, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        self._delete(self.kv_key(namespace, key))

    @_retried
    def _delete(self, *redis_keys: str) -> None:
        self._redis.delete(*redis_keys)

    def keys(self, namespace: str) -> list[str]:
        """All keys stored in ``namespace``, sorted (SCAN, so Redis is never blocked by a large namespace)."""
        prefix = f"{KEY_PREFIX}:{_check_name('namespace', namespace)}:kv:"
        return sorted(name.decode()[len(prefix) :] for name in self._scan(_glob_escape(prefix) + "*"))

    @_retried
    def _scan(self, pattern: str) -> set[bytes]:
        return set(self._redis.scan_iter(match=pattern, count=_SCAN_COUNT))

    # -- bounded time series (the dashboard's history) ---------------------------------------------------------------

    @staticmethod
    def series_key(series: str) -> str:
        """The Redis list holding ``series``, newest point first."""
        return f"{KEY_PREFIX}:{_check_name('series', series)}:series"

    def append_point(self, series: str, point: Mapping[str, Any], keep: int) -> None:
        """Add a JSON point to ``series`` and keep its newest ``keep`` points (LPUSH + LTRIM in one transaction)."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (got {keep})")
        self._append_point(self.series_key(series), json.dumps(point, separators=(",", ":")).encode(), keep)

    @_retried
    def _append_point(self, key: str, payload: bytes, keep: int) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, payload)
            pipe.ltrim(key, 0, keep - 1)
            pipe.execute()

    def points(self, series: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The points of ``series``, oldest first (the newest ``limit`` of them when given)."""
        raw = self._lrange(self.series_key(series), 0, -1 if limit is None else limit - 1)
        return [json.loads(item) for item in reversed(raw)]

    @_retried
    def _lrange(self, key: str, start: int, end: int) -> list[bytes]:
        items: list[bytes] = self._redis.lrange(key, start, end)
        return items

    def series_names(self) -> list[str]:
        """Every series with points, sorted."""
        return self._names_with(":series")

    def _names_with(self, suffix: str) -> list[str]:
        """The names ``n`` (sorted, without ``:``) of the keys ``eddy:n<suffix>``."""
        prefix = f"{KEY_PREFIX}:"
        names = (k.decode() for k in self._scan(f"{_glob_escape(prefix)}*{_glob_escape(suffix)}"))
        return sorted(n[len(prefix) : -len(suffix)] for n in names if ":" not in n[len(prefix) : -len(suffix)])

    # -- checkpoints ------------------------------------------------------------------------------------------------

    @staticmethod
    def checkpoint_key(pipeline: str, *, previous: bool = False) -> str:
        """The Redis key of a pipeline's newest checkpoint (or of the one before it)."""
        key = f"{KEY_PREFIX}:{_check_name('pipeline', pipeline)}:checkpoint"
        return f"{key}:prev" if previous else key

    def write_checkpoint(self, cp: Checkpoint, entries: Mapping[str, bytes] | None = None) -> None:
        """Make ``cp`` the newest checkpoint and keep the one it replaces as ``:prev``, in one MULTI/EXEC.

        ``entries`` are per-key state of the same pipeline (namespace ``cp.pipeline``, read back with
        :meth:`get_many`) written in the same transaction, so that per-key state never runs ahead of or behind
        the offsets the checkpoint covers (e.g. each user's recent events kept by a sequence pipeline).
        """
        if not isinstance(cp, Checkpoint):
            raise ValueError(f"write_checkpoint takes a Checkpoint (got {type(cp).__name__})")
        kv = {self.kv_key(cp.pipeline, key): _check_value(key, value) for key, value in (entries or {}).items()}
        self._write_checkpoint(cp.pipeline, cp.to_fields(), cp.offsets, kv)

    @_retried
    def _write_checkpoint(
        self, pipeline: str, fields: dict[str, bytes], offsets: dict[str, int], entries: dict[str, bytes]
    ) -> None:
        key = self.checkpoint_key(pipeline)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.copy(key, f"{key}:prev", replace=True)  # a no-op when there is no checkpoint yet
            pipe.delete(key)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis stubs want str/bytes unions
            if offsets:
                pipe.hset(self.offsets_key(pipeline), mapping=offsets)  # type: ignore[arg-type]
            if entries:
                pipe.mset(entries)  # type: ignore[arg-type]
            pipe.execute()

    @staticmethod
    def offsets_key(pipeline: str) -> str:
        """The Redis key of a pipeline's next offset per input partition, merged from all its checkpoints."""
        return f"{KEY_PREFIX}:{_check_name('pipeline', pipeline)}:offsets"

    def read_offsets(self, pipeline: str) -> dict[str, int]:
        """The next offset to read per ``topic:partition`` of ``pipeline``, from whichever worker wrote it last."""
        return {field.decode(): int(value) for field, value in self._hgetall(self.offsets_key(pipeline)).items()}

    def read_checkpoint(self, pipeline: str, *, previous: bool = False) -> Checkpoint | None:
        """The newest checkpoint of ``pipeline`` (or the one before it), or None if there is none."""
        fields = self._hgetall(self.checkpoint_key(pipeline, previous=previous))
        return Checkpoint.from_fields(pipeline, fields) if fields else None

    @_retried
    def _hgetall(self, key: str) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = self._redis.hgetall(key)
        return fields

    def checkpoint_pipelines(self) -> list[str]:
        """Every pipeline with a newest checkpoint, sorted."""
        return self._names_with(":checkpoint")

    def delete_checkpoint(self, pipeline: str) -> None:
        """Remove the newest checkpoint of ``pipeline``, the one before it and its offsets."""
        self._delete(
            self.checkpoint_key(pipeline), self.checkpoint_key(pipeline, previous=True), self.offsets_key(pipeline)
        )


def _glob_escape(text: str) -> str:
    """``text`` with the Redis glob characters escaped, so SCAN MATCH takes it literally."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


__all__: list[str] = [
    "Checkpoint",
    "CheckpointError",
    "StateStore",
    "StateUnavailableError",
    "offset_key",
    "parse_offset_key",
    "redact_url",
]
