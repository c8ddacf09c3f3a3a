"""docker-compose.yml (issue #9, req. 2): valid by the Compose specification, and consistent with the files it names.

The specification comes from the PyPI package ``compose-spec``: its Rust parser (strict: unknown keys are errors)
and its pydantic models, generated from the specification's JSON schema, whose JSON schema ``jsonschema`` checks the
file against. Compose interpolates ``${VAR}`` before it validates, so both see the file as ``docker compose`` would
with the defaults of the file and the example values of ``.env.example``. Our own checks then tie the file to the
repository: variables, mounted paths, volumes, ports, health checks, the pipeline specs each worker runs, the
Prometheus targets and the Grafana provisioning.
"""

from __future__ import annotations

import base64
import copy
import re
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from compose_spec import PyCompose
from compose_spec.models import ComposeSpecification

from connectors.settings import Settings
from pipelines.spec import load_spec
from tests.deploy import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
EXAMPLES = REPO / "pipelines" / "examples"
WORKER_PREFIX = "worker-"
# Example specs no worker runs, with the reason.
NOT_RUN = {"relay.yaml": "a benchmark fixture on bench.events, not a pipeline to deploy"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal dollar.
VARIABLE = re.compile(
    r"\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def env_example() -> dict[str, str]:
    """The variables .env.example documents, with its example values."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (keys are not interpolated by Compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def interpolate(node: Any, environment: dict[str, str]) -> Any:
    """The tree with ``${VAR}`` replaced as Compose does: the environment's value, else the default, else ''."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        value = environment.get(name)
        if value is None or (op.startswith(":") and not value):
            return arg if op.endswith("-") else (value or "")
        return value

    if isinstance(node, str):
        return VARIABLE.sub(replace, node.replace("$$", "\0")).replace("\0", "$")
    if isinstance(node, dict):
        return {key: interpolate(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environment) for value in node]
    return node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved), before interpolation."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with .env.example's values (required ones filled with examples)."""
    environment = {name: value or f"example-{name.lower()}" for name, value in env_example().items()}
    interpolated: dict[str, Any] = interpolate(raw, environment)
    return interpolated


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services by name."""
    return dict(compose["services"])


@pytest.fixture(scope="module")
def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The eddy worker services by name."""
    return {name: s for name, s in services.items() if name.startswith(WORKER_PREFIX)}


def strict_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema from compose-spec's models, with unknown keys refused again.

    The package's models ignore extra keys (pydantic's default), which the specification itself forbids: every
    object with declared properties gets ``additionalProperties: false`` back, keeping ``x-*`` extensions legal.
    """
    schema = ComposeSpecification.model_json_schema()

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
                node["patternProperties"] = {"^x-": {}}
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


def schema_problems(document: dict[str, Any]) -> list[str]:
    """Why the document fails the JSON schema, most specific error first (empty when it passes)."""
    validator = jsonschema.Draft202012Validator(strict_schema())
    errors = list(validator.iter_errors(document))
    if not errors:
        return []
    best = jsonschema.exceptions.best_match(errors)
    return [f"{'.'.join(map(str, best.absolute_path))}: {best.message[:300]}", *(e.message[:120] for e in errors)]


def spec_parser_problem(document: dict[str, Any]) -> str | None:
    """Why compose-spec's Rust parser (and its reference checks) refuses the document, or None."""
    try:
        PyCompose.from_yaml(yaml.safe_dump(document, sort_keys=False)).validate()
    except ValueError as exc:
        return str(exc)
    return None


def long_volumes(service: dict[str, Any]) -> list[dict[str, str]]:
    """A service's volumes in long form: type (bind or volume), source, target."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append({"type": volume["type"], "source": volume["source"], "target": volume["target"]})
            continue
        source, target = volume.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append({"type": kind, "source": source, "target": target})
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """A service's published ports as (host address, host port, container port)."""
    ports = []
    for port in service.get("ports", []):
        parts = str(port).split(":")
        assert len(parts) in (2, 3), f"publish {port!r} as [address:]host:container"
        ports.append((parts[0] if len(parts) == 3 else "", int(parts[-2]), int(parts[-1])))
    return ports


