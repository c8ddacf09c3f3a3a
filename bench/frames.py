"""Frames benchmark: FrameOperator frames/s with and without the similarity filter, skip rate, cached convolutions.

It measures the operator's throughput with the filter off and on, the filter's skip rate against the video's ground
truth, and the cached encoder step against recomputing the window.

``python -m bench.frames [--quick] [--doc PATH]`` runs on the GPU when there is one, else on one CPU core
(``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``):

- **video**: :func:`connectors.sources.frames.synthetic_videos`, 64x64 RGB, static and moving segments of 8 to 32
  frames, with the truth of which frames are static; one batch per time step holds one frame of every camera;
- **throughput**: :class:`inference.frames.FrameOperator` (default :class:`StreamingConvEncoder`) over the whole video,
  filter off and filter on (η = 0.98, at most 10 skips in a row), a fresh operator per run, median of the runs;
- **skip rate** of the filter on the frames the truth calls static and on those it calls moving, all runs pooled;
- **cost per step** for all cameras: the filter alone; the encoder's ``step`` (cached activations, one new frame per
  camera) against ``forward`` over each camera's last ``window`` frames (what a stateless encoder must do), and the
  largest difference between their embeddings; from these, the skip rate above which the filter pays for itself;
- **memory** per camera.

It writes the section ``frames`` of ``--doc`` (docs/benchmarks.md by default) with
:func:`bench.report.write_section`. Every number is measured by this run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from bench.report import DOC, write_section
from connectors.sources.frames import Video, synthetic_videos
from inference.frame_encoder import StreamingConvEncoder
from inference.frames import FrameOperator
from inference.similarity_filter import PIXEL_CENTRE, SimilarityFilter, frame_draws

SIZE = 64
THRESHOLD = 0.98
MAX_SKIPS = 10
VIDEO_SEED = 0

Batch = tuple[list[str], list[int], torch.Tensor]


@dataclass(frozen=True)
class Budget:
    """Video size and repeats of one mode."""

    name: str
    cameras: int
    frames: int  # per camera
    repeats: int  # throughput runs per setting
    encoder_steps: int  # steps timed for cached vs recompute


FULL = Budget("full", cameras=32, frames=600, repeats=5, encoder_steps=60)
QUICK = Budget("quick", cameras=8, frames=120, repeats=3, encoder_steps=20)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_step_batches(videos: list[Video], device: torch.device) -> list[Batch]:
    """One batch per time step: frame ``t`` of every camera, as the operator takes it (uint8 on the device)."""
    cameras = [video.camera for video in videos]
    return [
        (cameras, [t] * len(videos), torch.from_numpy(np.stack([video.frames[t] for video in videos])).to(device))
        for t in range(len(videos[0]))
    ]


def new_operator(cameras: int, threshold: float | None, seed: int, device: torch.device) -> FrameOperator:
    """The benchmarked operator: default encoder, one slot per camera."""
    encoder = StreamingConvEncoder().to(device)
    return FrameOperator(
        encoder, (SIZE, SIZE, 3), max_cameras=cameras, threshold=threshold, max_skips=MAX_SKIPS, seed=seed
    )


def throughput_run(
    batches: list[Batch], threshold: float | None, seed: int, device: torch.device
) -> tuple[float, torch.Tensor]:
    """Frames/s of a fresh operator over every batch, and which frames it skipped (frame-major order)."""
    operator = new_operator(len(batches[0][0]), threshold, seed, device)
    skipped = []
    started = clock(device)
    for cameras, seqs, frames in batches:
        skipped.append(operator.process(cameras, seqs, frames).skipped)
    seconds = clock(device) - started
    return sum(len(b[0]) for b in batches) / seconds, torch.cat(skipped).cpu()


def step_costs(videos: list[Video], steps: int, device: torch.device) -> tuple[dict[str, list[float]], float]:
    """Seconds per step, for all cameras, of the similarity filter (draws included), of the cached ``step`` and of
    ``forward`` over the window, measured in turn on the same frames once the cache is full; and the largest
    difference between the cached and the recomputed embeddings."""
    encoder = StreamingConvEncoder().to(device)
    window = encoder.window
    cameras = [video.camera for video in videos]
    pixels = torch.from_numpy(np.stack([video.frames[: window + steps] for video in videos])).to(device)
    clips = pixels.permute(0, 1, 4, 2, 3).float() / PIXEL_CENTRE - 1.0  # [cameras, T, C, H, W] in [-1, 1]
    state = encoder.new_state(len(videos))
    sift = SimilarityFilter(len(videos), (SIZE, SIZE, 3), THRESHOLD, MAX_SKIPS, device=device)
    slots = torch.arange(len(videos), device=device)
    costs: dict[str, list[float]] = {"filter": [], "cached": [], "recompute": []}
    difference = 0.0
    with torch.no_grad():
        for t in range(window):  # fill the cache and the filter's references (not timed)
            encoder.step(clips[:, t], state, slots)
            sift(slots, pixels[:, t], torch.ones(len(videos)))
        for t in range(window, window + steps):
            started = clock(device)
            sift(slots, pixels[:, t], frame_draws(0, cameras, [t] * len(videos)))
            filtered = clock(device)
            step = encoder.step(clips[:, t], state, slots)
            stepped = clock(device)
            full = encoder(clips[:, t + 1 - window : t + 1])[:, -1]
            costs["filter"].append(filtered - started)
            costs["cached"].append(stepped - filtered)
            costs["recompute"].append(clock(device) - stepped)
            difference = max(difference, float((step - full).abs().max()))
    return costs, difference


def figure(values: list[float], digits: int = 0) -> str:
    """``median [min to max]``."""
    return f"{statistics.median(values):,.{digits}f} [{min(values):,.{digits}f} to {max(values):,.{digits}f}]"


def skip_table(skipped: torch.Tensor, static: np.ndarray, runs: int) -> list[str]:
    """Skip rate on the frames the truth calls static and moving (``skipped`` pools ``runs`` runs)."""
    truth = np.tile(static, runs)
    flags = skipped.numpy()
    lines = ["| frames (ground truth) | share of the video | skipped by the filter |", "|---|---:|---:|"]
    for label, mask in (("static", truth), ("moving", ~truth), ("all", np.ones_like(truth))):
        lines.append(f"| {label} | {mask.mean():.1%} | {flags[mask].mean():.1%} |")
    return lines


def run(quick: bool, doc: Path = DOC) -> str:
    """Run the benchmark, write the ``frames`` section of ``doc``, return the section's markdown."""
    budget = QUICK if quick else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = "OMP_NUM_THREADS=1 python -m bench.frames" + (" --quick" if quick else "")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        videos = synthetic_videos(budget.cameras, budget.frames, VIDEO_SEED, height=SIZE, width=SIZE)
        static = np.stack([video.static for video in videos], axis=1).reshape(-1)  # frame-major, as batches run
        batches = time_step_batches(videos, device)
        settings: dict[str, float | None] = {"off": None, f"η = {THRESHOLD}": THRESHOLD}
        rates: dict[str, list[float]] = {label: [] for label in settings}
        skipped: list[torch.Tensor] = []
        with Progress() as progress:
            task = progress.add_task("frames benchmark", total=budget.repeats * len(settings) + 2)
            for threshold in settings.values():  # warm-up: first calls allocate and pick kernels
                throughput_run(batches[: 2 * MAX_SKIPS], threshold, 0, device)
            progress.advance(task)
            for seed in range(budget.repeats):  # round the settings, so a busy spell does not fall on one only
                for label, threshold in settings.items():
                    rate, flags = throughput_run(batches, threshold, seed, device)
                    rates[label].append(rate)
                    if threshold is not None:
                        skipped.append(flags)
                    progress.advance(task)
            costs, difference = step_costs(videos, budget.encoder_steps, device)
            progress.advance(task)
    finally:
        torch.set_num_threads(threads)
    operator = new_operator(budget.cameras, THRESHOLD, 0, device)
    encoder = operator.encoder
    assert operator.filter is not None
    activations, reference = operator.state.bytes_per_slot, operator.filter.bytes_per_slot
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, one torch thread"
    baseline = statistics.median(rates["off"])
    cached = statistics.median(costs["cached"])
    filter_share = statistics.median(costs["filter"]) / cached
    frames_per_run = budget.cameras * budget.frames
    setup = (
        f"Mode: {budget.name}. Device: {where}. Video: `synthetic_videos` seed {VIDEO_SEED}, {budget.cameras} cameras "
        f"x {budget.frames} frames of {SIZE}x{SIZE} RGB (3 moving discs on a textured background, static and moving "
        f"segments of 8 to 32 frames, sensor noise sd 2); one batch per time step = one frame of every camera. "
        f"Operator: `FrameOperator` with the default `StreamingConvEncoder` (three 3x3 stride-2 convolutions 16/32/64 "
        f"channels, mean pool, causal temporal convolutions kernel 3 dilations 1, 2, 4: window {encoder.window} "
        f"frames; embedding 64), filter η = {THRESHOLD}, at most {MAX_SKIPS} skips in a row. Throughput: "
        f"{frames_per_run:,} frames per run, a fresh operator per run, median of {budget.repeats} runs [range]."
    )
    lines = [
        setup,
        "",
        "| similarity filter | frames/s, median [range] | vs filter off |",
        "|---|---:|---:|",
        *(
            f"| {label} | {figure(values)} | {statistics.median(values) / baseline:.2f}x |"
            for label, values in rates.items()
        ),
        "",
        f"Skip rate of the filter against the video's ground truth ({budget.repeats} runs pooled, different draws per "
        f"run); a static stretch can skip at most {MAX_SKIPS} frames of every {MAX_SKIPS + 1} "
        f"({MAX_SKIPS / (MAX_SKIPS + 1):.0%}):",
        "",
        *skip_table(torch.cat(skipped), static, budget.repeats),
        "",
        f"Cost per step for {budget.cameras} cameras (one frame each), median over {budget.encoder_steps} steps "
        "[range], measured in turn on the same frames once the cache is full:",
        "",
        "| work | frames through the 2-D convolutions per step | ms per step | vs cached step |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {convolved} | {figure([s * 1e3 for s in costs[key]], 2)} | "
            f"{statistics.median(costs[key]) / cached:.2f}x |"
            for key, label, convolved in (
                ("filter", "similarity filter: cosine to the reference, draw, state update", 0),
                ("cached", "encoder, cached `step` (one new frame per camera)", budget.cameras),
                (
                    "recompute",
                    f"encoder, full recompute: `forward` over the last {encoder.window} frames",
                    budget.cameras * encoder.window,
                ),
            )
        ),
        "",
        f"By these costs the filter pays for itself when it skips more than about {filter_share:.0%} of the frames "
        "(its cost over the cached step's); the heavier the encoder per frame, the lower that bar.",
        "",
        f"Largest |cached - recomputed| over those steps: {difference:.1e} (float32).",
        "",
        f"Memory per camera: {operator.bytes_per_camera:,} bytes = cached activations {activations:,} + filter "
        f"reference frame and counters {reference:,} + last embedding and seq "
        f"{operator.bytes_per_camera - activations - reference:,}.",
    ]
    body = "\n".join(lines)
    write_section("frames", "Frames: FrameOperator, similarity filter and cached convolutions", body, command, doc)
    return body


def main() -> None:
    """``python -m bench.frames [--quick] [--doc PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 cameras x 120 frames, 3 runs: a smoke test (a minute)")
    parser.add_argument(
        "--doc", type=Path, default=DOC, help=f"markdown file to write the section into (default {DOC})"
    )
    args = parser.parse_args()
    print(run(quick=args.quick, doc=args.doc))


if __name__ == "__main__":
    main()
