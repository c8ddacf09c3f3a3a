"""The stream-x agents written the plain way: autograd through ``LayerNormMLP`` and the ``ObGD`` optimiser.

This is the definition of "correct" for the fused agents of ``learners.streamx`` (hand-derived backward passes fused
with the trace update, see ``learners/streamx/stack.py``): the same initialisation, random draws, normalisers and
schedules (inherited), but every prediction and gradient from autograd and every update from :class:`ObGD`, exactly
as the package did before the fused path. ``bench/streamx.py`` also times it as the "plain autograd loop" baseline,
with ObGD's per-parameter update (``kernels.obgd.obgd_update_reference``) to match the reference code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learners.streamx import ObGD, StreamAC, StreamValueAgent
from learners.streamx.obgd import ObGDUpdate

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class AutogradValueAgent(StreamValueAgent):
    """Stream Q(λ) (``bootstrap="max"``) or SARSA(λ) (``"sarsa"``) with autograd and ObGD.

    ``update`` picks ObGD's update function (default: the device's fused one).
    """

    def __init__(
        self,
        n_obs: int,
        n_actions: int,
        *,
        lr: float = 1.0,
        lamda: float = 0.8,
        kappa: float = 2.0,
        update: ObGDUpdate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_obs, n_actions, lr=lr, lamda=lamda, kappa=kappa, **kwargs)
        self.optimizer = ObGD(
            self.network.parameters(), lr=lr, gamma=self.gamma, lamda=lamda, kappa=kappa, update=update
        )

    def act(self, obs: Any) -> int:
        x = self._encode(obs)
        if self._pending_action is not None and x is self._pending_x:
            return self._pending_action
        with torch.no_grad():
            return self._epsilon_greedy(self.network(x).tolist())

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        a, r, x, x_next, done = self._transition(obs, action, reward, next_obs, terminated, truncated)
        q = self.network(torch.stack([x, x_next]))
        q_sa = q[0, a]
        self.steps += 1
        values = q.detach().cpu()
        greedy = int(values[0].argmax())
        self._pending_action, self._pending_x = None, None
        if terminated:
            target = r
        elif self.bootstrap == "max":
            target = r + self.gamma * float(values[1].max())
        else:
            a_next = self._epsilon_greedy(values[1].tolist())
            target = r + self.gamma * float(values[1, a_next])
            if not done:
                self._pending_action, self._pending_x = a_next, x_next
        delta = target - float(values[0, a])
        self.optimizer.zero_grad()
        q_sa.backward()
        explored = a != greedy and self.reset_traces_on_exploration
        self.optimizer.step(delta, reset=done or explored)


class AutogradStreamAC(StreamAC):
    """Stream AC(λ) with autograd and two ObGD optimisers (actor first, then critic, one TD error)."""

    def __init__(
        self,
        n_obs: int,
        n_actions: int,
        *,
        lr: float = 1.0,
        lamda: float = 0.8,
        kappa_policy: float = 3.0,
        kappa_value: float = 2.0,
        update: ObGDUpdate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            n_obs, n_actions, lr=lr, lamda=lamda, kappa_policy=kappa_policy, kappa_value=kappa_value, **kwargs
        )
        settings: dict[str, Any] = {"lr": lr, "gamma": self.gamma, "lamda": lamda, "update": update}
        self.actor_optimizer = ObGD(self.actor.parameters(), kappa=kappa_policy, **settings)
        self.critic_optimizer = ObGD(self.critic.parameters(), kappa=kappa_value, **settings)

    def act(self, obs: Any) -> int | np.ndarray:
        x = self._encode(obs)
        with torch.no_grad():
            out = self.actor(x).cpu()
            if self.continuous:
                mu, pre_std = out.split(self.n_actions, dim=-1)
                std = F.softplus(pre_std)
                noise = torch.randn(mu.shape, generator=self.generator)
                return (mu + std * noise).numpy().astype(np.float32)
            probs = torch.softmax(out.double(), dim=-1)
            return int(torch.multinomial(probs, 1, generator=self.generator))

    def _policy_objective(self, x: torch.Tensor, action: np.ndarray | int, sign: float) -> torch.Tensor:
        """``log π(a|s) + c·sign(δ)·H(π(·|s))`` for one state."""
        out = self.actor(x)
        if self.continuous:
            a = torch.as_tensor(action, dtype=torch.float32)
            mu, pre_std = out.split(self.n_actions, dim=-1)
            std = F.softplus(pre_std)
            log_std = std.log()
            log_prob = (-((a - mu) ** 2) / (2 * std**2) - log_std - _LOG_SQRT_2PI).sum()
            entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum()
        else:
            log_probs = F.log_softmax(out, dim=-1)
            log_prob = log_probs[action]
            entropy = -(log_probs.exp() * log_probs).sum()
        return log_prob + self.entropy_coef * sign * entropy

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        a, r, x, x_next, done = self._transition(obs, action, reward, next_obs, terminated, truncated)
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
