"""Stream AC(λ): actor-critic with separate ObGD optimisers and traces, softmax or Gaussian policy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learners.streamx.agent import StreamAgent
from learners.streamx.networks import LayerNormMLP
from learners.streamx.obgd import ObGD

__all__ = ["StreamAC"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class StreamAC(StreamAgent):
    """Stream AC(λ): one TD error drives an actor and a critic, each with its own ObGD and eligibility traces.

    The critic's trace accumulates ``∇v(s)``; the actor's accumulates ``∇[log π(a|s) + c·sign(δ)·H(π(·|s))]``.
    Discrete actions use a softmax policy; continuous actions a Gaussian with a learned mean and
    ``std = softplus(linear head)`` (not squashed: clip actions in the environment if it needs bounds). At terminal
    states the bootstrap is zero; on truncation it bootstraps from ``next_obs``. Traces reset at episode end.

    Parameters
    ----------
    n_obs
        Observation size.
    n_actions
        Number of discrete actions, or the action dimension when ``continuous``.
    continuous
        Gaussian policy over ``R^n_actions`` instead of a softmax over ``n_actions`` choices.
    hidden, lr, gamma, lamda
        Network width and ObGD settings.
    kappa_policy, kappa_value
        Overshooting factors of the actor (3.0) and critic (2.0).
    entropy_coef
        Entropy bonus coefficient ``c`` (0.01).
    seed, normalize_obs, scale_rewards, device
        As in :class:`~learners.streamx.q.StreamValueAgent`.

    Examples
    --------
    >>> import numpy as np
    >>> agent = StreamAC(n_obs=3, n_actions=2, continuous=True, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> obs = rng.normal(size=3)
    >>> for t in range(20):
    ...     action = agent.act(obs)
    ...     next_obs = rng.normal(size=3)
    ...     agent.observe(obs, action, -float(np.sum(action**2)), next_obs, terminated=False, truncated=t == 19)
    ...     obs = next_obs
    >>> agent.act(obs).shape, agent.steps
    ((2,), 20)

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(
        self,
        n_obs: int,
        n_actions: int,
        *,
        continuous: bool = False,
        hidden: int = 128,
        lr: float = 1.0,
        gamma: float = 0.99,
        lamda: float = 0.8,
        kappa_policy: float = 3.0,
        kappa_value: float = 2.0,
        entropy_coef: float = 0.01,
        seed: int = 0,
        normalize_obs: bool = True,
        scale_rewards: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            n_obs, gamma=gamma, seed=seed, normalize_obs=normalize_obs, scale_rewards=scale_rewards, device=device
        )
        if n_actions < 1:
            raise ValueError(f"StreamAC: n_actions must be >= 1 (got {n_actions})")
        self.n_actions = n_actions
        self.continuous = continuous
        self.entropy_coef = entropy_coef
        n_policy_out = 2 * n_actions if continuous else n_actions
        self.actor = LayerNormMLP(n_obs, n_policy_out, hidden=hidden, generator=self.generator).to(self.device)
        self.critic = LayerNormMLP(n_obs, 1, hidden=hidden, generator=self.generator).to(self.device)
        self.actor_optimizer = ObGD(self.actor.parameters(), lr=lr, gamma=gamma, lamda=lamda, kappa=kappa_policy)
        self.critic_optimizer = ObGD(self.critic.parameters(), lr=lr, gamma=gamma, lamda=lamda, kappa=kappa_value)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_obs": 4, "n_actions": 2, "hidden": 16}

    def _gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, pre_std = out.split(self.n_actions, dim=-1)
        return mu, F.softplus(pre_std)

    def act(self, obs: Any) -> int | np.ndarray:
        """Sample an action: an ``int`` (softmax policy) or a float32 array of shape ``(n_actions,)`` (Gaussian)."""
        x = self._encode(obs)
        with torch.no_grad():
            out = self.actor(x).cpu()
            if self.continuous:
                mu, std = self._gaussian(out)
                noise = torch.randn(mu.shape, generator=self.generator)
                return (mu + std * noise).numpy().astype(np.float32)
            probs = torch.softmax(out.double(), dim=-1)
            return int(torch.multinomial(probs, 1, generator=self.generator))

    def _check_action(self, action: Any) -> torch.Tensor | int:
        if self.continuous:
            a = np.asarray(action, dtype=np.float64)
            if a.shape != (self.n_actions,) or not np.all(np.isfinite(a)):
                raise ValueError(
                    f"StreamAC: action must be a finite array of shape ({self.n_actions},) (got {action!r})"
                )
            return torch.as_tensor(a, dtype=torch.float32).to(self.device)
        i = int(action)
        if i != action or not 0 <= i < self.n_actions:
            raise ValueError(f"StreamAC: action must be an int in [0, {self.n_actions}) (got {action!r})")
        return i

    def _policy_objective(self, x: torch.Tensor, action: torch.Tensor | int, sign: float) -> torch.Tensor:
        """``log π(a|s) + c·sign(δ)·H(π(·|s))`` for one state."""
        out = self.actor(x)
        if self.continuous:
            assert isinstance(action, torch.Tensor)
            mu, std = self._gaussian(out)
            log_std = std.log()
            log_prob = (-((action - mu) ** 2) / (2 * std**2) - log_std - _LOG_SQRT_2PI).sum()
            entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum()
        else:
            log_probs = F.log_softmax(out, dim=-1)
            log_prob = log_probs[action]
            entropy = -(log_probs.exp() * log_probs).sum()
        return log_prob + self.entropy_coef * sign * entropy

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        """Learn from one transition: actor step first, then critic, both with the same TD error."""
        a = self._check_action(action)
        r = self._check_reward(reward)
        x = self._encode(obs)
        x_next = self._encode(next_obs, "next_obs")
        done = bool(terminated) or bool(truncated)
        r = self._scale_reward(r, done)
        v = self.critic(torch.stack([x, x_next])).squeeze(-1)
        v_s = v[0]
        v_s_value, v_next_value = v.detach().cpu().tolist()
        bootstrap = 0.0 if terminated else v_next_value
        delta = r + self.gamma * bootstrap - v_s_value
        sign = float(np.sign(delta))
        self.steps += 1
        self.actor_optimizer.zero_grad()
        self._policy_objective(x, a, sign).backward()
        self.critic_optimizer.zero_grad()
        v_s.backward()
        self.actor_optimizer.step(delta, reset=done)
        self.critic_optimizer.step(delta, reset=done)

    def state_dict(self) -> dict[str, Any]:
        """Actor, critic, both optimisers' traces, normalisers, step count and RNG state."""
        state = self._base_state_dict()
        for name, module in (("actor", self.actor), ("critic", self.critic)):
            state[name] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        state["actor_optimizer"] = self.actor_optimizer.state_dict()
        state["critic_optimizer"] = self.critic_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the agent then continues bit-identically."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self._load_base_state_dict(state)
