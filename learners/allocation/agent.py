"""SL-MGAC and its learned baselines (DQN, plain actor-critic) as one allocation agent with switches."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from learners._state import check_state, require
from learners.allocation.distributional import expected_value, two_hot
from learners.allocation.features import Request, RequestFeaturizer
from learners.allocation.lagrange import LagrangeMultiplier
from learners.allocation.network import AllocationNetwork, StudentPolicy
from learners.allocation.transitions import Transition

__all__ = ["AllocationAgent", "AllocationConfig"]

_FORMAT = 5
_BUFFER_COLUMNS = (
    "action",
    "propensity",
    "reward",
    "app",
    "clicked",
    "watch",
    "video",
    "ended",
    "steps",
    "bootstrap",
)
"""A stored transition: its action and propensity, the ``n_step`` return's reward and app seconds, the immediate
outcomes of its own step (the supervised targets: click, live and short-video time in reward-scale units, whether
the session ended before the next decision), how many later decision states its path holds (``n_step``, fewer
when the session ended first), and the weight of the critic's value at the bootstrap state after ``n_step``
decisions (``gamma ** n``, 0 once the session ended)."""


@dataclass(frozen=True)
class _Step:
    """An observed transition waiting in its user's chain for its return: feature rows and buffer columns."""

    row: npt.NDArray[np.float32]
    next_row: npt.NDArray[np.float32] | None  # None: the session ended after this step
    columns: npt.NDArray[np.float32]  # as _BUFFER_COLUMNS, the reward and app seconds of this step alone


@dataclass(frozen=True)
class AllocationConfig:
    """The switches and sizes of an :class:`AllocationAgent` (no sizes of SL-MGAC are public: these are ours).

    Switches: ``group_heads`` (one actor, critic and supervised head per activity group, else one head), ``supervised``
    (auxiliary heads on the trunk for the click, live watch time, short-video time and session end of each step,
    from which the critic's target is built: see :class:`AllocationAgent`), ``distributional`` (critic over
    ``bins`` bins on ``[0, max_return]`` reward-scale units with two-hot targets, else a scalar critic with a Huber
    loss), ``actor`` (a softmax actor trained with the critic's advantage; without it the agent is a DQN acting
    greedily on its Q-values), ``layer_norm`` (in the trunk).

    Sizes and learning: ``embed`` (user and streamer embeddings), ``hidden`` x ``depth`` (trunk), ``student_hidden``,
    ``history`` (behaviour sequence length), ``user_buckets``, ``remembered_users`` (users whose behaviour is kept,
    the most recent); ``gamma`` (1: sessions are undiscounted),
    ``n_step`` (decisions summed into the critic's target before it bootstraps: with ``gamma`` 1 a one-step target
    propagates a value by one decision per target refresh and can drift upwards without bound; the replay buffer
    keeps each transition's path of ``n_step`` later decision states), ``lr``
    (Adam), ``batch``, ``buffer`` (replay capacity, transitions), ``update_every`` (observed transitions per gradient
    step), ``target_tau`` (Polyak rate of the target critic), ``explore`` (every action keeps at least this
    probability while learning, so propensities stay bounded), ``entropy``, ``auxiliary_weight``, ``actor_weight``;
    ``reward_scale`` (seconds per unit the networks see); ``video_weight`` (a short-video second against a live one);
    ``app_floor`` (the constraint: app seconds per session from its first decision; None for none) with
    ``lagrange_lr``.
    """

    group_heads: bool = True
    supervised: bool = True
    distributional: bool = True
    actor: bool = True
    layer_norm: bool = True
    embed: int = 8
    hidden: int = 64
    depth: int = 2
    student_hidden: int = 16
    history: int = 8
    user_buckets: int = 1024
    remembered_users: int = 100_000
    bins: int = 51
    max_return: float = 50.0
    gamma: float = 1.0
    n_step: int = 4
    lr: float = 1e-3
    batch: int = 128
    buffer: int = 50_000
    update_every: int = 8
    target_tau: float = 0.01
    explore: float = 0.05
    entropy: float = 1e-3
    auxiliary_weight: float = 1.0
    actor_weight: float = 1.0
    reward_scale: float = 100.0
    video_weight: float = 1.0
    app_floor: float | None = None
    lagrange_lr: float = 0.01

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> AllocationConfig:
        """The named agents of spec §3: ``sl-mgac`` (every switch on), ``actor-critic`` (no groups, no supervised
        heads, scalar critic) and ``dqn`` (no actor, no groups, no supervised heads, scalar critic).

        >>> AllocationConfig.variant("dqn").actor, AllocationConfig.variant("sl-mgac", hidden=32).hidden
        (False, 32)
        """
        switches = {
            "sl-mgac": {},
            "actor-critic": {"group_heads": False, "supervised": False, "distributional": False},
            "dqn": {"group_heads": False, "supervised": False, "distributional": False, "actor": False},
        }
        require(name in switches, f"AllocationConfig.variant: unknown agent {name!r}; choose one of {sorted(switches)}")
        return cls(**{**switches[name], **overrides})


