"""Stream Q(λ) and Stream SARSA(λ): one ε-greedy value agent, parametrised by its bootstrap target."""

from __future__ import annotations

from typing import Any, Literal

import torch

from learners.streamx.agent import StreamAgent
from learners.streamx.networks import LayerNormMLP
from learners.streamx.obgd import ObGD

__all__ = ["StreamQ", "StreamSARSA", "StreamValueAgent"]


class StreamValueAgent(StreamAgent):
    """ε-greedy action-value agent trained one transition at a time with ObGD and eligibility traces.

    ``bootstrap="max"`` gives Stream Q(λ) (target ``r + gamma * max_a' q(s', a')``, traces reset after a non-greedy
    action); ``bootstrap="sarsa"`` gives Stream SARSA(λ) (target ``r + gamma * q(s', a')`` with ``a'`` the next action,
    chosen ε-greedily in :meth:`observe` and returned by the next :meth:`act`). At terminal states the bootstrap is
    zero; on truncation it bootstraps from ``next_obs``. Traces reset at episode end. ε decays linearly from
    ``epsilon_start`` to ``epsilon_end`` over ``exploration_steps`` transitions.

    Parameters
    ----------
    n_obs, n_actions
        Observation size and number of discrete actions.
    bootstrap
        ``"max"`` (Q-learning) or ``"sarsa"``.
    reset_traces_on_exploration
        Zero the traces after a non-greedy action; defaults to ``True`` for ``"max"``, ``False`` for ``"sarsa"``.
    hidden, lr, gamma, lamda, kappa
        Network width and ObGD settings (paper defaults).
    epsilon_start, epsilon_end, exploration_steps
        The ε schedule (the paper decays over the first 5% of a run's steps).
    seed
        Seeds the initialisation and every random choice.
    normalize_obs, scale_rewards
        Welford observation normalisation and return-based reward scaling.
    device
        Where the network lives; ObGD picks its fused update by device.

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
        bootstrap: Literal["max", "sarsa"] = "max",
        reset_traces_on_exploration: bool | None = None,
        hidden: int = 32,
        lr: float = 1.0,
        gamma: float = 0.99,
        lamda: float = 0.8,
        kappa: float = 2.0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.01,
        exploration_steps: int = 10_000,
        seed: int = 0,
        normalize_obs: bool = True,
        scale_rewards: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            n_obs, gamma=gamma, seed=seed, normalize_obs=normalize_obs, scale_rewards=scale_rewards, device=device
        )
        name = type(self).__name__
        if bootstrap not in ("max", "sarsa"):
            raise ValueError(f"{name}: bootstrap must be 'max' or 'sarsa' (got {bootstrap!r})")
        if n_actions < 1:
            raise ValueError(f"{name}: n_actions must be >= 1 (got {n_actions})")
        if exploration_steps < 0:
            raise ValueError(f"{name}: exploration_steps must be >= 0 (got {exploration_steps})")
        for label, eps in (("epsilon_start", epsilon_start), ("epsilon_end", epsilon_end)):
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"{name}: {label} must be in [0, 1] (got {eps})")
        self.n_actions = n_actions
        self.bootstrap = bootstrap
        self.reset_traces_on_exploration = (
            bootstrap == "max" if reset_traces_on_exploration is None else reset_traces_on_exploration
        )
        self.epsilon_start, self.epsilon_end, self.exploration_steps = epsilon_start, epsilon_end, exploration_steps
        self.network = LayerNormMLP(n_obs, n_actions, hidden=hidden, generator=self.generator).to(self.device)
        self.optimizer = ObGD(self.network.parameters(), lr=lr, gamma=gamma, lamda=lamda, kappa=kappa)
        self._pending_action: int | None = None
        self._pending_x: torch.Tensor | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_obs": 4, "n_actions": 2, "exploration_steps": 50}

    @property
    def epsilon(self) -> float:
        """ε at the current position of the schedule."""
        if self.steps >= self.exploration_steps:
            return self.epsilon_end
        frac = self.steps / self.exploration_steps
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def _epsilon_greedy(self, q: torch.Tensor) -> int:
        if float(torch.rand((), generator=self.generator)) < self.epsilon:
            return int(torch.randint(self.n_actions, (), generator=self.generator))
        return int(q.argmax())

    def act(self, obs: Any) -> int:
        """The ε-greedy action for ``obs`` (for SARSA, the action already chosen for it in :meth:`observe`)."""
        x = self._encode(obs)
        if self._pending_action is not None and x is self._pending_x:
            return self._pending_action
        with torch.no_grad():
            return self._epsilon_greedy(self.network(x))

    def _check_action(self, action: Any) -> int:
        a = int(action)
        if a != action or not 0 <= a < self.n_actions:
            raise ValueError(f"{type(self).__name__}: action must be an int in [0, {self.n_actions}) (got {action!r})")
        return a

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        """Learn from one transition ``(obs, action, reward, next_obs)``."""
        a = self._check_action(action)
        r = self._check_reward(reward)
        x = self._encode(obs)
        x_next = self._encode(next_obs, "next_obs")
        done = bool(terminated) or bool(truncated)
        r = self._scale_reward(r, done)
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
            a_next = self._epsilon_greedy(values[1])
            target = r + self.gamma * float(values[1, a_next])
            if not done:
                self._pending_action, self._pending_x = a_next, x_next
        delta = target - float(values[0, a])
        self.optimizer.zero_grad()
        q_sa.backward()
        explored = a != greedy and self.reset_traces_on_exploration
        self.optimizer.step(delta, reset=done or explored)

    def state_dict(self) -> dict[str, Any]:
        """Network, traces, normalisers, ε-schedule position, RNG state and the pending SARSA action."""
        state = self._base_state_dict()
        state["network"] = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
        state["optimizer"] = self.optimizer.state_dict()
        state["pending_action"] = -1 if self._pending_action is None else self._pending_action
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the agent then continues bit-identically."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_base_state_dict(state)
        pending = int(state["pending_action"])
        self._pending_action = None if pending < 0 else pending
        self._pending_x = None if pending < 0 else self._last_x


class StreamQ(StreamValueAgent):
    """Stream Q(λ): :class:`StreamValueAgent` with the max bootstrap and trace resets after exploration.

    Examples
    --------
    >>> import numpy as np
    >>> agent = StreamQ(n_obs=3, n_actions=2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> obs = rng.normal(size=3)
    >>> for t in range(20):
    ...     action = agent.act(obs)
    ...     next_obs = rng.normal(size=3)
    ...     agent.observe(obs, action, float(action == 1), next_obs, terminated=False, truncated=t == 19)
    ...     obs = next_obs
    >>> agent.steps, agent.act(obs) in (0, 1)
    (20, True)

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(self, n_obs: int, n_actions: int, **kwargs: Any) -> None:
        super().__init__(n_obs, n_actions, bootstrap="max", **kwargs)


class StreamSARSA(StreamValueAgent):
    """Stream SARSA(λ): :class:`StreamValueAgent` with the on-policy bootstrap and no resets on exploration.

    Examples
    --------
    >>> import numpy as np
    >>> agent = StreamSARSA(n_obs=3, n_actions=2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> obs = rng.normal(size=3)
    >>> for t in range(20):
    ...     action = agent.act(obs)
    ...     next_obs = rng.normal(size=3)
    ...     agent.observe(obs, action, float(action == 1), next_obs, terminated=t == 19, truncated=False)
    ...     obs = next_obs
    >>> agent.steps
    20

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(self, n_obs: int, n_actions: int, **kwargs: Any) -> None:
        super().__init__(n_obs, n_actions, bootstrap="sarsa", **kwargs)
