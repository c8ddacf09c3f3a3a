"""A thin, typed model registry over MLflow: publish, load, promote and roll back online learners.

Pipelines publish a learner every N events as a new *model version*; serving pipelines and the ``eddy models``
CLI load a version by number or by alias (``models:/live-ctr@champion``), promote a version to an alias and roll
an alias back to the version that held it before (DESIGN.md §5, "Hot swap").

Model payloads are **opaque bytes**: the caller serialises (and signs) the learner, this module stores and
returns the bytes and never unpickles anything. Each publish is one MLflow run in the experiment
``eddy/<model>`` holding:

- the learner's params and metrics,
- the input offsets it covers, as the artifact ``model/offsets.json`` and as the run/version tag ``eddy.offsets``,
- the payload as the artifact ``model/payload.bin``; the model version's source is that ``model`` directory.

Alias history (for :meth:`ModelRegistry.rollback`) is a JSON list of earlier holders, kept in the registered
model tag ``eddy.alias_history.<alias>``.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> home = Path(tempfile.mkdtemp())
>>> registry = ModelRegistry(f"sqlite:///{home}/mlflow.db", home / "mlartifacts")
>>> v1 = registry.publish("demo", b"weights-1", params={"lr": 0.1}, metrics={"accuracy": 0.8},
...                       offsets={"live.interactions:0": 100}, events=100, alias="champion")
>>> v2 = registry.publish("demo", b"weights-2", params={"lr": 0.1}, metrics={"accuracy": 0.9},
...                       offsets={"live.interactions:0": 200}, events=200)
>>> registry.promote("demo", v2.version).aliases
['champion']
>>> registry.load_uri("models:/demo@champion").payload
b'weights-2'
>>> registry.rollback("demo").version
'1'
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

    from connectors.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "ModelRegistry",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "RegistryError",
    "parse_model_uri",
]

PAYLOAD_DIR = "model"
PAYLOAD_FILE = "payload.bin"
OFFSETS_FILE = "offsets.json"
EXPERIMENT_PREFIX = "eddy/"
TAG_EVENTS = "eddy.events"
TAG_OFFSETS = "eddy.offsets"
TAG_METRICS = "eddy.metrics"
TAG_PIPELINE = "eddy.pipeline"
TAG_HISTORY_PREFIX = "eddy.alias_history."
HINT = "`eddy models list` shows the registered models, their versions and aliases"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ALIAS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED_ALIAS = re.compile(r"^(\d+|[vV]\d+|latest)$", re.IGNORECASE)
_MODEL_URI = re.compile(r"^models:/(?P<model>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))$")
_MAX_ALIAS_LENGTH = 255
_PARAMS_PER_BATCH = 100  # MLflow's limit for params/tags in one log_batch
_METRICS_PER_BATCH = 1000
_HISTORY_LIMIT = 100  # earlier holders remembered per alias (publish may promote every N events)

ParamValue = str | int | float | bool
_T = TypeVar("_T")


class RegistryError(ValueError):
    """A model, version or alias that the registry cannot find or accept; the message says how to fix it."""


class ModelVersionInfo(BaseModel):
    """One published version of a model and what it was trained on."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: str
    uri: str = Field(description="'models:/<model>/<version>'")
    run_id: str
    aliases: list[str] = Field(default_factory=list)
    events: int = 0
    offsets: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    pipeline: str | None = None
    source: str = ""
    created_at: float = Field(description="creation time, seconds since the epoch")


