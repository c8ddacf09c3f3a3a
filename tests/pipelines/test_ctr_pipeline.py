"""A CTR pipeline in mode learn: impressions and clicks of live.interactions labelled by their kind, with AUC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.messages import Interaction, encode
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, always
from pipelines.operators import LearnerOperator, Record, Source, features_and_label
from pipelines.spec import SpecError, load_spec, parse_spec
from pipelines.testing import PipelineHarness

pytestmark = pytest.mark.timeout(300)
Harness = Callable[..., PipelineHarness]
EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "live-ctr.yaml"


@pytest.fixture(scope="module")
def interactions() -> list[Interaction]:
    log = LivePlatform(LivePlatformConfig(users=300, streamers=12), seed=2).run(always)
    return [m.message for m in log.messages() if isinstance(m.message, Interaction)]


def spec_data(**changes: Any) -> dict[str, Any]:
    data = load_spec(EXAMPLE).model_dump(by_alias=True, exclude_none=True)
    data.pop("registry")
    return {**data, **changes}


def test_the_label_comes_from_the_kind_and_the_value_is_hidden() -> None:
    click = Interaction(user="1", streamer="2", room="3", kind="click", value=40.0, ts=1.0)
    operator = load_spec(EXAMPLE).operator
    features, label = features_and_label(click, operator.target, labels=operator.labels, exclude=operator.exclude)
    assert label is True and features == {"user": "1", "streamer": "2", "room": "3"}
    comment = click.model_copy(update={"kind": "comment"})
    assert features_and_label(comment, "kind", labels=operator.labels)[1] is None


def test_impressions_and_clicks_are_learned_with_a_useful_auc_and_the_rest_skipped(
    interactions: list[Interaction],
) -> None:
    operator = LearnerOperator.from_spec(parse_spec(spec_data()))
    records = [
        Record(m, Source(encode(m), m.user.encode(), "live.interactions", 0, i, 0)) for i, m in enumerate(interactions)
    ]
    result = operator.process(records)

    exposures = [m for m in interactions if m.kind in ("click", "impression")]
    assert len(result.outputs) == operator.learned == len(exposures) and not result.rejected
    scores = operator.scores()
    assert scores["skipped"] == len(interactions) - len(exposures) > 0
    # ids only (KuaiLive logs carry no fatigue): better than chance, and than a coin's log-loss
    assert scores["auc"] > 0.55 and 0 < scores["log_loss"] < 0.69


def test_labels_need_a_target_in_mode_learn() -> None:
    data = spec_data()
    data["operator"] = {**data["operator"], "target": None}
    with pytest.raises(SpecError, match=r"operator\.labels needs mode 'learn' and operator.target"):
        parse_spec({**data, "operator": {k: v for k, v in data["operator"].items() if v is not None}})


def test_over_the_bus_comments_are_not_dead_lettered(
    pipeline_harness: Harness, interactions: list[Interaction]
) -> None:
    harness = pipeline_harness(spec_data())
    harness.send(interactions[:400])
    result = harness.run()
    exposures = sum(1 for m in interactions[:400] if m.kind in ("click", "impression"))
    assert len(result.outputs["predictions"]) == exposures and not result.dead_letters
    assert result.status.scores["skipped"] == 400 - exposures
