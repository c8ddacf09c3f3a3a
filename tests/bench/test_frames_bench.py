"""bench/frames.py: its measurements on a tiny video, the skip table against hand-made truth, and a whole quick run
written to a temporary document (never docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import frames as bench
from connectors.sources import Video, synthetic_videos

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def videos() -> list[Video]:
    return synthetic_videos(cameras=2, n_frames=40, seed=0, height=bench.SIZE, width=bench.SIZE)


def test_throughput_runs_every_frame_and_reports_the_skips_in_frame_major_order(videos: list[Video]) -> None:
    batches = bench.time_step_batches(videos, CPU)
    assert len(batches) == 40 and batches[3][1] == [3, 3] and batches[3][0] == ["cam0", "cam1"]
    rate, skipped = bench.throughput_run(batches, bench.THRESHOLD, seed=0, device=CPU)
    assert rate > 0 and skipped.shape == (80,)
    static = np.stack([video.static for video in videos], axis=1).reshape(-1)
    assert skipped[torch.from_numpy(static)].float().mean() > 0.5 and not skipped[torch.from_numpy(~static)].any()
    _, none_skipped = bench.throughput_run(batches, None, seed=0, device=CPU)
    assert not none_skipped.any()


def test_step_costs_time_every_step_and_the_cached_embeddings_equal_the_recomputed(videos: list[Video]) -> None:
    costs, difference = bench.step_costs(videos, steps=3, device=CPU)
    assert sorted(costs) == ["cached", "filter", "recompute"]
    assert all(len(values) == 3 and min(values) > 0 for values in costs.values())
    assert difference < 1e-5


def test_the_skip_table_rates_each_kind_of_frame() -> None:
    static = np.array([True, True, False, False])
    skipped = torch.tensor([True, False, False, False, True, True, False, True])  # two runs pooled
    assert bench.skip_table(skipped, static, runs=2)[2:] == [
        "| static | 50.0% | 75.0% |",
        "| moving | 50.0% | 25.0% |",
        "| all | 100.0% | 50.0% |",
    ]


@pytest.mark.slow
def test_a_quick_run_writes_its_section_into_the_given_document(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    body = bench.run(quick=True, doc=doc)
    text = doc.read_text()
    assert text.count("<!-- bench:frames:start -->") == 1 and body.strip() in text
    assert "OMP_NUM_THREADS=1 python -m bench.frames --quick" in text
    for expected in ("| off |", "| η = 0.98 |", "| static |", "| moving |", "full recompute", "Memory per camera"):
        assert expected in body