class RegisteredModelInfo(BaseModel):
    """A registered model: its newest version and where each alias points."""

    model_config = ConfigDict(frozen=True)

    name: str
    latest_version: str | None
    aliases: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class LoadedModel(BaseModel):
    """The payload bytes of one model version together with its metadata."""

    model_config = ConfigDict(frozen=True)

    info: ModelVersionInfo
    payload: bytes


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not _MODEL_NAME.match(model) or set(model) == {"."}:
        raise RegistryError(f"model name must be non-empty and use only letters, digits, '_', '.', '-' (got {model!r})")
    return model


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_NAME.match(alias) or len(alias) > _MAX_ALIAS_LENGTH:
        raise RegistryError(f"alias must be 1-255 letters, digits, '_' or '-', e.g. 'champion' (got {alias!r})")
    if _RESERVED_ALIAS.match(alias):
        raise RegistryError(
            f"alias {alias!r} looks like a version ('3', 'v3', 'latest' are reserved); "
            "pick a name such as 'champion' or 'canary'"
        )
    return alias


def _check_version(model: str, version: str | int) -> str:
    text = str(version).strip()
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise RegistryError(f"model {model!r}: version must be a positive integer (got {version!r})")
    return str(int(text))


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name@alias`` or ``models:/name/<version>`` into ``(model, version, alias)``.

    Examples
    --------
    >>> parse_model_uri("models:/live-ctr@champion")
    ('live-ctr', None, 'champion')
    >>> parse_model_uri("models:/live-ctr/3")
    ('live-ctr', '3', None)
    """
    match = _MODEL_URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise RegistryError(f"model URI must be 'models:/<model>@<alias>' or 'models:/<model>/<version>' (got {uri!r})")
    model = _check_model(match["model"])
    if match["alias"] is not None:
        return model, None, _check_alias(match["alias"])
    return model, _check_version(model, match["version"]), None


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for in-memory or other schemes)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def _quiet_mlflow() -> None:
    """Silence MLflow's and alembic's INFO chatter (schema migrations on first sqlite use)."""
    for name in ("alembic", "mlflow"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


class ModelRegistry:
    """Publish, load, promote and roll back model versions in an MLflow tracking/registry store.

    Parameters
    ----------
    tracking_uri
        MLflow URI used for both tracking and the model registry, e.g. ``sqlite:///.eddy/mlflow.db`` or
        ``http://mlflow:5000``.
    artifacts_dir
        Artifact root for a ``sqlite://`` store (default: ``mlartifacts`` beside the database file).
        Ignored for a server, which manages its own artifact store.

    Notes
    -----
    No global MLflow state is touched (no ``mlflow.set_tracking_uri``): several registries may coexist in one
    process. Methods are safe to call from a worker thread.
    """

    def __init__(self, tracking_uri: str, artifacts_dir: Path | None = None) -> None:
        from mlflow import MlflowClient

        if not isinstance(tracking_uri, str) or not tracking_uri:
            raise RegistryError(f"registry URI must be a non-empty MLflow URI (got {tracking_uri!r})")
        _quiet_mlflow()
        self.tracking_uri = tracking_uri
        self.artifacts_dir: Path | None = None
        db_path = _sqlite_path(tracking_uri)
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            root = artifacts_dir if artifacts_dir is not None else db_path.parent / "mlartifacts"
            self.artifacts_dir = root.resolve()
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """Build the registry named by ``EDDY_REGISTRY`` (embedded default: sqlite under ``EDDY_HOME``)."""
        return cls(settings.registry_uri, settings.artifacts_dir)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.tracking_uri!r})"

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        model: str,
        payload: bytes,
        *,
        params: Mapping[str, ParamValue],
        metrics: Mapping[str, float],
        offsets: Mapping[str, int],
        events: int,
        alias: str | None = None,
        pipeline: str | None = None,
    ) -> ModelVersionInfo:
        """Log one run with the payload and register it as the model's next version.

        Parameters
        ----------
        model
            Registered model name (letters, digits, ``_``, ``.``, ``-``).
        payload
            The serialised (and signed) learner; stored as ``model/payload.bin``.
        params, metrics
            Hyper-parameters and evaluation metrics to log on the run.
        offsets
            Input offsets the learner has seen, e.g. ``{"live.interactions:0": 1234}``.
        events
            Number of events the learner has learnt from.
        alias
            When given, the new version is promoted to this alias (recorded for :meth:`rollback`).
        pipeline
            Name of the publishing pipeline, stored as a tag.

        Returns
        -------
        ModelVersionInfo
            The new version.
        """
        from mlflow.entities import Metric, Param

        _check_model(model)
        if alias is not None:
            _check_alias(alias)
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise RegistryError(f"model {model!r}: payload must be bytes (got {type(payload).__name__})")
        if isinstance(events, bool) or not isinstance(events, int) or events < 0:
            raise RegistryError(f"model {model!r}: events must be an integer >= 0 (got {events!r})")
        offsets_json = json.dumps({str(k): int(v) for k, v in offsets.items()}, sort_keys=True)
        metrics_json = json.dumps({str(k): float(v) for k, v in metrics.items()}, sort_keys=True)
        tags = {TAG_EVENTS: str(events), TAG_OFFSETS: offsets_json}
        if pipeline:
            tags[TAG_PIPELINE] = pipeline

        started = time.perf_counter()
        experiment_id = self._experiment_id(model)
        run = self.client.create_run(experiment_id, tags=tags, run_name=f"{model}-{events}")
        run_id = run.info.run_id
        try:
            now_ms = int(time.time() * 1000)
            param_list = [Param(str(k), str(v)) for k, v in params.items()]
            metric_list = [Metric(str(k), float(v), now_ms, events) for k, v in metrics.items()]
            for chunk in _chunks(param_list, _PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=chunk, synchronous=True)
            for metric_chunk in _chunks(metric_list, _METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=metric_chunk, synchronous=True)
            with tempfile.TemporaryDirectory(prefix="eddy-publish-") as tmp:
                model_dir = Path(tmp) / PAYLOAD_DIR
                model_dir.mkdir()
                (model_dir / PAYLOAD_FILE).write_bytes(bytes(payload))
                (model_dir / OFFSETS_FILE).write_text(offsets_json)
                self.client.log_artifacts(run_id, str(model_dir), PAYLOAD_DIR)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)

        self._ensure_registered_model(model)
        version = self.client.create_model_version(
            model,
            source=f"{run.info.artifact_uri}/{PAYLOAD_DIR}",
            run_id=run_id,
            tags={**tags, TAG_METRICS: metrics_json},
            await_creation_for=0,
        )
        log.info(
            "published model version",
            extra={
                "model": model,
                "version": str(version.version),
                "events": events,
                "bytes": len(payload),
                "seconds": round(time.perf_counter() - started, 4),
            },
        )
        if alias is not None:
            return self.promote(model, version.version, alias)
        return self._info(version)

    # ------------------------------------------------------------------ load

    def load(self, model: str, *, version: str | int | None = None, alias: str | None = None) -> LoadedModel:
        """Return the payload and metadata of one version, chosen by number or by alias (exactly one).

        Raises
        ------
        RegistryError
            If both or neither of ``version``/``alias`` are given, or the model, version or alias is unknown.
        """
        mv = self._resolve(model, version=version, alias=alias)
        info = self._info(mv)
        with tempfile.TemporaryDirectory(prefix="eddy-load-") as tmp:
            try:
                local = self.client.download_artifacts(info.run_id, f"{PAYLOAD_DIR}/{PAYLOAD_FILE}", tmp)
            except Exception as exc:  # mlflow raises OSError or MlflowException depending on the store
                raise RegistryError(
                    f"model {model!r} version {info.version}: payload {info.source}/{PAYLOAD_FILE} "
                    f"could not be read from the artifact store ({exc}); was it published by Eddy?"
                ) from exc
            payload = Path(local).read_bytes()
        return LoadedModel(info=info, payload=payload)

    def load_uri(self, uri: str) -> LoadedModel:
        """Load ``models:/<model>@<alias>`` or ``models:/<model>/<version>``."""
        model, version, alias = parse_model_uri(uri)
        return self.load(model, version=version, alias=alias)

    def get_version(
        self, model: str, *, version: str | int | None = None, alias: str | None = None
    ) -> ModelVersionInfo:
        """Metadata of one version (by number or alias) without downloading its payload."""
        return self._info(self._resolve(model, version=version, alias=alias))

    # ------------------------------------------------------------------ aliases

    def promote(self, model: str, version: str | int, alias: str = "champion") -> ModelVersionInfo:
        """Point ``alias`` at ``version``, remembering the previous holder for :meth:`rollback`.

        Promoting the version that already holds the alias is a no-op.
        """
        _check_alias(alias)
        number = _check_version(model, version)
        registered = self._registered_model(model)
        mv = self._get_version(registered, number)
        current = self._alias_target(registered, alias)
        if current != str(mv.version):
            history = self._history(registered, alias)
            if current is not None:
                history.append(current)
            self.client.set_registered_model_alias(model, alias, str(mv.version))
            history = history[-_HISTORY_LIMIT:]
            self.client.set_registered_model_tag(model, TAG_HISTORY_PREFIX + alias, json.dumps(history))
            log.info(
                "promoted model version",
                extra={"model": model, "alias": alias, "version": str(mv.version), "previous": current},
            )
        return self._info(self.client.get_model_version(model, str(mv.version)))

    def rollback(self, model: str, alias: str = "champion") -> ModelVersionInfo:
        """Move ``alias`` back to the version that held it before the last promotion.

        Versions deleted since are skipped.

        Raises
        ------
        RegistryError
            If the alias has no earlier holder to return to.
        """
        _check_alias(alias)
        registered = self._registered_model(model)
        current = self._alias_target(registered, alias)
        history = self._history(registered, alias)
        existing = {str(mv.version) for mv in self._versions(model)}
        while history:
            previous = history.pop()
            if previous in existing and previous != current:
                self.client.set_registered_model_alias(model, alias, previous)
                self.client.set_registered_model_tag(model, TAG_HISTORY_PREFIX + alias, json.dumps(history))
                log.info(
                    "rolled back model alias",
                    extra={"model": model, "alias": alias, "version": previous, "from": current},
                )
                return self._info(self.client.get_model_version(model, previous))
        self.client.set_registered_model_tag(model, TAG_HISTORY_PREFIX + alias, "[]")
        holder = f"version {current}" if current is not None else "no version"
        raise RegistryError(
            f"model {model!r}: alias {alias!r} has no earlier version to roll back to "
            f"(it points at {holder}); promote a version explicitly instead "
            f"(ModelRegistry.promote / `eddy models promote`). {HINT}."
        )

    # ------------------------------------------------------------------ listing

    def list_models(self) -> list[RegisteredModelInfo]:
        """All registered models with their newest version and aliases, sorted by name."""
        models: list[RegisteredModelInfo] = []
        page_token: str | None = None
        while True:
            page = self.client.search_registered_models(max_results=1000, page_token=page_token)
            for rm in page:
                versions = [int(mv.version) for mv in rm.latest_versions or []]
                models.append(
                    RegisteredModelInfo(
                        name=rm.name,
                        latest_version=str(max(versions)) if versions else None,
                        aliases={a: str(v) for a, v in (rm.aliases or {}).items()},
                        description=rm.description or "",
                    )
                )
            page_token = page.token
            if not page_token:
                break
        return sorted(models, key=lambda m: m.name)

    def list_versions(self, model: str) -> list[ModelVersionInfo]:
        """All versions of ``model``, oldest first."""
        self._registered_model(model)
        return sorted((self._info(mv) for mv in self._versions(model)), key=lambda v: int(v.version))

    # ------------------------------------------------------------------ internals

    def _experiment_id(self, model: str) -> str:
        name = EXPERIMENT_PREFIX + model
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = str(self.artifacts_dir / model) if self.artifacts_dir is not None else None
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:
                experiment = self.client.get_experiment_by_name(name)  # created concurrently
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def _ensure_registered_model(self, model: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model, description=f"Eddy online learner {model!r}")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"

    def _registered_model(self, model: str) -> RegisteredModel:
        _check_model(model)
        try:
            return self.client.get_registered_model(model)
        except Exception as exc:
            if not self._is_missing(exc):
                raise
            known = ", ".join(repr(m.name) for m in self.list_models()) or "none yet"
            raise RegistryError(
                f"model {model!r} is not registered in {self.tracking_uri} (registered: {known}); "
                f"publish it from a pipeline with registry.model set, or check the name. {HINT}."
            ) from exc

    def _versions(self, model: str) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        page_token: str | None = None
        while True:
            page = self.client.search_model_versions(f"name = '{model}'", max_results=10000, page_token=page_token)
            found.extend(page)
            page_token = page.token
            if not page_token:
                return found

    def _get_version(self, registered: RegisteredModel, version: str) -> ModelVersion:
        model = registered.name
        try:
            return self.client.get_model_version(model, version)
        except Exception as exc:
            if not self._is_missing(exc):
                raise
            raise RegistryError(
                f"model {model!r} has no version {version} "
                f"(versions: {self._version_list(model)}); pick one of those. {HINT}."
            ) from exc

    def _version_list(self, model: str) -> str:
        numbers = sorted(int(mv.version) for mv in self._versions(model))
        return ", ".join(map(str, numbers)) or "none"

    @staticmethod
    def _alias_target(registered: RegisteredModel, alias: str) -> str | None:
        target = (registered.aliases or {}).get(alias)
        return None if target is None else str(target)

    @staticmethod
    def _history(registered: RegisteredModel, alias: str) -> list[str]:
        raw = (registered.tags or {}).get(TAG_HISTORY_PREFIX + alias, "[]")
        try:
            history = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("ignoring unreadable alias history", extra={"model": registered.name, "alias": alias})
            return []
        return [str(v) for v in history] if isinstance(history, list) else []

    def _resolve(self, model: str, *, version: str | int | None, alias: str | None) -> ModelVersion:
        if (version is None) == (alias is None):
            raise RegistryError(
                f"model {model!r}: give exactly one of version= or alias= "
                f"(got version={version!r}, alias={alias!r}), e.g. load({model!r}, alias='champion')"
            )
        if version is not None:
            number = _check_version(model, version)
            return self._get_version(self._registered_model(model), number)
        assert alias is not None
        _check_alias(alias)
        registered = self._registered_model(model)
        target = self._alias_target(registered, alias)
        if target is None:
            aliases = ", ".join(f"{a}->{v}" for a, v in sorted((registered.aliases or {}).items())) or "none"
            raise RegistryError(
                f"model {model!r} has no alias {alias!r} (aliases: {aliases}); "
                f"promote a version to it first (ModelRegistry.promote / `eddy models promote`). {HINT}."
            )
        return self._get_version(registered, target)

    def _info(self, mv: ModelVersion) -> ModelVersionInfo:
        tags = mv.tags or {}

        def _json(key: str) -> dict[str, object]:
            try:
                value = json.loads(tags.get(key, "{}"))
            except json.JSONDecodeError:
                return {}
            return value if isinstance(value, dict) else {}

        events = tags.get(TAG_EVENTS, "0")
        return ModelVersionInfo(
            model=mv.name,
            version=str(mv.version),
            uri=f"models:/{mv.name}/{mv.version}",
            run_id=mv.run_id or "",
            aliases=sorted(mv.aliases or []),
            events=int(events) if events.isdigit() else 0,
            offsets={k: int(v) for k, v in _json(TAG_OFFSETS).items() if isinstance(v, int | float)},
            metrics={k: float(v) for k, v in _json(TAG_METRICS).items() if isinstance(v, int | float)},
            pipeline=tags.get(TAG_PIPELINE),
            source=mv.source or "",
            created_at=(mv.creation_timestamp or 0) / 1000.0,
        )
