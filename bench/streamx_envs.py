"""The environments of the stream-x benchmark behind one small interface: gymnasium tasks and MinAtar.

Why an adapter: MinAtar (PyPI ``minatar``) ships its own ``Environment`` class (its gymnasium wrapper needs extra
packages and registration), and the benchmark loops only need ``reset``/``step`` with flat float observations.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["GymEnv", "MinAtarEnv", "StepEnv", "breakout", "cartpole", "hopper"]


class StepEnv(Protocol):
    """What the benchmark loops use: flat float64 observations, gymnasium's terminated/truncated split."""

    n_obs: int
    n_actions: int
    continuous: bool

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]: ...


class GymEnv:
    """A gymnasium environment with flat float64 observations and a 4-tuple ``step``."""

    def __init__(self, env: Any) -> None:
        self.env = env
        space = env.action_space
        self.continuous = not hasattr(space, "n")
        self.n_actions = int(space.shape[0]) if self.continuous else int(space.n)
        self.n_obs = int(np.prod(env.observation_space.shape))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode (seeded when ``seed`` is given)."""
        obs, _ = self.env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float64).reshape(-1)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        """One step: (next observation, reward, terminated, truncated)."""
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return np.asarray(obs, dtype=np.float64).reshape(-1), float(reward), bool(terminated), bool(truncated)


class MinAtarEnv:
    """A MinAtar game (``minatar.Environment``) with its minimal action set and the 10x10xC state flattened.

    MinAtar's defaults are kept: sticky actions with probability 0.1 and difficulty ramping. Episodes end only by
    termination (no time limit).
    """

    continuous = False

    def __init__(self, game: str) -> None:
        from minatar import Environment  # the `rl` extra; imported here so the module loads without it

        self.game = Environment(game)
        self.actions = list(self.game.minimal_action_set())
        self.n_actions = len(self.actions)
        self.n_obs = int(np.prod(self.game.state_shape()))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode (seeding MinAtar's generator when ``seed`` is given)."""
        if seed is not None:
            self.game.seed(seed)
        self.game.reset()
        return self._obs()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        """One step with action index ``action`` of the minimal action set."""
        reward, terminal = self.game.act(self.actions[int(action)])
        return self._obs(), float(reward), bool(terminal), False

    def _obs(self) -> np.ndarray:
        return np.asarray(self.game.state(), dtype=np.float64).reshape(-1)


def cartpole(max_episode_steps: int = 500) -> GymEnv:
    """CartPole-v1; the spec's learning anchor raises the time limit to 10,000."""
    import gymnasium as gym

    return GymEnv(gym.make("CartPole-v1", max_episode_steps=max_episode_steps))


def hopper() -> GymEnv:
    """Hopper-v4 with actions clipped to the action space, as the reference code does (the Gaussian is unsquashed)."""
    import gymnasium as gym

    return GymEnv(gym.wrappers.ClipAction(gym.make("Hopper-v4")))


def breakout() -> MinAtarEnv:
    """MinAtar Breakout (3 actions, 400 binary features)."""
    return MinAtarEnv("breakout")
