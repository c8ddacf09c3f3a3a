"""Model fan-out: serving pipelines follow an MLflow alias through the compacted topic ``eddy.models``.

Publishing a model version (or promoting / rolling back an alias) writes a small :class:`ModelUpdate` record to
``eddy.models``. Every serving worker reads that topic from the beginning, without a consumer group, so each one
sees every update and a new worker learns the current champion at start; no worker polls MLflow (DESIGN.md §5).
The follower runs in a thread of its own; the runtime takes the newest loaded model between batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from connectors.bus import KafkaBus
from connectors.messages import DecodeError, ModelUpdate, decode, encode
from connectors.registry import ModelRegistry, RegistryError

log = logging.getLogger(__name__)

MODELS_TOPIC = "eddy.models"


def update_key(update: ModelUpdate) -> bytes:
    """Compaction key: the newest record per (model, alias) survives; unaliased publishes keep one per model."""
    return f"{update.model}@{update.alias}".encode() if update.alias else update.model.encode()


def announce(bus: KafkaBus, update: ModelUpdate) -> None:
    """Write one update to ``eddy.models`` (used by the CLI's promote/rollback)."""
    bus.create_topics([MODELS_TOPIC], compacted=True)
    bus.produce(MODELS_TOPIC, [encode(update)], keys=[update_key(update)])


class ModelFollower:
    """Follows ``models:/<model>@<alias>`` and holds the newest loaded model until the runtime takes it."""

    def __init__(
        self,
        bus: KafkaBus,
        registry: ModelRegistry,
        model: str,
        alias: str,
        load_payload: Callable[[bytes], Any],
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.model = model
        self.alias = alias
        self.load_payload = load_payload
        self.current_version: str | None = None
        self.available = threading.Event()
        self._pending: tuple[Any, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"eddy-follow-{model}@{alias}", daemon=True)

    def start(self) -> None:
        """Load the alias's current version from the registry (if any), then follow the topic."""
        try:
            self._load(self.registry.load(self.model, alias=self.alias).info.version)
        except RegistryError:
            log.info("models:/%s@%s does not exist yet; waiting for it on %s", self.model, self.alias, MODELS_TOPIC)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (the thread ends within a poll interval)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def take(self) -> tuple[Any, str] | None:
        """The model loaded since the last call and its version, or None."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    def _load(self, version: str) -> None:
        if version == self.current_version:
            return
        loaded = self.registry.load(self.model, version=version)
        model = self.load_payload(loaded.payload)
        with self._lock:
            self._pending = (model, version)
            self.current_version = version
        self.available.set()
        log.info("loaded models:/%s/%s for alias %s", self.model, version, self.alias)

    def _run(self) -> None:
        self.bus.create_topics([MODELS_TOPIC], compacted=True)
        self.bus.follow(MODELS_TOPIC, self._handle, self._stop, poll_ms=500)

    def _handle(self, raw: bytes) -> None:
        try:
            update = decode(raw, ModelUpdate.schema_name)
        except DecodeError as exc:
            log.warning("ignoring a bad record on %s: %s", MODELS_TOPIC, exc.detail)
            return
        if not isinstance(update, ModelUpdate) or update.model != self.model or update.alias != self.alias:
            return
        try:
            self._load(update.version)
        except (RegistryError, ValueError) as exc:
            log.error("cannot load models:/%s/%s announced on %s: %s", self.model, update.version, MODELS_TOPIC, exc)
