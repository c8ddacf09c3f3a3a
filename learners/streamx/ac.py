"""Stream AC(λ): actor-critic with separate ObGD steps and traces, softmax or Gaussian policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learners.streamx.agent import StreamAgent
from learners.streamx.networks import LayerNormMLP
from learners.streamx.stack import ForwardPass, LayerNormMLPStack

__all__ = ["StreamAC"]


def softplus(pre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``softplus(pre) = log(1 + exp(pre))`` and its slope ``sigmoid(pre)``, in numpy: the Gaussian's std.

    ``logaddexp`` is stable for any ``pre``; the slope is ``1 - exp(-softplus)``. Where ``F.softplus`` switches to
    the identity (``pre > 20``) the two differ by less than ``exp(-20)``.

    >>> std, slope = softplus(np.array([0.0, 30.0, -30.0]))
    >>> std.round(4).tolist(), slope.round(4).tolist()
    ([0.6931, 30.0, 0.0], [0.5, 1.0, 0.0])
    """
    std = np.logaddexp(0.0, pre)
    return std, -np.expm1(-std)


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

    Notes
    -----
    ``actor`` and ``critic`` are :class:`LayerNormMLP` modules trained through two one-network
    :class:`~learners.streamx.stack.LayerNormMLPStack` s (``actor_stack``, ``critic_stack``): hand-derived gradients
    fused with the trace update and a flat ObGD step. This computes what autograd and two
    :class:`~learners.streamx.obgd.ObGD` optimisers compute, up to float32 rounding (the tests compare every step
    of 2,000 against that reference), at a fraction of the per-step overhead.

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
        self.actor_stack = LayerNormMLPStack([self.actor], lr=lr, gamma=gamma, lamda=lamda, kappa=kappa_policy)
        self.critic_stack = LayerNormMLPStack([self.critic], lr=lr, gamma=gamma, lamda=lamda, kappa=kappa_value)
        # d v(s) / d output for the (s, s') pair of one observe(): one on s's row, zero on the s' row
        self._grad_v = torch.tensor([[[1.0], [0.0]]], device=self.device)
        self._last_act: tuple[torch.Tensor, ForwardPass] | None = None  # act()'s actor pass, reused by observe()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_obs": 4, "n_actions": 2, "hidden": 16}

    def _actor_forward(self, x: torch.Tensor) -> ForwardPass:
        """The actor's pass for ``x``: act()'s own if the parameters have not moved since, else a new one."""
        last = self._last_act
        if last is not None and last[0] is x and last[1].version == self.actor_stack.version:
            return last[1]
        forward = self.actor_stack.forward(x.view(1, 1, -1))
        self._last_act = (x, forward)
        return forward

    def act(self, obs: Any) -> int | np.ndarray:
        """Sample an action: an ``int`` (softmax policy) or a float32 array of shape ``(n_actions,)`` (Gaussian)."""
        out = self._actor_forward(self._encode(obs)).output.view(-1).cpu()
        if self.continuous:  # the 2 x n_actions head values are handled in numpy: a torch call costs more here
            mu, pre_std = out.numpy()[: self.n_actions], out.numpy()[self.n_actions :]
            noise = torch.randn(self.n_actions, generator=self.generator).numpy()
            action: np.ndarray = mu + softplus(pre_std)[0] * noise
            return action
        probs = torch.softmax(out.double(), dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _check_action(self, action: Any) -> np.ndarray | int:
        if self.continuous:
            a = np.asarray(action, dtype=np.float64)
            if a.shape != (self.n_actions,) or not np.isfinite(a).all():
                raise ValueError(
                    f"StreamAC: action must be a finite array of shape ({self.n_actions},) (got {action!r})"
                )
            return a
        i = int(action)
        if i != action or not 0 <= i < self.n_actions:
            raise ValueError(f"StreamAC: action must be an int in [0, {self.n_actions}) (got {action!r})")
        return i

    def _policy_gradient(self, out: torch.Tensor, action: np.ndarray | int, sign: float) -> torch.Tensor:
        """``∇ [log π(a|s) + c·sign(δ)·H(π(·|s))]`` with respect to the actor's output ``out`` (hand-derived).

        Gaussian (``std = softplus(pre)``, ``d = a - mu``): ``∂/∂mu = d / std²``,
        ``∂/∂std = (d² / std² - 1 + c·sign(δ)) / std``, then through softplus. Softmax (``p``, ``log p``, ``H``):
        ``∂/∂z = onehot(a) - p - c·sign(δ)·p·(log p + H)``. Computed in float64 numpy on the host (a handful of
        values, where each torch call would cost more than the arithmetic) and returned as the ``(1, 1, outputs)``
        float32 gradient the stack takes.
        """
        bonus = self.entropy_coef * sign
        z = out.view(-1).cpu().numpy().astype(np.float64)
        if self.continuous:
            mu, pre_std = z[: self.n_actions], z[self.n_actions :]
            std, slope = softplus(pre_std)
            diff = action - mu
            grad_mu = diff / (std * std)
            grad_std = (grad_mu * diff - 1.0 + bonus) / std
            grad = np.concatenate([grad_mu, grad_std * slope])
        else:
            shifted = z - z.max()
            log_probs = shifted - np.log(np.exp(shifted).sum())
            probs = np.exp(log_probs)
            entropy = -(probs * log_probs).sum()
            grad = -probs - bonus * probs * (log_probs + entropy)
            grad[action] += 1.0
        return torch.from_numpy(grad.astype(np.float32)).view(1, 1, -1).to(self.device)

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        """Learn from one transition: actor step first, then critic, both with the same TD error.

        The critic's pass runs over ``(s, s')`` at once; the actor's pass is the one :meth:`act` made for ``obs``
        when the actor has not moved since (the usual act-then-observe loop). A step thus costs two forward passes
        and two fused backward passes, where autograd needs three forward passes (act, critic, actor again).
        """
        a, r, x, x_next, done = self._transition(obs, action, reward, next_obs, terminated, truncated)
        critic = self.critic_stack.forward(torch.stack([x, x_next]).unsqueeze(0))
        v_s, v_next = critic.output.view(-1).tolist()
        delta = r + self.gamma * (0.0 if terminated else v_next) - v_s
        sign = float((delta > 0) - (delta < 0))
        self.steps += 1
        actor = self._actor_forward(x)
        self.actor_stack.accumulate(actor, self._policy_gradient(actor.output, a, sign))
        self.critic_stack.accumulate(critic, self._grad_v)
        self.actor_stack.step([delta], reset=done)
        self.critic_stack.step([delta], reset=done)

    def state_dict(self) -> dict[str, Any]:
        """Actor, critic, both traces, normalisers, step count and RNG state."""
        state = self._base_state_dict()
        state["actor"] = self.actor_stack.state_dict()
        state["critic"] = self.critic_stack.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the agent then continues bit-identically."""
        self.actor_stack.load_state_dict(state["actor"])
        self.critic_stack.load_state_dict(state["critic"])
        self._load_base_state_dict(state)