def worker_port(worker: dict[str, Any]) -> int:
    """The ``--port`` of a worker's ``eddy run`` command."""
    command: list[str] = worker["command"]
    return int(command[command.index("--port") + 1])


def healthcheck_url(service: dict[str, Any]) -> str:
    """The URL a python/urllib or wget health check asks."""
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"https?://[^'\"\s)]+", test)
    assert match, f"no URL in health check {test!r}"
    return match.group(0)


# -- the Compose specification ------------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """compose-spec's parser accepts the file and every network, volume, config and secret it references."""
    assert spec_parser_problem(compose) is None


def test_compose_file_validates_against_the_json_schema(compose: dict[str, Any]) -> None:
    """The file validates against the specification's JSON schema."""
    assert schema_problems(compose) == []


@pytest.mark.parametrize("validator", ["parser", "json-schema"])
def test_validation_catches_a_misspelt_key(compose: dict[str, Any], validator: str) -> None:
    """Both validations refuse an unknown service key, so a typo cannot pass them silently."""
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healtcheck"] = broken["services"]["redis"].pop("healthcheck")
    if validator == "parser":
        assert "healtcheck" in (spec_parser_problem(broken) or "")
    else:
        assert schema_problems(broken)


# -- our own checks -----------------------------------------------------------------------------------------------


def test_every_variable_has_a_default_or_is_documented(raw: dict[str, Any]) -> None:
    """Each ${VAR} has a default or is listed in .env.example; .env.example lists nothing unused; no bare $VAR
    (Compose would read it, but it hides from review)."""
    documented = env_example()
    used: set[str] = set()
    problems = []
    for text in strings(raw):
        for match in VARIABLE.finditer(text.replace("$$", "")):
            name = match.group("name") or match.group("bare")
            used.add(name)
            if match.group("bare"):
                problems.append(f"${name} in {text!r}: write ${{{name}}}")
            elif not (match.group("op") or "").endswith("-") and name not in documented:
                problems.append(f"${{{name}}} has no default and is not in .env.example")
    assert not problems, "\n".join(problems)
    assert set(documented) - used == set(), "documented in .env.example but not used"


def test_bind_mounted_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    """Every bind mount's host path is a relative path inside the repository that exists."""
    for name, service in services.items():
        for mount in long_volumes(service):
            if mount["type"] == "bind":
                assert mount["source"].startswith("./"), f"{name}: bind {mount['source']} must be repository-relative"
                assert (REPO / mount["source"]).exists(), f"{name}: {mount['source']} does not exist"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Services use only declared volumes, and every declared volume is used."""
    used = {m["source"] for s in services.values() for m in long_volumes(s) if m["type"] == "volume"}
    assert used == set(compose.get("volumes", {}))


def test_published_ports_are_local_and_distinct(services: dict[str, dict[str, Any]]) -> None:
    """No two services publish the same host port, and all listen on 127.0.0.1 only (nothing has a password)."""
    published = [(name, *port) for name, s in services.items() for port in published_ports(s)]
    assert all(host_ip == "127.0.0.1" for _, host_ip, _, _ in published), published
    clashes = [port for port, count in Counter(host_port for _, _, host_port, _ in published).items() if count > 1]
    assert clashes == []


def test_healthy_dependencies_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    """A service waited for as service_healthy exists and has a health check, or the dependant never starts."""
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"


def test_one_worker_per_example_spec(workers: dict[str, dict[str, Any]]) -> None:
    """Each example spec is run by exactly one worker, named worker-<pipeline>, from the folder mounted at /specs;
    the spec loads as the worker loads it."""
    run: list[str] = []
    for name, service in workers.items():
        (mount,) = (m for m in long_volumes(service) if m["target"] == "/specs")
        command = service["command"]
        assert command[0] == "run" and PurePosixPath(command[1]).parent == PurePosixPath("/specs"), command
        file_name = PurePosixPath(command[1]).name
        spec = load_spec(REPO / mount["source"] / file_name)
        assert name == f"{WORKER_PREFIX}{spec.name}"
        run.append(file_name)
    assert sorted(run) == sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name not in NOT_RUN)


def test_workers_serve_health_and_metrics_on_their_port(workers: dict[str, dict[str, Any]]) -> None:
    """A worker's health check and its published port use the port its ``eddy run --port`` serves."""
    for name, service in workers.items():
        port = worker_port(service)
        url = urlsplit(healthcheck_url(service))
        assert (url.port, url.path) == (port, "/healthz"), name
        assert [container for _, _, container in published_ports(service)] == [port], name


