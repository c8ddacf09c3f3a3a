"""Turn :class:`~connectors.settings.Settings` into concrete service URLs, starting embedded services on demand.

``embedded`` broker/state settings resolve to the project's shared embedded services (``eddy up`` ones, or ones
started by another ``eddy`` command of the same project directory), else to fresh child processes that this
process owns and stops on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from connectors.embedded import REDIS, TANSU, ServiceKind, ServiceProcess, ensure_service, running_record
from connectors.settings import EMBEDDED, Settings


@dataclass
class ResolvedServices:
    """Where the broker, the state store and the registry are for this process."""

    broker_url: str
    state_url: str
    registry_uri: str
    artifacts_dir: str
    owned: list[ServiceProcess] = field(default_factory=list)

    def close(self) -> None:
        """Stop the embedded services this process started (shared ones keep running)."""
        while self.owned:
            self.owned.pop().stop()


def _resolve(
    kind: ServiceKind, configured: str, settings: Settings, owned: list[ServiceProcess], detached: bool
) -> str:
    if configured != EMBEDDED:
        return configured
    url, started = ensure_service(kind, settings.home, detached=detached)
    if started is not None and not detached:
        owned.append(started)
    return url


def resolve_services(settings: Settings, *, detached: bool = False) -> ResolvedServices:
    """Resolve every ``embedded`` setting to a running service; ``detached`` is for ``eddy up``."""
    owned: list[ServiceProcess] = []
    try:
        broker = _resolve(TANSU, settings.broker, settings, owned, detached)
        state = _resolve(REDIS, settings.state, settings, owned, detached)
    except BaseException:
        for service in owned:
            service.stop()
        raise
    return ResolvedServices(
        broker_url=broker,
        state_url=state,
        registry_uri=settings.registry_uri,
        artifacts_dir=str(settings.artifacts_dir),
        owned=owned,
    )


@contextmanager
def running_services(settings: Settings) -> Iterator[ResolvedServices]:
    """Resolve services for the duration of a ``with`` block, stopping the ones started here on the way out."""
    resolved = resolve_services(settings)
    try:
        yield resolved
    finally:
        resolved.close()


def embedded_status(settings: Settings) -> dict[str, str | None]:
    """``eddy status``: the URL of each embedded service running for this project, or None."""
    home = settings.home.resolve()
    status: dict[str, str | None] = {}
    for kind in (TANSU, REDIS):
        record = running_record(kind, home)
        status[kind.name] = record.url if record else None
    return status
