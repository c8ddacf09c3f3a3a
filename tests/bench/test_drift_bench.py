"""bench/drift.py: its metrics on hand-made sequences, drifts where the streams say, and a tiny end-to-end run."""

from __future__ import annotations

import doctest
import json
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench import drift
from bench.drift import SEA_VARIANTS, Instance, PrequentialScore, build_stream, drift_positions, kappa

SEA_THRESHOLDS = {0: 8.0, 1: 9.0, 2: 7.0, 3: 9.5}  # River's SEA: y = x0 + x1 > threshold


def test_the_modules_doctests_pass() -> None:
    """pytest's doctest run covers learners/ and friends, not bench/: run bench/drift.py's examples here."""
    assert doctest.testmod(drift).failed == 0


def score(labels: Sequence[int], predictions: Sequence[int | None]) -> PrequentialScore:
    result = PrequentialScore()
    for y, y_pred in zip(labels, predictions, strict=True):
        result.update(y, y_pred)
    return result


LABELS = [1, 1, 0, 1, 1, 0, 0, 1, 1, 1]


def test_a_perfect_classifier_scores_one_on_every_metric() -> None:
    perfect = score(LABELS, LABELS)
    assert (perfect.accuracy, perfect.kappa_m, perfect.kappa_t) == (1.0, 1.0, 1.0)


def test_the_baselines_themselves_score_zero_kappa() -> None:
    majority = score(LABELS, [None] + [1] * (len(LABELS) - 1))  # class 1 leads from the first label on
    no_change = score(LABELS, [None, *LABELS[:-1]])
    assert majority.kappa_m == 0.0 and majority.accuracy == majority.majority_accuracy == 0.6
    assert no_change.kappa_t == 0.0 and no_change.accuracy == no_change.no_change_accuracy == 0.5


def test_worse_than_a_baseline_is_negative_and_a_perfect_baseline_leaves_kappa_undefined() -> None:
    always_wrong = score(LABELS, [1 - y for y in LABELS])
    assert always_wrong.accuracy == 0.0 and always_wrong.kappa_m < 0 and always_wrong.kappa_t < 0
    assert kappa(0.5, 0.75) == -1.0
    assert math.isnan(kappa(1.0, 1.0))


def test_majority_ties_keep_the_class_that_led_first() -> None:
    """After 0, 1 the counts tie: the majority stays 0, so it is right on the third label 0 and wrong on 1."""
    assert score([0, 1, 0], [0, 0, 0]).majority_correct == 1
    assert score([0, 1, 1], [0, 0, 0]).majority_correct == 0


@pytest.mark.parametrize(("key", "instances"), [("sea_a", 4_000), ("sea_g", 20_000)])
def test_sea_switches_concept_at_25_50_75_percent(key: str, instances: int) -> None:
    """Without label noise a SEA label says which thresholds it fits. Between drifts, from 2 widths after one
    drift's centre to 2 widths before the next (where MOA's sigmoid leaves the other concepts a chance below 4e-4
    per instance), the labels fit the stretch's concept and not its neighbours' (which disagree on 4-12% of
    instances), so the concept changed at the drifts and nowhere else."""
    data = list(build_stream(key, instances, seed=3, noise=0.0))
    width = drift.drift_width(instances, gradual=key.endswith("_g"))
    bounds = [0, *drift_positions(instances), instances]
    for j, variant in enumerate(SEA_VARIANTS):
        stretch = data[max(0, bounds[j] + 2 * width) : bounds[j + 1] - 2 * width]
        assert len(stretch) >= 800
        assert share_fitting(stretch, variant) >= 0.998, (key, j)
        for k in (j - 1, j + 1):
            if 0 <= k < len(SEA_VARIANTS):
                assert share_fitting(stretch, SEA_VARIANTS[k]) <= 0.98, (key, j, k)


