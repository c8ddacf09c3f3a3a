"""Synthetic multi-camera video with static and moving segments, and the truth of which frames are static.

Each camera films its own textured background (a sum of random colour gratings) with a few coloured discs on it.
The video alternates **moving** segments (every disc moves a few pixels per frame and bounces off the edges) and
**static** segments (nothing moves), of random lengths, starting with a moving one; every frame gets Gaussian
sensor noise, so no two frames are byte-equal. The known answer is :attr:`Video.static`: frame ``t`` is static when
its scene (the frame before noise) equals frame ``t - 1``'s, which is what a similarity filter should detect.

Deterministic for a seed (one generator per camera, spawned from the seed); numpy only. DESIGN.md §10.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from connectors.messages import Frame

CHANNELS = 3
"""Every video is RGB: frames are ``(height, width, 3)`` uint8."""

GRATINGS = 4  # colour gratings summed into each background
GRATING_AMPLITUDE = 24.0  # per grating and channel, on the 0..255 scale around grey
RADIUS = (0.08, 0.15)  # disc radius as a fraction of the shorter side
SPEED = (1.5, 3.0)  # pixels per frame while moving

UInt8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Video:
    """One camera's video: ``frames`` ``(T, H, W, 3)`` uint8 and ``static`` ``(T,)`` bool, both read-only.

    ``static[t]`` is true when nothing moved between frames ``t - 1`` and ``t`` (only the sensor noise differs);
    frame 0 has nothing before it and is not static.
    """

    camera: str
    frames: UInt8Array
    static: BoolArray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def synthetic_videos(
    cameras: int,
    n_frames: int,
    seed: int,
    *,
    height: int = 64,
    width: int = 64,
    objects: int = 3,
    min_segment: int = 8,
    max_segment: int = 32,
    noise: float = 2.0,
) -> list[Video]:
    """One video per camera (``cam0``, ``cam1``, ...), each with its own background, discs and segment schedule.

    Segment lengths are uniform in ``[min_segment, max_segment]`` frames; discs have a radius of 8% to 15% of the
    shorter side and move 1.5 to 3 pixels per frame; ``noise`` is the standard deviation of the sensor noise on the
    0..255 scale. Memory: ``cameras * n_frames * height * width * 3`` bytes.

    >>> videos = synthetic_videos(cameras=2, n_frames=40, seed=0, height=32, width=48)
    >>> [v.camera for v in videos], videos[0].frames.shape, videos[0].frames.dtype
    (['cam0', 'cam1'], (40, 32, 48, 3), dtype('uint8'))
    >>> bool(videos[0].static[0]), 0 < int(videos[0].static.sum()) < 40
    (False, True)
    """
    for name, value, least in (
        ("cameras", cameras, 1),
        ("n_frames", n_frames, 1),
        ("height", height, 8),
        ("width", width, 8),
        ("objects", objects, 1),
        ("min_segment", min_segment, 1),
    ):
        if value < least:
            raise ValueError(f"synthetic_videos: {name} must be >= {least} (got {value})")
    if max_segment < min_segment:
        raise ValueError(f"synthetic_videos: max_segment must be >= min_segment (got {max_segment} < {min_segment})")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"synthetic_videos: noise must be finite and >= 0 (got {noise})")
    seeds = np.random.SeedSequence(seed).spawn(cameras)
    segments = (min_segment, max_segment)
    return [
        _video(f"cam{index}", n_frames, np.random.default_rng(camera_seed), (height, width), objects, segments, noise)
        for index, camera_seed in enumerate(seeds)
    ]


def _video(
    camera: str,
    n_frames: int,
    rng: np.random.Generator,
    size: tuple[int, int],
    objects: int,
    segments: tuple[int, int],
    noise: float,
) -> Video:
    height, width = size
    moving = _moving_schedule(n_frames, segments, rng)
    background = _background(height, width, rng)
    radius = rng.uniform(*RADIUS, size=objects) * min(height, width)
    low, high = radius[:, None], np.array([height - 1.0, width - 1.0]) - radius[:, None]
    position = rng.uniform(low, high)  # (objects, 2): row, column of each centre
    angle = rng.uniform(0.0, 2.0 * math.pi, size=objects)
    velocity = rng.uniform(*SPEED, size=objects)[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    colours = rng.integers(0, 256, size=(objects, CHANNELS)).astype(np.float64)
    rows, columns = np.ogrid[:height, :width]
    frames = np.empty((n_frames, height, width, CHANNELS), dtype=np.uint8)
    for t in range(n_frames):
        if t > 0 and moving[t]:
            position += velocity
            below, above = position < low, position > high  # bounce off the edges
            position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
            velocity = np.where(below | above, -velocity, velocity)
        scene = background.copy()
        for (row, column), r, colour in zip(position, radius, colours, strict=True):
            scene[(rows - row) ** 2 + (columns - column) ** 2 <= r * r] = colour
        if noise > 0:
            scene += rng.normal(0.0, noise, size=scene.shape)
        frames[t] = np.clip(np.rint(scene), 0, 255)
    static = ~moving
    static[0] = False
    frames.flags.writeable = False
    static.flags.writeable = False
    return Video(camera, frames, static)


def _moving_schedule(n_frames: int, segments: tuple[int, int], rng: np.random.Generator) -> BoolArray:
    """Per frame, whether the scene moves into it: alternating segments of ``segments[0]..segments[1]`` frames,
    moving first."""
    moving = np.empty(n_frames, dtype=bool)
    start, is_moving = 0, True
    while start < n_frames:
        stop = start + int(rng.integers(segments[0], segments[1] + 1))
        moving[start:stop] = is_moving
        start, is_moving = stop, not is_moving
    return moving


def _background(height: int, width: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Grey plus ``GRATINGS`` random colour gratings: texture everywhere, values within 0..255."""
    rows, columns = np.mgrid[:height, :width]
    scene = np.full((height, width, CHANNELS), 128.0)
    for _ in range(GRATINGS):
        cycles_down, cycles_across = rng.integers(1, 7, size=2)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        wave = np.sin(2.0 * math.pi * (cycles_down * rows / height + cycles_across * columns / width) + phase)
        scene += wave[:, :, None] * rng.uniform(-GRATING_AMPLITUDE, GRATING_AMPLITUDE, size=CHANNELS)
    return scene


def frame_messages(videos: Sequence[Video], fps: float = 25.0, t0: float = 0.0) -> Iterator[Frame]:
    """The videos as the cameras publish them: :class:`~connectors.messages.Frame` messages in time order.

    Frame ``t`` of every camera (in the order given) comes before frame ``t + 1`` of any; ``stream`` is the camera,
    ``seq`` the frame index and ``ts = t0 + t / fps``. A video shorter than the others just ends earlier.

    >>> videos = synthetic_videos(cameras=2, n_frames=3, seed=0, height=8, width=8)
    >>> [(f.stream, f.seq, f.ts, f.shape) for f in frame_messages(videos, fps=2.0)][:3]
    [('cam0', 0, 0.0, (8, 8, 3)), ('cam1', 0, 0.0, (8, 8, 3)), ('cam0', 1, 0.5, (8, 8, 3))]
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame_messages: fps must be finite and > 0 (got {fps})")
    longest = max((len(video) for video in videos), default=0)
    for t in range(longest):
        for video in videos:
            if t < len(video):
                yield Frame.from_numpy(video.camera, t, video.frames[t], ts=t0 + t / fps)
