"""Synthetic interaction streams with a known answer: each user loops through a playlist of their own, with noise.

A user's stream starts with :data:`START` (a session-start event), then cycles through a playlist of distinct items
drawn for that user; at each step, with probability ``noise``, the user opens a uniformly random item instead and
the loop does not advance. Items are ``1 .. items``. Predicting the next item takes the stream's own past (which
item follows which in *this* user's loop), so a sequence model has to attend to its context: the benchmark of the
rolling KV cache (``bench/rolling_cache.py``) uses it to check that next-item loss stays flat far past the window.

Once a model knows a user's loop, the best it can do is :func:`next_item_entropy` nats per item.
"""

from __future__ import annotations

import math

import numpy as np

START = 0


def playlist_streams(
    streams: int,
    length: int,
    *,
    items: int,
    playlist: tuple[int, int] = (3, 8),
    noise: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """``[streams, length]`` int64 item ids: :data:`START`, then each user's looped playlist with random inserts.

    Parameters
    ----------
    streams, length
        Number of users and ids per user (:data:`START` included).
    items
        Catalogue size; ids are ``1 .. items``.
    playlist
        Inclusive range of playlist lengths, drawn per user (at most ``items``).
    noise
        Probability that a step is a uniformly random item, off the loop.
    seed
        Seeds everything.

    Examples
    --------
    >>> playlist_streams(2, 10, items=9, playlist=(3, 3), noise=0.0, seed=1)
    array([[0, 5, 4, 7, 5, 4, 7, 5, 4, 7],
           [0, 7, 4, 2, 7, 4, 2, 7, 4, 2]])
    """
    low, high = playlist
    if not 1 <= low <= high <= items:
        raise ValueError(f"playlist_streams: need 1 <= playlist[0] <= playlist[1] <= items (got {playlist}, {items})")
    if not 0.0 <= noise < 1.0 or streams < 0 or length < 1:
        raise ValueError(
            f"playlist_streams: need noise in [0, 1), streams >= 0 and length >= 1 (got {noise}, {streams}, {length})"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((streams, length), dtype=np.int64)
    out[:, 0] = START
    for row in out:
        loop = rng.choice(np.arange(1, items + 1), size=int(rng.integers(low, high + 1)), replace=False)
        off_loop = rng.random(length - 1) < noise
        steps = np.cumsum(~off_loop) - 1  # the loop's place at each step: it advances on loop steps only
        row[1:] = np.where(off_loop, rng.integers(1, items + 1, size=length - 1), loop[steps % len(loop)])
    return out


def next_item_entropy(items: int, noise: float) -> float:
    """Nats per item of the best prediction once a user's loop is known: the loop's next item has probability
    ``1 - noise + noise / items``, every other item ``noise / items``.

    >>> round(next_item_entropy(64, 0.1), 4)
    0.7295
    """
    hit = 1.0 - noise + noise / items
    miss = noise / items
    return -(hit * math.log(hit) + (items - 1) * miss * math.log(miss)) if noise else 0.0
