"""The model registry against a real sqlite MLflow store (no mocks)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.registry import ModelRegistry, ModelVersionInfo, RegistryError, parse_model_uri
from connectors.settings import Settings
from pipelines.testing.plugin import make_registry

_names = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, eddy_mlflow_template: Path) -> ModelRegistry:
    """One store for the module; every test registers its own model names."""
    return make_registry(tmp_path_factory.mktemp("registry"), eddy_mlflow_template)


Publish = Callable[..., ModelVersionInfo]


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.originalname.removeprefix('test_')}-{next(_names)}".replace("_", "-")


@pytest.fixture
def publish(shared: ModelRegistry, model_name: str) -> Publish:
    """Publish ``payload`` as the next version of this test's model."""

    def run(payload: bytes, events: int = 100, model: str | None = None, **kwargs: object) -> ModelVersionInfo:
        return shared.publish(
            model_name if model is None else model,
            payload,
            params={"lr": 0.05, "experts": 12, "adaptive": True, "kind": "moe"},
            metrics={"accuracy": events / 1000, "kappa_m": 0.25},
            offsets={"live.interactions:0": events, "live.interactions:1": events // 2},
            events=events,
            **kwargs,  # type: ignore[arg-type]
        )

    return run


def test_publish_then_load_by_version_and_alias(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    payload = bytes(range(256)) * 10
    info = publish(payload, events=400, alias="champion", pipeline="live-ctr")

    assert info.model == model_name
    assert info.version == "1"
    assert info.uri == f"models:/{model_name}/1"
    assert info.aliases == ["champion"]
    assert info.events == 400
    assert info.offsets == {"live.interactions:0": 400, "live.interactions:1": 200}
    assert info.metrics == {"accuracy": 0.4, "kappa_m": 0.25}
    assert info.pipeline == "live-ctr"
    assert info.run_id and info.created_at > 1e9
    assert Path(info.source).is_relative_to(shared.artifacts_dir or Path("/nonexistent"))

    for loaded in (shared.load(model_name, version=1), shared.load(model_name, alias="champion")):
        assert loaded.payload == payload
        assert loaded.info == info


def test_run_records_params_metrics_and_offsets(shared: ModelRegistry, publish: Publish) -> None:
    info = publish(b"x", events=10)
    run = shared.client.get_run(info.run_id)
    assert run.data.params == {"lr": "0.05", "experts": "12", "adaptive": "True", "kind": "moe"}
    assert run.data.metrics == {"accuracy": 0.01, "kappa_m": 0.25}
    assert run.data.tags["eddy.events"] == "10"
    assert run.data.tags["eddy.offsets"] == '{"live.interactions:0": 10, "live.interactions:1": 5}'
    assert (Path(info.source) / "offsets.json").read_text() == run.data.tags["eddy.offsets"]
    assert (Path(info.source) / "payload.bin").read_bytes() == b"x"


def test_versions_increase_and_list_versions(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    published = [publish(f"v{i}".encode(), events=100 * i) for i in range(1, 4)]
    assert [v.version for v in published] == ["1", "2", "3"]

    listed = shared.list_versions(model_name)
    assert listed == published
    assert [v.events for v in listed] == [100, 200, 300]
    assert listed[0].created_at <= listed[-1].created_at
    assert shared.load(model_name, version="2").payload == b"v2"


def test_promote_and_rollback_chain(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    publish(b"one", alias="champion")
    publish(b"two")
    assert shared.load(model_name, alias="champion").payload == b"one"

    promoted = shared.promote(model_name, 2)
    assert (promoted.version, promoted.aliases) == ("2", ["champion"])
    assert shared.load(model_name, alias="champion").payload == b"two"
    assert shared.promote(model_name, "2").version == "2"  # no-op, does not grow the history

    back = shared.rollback(model_name)
    assert (back.version, back.aliases) == ("1", ["champion"])
    assert shared.load(model_name, alias="champion").payload == b"one"
    assert shared.get_version(model_name, version=2).aliases == []

    with pytest.raises(RegistryError, match=r"no earlier version to roll back to \(it points at version 1\)"):
        shared.rollback(model_name)
    assert shared.load(model_name, alias="champion").payload == b"one"


def test_aliases_have_independent_histories(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    for i in range(1, 4):
        publish(f"v{i}".encode())
    shared.promote(model_name, 1, "champion")
    shared.promote(model_name, 2, "canary")
    shared.promote(model_name, 3, "canary")
    shared.promote(model_name, 3, "champion")

    assert shared.rollback(model_name, "canary").version == "2"
    assert shared.rollback(model_name, "champion").version == "1"
    with pytest.raises(RegistryError, match="'canary' has no earlier version"):
        shared.rollback(model_name, "canary")
    with pytest.raises(RegistryError, match="points at no version"):
        shared.rollback(model_name, "staging")


def test_load_uri_forms(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    publish(b"first", alias="champion")
    publish(b"second")
    assert shared.load_uri(f"models:/{model_name}@champion").payload == b"first"
    assert shared.load_uri(f"models:/{model_name}/2").payload == b"second"
    assert parse_model_uri(f"models:/{model_name}/2") == (model_name, "2", None)
    for bad in ("models:/", f"runs:/{model_name}/1", f"models:/{model_name}", f"models:/{model_name}/x/1"):
        with pytest.raises(RegistryError, match="model URI must be"):
            shared.load_uri(bad)


def test_unknown_model_version_alias(shared: ModelRegistry, publish: Publish, model_name: str) -> None:
    publish(b"p", alias="champion")
    with pytest.raises(RegistryError, match=r"model 'nope' is not registered.*eddy models list") as err:
        shared.load("nope", version=1)
    assert repr(model_name) in str(err.value)  # lists what exists
    with pytest.raises(RegistryError, match=r"has no version 7 \(versions: 1\)"):
        shared.load(model_name, version=7)
    with pytest.raises(RegistryError, match=r"has no alias 'canary' \(aliases: champion->1\)"):
        shared.load(model_name, alias="canary")
    with pytest.raises(RegistryError, match="has no version 5"):
        shared.promote(model_name, 5)
    with pytest.raises(RegistryError, match="is not registered"):
        shared.rollback("nope")
    with pytest.raises(RegistryError, match="is not registered"):
        shared.list_versions("nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of version= or alias="),
        ({"version": 1, "alias": "champion"}, "exactly one of version= or alias="),
        ({"version": 0}, "version must be a positive integer"),
        ({"version": "abc"}, "version must be a positive integer"),
        ({"alias": ""}, "alias must be"),
        ({"alias": "3"}, "looks like a version"),
        ({"alias": "v3"}, "looks like a version"),
        ({"alias": "latest"}, "looks like a version"),
        ({"alias": "a b"}, "alias must be"),
    ],
)
def test_bad_load_arguments(shared: ModelRegistry, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        shared.load("any-model", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a/b", "a b", "..", "models:/x", "é"])
def test_bad_model_names(shared: ModelRegistry, publish: Publish, name: str) -> None:
    with pytest.raises(RegistryError, match="model name must be"):
        publish(b"p", model=name)
    with pytest.raises(RegistryError, match="model name must be"):
        shared.load(name, version=1)


def test_bad_publish_arguments(publish: Publish) -> None:
    with pytest.raises(RegistryError, match="alias must be"):
        publish(b"p", alias="bad alias")
    with pytest.raises(RegistryError, match="events must be an integer >= 0"):
        publish(b"p", events=-1)
    with pytest.raises(RegistryError, match="payload must be bytes"):
        publish("not bytes")


def test_list_models(eddy_registry: ModelRegistry) -> None:
    assert eddy_registry.list_models() == []
    for model in ("beta", "alpha", "alpha"):
        eddy_registry.publish(model, b"p", params={}, metrics={}, offsets={}, events=1)
    eddy_registry.promote("alpha", 1)
    eddy_registry.promote("alpha", 2, "canary")

    models = eddy_registry.list_models()
    assert [(m.name, m.latest_version, m.aliases) for m in models] == [
        ("alpha", "2", {"champion": "1", "canary": "2"}),
        ("beta", "1", {}),
    ]


def test_from_settings_keeps_everything_under_home(tmp_path: Path, eddy_mlflow_template: Path) -> None:
    settings = Settings(home=tmp_path / "nested" / ".eddy")
    settings.home.mkdir(parents=True)
    (settings.home / "mlflow.db").write_bytes(eddy_mlflow_template.read_bytes())
    registry = ModelRegistry.from_settings(settings)
    info = registry.publish("home-model", b"p", params={}, metrics={}, offsets={}, events=1)
    assert Path(info.source).is_relative_to(settings.artifacts_dir)
    assert registry.load_uri("models:/home-model/1").payload == b"p"


def test_registries_coexist(eddy_registry: ModelRegistry, shared: ModelRegistry, publish: Publish) -> None:
    publish(b"shared-only", model="coexist")
    eddy_registry.publish("coexist", b"fresh-only", params={}, metrics={}, offsets={}, events=1)
    assert eddy_registry.load("coexist", version=1).payload == b"fresh-only"
    assert shared.load("coexist", version=1).payload == b"shared-only"
