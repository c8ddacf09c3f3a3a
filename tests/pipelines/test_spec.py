"""Pipeline specs: the examples load, every kind of mistake gives a house-style message, operators resolve."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.spec import (
    PipelineSpec,
    SpecError,
    load_spec,
    load_specs,
    parse_spec,
    resolve_operator,
    spec_json_schema,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "name": "live-ctr",
    "input": {"topics": ["live.interactions"], "schema": "event/v1"},
    "operator": {"use": "river.tree:HoeffdingTreeClassifier"},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    """MINIMAL with dotted paths set (``**{"batch.max": 0}``); a value of ``...`` removes the key."""
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is ...:
            node.pop(key, None)
        else:
            node[key] = value
    return data


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- what loads ---------------------------------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLE_FILES} >= {"demo-driftmoe.yaml", "demo-serve.yaml", "relay.yaml"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_loads_and_says_what_it_is(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, PipelineSpec)
    assert path.read_text().startswith("# "), "each example starts with a comment saying what it is"
    assert spec.dlq_topic == f"{spec.name}.dlq"
    assert spec.output_topics == list(spec.outputs.values())
    if spec.operator.use is not None:
        resolve_operator(spec)


def test_examples_load_together() -> None:
    names = [
        "cameras-frames",
        "cartpole-streamq",
        "demo",
        "demo-serve",
        "interactions-tpp",
        "live-allocation",
        "live-ctr",
        "live-recommender",
        "relay",
    ]
    assert [s.name for s in load_specs([EXAMPLES])] == names


def test_demo_example_is_what_the_demo_expects() -> None:
    spec = load_spec(EXAMPLES / "demo-driftmoe.yaml")
    assert (spec.name, spec.input.topics, spec.input.schema_name) == ("demo", ["demo.events"], "event/v1")
    assert (spec.operator.use, spec.operator.params, spec.operator.mode) == (
        "learners.driftmoe:MoEData",
        {"n_experts": 12, "top_k": 3, "seed": 42},
        "learn",
    )
    assert (spec.batch.max, spec.batch.within_ms) == (256, 20)
    assert (spec.checkpoint.every_events, spec.checkpoint.every_s) == (2000, 5)
    assert spec.registry is not None and spec.monitor is not None
    assert (spec.registry.model, spec.registry.publish_every_events, spec.registry.alias) == ("demo", 10000, "champion")
    assert (spec.monitor.detector, spec.monitor.metrics) == ("adwin", ["accuracy"])


def test_serve_example_follows_the_champion() -> None:
    spec = load_spec(EXAMPLES / "demo-serve.yaml")
    assert spec.operator.mode == "serve"
    assert spec.outputs == {"predictions": "demo-serve.predictions"}
    assert spec.followed_model_uri == "models:/demo@champion"


def test_minimal_spec_gets_sane_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.input.start == "earliest"
    assert spec.operator.mode == "learn" and spec.operator.params == {} and spec.operator.target is None
    assert (spec.batch.max, spec.batch.within_ms) == (256, 20)
    assert (spec.checkpoint.every_events, spec.checkpoint.every_s) == (10_000, 30)
    assert spec.outputs == {"predictions": "live-ctr.predictions"}
    assert spec.registry is None and spec.monitor is None and spec.followed_model_uri is None
    assert spec.limits.max_message_bytes == 1_048_576


def test_spec_is_frozen_and_round_trips() -> None:
    spec = parse_spec(spec_with(**{"registry": {"model": "live-ctr"}}))
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    assert parse_spec(spec.model_dump(by_alias=True)) == spec


@pytest.mark.parametrize(
    "changes",
    [
        {"input.schema": "interaction/v1", "operator.target": "clicked"},
        {"input.schema": "interaction/v1", "operator.mode": "serve", "registry": {"model": "m", "follow": "champion"}},
        {"operator": {"mode": "relay"}},
        {"operator.mode": "serve", "operator.use": ..., "registry": {"model": "m", "follow": "champion"}},
        {"input.topics": ["a", "b.c_d-E"], "input.start": "latest"},
        {"batch": {"max": 100_000, "within_ms": 0}},
        {"checkpoint": {"every_events": 1, "every_s": 0.5}},
        {"outputs": {"predictions": "p", "drift_alarms": "p.alarms"}},
        {"monitor": {"detector": "none", "metrics": []}},
        {"name": "a"},
    ],
    ids=repr,
)
def test_valid_variants(changes: dict[str, Any]) -> None:
    parse_spec(spec_with(**changes))


# -- what is refused, and what the message says -------------------------------------------------------------------

INVALID = [
    ({"batch.max": 0}, "pipeline 'live-ctr': batch.max must be >= 1 (got 0)"),
    ({"batch.max": 100_001}, "batch.max must be <= 100000 (got 100001)"),
    ({"batch.max": "lots"}, "batch.max must be an integer (got 'lots')"),
    ({"batch.within_ms": -1}, "batch.within_ms must be >= 0 (got -1)"),
    ({"checkpoint.every_events": 0}, "checkpoint.every_events must be >= 1 (got 0)"),
    ({"checkpoint.every_s": 0}, "checkpoint.every_s must be > 0 (got 0)"),
    ({"name": "Live_CTR"}, "<spec>: name must be lowercase letters, digits and '-'"),
    ({"name": "live-"}, "(got 'live-')"),
    ({"name": "x" * 64}, "name must be at most 63 characters (got 64)"),
    ({"name": 123}, "<spec>: name must be a string (quote it in YAML) (got 123)"),
    ({"name": ...}, "<spec>: name is required (add 'name:' at the top level)"),
    ({"input.schema": ...}, "input.schema is required (add 'schema:' under 'input')"),
    ({"input.schema": "event"}, "input.schema must look like 'name/v<version>', e.g. 'event/v1' (got 'event')"),
    ({"input.topics": []}, "pipeline 'live-ctr': input.topics must list at least one topic (got [])"),
    ({"input.topics": "live.interactions"}, "input.topics must be a list"),
    ({"input.topics": ["live interactions"]}, "input.topics has an invalid topic name 'live interactions'"),
    ({"input.topics": ["t" * 250]}, "topic names are at most 249 characters (got 250)"),
    ({"input.topics": ["a", "a"]}, "input.topics lists 'a' more than once"),
    ({"input.start": "first"}, "input.start must be one of 'earliest' or 'latest' (got 'first')"),
    ({"input.fetch_wait_ms": 0}, "input.fetch_wait_ms must be >= 1 (got 0)"),
    ({"operator.use": "river.tree.HoeffdingTreeClassifier"}, "operator.use must be 'package.module:Attr'"),
    ({"operator.use": ...}, "operator.use is required for mode 'learn'"),
    (
        {"operator.mode": "train"},
        "operator.mode must be one of 'learn', 'serve', 'relay', 'agent', 'sequence', 'frames', 'recommend' or "
        "'allocate' (got "
        "'train')",
    ),
    ({"operator.parms": {"a": 1}}, "unknown field 'operator.parms' (did you mean 'params'?)"),
    ({"ouputs": {"predictions": "x"}}, "unknown field 'ouputs' (did you mean 'outputs'?)"),
    ({"batch.size": 3}, "unknown field 'batch.size' (allowed: max, within_ms)"),
    ({"operator.mode": "serve"}, "operator.mode 'serve' needs registry.model and registry.follow"),
    ({"operator.mode": "serve", "registry": {"model": "m"}}, "e.g. registry: {model: demo, follow: champion}"),
    ({"registry": {"follow": "champion"}}, "registry.model is required"),
    (
        {"registry": {"model": "m", "follow": "champion"}},
        "registry.follow is only used in modes 'serve' and 'recommend'",
    ),
    ({"operator.mode": "recommend"}, "operator.mode 'recommend' needs registry.model and registry.follow"),
    ({"registry": {"model": "m", "alias": "latest"}}, "registry.alias must be an MLflow alias"),
    ({"registry": {"model": "m", "publish_every_events": 0}}, "registry.publish_every_events must be >= 1"),
    (
        {"operator.mode": "serve", "registry": {"model": "m", "follow": "c", "publish_every_events": 5}},
        "registry.publish_every_events is only used in mode 'learn'",
    ),
    ({"input.schema": "interaction/v1"}, "operator.target is required for input.schema 'interaction/v1'"),
    ({"operator.target": ""}, "operator.target must name the label field"),
    ({"operator.mode": "relay", "registry": {"model": "m"}}, "registry is not used in mode 'relay'"),
    ({"operator.mode": "relay", "monitor": {}}, "monitor is not used in mode 'relay'"),
    (
        {"monitor": {"detector": "cusum"}},
        "monitor.detector must be one of 'adwin', 'page_hinkley', 'kswin', 'ddm' or 'none'",
    ),
    ({"monitor": {"metrics": ["f1"]}}, "monitor.metrics[0] must be one of"),
    ({"monitor": {"metrics": ["mae", "mae"]}}, "monitor.metrics lists 'mae' more than once"),
    ({"outputs": {"scores": "x.scores"}}, "outputs must name a 'predictions' topic"),
    ({"outputs": {"predictions": "bad topic"}}, "outputs predictions is not a valid topic name 'bad topic'"),
    ({"outputs": {"predictions": "eddy.models"}}, "reserved topic 'eddy.models'"),
    ({"outputs": {"predictions": "a", "Other": "b"}}, "outputs has an invalid output name 'Other'"),
    ({"outputs": {"predictions": "a", "other": "a"}}, "outputs sends several outputs to 'a'"),
    ({"outputs": {"predictions": "live.interactions"}}, "must not consume its own output"),
    ({"outputs": {"predictions": "live-ctr.dlq"}}, "is the dead-letter topic"),
    ({"limits": {"max_message_bytes": 0}}, "limits.max_message_bytes must be >= 1 (got 0)"),
    ({"batch": [256]}, "batch must be a mapping of fields (got [256])"),
]


@pytest.mark.parametrize(("changes", "fragment"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_spec_names_the_field_the_value_and_the_fix(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_with(**changes))
    assert fragment in str(caught.value)
    assert all(line.startswith(("pipeline 'live-ctr': ", "<spec>: ")) for line in str(caught.value).splitlines())


def test_every_error_is_listed_one_per_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_with(**{"batch.max": 0, "input.topics": [], "operator.parms": {}}))
    assert caught.value.source == "pipeline 'live-ctr'"
    assert len(caught.value.problems) == 3
    assert str(caught.value).splitlines() == [f"pipeline 'live-ctr': {p}" for p in caught.value.problems]


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


# -- files --------------------------------------------------------------------------------------------------------

BAD_FILES = [
    ("name: x\ninput: {topics: [a], schema: event/v1\noperator: {use: a:b}\n", "invalid YAML at line 3"),
    ("name: x\n  input: 1\n", "invalid YAML at line 2"),
    ("", "spec file is empty"),
    ("# nothing but a comment\n", "spec file is empty"),
    ("- name: x\n", "the top level must be a mapping of fields (name, input, operator, ...), got a list"),
    ("just text\n", "got a str"),
    ("name: x\ninput: {topics: [a], schema: event/v1}\noperator: {use: a:b}\nbatch: {max: 0}\n", "batch.max"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_FILES, ids=[f for _, f in BAD_FILES])
def test_bad_file_names_the_file_and_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"{path}: ") or message.startswith("pipeline 'x': ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: spec file not found \(looked for .*nope\.yaml\)"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_name_is_reported_against_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Bad Name\ninput: {topics: [a], schema: event/v1}\noperator: {use: a:b}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        "name must be lowercase letters, digits and '-', starting and ending with a letter or digit, "
        "e.g. 'live-ctr' (got 'Bad Name')"
    ]
    assert str(caught.value).startswith(f"{path}: name must be")


MAIN = "input: {topics: [in], schema: event/v1}\noperator: {use: a:b}\n"
CONFLICTS = [
    (["name: same\n", "name: same\n"], "pipeline 'same': name used by both"),
    (["name: a\noutputs: {predictions: shared}\n", "name: b\noutputs: {predictions: shared}\n"], "topic 'shared'"),
    (["name: a\n", "name: b\noutputs: {predictions: a.dlq}\n"], "topic 'a.dlq' is written by pipeline 'a'"),
]


@pytest.mark.parametrize(("heads", "fragment"), CONFLICTS, ids=[f for _, f in CONFLICTS])
def test_specs_that_cannot_run_together(tmp_path: Path, heads: list[str], fragment: str) -> None:
    paths = [write(tmp_path, head + MAIN, f"{i}.yaml") for i, head in enumerate(heads)]
    with pytest.raises(SpecError) as caught:
        load_specs(paths)
    assert fragment in str(caught.value)


def test_load_specs_reports_every_bad_file(tmp_path: Path) -> None:
    first = write(tmp_path, "name: a\nbatch: {max: 0}\n" + MAIN, "a.yaml")
    second = write(tmp_path, "", "b.yaml")
    with pytest.raises(SpecError) as caught:
        load_specs([first, second])
    assert str(caught.value).splitlines() == [
        "pipeline 'a': batch.max must be >= 1 (got 0)",
        f"{second}: spec file is empty; a spec needs at least name, input and operator",
    ]


def test_load_specs_keeps_order(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"name: {n}\n" + MAIN, f"{n}.yaml") for n in ("zeta", "alpha")]
    assert [s.name for s in load_specs(paths)] == ["zeta", "alpha"]


# -- JSON schema --------------------------------------------------------------------------------------------------


def test_json_schema_is_json_with_the_spec_fields() -> None:
    schema = json.loads(json.dumps(spec_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == "Eddy pipeline spec"
    assert set(schema["properties"]) == {
        "name",
        "input",
        "operator",
        "batch",
        "outputs",
        "checkpoint",
        "registry",
        "monitor",
        "sequence",
        "frames",
        "recommend",
        "allocate",
        "limits",
    }
    assert set(schema["required"]) == {"name", "input", "operator"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert set(defs["InputSpec"]["properties"]) == {"topics", "schema", "start", "fetch_wait_ms"}
    assert defs["OperatorSpec"]["properties"]["mode"]["enum"] == [
        "learn",
        "serve",
        "relay",
        "agent",
        "sequence",
        "frames",
        "recommend",
        "allocate",
    ]
    assert defs["BatchSpec"]["properties"]["max"]["minimum"] == 1


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_validate_against_the_json_schema(path: Path) -> None:
    import jsonschema
    import yaml

    jsonschema.validate(yaml.safe_load(path.read_text()), spec_json_schema())


# -- resolving the operator ---------------------------------------------------------------------------------------


def test_resolve_operator_imports_the_class() -> None:
    from river.tree import HoeffdingTreeClassifier

    spec = parse_spec(spec_with(**{"operator.params": {"grace_period": 100}}))
    assert resolve_operator(spec) is HoeffdingTreeClassifier
    assert resolve_operator("river.tree:HoeffdingTreeClassifier") is HoeffdingTreeClassifier
    assert resolve_operator("os.path:join") is __import__("os").path.join


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module that imports a dependency which is not installed, and one that raises while importing."""
    (tmp_path / "eddy_test_needs_dependency.py").write_text("import eddy_no_such_dependency\n")
    (tmp_path / "eddy_test_raises.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "eddy_test_needs_dependency"


RESOLVE_FAILURES = [
    ("river.nosuch:Thing", {}, "module 'river.nosuch' not found"),
    ("eddy_no_such_package:Thing", {}, "module 'eddy_no_such_package' not found"),
    ("river.tree:HoefdingTreeClassifier", {}, "'river.tree' has no attribute 'HoefdingTreeClassifier' (did you mean"),
    ("river.tree:HoeffdingTreeClassifier.nope", {}, "'river.tree:HoeffdingTreeClassifier' has no attribute 'nope'"),
    ("river.tree:__name__", {}, "is a str, not a class or factory"),
    ("river.tree:HoeffdingTreeClassifier", {"grace_perod": 1}, "operator.params.grace_perod is not a parameter"),
    ("eddy_test_needs_dependency:X", {}, "needs 'eddy_no_such_dependency', which is not installed"),
    ("eddy_test_raises:X", {}, "importing 'eddy_test_raises' failed: RuntimeError: boom"),
]


@pytest.mark.parametrize(("use", "params", "fragment"), RESOLVE_FAILURES, ids=[f for _, _, f in RESOLVE_FAILURES])
@pytest.mark.usefixtures("broken_module")
def test_resolve_operator_failures(use: str, params: dict[str, Any], fragment: str) -> None:
    spec = parse_spec(spec_with(**{"operator.use": use, "operator.params": params}))
    with pytest.raises(SpecError) as caught:
        resolve_operator(spec)
    assert str(caught.value).startswith("pipeline 'live-ctr': ")
    assert fragment in str(caught.value)


def test_resolve_operator_suggests_the_parameter() -> None:
    spec = parse_spec(spec_with(**{"operator.params": {"grace_perod": 1}}))
    with pytest.raises(SpecError, match="did you mean 'grace_period'"):
        resolve_operator(spec)


def test_resolve_operator_needs_a_use() -> None:
    with pytest.raises(SpecError, match=r"operator\.use is not set"):
        resolve_operator(parse_spec(spec_with(operator={"mode": "relay"})))