def share_fitting(stretch: list[Instance], variant: int) -> float:
    return sum(fits(x, y, variant) for x, y in stretch) / len(stretch)


def test_a_gradual_drift_mixes_both_concepts_around_its_centre_and_an_abrupt_one_does_not() -> None:
    """Around the first drift (SEA variant 0 -> 1), count the labels that fit only the new concept."""
    for key, expect_mixed in [("sea_g", True), ("sea_a", False)]:
        instances = 20_000
        position, width = drift_positions(instances)[0], drift.drift_width(instances, gradual=expect_mixed)
        data = list(build_stream(key, instances, seed=3, noise=0.0))
        before = data[position - 400 : position - 100]  # 0.1 to 0.4 widths before a gradual drift's centre
        only_new = [fits(x, y, 1) and not fits(x, y, 0) for x, y in before]
        assert any(only_new) == expect_mixed, (key, width)


def fits(x: dict[Hashable, Any], y: Hashable, variant: int) -> bool:
    """Whether SEA label ``y`` is what concept ``variant`` gives ``x`` (without noise)."""
    return (x[0] + x[1] > SEA_THRESHOLDS[variant]) == y


def test_every_stream_yields_the_instances_asked_for_with_its_features() -> None:
    widths = {"sea": 3, "led": 24, "rbf": 10}
    for key in drift.STREAMS:
        data = list(build_stream(key, 1_200, seed=0))
        assert len(data) == 1_200
        assert {len(x) for x, _ in data} == {widths[key[:3]]}, key
    assert {v for x, _ in build_stream("led_a", 50, seed=0) for v in x.values()} == {"0", "1"}  # nominal, as MOA's


def test_a_small_run_writes_a_table_per_stream_and_resumes_from_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc, cache = tmp_path / "benchmarks.md", tmp_path / "cache.jsonl"

    def small_run() -> str:
        streams, models = ["sea_a", "rbf_m"], ["moe_data", "ht"]
        return drift.run(instances=2_000, seeds=1, streams=streams, models=models, jobs=1, cache=cache, doc=doc)

    body = small_run()

    text = doc.read_text()
    assert "<!-- bench:drift:start -->" in text and "DriftMoE vs. River ensembles on drifting streams" in text
    assert body.strip() in text
    for title in ("SEA, abrupt drifts", "RandomRBF, moderate incremental drift"):
        table = body.split(title)[1].split("\n\n")[1].splitlines()
        rows = [line.split(" | ")[0].lstrip("| ") for line in table[2:]]
        assert rows == [drift.CONTENDERS["ht"].label, drift.CONTENDERS["moe_data"].label]  # cheapest first
        assert all(line.endswith("| n/a |") for line in table[2:])  # no paper figure to quote
    assert "MoE-Data ≥ 3,000 instances/s on one core (CPU): sea_a" in body
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(records) == 4 and all(0.5 < r["accuracy"] <= 1.0 and r["peak_bytes"] > 0 for r in records)
    assert all(r["revision"] == drift.revision() and r["finished"].startswith("20") for r in records)

    def no_measuring(*args: object) -> None:
        raise AssertionError(f"measured {args} again instead of reading the cache")

    monkeypatch.setattr(drift, "measure", no_measuring)
    with cache.open("a") as out:
        out.write('{"key": "[1, \\"cut short by a kill')  # an interrupted write: skipped, not fatal
    assert small_run() == body


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--instances", "10"], "--instances must be at least 1,000 (got 10)"),
        (["--seeds", "0"], "--seeds must be at least 1 (got 0)"),
        (["--paper", "--seeds", "3"], "drop --instances/--seeds, or drop --paper"),
        (["--jobs", "0"], "--jobs must be between 1 and"),
        (["--streams", "sea_a,airlines"], "unknown stream airlines; give a comma-separated list of sea_a"),
        (["--models", ""], "unknown model (none given)"),
    ],
)
def test_bad_command_lines_are_refused_with_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        drift.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