class AllocationAgent:
    """SL-MGAC: live-stream allocation as a constrained MDP, learned online from the agent's own decisions.

    Per request (:class:`~learners.allocation.features.Request`) the agent chooses to insert the top live candidate
    (action 1) or not (0). A shared LayerNorm trunk over the request's features and the user's behaviour sequence
    (target attention) feeds, per activity group, a two-way softmax actor and a critic ``Q(s, a)`` over return bins
    (two-hot targets), plus supervised heads for the immediate click, watch time and session exit that anchor the
    trunk. Without the supervised heads the critic's target is the sampled ``n_step`` return, bootstrapped from a
    Polyak target copy with the actor's expectation over the actions there (DQN: the max). With them (SL-MGAC) the
    heads build the target along the same ``n_step`` path of decision states: each step's *predicted* Lagrangian
    reward, weighted by the predicted chance that the session is still running, then the target critic's value at
    the path's last state. The sampled session end (a random exit that dominates a return's variance) and the
    sampled watch and video times no longer enter the target, only their expectations; a path the session cut
    short bootstraps at its last state, and a session's last step, which has no later state, trains the heads
    only. The
    actor follows the critic's advantage ``Q(s, a) - sum_b pi(b) Q(s, b)`` over both actions; a Lagrange multiplier
    (:class:`~learners.allocation.lagrange.LagrangeMultiplier`) mixes app time into the reward when sessions fall
    below the app-time floor. A small student (dense features only) is distilled from the actor for serving.
    :class:`AllocationConfig` switches parts off to give the baselines (plain actor-critic, DQN).

    Surface: ``act(request) → (action, propensity)`` draws with the agent's own generator; calling the agent,
    ``agent(request)``, returns the insert probability it would act with (a simulator policy);
    :meth:`greedy` and :meth:`serve` are the deterministic learned and distilled policies; ``observe(transition)``
    learns. Seeded and deterministic on CPU; ``state_dict`` / ``load_state_dict`` continue identically.

    Parameters
    ----------
    groups
        Number of activity groups (group ids ``0..groups-1``).
    streamers
        Streamer id buckets (ids are taken modulo this).
    config
        Switches and sizes (:class:`AllocationConfig`); SL-MGAC by default.
    seed
        Seeds the weights, the replay sampling and ``act``.

    Examples
    --------
    >>> from types import SimpleNamespace as Req
    >>> agent = AllocationAgent(groups=2, streamers=3, config=AllocationConfig(batch=4, update_every=1), seed=0)
    >>> request = Req(user=1, group=1, fatigue=0.0, live=(0, 2), streamer=2, ctr=0.3)
    >>> action, propensity = agent.act(request)
    >>> for _ in range(8):
    ...     agent.observe(Transition(request, 1, 0.5, reward=80.0, app_seconds=80.0, clicked=True,
    ...                              watch_seconds=60.0, exited=False, next_state=None))
    >>> agent.updates, 0.0 <= agent(request) <= 1.0, agent.greedy(request) in (0.0, 1.0)
    (5, True, True)

    References
    ----------
    Supervised Learning-enhanced Multi-Group Actor Critic for Live Stream Allocation in Feed (SL-MGAC). Kuaishou,
    KDD 2025.
    """

    def __init__(self, groups: int, streamers: int, *, config: AllocationConfig | None = None, seed: int = 0) -> None:
        config = config or AllocationConfig()
        require(
            0.0 <= config.explore < 0.5,
            f"AllocationAgent: explore must be in [0, 0.5) (got {config.explore})",
        )
        require(0.0 <= config.gamma <= 1.0, f"AllocationAgent: gamma must be in [0, 1] (got {config.gamma})")
        require(
            config.batch >= 1 and config.buffer >= config.batch and config.update_every >= 1,
            f"AllocationAgent: need batch >= 1, buffer >= batch, update_every >= 1 (got {config.batch}, "
            f"{config.buffer}, {config.update_every})",
        )
        require(config.bins >= 2 and config.max_return > 0, "AllocationAgent: bins >= 2 and max_return > 0")
        require(config.n_step >= 1, f"AllocationAgent: n_step must be >= 1 (got {config.n_step})")
        self.groups, self.streamers, self.config, self.seed = groups, streamers, config, seed
        self.featurizer = RequestFeaturizer(
            groups=groups,
            streamers=streamers,
            user_buckets=config.user_buckets,
            history=config.history,
            max_users=config.remembered_users,
        )
        layout = self.featurizer.layout
        self.bins = torch.linspace(0.0, config.max_return, config.bins)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = AllocationNetwork(
                layout,
                user_buckets=config.user_buckets,
                streamers=streamers,
                heads=groups if config.group_heads else 1,
                out=config.bins if config.distributional else 1,
                auxiliary=config.supervised,
                embed=config.embed,
                hidden=config.hidden,
                depth=config.depth,
                layer_norm=config.layer_norm,
            )
            self.student = StudentPolicy(layout, hidden=config.student_hidden)
        with torch.no_grad():  # every critic starts at a return near 0 (uniform bins would start mid-range, 2500 s)
            self.network.critic.weight.zero_()
            bias = -self.bins.repeat(self.network.heads * 2) if config.distributional else torch.zeros(())
            self.network.critic.bias.copy_(bias)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr)
        self.student_optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.lagrange = LagrangeMultiplier(config.app_floor, lr=config.lagrange_lr, scale=config.reward_scale)
        self.rng = np.random.default_rng(seed)
        self._states = np.zeros((config.buffer, layout.width), dtype=np.float32)
        self._paths = np.zeros((config.buffer, config.n_step, layout.width), dtype=np.float32)
        self._path_actions = np.zeros((config.buffer, config.n_step), dtype=np.float32)
        self._columns = np.zeros((config.buffer, len(_BUFFER_COLUMNS)), dtype=np.float32)
        self.size = self.cursor = 0
        self.observed = self.updates = self.owed = 0
        self._session_app = 0.0
        self._chains: dict[int, list[_Step]] = {}

    # -- acting ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _insert_preference(self, row: np.ndarray) -> float:
        """The learned probability of inserting (the actor's, or 1/0 from the critic's argmax for a DQN)."""
        heads = self.network(torch.from_numpy(row)[None])
        if self.config.actor:
            return float(torch.softmax(heads.actor, dim=-1)[0, 1])
        q = self._q(heads.critic)[0]
        return float(q[1] > q[0])

    def __call__(self, request: Request) -> float:
        """The probability of inserting the top candidate while learning: the learned one, kept within
        ``[explore, 1 - explore]``."""
        explore = self.config.explore
        return explore + (1.0 - 2.0 * explore) * self._insert_preference(self.featurizer(request))

    def act(self, request: Request) -> tuple[int, float]:
        """Draw an action (1: insert) with the agent's generator; the action and its probability (propensity)."""
        insert = self(request)
        action = int(self.rng.random() < insert)
        return action, insert if action else 1.0 - insert

    def greedy(self, request: Request) -> float:
        """The learned deterministic policy: 1.0 (insert) where the actor (or the critic) prefers inserting."""
        return float(self._insert_preference(self.featurizer(request)) > 0.5)

    def serve(self, request: Request) -> float:
        """The distilled student's deterministic policy (dense features only): 1.0 where it prefers inserting."""
        return float(self.serve_batch((request,))[0])

    @torch.inference_mode()
    def serve_batch(self, requests: Sequence[Request]) -> npt.NDArray[np.float64]:
        """:meth:`serve` for many requests in one forward pass of the student: 1.0 (insert) or 0.0 per request.

        >>> from types import SimpleNamespace as Req
        >>> agent = AllocationAgent(groups=2, streamers=3, seed=0)
        >>> requests = [Req(user=u, group=u % 2, fatigue=0.0, live=(0, 2), streamer=2, ctr=0.3) for u in range(3)]
        >>> agent.serve_batch(requests).tolist() == [agent.serve(request) for request in requests]
        True
        """
        rows = np.empty((len(requests), self.featurizer.layout.width), dtype=np.float32)
        for row, request in zip(rows, requests, strict=True):
            row[:] = self.featurizer(request)
        logits = self.student(torch.from_numpy(rows)).numpy()
        return (logits[:, 1] > logits[:, 0]).astype(np.float64)

    # -- learning ----------------------------------------------------------------------------------------------------
    def observe(self, transition: Transition, *, train: bool = True) -> None:
        """Learn from one transition: remember its outcome in the user's behaviour, update lambda at a session's end,
        store it with its ``n_step`` return once that is known, and take a gradient step every ``update_every``
        transitions once ``batch`` are stored. With ``train=False`` the steps are owed until :meth:`train` (a
        server answers its requests first and trains after).

        A user's transitions must arrive in decision order (as a stream keyed by user delivers them): the ones not
        yet stored wait in the user's chain until ``n_step`` more decisions or the session's end complete their
        return.
        """
        require(
            transition.action in (0, 1),
            f"AllocationAgent: action must be 0 (no live) or 1 (insert) (got {transition.action!r})",
        )
        require(
            0.0 < transition.propensity <= 1.0,
            f"AllocationAgent: propensity must be in (0, 1] (got {transition.propensity})",
        )
        config = self.config
        state = transition.state
        done = transition.next_state is None
        step = _Step(
            self.featurizer(state),
            None if done else self.featurizer(transition.next_state),  # type: ignore[arg-type]
            np.array(
                (
                    transition.action,
                    transition.propensity,
                    transition.reward,
                    transition.app_seconds,
                    transition.clicked,
                    transition.watch_seconds / config.reward_scale,
                    (transition.app_seconds - transition.watch_seconds) / config.reward_scale,
                    done,
                    0.0,
                    0.0,
                ),
                dtype=np.float32,
            ),
        )
        chain = self._chains.setdefault(int(state.user), [])
        chain.append(step)
        if done:
            while chain:
                self._store(chain)
            del self._chains[int(state.user)]
        elif len(chain) == config.n_step:
            self._store(chain)
        if transition.action == 1:
            self.featurizer.remember(
                state.user, state.streamer, clicked=transition.clicked, watch_seconds=transition.watch_seconds
            )
        self._session_app += transition.app_seconds
        if done:
            self.lagrange.update(self._session_app)
            self._session_app = 0.0
        self.observed += 1
        if self.size >= config.batch and self.observed % config.update_every == 0:
            self.owed += 1
        if train:
            self.train()

    def train(self) -> None:
        """Take the gradient steps owed by transitions observed with ``train=False``."""
        while self.owed:
            self._update()
            self.owed -= 1

    def _store(self, chain: list[_Step]) -> None:
        """Move the oldest step of ``chain`` into the replay buffer with its return over the whole chain (discounted
        reward and app seconds), the path of decision states after it (the chain's later states, then the state
        after the chain's last step unless the session ended there) with their actions, and the bootstrap weight."""
        gamma = self.config.gamma
        discounts = gamma ** np.arange(len(chain), dtype=np.float32)
        returns = discounts @ np.stack([step.columns[2:4] for step in chain])
        after = chain[-1].next_row
        first = chain.pop(0)
        path = [step.row for step in chain] + ([] if after is None else [after])
        slot = self.cursor
        self._states[slot] = first.row
        self._columns[slot] = first.columns
        self._columns[slot, 2:4] = returns
        self._columns[slot, -2] = len(path)
        self._columns[slot, -1] = 0.0 if after is None else gamma ** len(discounts)
        if path:
            self._paths[slot, : len(path)] = path
            self._path_actions[slot, : len(chain)] = [step.columns[0] for step in chain]
        self.cursor = (slot + 1) % self.config.buffer
        self.size = min(self.size + 1, self.config.buffer)

    def _q(self, critic: torch.Tensor) -> torch.Tensor:
        """Expected Q-values (…, 2) in reward-scale units from critic outputs (…, 2, out)."""
        return expected_value(critic, self.bins) if self.config.distributional else critic[..., 0]

    def _update(self) -> None:
        config = self.config
        index = torch.from_numpy(self.rng.integers(0, self.size, size=config.batch))
        states = torch.from_numpy(self._states)[index]
        dense = self.featurizer.layout.split(states)[3]
        for network in (self.network, self.target):  # the same statistics for both: the target is a lagged copy
            network.scaler.update(dense)
        paths = torch.from_numpy(self._paths)[index]  # (B, n, width)
        columns = dict(zip(_BUFFER_COLUMNS, torch.from_numpy(self._columns)[index].unbind(-1), strict=True))
        action = columns["action"].long()
        rows = torch.arange(config.batch)
        steps = columns["steps"].long()
        heads = self.network(states)
        with torch.no_grad():
            flat = paths.flatten(0, 1)
            next_q = self._q(self.target(flat).critic)
            path_heads = self.network(flat)
            if config.actor:
                path_value = (torch.softmax(path_heads.actor, dim=-1) * next_q).sum(-1)
            else:
                path_value = next_q.max(-1).values
            path_value = path_value.view(config.batch, config.n_step)
            last = path_value[rows, (steps - 1).clamp(min=0)]  # the value at the path's last state
            if heads.auxiliary is None:
                reward = self.lagrange.mix(columns["reward"], columns["app"]) / config.reward_scale
                target = reward + columns["bootstrap"] * last
                weight = torch.ones(config.batch)
            else:
                path_actions = torch.from_numpy(self._path_actions)[index].long()  # (B, n), the last one unused
                outcomes = torch.cat(
                    [
                        heads.auxiliary[rows, action][:, None],
                        path_heads.auxiliary.view(config.batch, config.n_step, 2, -1)[
                            rows[:, None], torch.arange(config.n_step - 1)[None], path_actions[:, :-1]
                        ],
                    ],
                    dim=1,
                )  # (B, n, outcomes): the immediate outcomes predicted along the path
                _, watch, video, end = outcomes.unbind(-1)
                reward = self.lagrange.mix(watch + config.video_weight * video, watch + video)
                stay = config.gamma * torch.sigmoid(-end)
                reach = torch.cat([torch.ones(config.batch, 1), torch.cumprod(stay, dim=1)], dim=1)  # (B, n + 1)
                within = torch.arange(config.n_step)[None] < steps[:, None]
                target = (within * reach[:, :-1] * reward).sum(-1) + reach[rows, steps] * last
                weight = (steps > 0).float()
                weight = weight / weight.sum().clamp(min=1.0) * config.batch
        taken = heads.critic[rows, action]
        if config.distributional:
            loss = -(weight * (two_hot(target, self.bins) * torch.log_softmax(taken, dim=-1)).sum(-1)).mean()
        else:
            loss = (weight * F.smooth_l1_loss(taken[:, 0], target, reduction="none")).mean()
        if heads.auxiliary is not None:
            click, watch, video, end = heads.auxiliary[rows, action].unbind(-1)
            auxiliary = (
                F.binary_cross_entropy_with_logits(click, columns["clicked"])
                + F.mse_loss(watch, columns["watch"])
                + F.mse_loss(video, columns["video"])
                + F.binary_cross_entropy_with_logits(end, columns["ended"])
            )
            loss = loss + config.auxiliary_weight * auxiliary
        if config.actor:
            policy = torch.softmax(heads.actor, dim=-1)
            q = self._q(heads.critic).detach()
            advantage = q - (policy.detach() * q).sum(-1, keepdim=True)
            entropy = -(policy * torch.log(policy.clamp(min=1e-8))).sum(-1)
            loss = loss - config.actor_weight * ((policy * advantage).sum(-1) + config.entropy * entropy).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for online, lagged in zip(self.network.parameters(), self.target.parameters(), strict=True):
                lagged.lerp_(online, config.target_tau)
            if config.actor:
                teacher = torch.softmax(heads.actor.detach(), dim=-1)
            else:
                teacher = F.one_hot(self._q(heads.critic.detach()).argmax(-1), 2).float()
        distill = F.cross_entropy(self.student(states), teacher)
        self.student_optimizer.zero_grad()
        distill.backward()
        self.student_optimizer.step()
        self.updates += 1

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"groups": self.groups, "streamers": self.streamers, "seed": self.seed, **asdict(self.config)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: weights, optimisers, replay, lambda, memory, generator."""
        return copy.deepcopy(self._state())

    def __getstate__(self) -> dict[str, Any]:
        """A pickle (a checkpoint, a registry version) holds what :meth:`state_dict` holds: the replay buffer's
        filled rows, not its preallocated capacity (over 100 MB for the default 50,000 transitions, even empty)."""
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.get("format", 3) if isinstance(state, dict) and "params" in state else 3
        require(
            saved == _FORMAT,
            f"AllocationAgent: this pickle holds an agent of state format {saved}{' or older' if saved == 3 else ''} "
            f"(this version reads format {_FORMAT}: its networks changed since); it cannot be restored: delete the "
            "pipeline's checkpoint (`eddy checkpoints delete PIPELINE`) and let the agent learn anew",
        )
        params = dict(state["params"])
        groups, streamers, seed = params.pop("groups"), params.pop("streamers"), params.pop("seed")
        self.__init__(groups, streamers, config=AllocationConfig(**params), seed=seed)  # type: ignore[misc]
        check_state(state, "AllocationAgent", _FORMAT, self._params())
        self._load(state)  # freshly unpickled: nobody else holds it, so no copy

    def _state(self) -> dict[str, Any]:
        """:meth:`state_dict` without its copy: views of the live weights and buffers, for pickling at once."""
        return {
            "learner": "AllocationAgent",
            "format": _FORMAT,
            "params": self._params(),
            "network": self.network.state_dict(),
            "target": self.target.state_dict(),
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "student_optimizer": self.student_optimizer.state_dict(),
            "buffer": {
                "states": torch.from_numpy(self._states[: self.size]),
                "paths": torch.from_numpy(self._paths[: self.size]),
                "path_actions": torch.from_numpy(self._path_actions[: self.size]),
                "columns": torch.from_numpy(self._columns[: self.size]),
            },
            "counters": {
                "size": self.size,
                "cursor": self.cursor,
                "observed": self.observed,
                "updates": self.updates,
                "owed": self.owed,
                "session_app": self._session_app,
                "lagrange": self.lagrange.value,
            },
            "featurizer": self.featurizer.state_dict(),
            "chains": {
                user: {
                    "rows": torch.from_numpy(np.stack([step.row for step in chain])),
                    "next_rows": torch.from_numpy(np.stack([step.next_row for step in chain])),  # type: ignore[misc]
                    "columns": torch.from_numpy(np.stack([step.columns for step in chain])),
                }
                for user, chain in self._chains.items()
            },
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, refusing another learner's or other parameters' state."""
        check_state(state, "AllocationAgent", _FORMAT, self._params())
        self._load(copy.deepcopy(state))

    def _load(self, state: dict[str, Any]) -> None:
        """:meth:`load_state_dict` without its check and copy: the agent takes ``state``'s tensors over."""
        self.network.load_state_dict(state["network"])
        self.target.load_state_dict(state["target"])
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.student_optimizer.load_state_dict(state["student_optimizer"])
        counters = state["counters"]
        self.size, self.cursor = int(counters["size"]), int(counters["cursor"])
        self.observed, self.updates, self.owed = (
            int(counters["observed"]),
            int(counters["updates"]),
            int(counters["owed"]),
        )
        self._session_app, self.lagrange.value = float(counters["session_app"]), float(counters["lagrange"])
        buffer = state["buffer"]
        self._states[: self.size] = buffer["states"].numpy()
        self._paths[: self.size] = buffer["paths"].numpy()
        self._path_actions[: self.size] = buffer["path_actions"].numpy()
        self._columns[: self.size] = buffer["columns"].numpy()
        self.featurizer.load_state_dict(state["featurizer"])
        self._chains = {
            int(user): [
                _Step(row, next_row, columns)
                for row, next_row, columns in zip(
                    chain["rows"].numpy(), chain["next_rows"].numpy(), chain["columns"].numpy(), strict=True
                )
            ]
            for user, chain in state["chains"].items()
        }
        self.rng.bit_generator.state = state["rng"]
