"""What every stream-x agent shares: input checks, observation/reward scaling, the seeded RNG and its checkpoint."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from learners.streamx.normalizers import ObservationNormalizer, RewardScaler

__all__ = ["StreamAgent"]


class StreamAgent:
    """Base for agents that learn from one transition at a time (``act`` / ``observe``).

    Each raw observation is folded into the running statistics once, when first seen, and normalised with the
    statistics right after its own update (as an environment wrapper would do). The last encoded observation is
    cached, so ``act(obs)`` followed by ``observe(obs, ...)`` and ``act(next_obs)`` after ``observe(..., next_obs,
    ...)`` see each observation once.
    """

    def __init__(
        self,
        n_obs: int,
        *,
        gamma: float,
        seed: int,
        normalize_obs: bool,
        scale_rewards: bool,
        device: str | torch.device,
    ) -> None:
        if n_obs < 1:
            raise ValueError(f"{type(self).__name__}: n_obs must be >= 1 (got {n_obs})")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"{type(self).__name__}: gamma must be in [0, 1] (got {gamma})")
        self.n_obs = n_obs
        self.gamma = gamma
        self.seed = seed
        self.device = torch.device(device)
        self.normalize_obs = normalize_obs
        self.scale_rewards = scale_rewards
        self.generator = torch.Generator().manual_seed(seed)
        self.obs_normalizer = ObservationNormalizer((n_obs,))
        self.reward_scaler = RewardScaler(gamma)
        self.steps = 0
        self._last_raw: np.ndarray | None = None
        self._last_x: torch.Tensor | None = None

    # -- inputs ------------------------------------------------------------------------------------------------------
    def _check_obs(self, obs: Any, name: str = "obs") -> np.ndarray:
        try:
            raw = np.asarray(obs, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{type(self).__name__}: {name} must be numeric (got {obs!r})") from exc
        if raw.shape != (self.n_obs,):
            raise ValueError(
                f"{type(self).__name__}: {name} must have shape ({self.n_obs},) (got {raw.shape}); "
                f"pass one observation at a time"
            )
        if not np.isfinite(raw).all():
            raise ValueError(f"{type(self).__name__}: {name} must be finite (got {raw.tolist()})")
        return raw

    def _check_reward(self, reward: Any) -> float:
        r = float(reward)
        if not math.isfinite(r):
            raise ValueError(f"{type(self).__name__}: reward must be finite (got {reward!r})")
        return r

    def _encode(self, obs: Any, name: str = "obs") -> torch.Tensor:
        last_raw, last_x = self._last_raw, self._last_x
        if last_raw is not None and last_x is not None:
            # the observation encoded last (checked then) comes back on most calls: no new checks for it
            if isinstance(obs, np.ndarray) and obs.shape == last_raw.shape and (obs == last_raw).all():
                return last_x
            raw = self._check_obs(obs, name)
            if (raw == last_raw).all():
                return last_x
        else:
            raw = self._check_obs(obs, name)
        x = self.obs_normalizer(raw) if self.normalize_obs else raw
        self._last_raw = raw.copy()  # np.asarray may have returned the caller's array, which it may reuse
        self._last_x = torch.from_numpy(x.astype(np.float32)).to(self.device)
        return self._last_x

    def _scale_reward(self, reward: float, done: bool) -> float:
        scaled = self.reward_scaler(reward, done)
        return scaled if self.scale_rewards else reward

    def _check_action(self, action: Any) -> Any:
        """The action in the form the agent learns from; raises ``ValueError`` for one it cannot take."""
        raise NotImplementedError

    def _transition(
        self, obs: Any, action: Any, reward: Any, next_obs: Any, terminated: bool, truncated: bool
    ) -> tuple[Any, float, torch.Tensor, torch.Tensor, bool]:
        """One transition checked and encoded: (action, scaled reward, encoded obs and next_obs, episode ended)."""
        a = self._check_action(action)
        r = self._check_reward(reward)
        x = self._encode(obs)
        x_next = self._encode(next_obs, "next_obs")
        done = bool(terminated) or bool(truncated)
        return a, self._scale_reward(r, done), x, x_next, done

    # -- checkpoint --------------------------------------------------------------------------------------------------
    def _base_state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "rng": self.generator.get_state(),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "last_raw": None if self._last_raw is None else torch.from_numpy(self._last_raw.copy()),
            "last_x": None if self._last_x is None else self._last_x.detach().cpu().clone(),
        }

    def _load_base_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.generator.set_state(state["rng"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        last_raw, last_x = state["last_raw"], state["last_x"]
        self._last_raw = None if last_raw is None else np.asarray(last_raw, dtype=np.float64).copy()
        self._last_x = None if last_x is None else last_x.to(self.device, torch.float32).clone()
