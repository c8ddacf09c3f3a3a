"""Rolling KV cache benchmark: decode cost against sliding-window recompute, throughput and memory, and quality.

``python -m bench.rolling_cache [--quick] [--doc PATH]`` runs on the GPU when there is one, else on one CPU core
(``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``):

- **cost per token** of :class:`inference.sequence_recommender.SequenceTransformer` for one stream at windows 256,
  1024 and 4096 (4 sinks): one decode step through a full :class:`inference.rolling_cache.RollingKVCache` against
  recomputing the whole window from its ids (causal SDPA), the baseline StreamingLLM reports a 22.2x speed-up
  over; medians of the runs, ratio from the same run;
- **throughput** in stream-steps/s (streams x decode steps per second) for 1 .. 4096 concurrent streams decoded as
  one batch, window 256, and the cache's memory per stream;
- **quality**: the model trained (next-item loss, full causal attention on sequences as long as the cache) on
  :func:`connectors.sources.playlists.playlist_streams`, then served far past its training length: next-item loss
  per stretch of the stream with sinks (4 + window), without (0 + window, and 0 + window + 4 for the same memory),
  and with full attention over the whole stream (no cache), beside the best achievable loss;
- **GPU only**: the Triton kernel against torch SDPA on the same cache (gather, RoPE at the cache places, masked
  SDPA), and the kernel's bytes read per second as a fraction of a device-to-device copy's.

It writes the section ``rolling_cache`` of ``--doc`` (docs/benchmarks.md by default) with
:func:`bench.report.write_section`. Every number is measured by this run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress

from bench.report import DOC, write_section
from connectors.sources.playlists import next_item_entropy, playlist_streams
from inference.rolling_cache import RollingKVCache
from inference.sequence_recommender import SequenceTransformer, rolling_next_item_loss, train_next_item
from kernels.sink_window_attention import apply_rope, cache_positions, sink_window_decode_attention_triton

SINKS = 4
WINDOWS = (256, 1024, 4096)
THROUGHPUT_WINDOW = 256
SPEED_MODEL = {"vocab": 1000, "dim": 128, "layers": 2, "heads": 4}  # head_dim 32
ITEMS, PLAYLIST_LENGTHS, NOISE = 32, (3, 8), 0.1  # the synthetic streams of the quality check
QUALITY_WINDOW = 28  # + 4 sinks = 32, the training length
STRETCHES = (1, 2, 4, 8, 16)  # quality is reported per stretch of the stream, in multiples of the cache size


@dataclass(frozen=True)
class Budget:
    """Repeats and sizes of one mode."""

    name: str
    decode_steps: int  # timed decode steps per window
    recomputes: int  # timed window recomputes per window
    max_streams: int
    throughput_steps: int
    train_steps: int
    quality_layers: int
    quality_streams: int


FULL = Budget("full", 200, 20, 4096, 20, 3000, 3, 64)
QUICK = Budget("quick", 30, 5, 256, 5, 1200, 2, 16)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls of ``run`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = clock(device)
        run()
        times.append(clock(device) - started)
    return statistics.median(times)


def decode_seconds(model: SequenceTransformer, cache: RollingKVCache, slots: torch.Tensor, repeats: int) -> float:
    """Median seconds of one decode step of every stream in ``slots`` (all with token 1)."""
    tokens = torch.ones(len(slots), dtype=torch.long, device=slots.device)
    return median_seconds(partial(model.decode, cache, slots, tokens), repeats, slots.device)


@torch.no_grad()
def recompute_last(model: SequenceTransformer, ids: torch.Tensor) -> torch.Tensor:
    """The sliding-window baseline's step: the whole window through the model, the last token's hidden state."""
    return model(ids)[:, -1]


def full_cache(model: SequenceTransformer, streams: int, window: int, device: torch.device) -> RollingKVCache:
    """A cache whose every slot holds a stream that has filled it (random keys and values: cost does not depend on
    them), one slot per stream."""
    heads, head_dim = model.heads, model.head_dim
    cache = RollingKVCache(streams, len(model.blocks), heads, head_dim, window=window, sinks=SINKS, device=device)
    cache.assign(range(streams))
    generator = torch.Generator(device).manual_seed(0)
    cache.data.normal_(generator=generator)
    cache.seen.fill_(cache.capacity + 1)  # full, and the ring has started to turn
    return cache


def cost_per_token(budget: Budget, device: torch.device, progress: Progress) -> list[str]:
    """Rolling-cache decode against sliding-window recompute, one stream, per window."""
    model = SequenceTransformer(**SPEED_MODEL).to(device).eval()
    task = progress.add_task("cost per token", total=len(WINDOWS))
    lines = [
        "| window (+4 sinks) | rolling-cache decode (ms/token) | sliding-window recompute (ms/token) | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for window in WINDOWS:
        cache = full_cache(model, 1, window, device)
        slot = torch.zeros(1, dtype=torch.long, device=device)
        ids = torch.randint(SPEED_MODEL["vocab"], (1, SINKS + window), device=device)
        decode = decode_seconds(model, cache, slot, budget.decode_steps)
        recompute = median_seconds(partial(recompute_last, model, ids), budget.recomputes, device)
        lines.append(f"| {window:,} | {decode * 1e3:.3f} | {recompute * 1e3:.2f} | {recompute / decode:.1f}x |")
        progress.advance(task)
    return lines


def throughput(budget: Budget, device: torch.device, progress: Progress) -> list[str]:
    """Stream-steps/s and memory for 1 .. ``max_streams`` streams decoded as one batch."""
    model = SequenceTransformer(**SPEED_MODEL).to(device).eval()
    counts = [n for n in (1, 4, 16, 64, 256, 1024, 4096) if n <= budget.max_streams]
    task = progress.add_task("throughput", total=len(counts))
    lines = [
        "| concurrent streams | ms per batch step | stream-steps/s | memory per stream (KiB) | cache memory (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for streams in counts:
        cache = full_cache(model, streams, THROUGHPUT_WINDOW, device)
        slots = torch.arange(streams, device=device)
        seconds = decode_seconds(model, cache, slots, budget.throughput_steps)
        lines.append(
            f"| {streams:,} | {seconds * 1e3:.2f} | {streams / seconds:,.0f} | {cache.bytes_per_stream / 2**10:.1f} | "
            f"{streams * cache.bytes_per_stream / 2**20:,.1f} |"
        )
        progress.advance(task)
        del cache
    return lines


def quality(budget: Budget, device: torch.device, progress: Progress) -> tuple[list[str], str]:
    """Train on short playlist streams, serve long ones: next-item loss per stretch, with and without sinks."""
    capacity = SINKS + QUALITY_WINDOW
    tokens = capacity * STRETCHES[-1]
    train, test = (
        torch.from_numpy(
            playlist_streams(n, length, items=ITEMS, playlist=PLAYLIST_LENGTHS, noise=NOISE, seed=seed)
        ).to(device)
        for n, length, seed in ((4000, capacity + 1, 1), (budget.quality_streams, tokens + 1, 2))
    )
    model = SequenceTransformer(ITEMS + 1, dim=64, layers=budget.quality_layers, heads=4).to(device)
    task = progress.add_task("quality: training", total=budget.train_steps)
    losses = train_next_item(model, train, steps=budget.train_steps, on_step=lambda *_: progress.advance(task))
    served = {
        f"sinks 4 + window {QUALITY_WINDOW}": rolling_next_item_loss(model, test, window=QUALITY_WINDOW, sinks=SINKS),
        f"no sinks, window {QUALITY_WINDOW}": rolling_next_item_loss(model, test, window=QUALITY_WINDOW, sinks=0),
        f"no sinks, window {capacity} (same memory)": rolling_next_item_loss(model, test, window=capacity, sinks=0),
    }
    with torch.no_grad():
        logits = model.logits(model(test[:, :-1]))
    served["full attention, no cache"] = F.cross_entropy(logits.transpose(1, 2), test[:, 1:], reduction="none").mean(0)
    bounds = [0, *(capacity * s for s in STRETCHES)]
    header = " | ".join(f"tokens {a:,}-{b - 1:,}" for a, b in itertools.pairwise(bounds))
    lines = [f"| served as | {header} |", "|---|" + "---:|" * len(STRETCHES)]
    for name, loss in served.items():
        cells = " | ".join(f"{loss[a:b].mean():.3f}" for a, b in itertools.pairwise(bounds))
        lines.append(f"| {name} | {cells} |")
    floor = next_item_entropy(ITEMS, NOISE)
    setup = (
        f"{budget.quality_layers} layers, dim 64, 4 heads, trained {budget.train_steps} steps (batch 32, Adam 3e-3, "
        f"seed 0) on 4,000 streams of {capacity + 1} ids (final training loss "
        f"{statistics.fmean(losses[-50:]):.3f}); served on {budget.quality_streams} other streams of {tokens:,} ids "
        f"(catalogue {ITEMS} items, playlists of {PLAYLIST_LENGTHS[0]}-{PLAYLIST_LENGTHS[1]}, noise {NOISE}). "
        f"Best achievable once a user's loop is known: {floor:.3f} nats."
    )
    return lines, setup


def sdpa_on_cache(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, seen: torch.Tensor
) -> torch.Tensor:
    """The torch baseline on the same cache: gather the rows, RoPE at the cache places, masked SDPA."""
    capacity = k_cache.shape[2]
    valid = seen.clamp(max=capacity)
    keys = apply_rope(k_cache[slots], cache_positions(seen, capacity, SINKS).unsqueeze(1)).to(q.dtype)
    query = apply_rope(q, (valid - 1).clamp(min=0).unsqueeze(1)).to(q.dtype).unsqueeze(2)
    live = (torch.arange(capacity, device=q.device) < valid.unsqueeze(1)).view(len(q), 1, 1, capacity)
    return F.scaled_dot_product_attention(query, keys, v_cache[slots], attn_mask=live).squeeze(2)


def kernel_vs_sdpa(device: torch.device, progress: Progress) -> list[str]:
    """Triton against SDPA on one layer of a full float16 cache, and the kernel's share of copy bandwidth."""
    import triton.testing

    blob = torch.empty(2**28, dtype=torch.uint8, device=device)
    copy_gbs = 2 * blob.numel() / triton.testing.do_bench(blob.clone, return_mode="median") / 1e6
    heads, head_dim = SPEED_MODEL["heads"], SPEED_MODEL["dim"] // SPEED_MODEL["heads"]
    shapes = [(streams, window) for streams in (1, 64, 1024) for window in WINDOWS]
    task = progress.add_task("triton vs sdpa", total=len(shapes))
    lines = [
        f"Device-to-device copy: {copy_gbs:,.0f} GB/s (read + write), the bandwidth the kernel is compared with.",
        "",
        "| streams | window (+4 sinks) | Triton (µs) | SDPA on the same cache (µs) | Triton speed-up | Triton GB/s | "
        "share of copy bandwidth |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for streams, window in shapes:
        capacity = SINKS + window
        k_cache, v_cache = torch.randn(2, streams, heads, capacity, head_dim, device=device, dtype=torch.float16)
        q = torch.randn(streams, heads, head_dim, device=device, dtype=torch.float16)
        slots = torch.arange(streams, device=device)
        seen = torch.full((streams,), capacity + 1, device=device)
        args = (q, k_cache, v_cache, slots, seen)
        triton_ms = triton.testing.do_bench(
            partial(sink_window_decode_attention_triton, *args, sinks=SINKS), return_mode="median"
        )
        sdpa_ms = triton.testing.do_bench(partial(sdpa_on_cache, *args), return_mode="median")
        gbs = (k_cache.nbytes + v_cache.nbytes) / triton_ms / 1e6
        lines.append(
            f"| {streams:,} | {window:,} | {triton_ms * 1e3:.1f} | {sdpa_ms * 1e3:.1f} | {sdpa_ms / triton_ms:.1f}x | "
            f"{gbs:,.0f} | {gbs / copy_gbs:.0%} |"
        )
        progress.advance(task)
    return lines


def run(quick: bool, doc: Path = DOC) -> str:
    """Run the benchmark, write the ``rolling_cache`` section of ``doc``, return the section's markdown."""
    budget = QUICK if quick else FULL
    command = "OMP_NUM_THREADS=1 python -m bench.rolling_cache" + (" --quick" if quick else "")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        with Progress() as progress:
            cost_lines = cost_per_token(budget, device, progress)
            throughput_lines = throughput(budget, device, progress)
            quality_lines, quality_setup = quality(budget, device, progress)
            gpu_lines = kernel_vs_sdpa(device, progress) if device.type == "cuda" else []
    finally:
        torch.set_num_threads(threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "one CPU core (torch reference attention)"
    capped = "" if budget.max_streams >= 4096 else f" (capped at {budget.max_streams:,} in {budget.name} mode)"
    body = "\n".join(
        [
            f"Mode: {budget.name}, on {where}; whole run {(time.perf_counter() - started) / 60:.1f} min. Model for "
            f"speed: `SequenceTransformer` with {SPEED_MODEL['layers']} layers, dim {SPEED_MODEL['dim']}, "
            f"{SPEED_MODEL['heads']} heads, float32; random weights (cost does not depend on them).",
            "",
            f"Cost per token, one stream (median of {budget.decode_steps} decode steps and of {budget.recomputes} "
            "recomputes; the recompute runs the model over the sinks and the window, causal SDPA, and keeps the last "
            "token; StreamingLLM reports 22.2x for its recompute baseline on Llama-2):",
            "",
            *cost_lines,
            "",
            f"Throughput, all streams decoded as one batch, window {THROUGHPUT_WINDOW} + 4 sinks, median of "
            f"{budget.throughput_steps} steps{capped}:",
            "",
            *throughput_lines,
            "",
            "Quality far past the window: next-item loss (nats, mean over streams) per stretch of the stream. "
            + quality_setup,
            "",
            *quality_lines,
            "",
            "Triton kernel against torch SDPA on the same cache (float16, one layer, medians of "
            "`triton.testing.do_bench`): " + ("" if gpu_lines else "not measured (no GPU)."),
            *(["", *gpu_lines] if gpu_lines else []),
        ]
    )
    write_section("rolling_cache", "Rolling KV cache: decode vs recompute, throughput, quality", body, command, doc)
    return body


def main() -> None:
    """``python -m bench.rolling_cache [--quick] [--doc PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.rolling_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, at most 256 streams, short training")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"markdown file to write the section into ({DOC})")
    args = parser.parse_args()
    print(run(quick=args.quick, doc=args.doc))


if __name__ == "__main__":
    main()
