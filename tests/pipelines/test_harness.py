"""The pytest plugin's PipelineHarness and golden files, on the recorded demo stream (tests/data/demo-events)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.messages import Event
from pipelines.testing import Golden, GoldenMismatch, PipelineHarness
from pipelines.testing.golden import differences

pytestmark = pytest.mark.timeout(240)

RECORDING = Path(__file__).resolve().parents[1] / "data" / "demo-events.jsonl.gz"
DEMO_SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "demo-driftmoe.yaml"
Harness = Callable[..., PipelineHarness]


def demo_outputs(pipeline_harness: Harness, **params: object) -> list[dict[str, object]]:
    """The demo pipeline's predictions for the recorded demo stream (learner params overridden by ``params``)."""
    spec = json.loads(json.dumps(_load(DEMO_SPEC)))
    spec["operator"]["params"].update(params)
    harness = pipeline_harness(spec)
    harness.replay(RECORDING)
    result = harness.run()
    assert result.status.events_in == 600 and result.dead_letters == []
    return result.outputs["predictions"]


def _load(path: Path) -> dict[str, object]:
    import yaml

    data: dict[str, object] = yaml.safe_load(path.read_text())
    return data


def test_same_recording_through_same_seeded_pipeline_twice_gives_identical_outputs(pipeline_harness: Harness) -> None:
    first = demo_outputs(pipeline_harness)
    second = demo_outputs(pipeline_harness)
    assert len(first) == 600 and first == second
    assert [p["source_offset"] for p in first] == list(range(600))


def test_demo_pipeline_matches_its_golden_file(pipeline_harness: Harness, golden: Golden) -> None:
    golden.check("demo-predictions", demo_outputs(pipeline_harness))


def test_a_changed_learner_parameter_fails_the_golden_test_with_a_readable_diff(
    pipeline_harness: Harness, golden: Golden
) -> None:
    if golden.update:
        pytest.skip("compares with the golden file that test_demo_pipeline_matches_its_golden_file records")
    with pytest.raises(GoldenMismatch) as exc:
        golden.check("demo-predictions", demo_outputs(pipeline_harness, grace_period=20, delta=0.01))
    message = str(exc.value)
    assert "demo-predictions.json" in message and "pytest --eddy-update-golden" in message
    assert "].prediction: expected" in message or "].proba." in message


def test_harness_returns_dead_letters_and_metrics(pipeline_harness: Harness) -> None:
    harness = pipeline_harness(DEMO_SPEC)
    good = [Event(key="a", features={"x0": 1.0, "x1": 2.0, "x2": 3.0}, label=True, ts=1.0)] * 3
    harness.send([*good, b"not json", Event(key="b", features={"x0": 1.0}, ts=2.0)])
    result = harness.run()
    assert len(result.outputs["predictions"]) == 3
    assert sorted(d.reason for d in result.dead_letters) == ["invalid_json", "missing_label"]
    assert result.metrics['eddy_dead_letters_total{reason="invalid_json"}'] == 1
    assert result.metrics["eddy_events_in_total"] == 5
    assert result.outputs["predictions"][0]["ts"] == 1.0  # event time, not the wall clock: replays reproduce it


def test_restarted_replay_with_dedupe_is_skipped_by_the_pipeline_even_after_a_restart(
    pipeline_harness: Harness,
) -> None:
    harness = pipeline_harness(DEMO_SPEC)
    harness.replay(RECORDING, dedupe=True)
    assert len(harness.run().outputs["predictions"]) == 600
    harness.restart()  # the replay marks travel in the checkpoint
    harness.replay(RECORDING, dedupe=True)
    result = harness.run()
    assert result.metrics["eddy_replay_duplicates_skipped_total"] == 600
    assert result.outputs["predictions"] == []  # the new worker produced nothing


def test_replay_into_a_topic_the_pipeline_does_not_read_says_how_to_map_it(
    pipeline_harness: Harness, tmp_path: Path
) -> None:
    spec = _load(DEMO_SPEC)
    spec["input"] = {"topics": ["other.events"], "schema": "event/v1"}
    harness = pipeline_harness(spec)
    with pytest.raises(ValueError, match=r"topic_map=\{'demo.events': 'other.events'\}"):
        harness.replay(RECORDING)
    harness.replay(RECORDING, topic_map={"demo.events": "other.events"})
    assert len(harness.run().outputs["predictions"]) == 600


def test_differences_use_the_float_tolerance_and_name_each_place() -> None:
    expected = [{"p": 0.5, "label": True, "proba": {"a": 0.25}}]
    assert list(differences(expected, [{"p": 0.5 + 1e-9, "label": True, "proba": {"a": 0.25}}], rel=1e-6, abs_=0)) == []
    found = list(differences(expected, [{"p": 0.6, "label": False, "x": 1}], rel=1e-6, abs_=1e-9))
    assert found[0] == "[0].label: expected true, got false"
    assert found[1].startswith("[0].p: expected 0.5, got 0.6 (|diff| 0.1")
    assert "[0].proba: missing" in found[2] and "[0].x: unexpected" in found[3]
    assert list(differences([1], [1, 2], rel=0, abs_=0)) == ["outputs: expected 1 items, got 2"]


def test_golden_files_are_written_on_update_and_compared_otherwise(tmp_path: Path) -> None:
    Golden(tmp_path, update=True).check("run", [{"ts": 5.0, "y": 1.0}], ignore=["ts"])
    assert json.loads((tmp_path / "run.json").read_text()) == [{"y": 1.0}]
    Golden(tmp_path, update=False).check("run", [{"ts": 9.0, "y": 1.0000000001}], ignore=["ts"])
    with pytest.raises(GoldenMismatch, match=r"\[0\].y: expected 1.0, got 2.0"):
        Golden(tmp_path, update=False).check("run", [{"y": 2.0}])
    with pytest.raises(GoldenMismatch, match=r"no golden file .*missing.json; record it with"):
        Golden(tmp_path, update=False).check("missing", [])
    with pytest.raises(ValueError, match="plain file name"):
        Golden(tmp_path, update=True).check("../escape", [])


def test_update_golden_option_records_then_a_change_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_user="""
        import os

        def test_outputs(golden):
            golden.check("answers", [{"score": float(os.environ.get("SCORE", "0.5"))}])
        """
    )
    assert pytester.runpytest("-p", "no:cacheprovider").ret == 1  # no golden file yet
    assert pytester.runpytest("--eddy-update-golden").ret == 0
    assert (pytester.path / "golden" / "test_user" / "answers.json").exists()
    assert pytester.runpytest().ret == 0
    monkeypatch.setenv("SCORE", "0.75")
    failed = pytester.runpytest()
    assert failed.ret == 1
    failed.stdout.fnmatch_lines(["*[[]0[]].score: expected 0.5, got 0.75*"])
