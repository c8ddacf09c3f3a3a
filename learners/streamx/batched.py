"""Batched Stream Q(λ): N independent agents, one per stream key, stepped as one computation.

Why: a worker that hosts many streams (one agent per key) would otherwise run N tiny networks one after another,
each step paying the full per-call overhead. Here the N agents' parameters and traces are stacked
(:class:`~learners.streamx.stack.LayerNormMLPStack`), so one step of all N agents costs one batched forward pass,
one fused backward/trace pass and one ObGD step; normalisers, reward scalers and ε schedules are arrays. What stays
per agent is what must: each agent's own random generator (its exploration draws).

The agents do not share anything: agent ``i`` behaves exactly as ``StreamQ(n_obs, n_actions, seed=seeds[i], ...)``
fed row ``i`` of every call, bit for bit (the stacked arithmetic is row-independent, see the tests).

References
----------
Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
arXiv:2410.14606.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from learners.streamx.networks import LayerNormMLP
from learners.streamx.normalizers import StackedObservationNormalizer, StackedRewardScaler
from learners.streamx.q import StreamQ, explore, linear_epsilon, q_gradient_table
from learners.streamx.stack import LayerNormMLPStack

__all__ = ["BatchedStreamQ"]


class BatchedStreamQ:
    """N independent Stream Q(λ) agents with stacked parameters, stepped together.

    Every call takes one row per agent: ``act(obs)`` with ``obs`` of shape ``(n_agents, n_obs)`` returns one action
    per agent; ``observe`` takes ``(n_agents, ...)`` arrays of the transitions. Agent ``i`` is exactly
    ``StreamQ(n_obs, n_actions, seed=seeds[i], **settings)``; :meth:`agent_state_dict` and
    :meth:`load_agent_state_dict` move one agent's state to and from a :class:`~learners.streamx.q.StreamQ`.

    Parameters
    ----------
    n_agents
        Number of agents (stream keys).
    n_obs, n_actions
        Observation size and number of discrete actions (the same for every agent).
    seeds
        One seed per agent; by default ``seed, seed + 1, ...``.
    seed
        First seed when ``seeds`` is not given.
    hidden, lr, gamma, lamda, kappa, epsilon_start, epsilon_end, exploration_steps, normalize_obs, scale_rewards,
    device
        As in :class:`~learners.streamx.q.StreamValueAgent`, shared by all agents.

    Examples
    --------
    >>> agents = BatchedStreamQ(n_agents=3, n_obs=4, n_actions=2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> obs = rng.normal(size=(3, 4))
    >>> for t in range(10):
    ...     actions = agents.act(obs)
    ...     next_obs = rng.normal(size=(3, 4))
    ...     rewards = (actions == 1).astype(float)
    ...     no = np.zeros(3, dtype=bool)
    ...     agents.observe(obs, actions, rewards, next_obs, terminated=no, truncated=no)
    ...     obs = next_obs
    >>> agents.act(obs).shape, agents.steps.tolist()
    ((3,), [10, 10, 10])

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(
        self,
        n_agents: int,
        n_obs: int,
        n_actions: int,
        *,
        seeds: Sequence[int] | None = None,
        seed: int = 0,
        hidden: int = 32,
        lr: float = 1.0,
        gamma: float = 0.99,
        lamda: float = 0.8,
        kappa: float = 2.0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.01,
        exploration_steps: int = 10_000,
        normalize_obs: bool = True,
        scale_rewards: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        if n_agents < 1:
            raise ValueError(f"BatchedStreamQ: n_agents must be >= 1 (got {n_agents})")
        seeds = list(range(seed, seed + n_agents)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n_agents:
            raise ValueError(
                f"BatchedStreamQ: seeds must hold one seed per agent ({n_agents}) (got {len(seeds)}); "
                f"leave seeds out to use seed, seed + 1, ..."
            )
        # Build the agents one by one (their own checks, initialisation and generators), then stack them.
        agents = [
            StreamQ(
                n_obs,
                n_actions,
                seed=agent_seed,
                hidden=hidden,
                lr=lr,
                gamma=gamma,
                lamda=lamda,
                kappa=kappa,
                epsilon_start=epsilon_start,
                epsilon_end=epsilon_end,
                exploration_steps=exploration_steps,
                normalize_obs=normalize_obs,
                scale_rewards=scale_rewards,
                device=device,
            )
            for agent_seed in seeds
        ]
        self.n_agents, self.n_obs, self.n_actions, self.seeds = n_agents, n_obs, n_actions, seeds
        self.gamma, self.normalize_obs, self.scale_rewards = gamma, normalize_obs, scale_rewards
        self.epsilon_start, self.epsilon_end, self.exploration_steps = epsilon_start, epsilon_end, exploration_steps
        self.device = agents[0].device
        self.networks: list[LayerNormMLP] = [agent.network for agent in agents]
        self.stack = LayerNormMLPStack(self.networks, lr=lr, gamma=gamma, lamda=lamda, kappa=kappa)
        self.generators = [agent.generator for agent in agents]
        self.obs_normalizer = StackedObservationNormalizer(n_agents, (n_obs,))
        self.reward_scaler = StackedRewardScaler(n_agents, gamma)
        self.steps = np.zeros(n_agents, dtype=np.int64)
        self._has_last = np.zeros(n_agents, dtype=bool)
        self._last_raw = np.zeros((n_agents, n_obs), dtype=np.float64)
        self._last_x = torch.zeros(n_agents, n_obs, device=self.device)
        self._grad_q = q_gradient_table(n_actions, self.device)
        self._rows = np.arange(n_agents)

    # -- inputs ------------------------------------------------------------------------------------------------------
    def _rows_of(self, values: Any, name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        try:
            array: np.ndarray = np.asarray(values, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"BatchedStreamQ: {name} must be numeric (got {values!r})") from exc
        if array.shape != shape:
            raise ValueError(
                f"BatchedStreamQ: {name} must have shape {shape} (got {array.shape}); pass one row per agent "
                f"({self.n_agents} agents), in agent order"
            )
        return array

    def _check_obs(self, obs: Any, name: str) -> np.ndarray:
        raw = self._rows_of(obs, name, np.float64, (self.n_agents, self.n_obs))
        if not np.isfinite(raw).all():
            bad = np.flatnonzero(~np.isfinite(raw).all(axis=1)).tolist()
            raise ValueError(f"BatchedStreamQ: {name} must be finite (rows {bad} are not)")
        return raw

    def _check_actions(self, actions: Any) -> np.ndarray:
        values = self._rows_of(actions, "actions", np.float64, (self.n_agents,))
        ints = values.astype(np.int64)
        if not (np.array_equal(ints, values) and ((ints >= 0) & (ints < self.n_actions)).all()):
            raise ValueError(f"BatchedStreamQ: actions must be ints in [0, {self.n_actions}) (got {values.tolist()})")
        return ints

    def _check_rewards(self, rewards: Any) -> np.ndarray:
        r = self._rows_of(rewards, "rewards", np.float64, (self.n_agents,))
        if not np.isfinite(r).all():
            raise ValueError(f"BatchedStreamQ: rewards must be finite (got {r.tolist()})")
        return r

    def _encode(self, obs: Any, name: str) -> torch.Tensor:
        """As :meth:`StreamAgent._encode`, per agent: a row is normalised (and its statistics updated) once."""
        raw = self._check_obs(obs, name)
        new = ~self._has_last | (raw != self._last_raw).any(axis=1)
        if not new.any():
            return self._last_x
        rows = np.flatnonzero(new)
        values = self.obs_normalizer(raw[rows], rows) if self.normalize_obs else raw[rows]
        encoded = torch.from_numpy(values.astype(np.float32)).to(self.device)
        if len(rows) == self.n_agents:
            x = encoded
        else:
            x = self._last_x.clone()
            x[torch.from_numpy(rows).to(self.device)] = encoded
        self._last_raw, self._last_x = raw.copy(), x
        self._has_last[:] = True
        return x

    # -- acting and learning -----------------------------------------------------------------------------------------
    @property
    def epsilon(self) -> np.ndarray:
        """Every agent's ε at its position in the schedule."""
        start, end, steps = self.epsilon_start, self.epsilon_end, self.exploration_steps
        return np.array([linear_epsilon(s, start, end, steps) for s in self.steps.tolist()])

    def act(self, obs: Any) -> np.ndarray:
        """One ε-greedy action per agent (int64 array of shape ``(n_agents,)``)."""
        x = self._encode(obs, "obs")
        epsilon = self.epsilon.tolist()
        actions = [explore(eps, self.n_actions, g) for eps, g in zip(epsilon, self.generators, strict=True)]
        if any(a is None for a in actions):  # someone acts greedily: one forward pass for all
            q = self.stack.forward(x.unsqueeze(1)).output[:, 0].cpu().numpy()
            greedy = q.argmax(axis=1).tolist()  # the first maximum, as StreamQ
            actions = [g if a is None else a for a, g in zip(actions, greedy, strict=True)]
        return np.array(actions, dtype=np.int64)

    def observe(self, obs: Any, actions: Any, rewards: Any, next_obs: Any, terminated: Any, truncated: Any) -> None:
        """Learn from one transition per agent (arrays with one row per agent).

        As :meth:`StreamValueAgent.observe` with ``bootstrap="max"``, for all agents at once: one forward pass over
        every agent's ``(s, s')``, one fused backward/trace pass, one ObGD step; traces reset at episode ends and
        after non-greedy actions.
        """
        a = self._check_actions(actions)
        r = self._check_rewards(rewards)
        term = self._rows_of(terminated, "terminated", bool, (self.n_agents,))
        trunc = self._rows_of(truncated, "truncated", bool, (self.n_agents,))
        x = self._encode(obs, "obs")
        x_next = self._encode(next_obs, "next_obs")
        done = term | trunc
        scaled = self.reward_scaler(r, done)
        if self.scale_rewards:
            r = scaled
        forward = self.stack.forward(torch.stack([x, x_next], dim=1))
        q = forward.output.cpu().numpy().astype(np.float64)
        target = np.where(term, r, r + self.gamma * q[:, 1].max(axis=1))
        delta = target - q[self._rows, 0, a]
        explored = a != q[:, 0].argmax(axis=1)
        self.steps += 1
        self.stack.accumulate(forward, self._grad_q[torch.from_numpy(a).to(self.device)])
        self.stack.step(delta.tolist(), reset=torch.from_numpy(done | explored).to(self.device))

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Parameters, traces, normalisers, ε-schedule positions, every agent's RNG and observation cache."""
        return {
            "network": self.stack.state_dict(),
            "steps": torch.from_numpy(self.steps.copy()),
            "rng": torch.stack([g.get_state() for g in self.generators]),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "has_last": torch.from_numpy(self._has_last.copy()),
            "last_raw": torch.from_numpy(self._last_raw.copy()),
            "last_x": self._last_x.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same number of agents and sizes); continues bit-identically."""
        expected = {
            "steps": (self.n_agents,),
            "has_last": (self.n_agents,),
            "last_raw": (self.n_agents, self.n_obs),
            "last_x": (self.n_agents, self.n_obs),
        }
        for key, shape in expected.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(
                    f"BatchedStreamQ: state[{key!r}] has shape {tuple(state[key].shape)}, expected {shape}; load a "
                    f"checkpoint of a BatchedStreamQ with {self.n_agents} agents and n_obs={self.n_obs}"
                )
        if len(state["rng"]) != self.n_agents:
            raise ValueError(
                f"BatchedStreamQ: state['rng'] holds {len(state['rng'])} generators, expected {self.n_agents}"
            )
        self.stack.load_state_dict(state["network"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        for generator, rng in zip(self.generators, state["rng"], strict=True):
            generator.set_state(rng.clone())
        self.steps = np.asarray(state["steps"], dtype=np.int64).copy()
        self._has_last = np.asarray(state["has_last"], dtype=bool).copy()
        self._last_raw = np.asarray(state["last_raw"], dtype=np.float64).copy()
        self._last_x = state["last_x"].to(self.device, torch.float32).clone()

    def agent_state_dict(self, agent: int) -> dict[str, Any]:
        """Agent ``agent``'s state in :meth:`StreamQ.state_dict`'s format: load it into a ``StreamQ`` to go on alone."""
        i = self._agent_index(agent)
        network = self.stack.state_dict()
        has_last = bool(self._has_last[i])
        return {
            "steps": int(self.steps[i]),
            "rng": self.generators[i].get_state(),
            "obs_normalizer": self.obs_normalizer.row_state_dict(i),
            "reward_scaler": self.reward_scaler.row_state_dict(i),
            "last_raw": torch.from_numpy(self._last_raw[i].copy()) if has_last else None,
            "last_x": self._last_x[i].cpu().clone() if has_last else None,
            "network": {key: value[i : i + 1].clone() for key, value in network.items()},
            "pending_action": -1,
        }

    def load_agent_state_dict(self, agent: int, state: dict[str, Any]) -> None:
        """Replace agent ``agent``'s state with a :meth:`StreamQ.state_dict` (of a Q(λ) agent of the same sizes)."""
        i = self._agent_index(agent)
        if int(state.get("pending_action", -1)) >= 0:
            raise ValueError("BatchedStreamQ: the state has a pending SARSA action; load Stream Q(λ) states only")
        network = self.stack.state_dict()
        for key in ("params", "traces"):
            row = state["network"][key]
            if tuple(row.shape) != (1, network[key].shape[1]):
                raise ValueError(
                    f"BatchedStreamQ: state['network'][{key!r}] has shape {tuple(row.shape)}, expected "
                    f"(1, {network[key].shape[1]}); load a StreamQ of the same n_obs, n_actions and hidden"
                )
            network[key][i] = row[0]
        self.stack.load_state_dict(network)
        self.obs_normalizer.load_row_state_dict(i, state["obs_normalizer"])
        self.reward_scaler.load_row_state_dict(i, state["reward_scaler"])
        self.generators[i].set_state(state["rng"].clone())
        self.steps[i] = int(state["steps"])
        self._has_last[i] = state["last_raw"] is not None
        if state["last_raw"] is not None:
            self._last_raw[i] = np.asarray(state["last_raw"], dtype=np.float64)
            self._last_x = self._last_x.clone()
            self._last_x[i] = state["last_x"].to(self.device, torch.float32)

    def _agent_index(self, agent: int) -> int:
        if not 0 <= int(agent) < self.n_agents:
            raise ValueError(f"BatchedStreamQ: agent must be in [0, {self.n_agents}) (got {agent})")
        return int(agent)