def test_prometheus_scrapes_every_worker(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    """The mounted Prometheus configuration scrapes each worker, by service name and --port, at /metrics."""
    (mount,) = (m for m in long_volumes(services["prometheus"]) if m["target"] == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((REPO / mount["source"]).read_text(encoding="utf-8"))
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "eddy")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert sorted(targets) == sorted(f"{name}:{worker_port(s)}" for name, s in workers.items())


def test_workers_point_at_the_compose_services(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    """The EDDY_* settings are valid Settings and name services of this file on the ports they listen on; the
    worker waits for each of them to be healthy."""
    kafka_ports = {
        int(urlsplit(listener).port or 0) for listener in services["kafka"]["environment"]["KAFKA_LISTENERS"].split(",")
    }
    mlflow_command = services["mlflow"]["command"]
    listening = {
        "kafka": kafka_ports,
        "redis": {6379},  # redis-server's default: the service's command sets no --port
        "mlflow": {int(mlflow_command[mlflow_command.index("--port") + 1])},
    }
    for name, service in workers.items():
        env = {key: str(value) for key, value in service["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.secret, f"{name}: EDDY_SECRET must be set"
        for url in (settings.broker, settings.state, settings.registry):
            parts = urlsplit(url)
            assert parts.hostname in listening, f"{name}: {url} names no service of this file"
            assert parts.port in listening[parts.hostname], f"{name}: {url}: {parts.hostname} does not listen there"
            assert service["depends_on"][parts.hostname] == {"condition": "service_healthy"}


def test_grafana_shows_the_chart_dashboard_from_prometheus(services: dict[str, dict[str, Any]]) -> None:
    """Grafana's provisioning loads helm/eddy/dashboards (mounted, not copied) and a default Prometheus
    datasource at the prometheus service, which the dashboard's ${datasource} variable picks."""
    mounts = {m["target"]: m["source"] for m in long_volumes(services["grafana"]) if m["type"] == "bind"}
    provisioning = REPO / mounts["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load((provisioning / "eddy.yaml").read_text(encoding="utf-8"))["providers"]
    dashboards_folder = mounts[provider["options"]["path"]]
    assert dashboards_folder == "./helm/eddy/dashboards"
    assert (REPO / dashboards_folder / "eddy.json").is_file()

    datasources = REPO / mounts["/etc/grafana/provisioning/datasources"]
    (datasource,) = yaml.safe_load((datasources / "prometheus.yaml").read_text(encoding="utf-8"))["datasources"]
    dashboard = yaml.safe_load((REPO / dashboards_folder / "eddy.json").read_text(encoding="utf-8"))
    (variable,) = (v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["type"] == "datasource" and variable["query"] == datasource["type"] == "prometheus"
    assert re.search(variable.get("regex") or "", datasource["name"])
    assert datasource["isDefault"] is True
    url = urlsplit(datasource["url"])
    prometheus = services["prometheus"]
    assert url.hostname == "prometheus" and url.port == urlsplit(healthcheck_url(prometheus)).port


def test_images_are_pinned_and_mlflow_matches_the_client(services: dict[str, dict[str, Any]]) -> None:
    """Third-party images have a fixed tag (no 'latest'); the MLflow server is the version of the client the
    workers run; Kafka is the official apache/kafka image."""
    for name, service in services.items():
        if name.startswith(WORKER_PREFIX):
            continue
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{name}: pin {service['image']!r}"
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (mlflow_pin,) = (d for d in dependencies if d.startswith("mlflow=="))
    assert services["mlflow"]["image"].endswith(f":v{mlflow_pin.removeprefix('mlflow==')}")
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    """One combined broker and controller, no ZooKeeper, a valid cluster id, and a listener for the containers on
    the port the workers use plus one for the host on the published port."""
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    advertised = {
        urlsplit(listener).hostname: urlsplit(listener).port
        for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    (host_port,) = (host for _, host, container in published_ports(services["kafka"]) if container == 9094)
    assert advertised == {"kafka": 9092, "localhost": host_port}
