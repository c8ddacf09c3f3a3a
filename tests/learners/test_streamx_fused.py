"""The fused stream-x path (``LayerNormMLPStack``, ``stacked_obgd_update``) against autograd and ObGD.

The agents compute their gradients by hand, fused with the trace update; ``autograd_reference.py`` holds the same
agents written with autograd and the ``ObGD`` optimiser. Why the agent-level comparison re-synchronises the
reference after every step instead of letting both run free: in float32 the ObGD dynamics amplify rounding
differences. Two *autograd* agents that differ only in how ObGD sums ``||e||_1`` (foreach norms vs. the
per-parameter reference update) already pick different actions after a few hundred CartPole steps (373 of 2,000 in
one run), so long free runs cannot tell a wrong gradient from a reordered sum. Step by step, from the same state,
they can: every step of 2,000 must give the same action and the same parameters to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from learners.streamx import (
    BatchedStreamQ,
    LayerNormMLP,
    LayerNormMLPStack,
    StreamAC,
    StreamQ,
    StreamSARSA,
    foreach_obgd_update,
    stacked_obgd_update,
)
from learners.streamx.agent import StreamAgent
from tests.learners.autograd_reference import AutogradStreamAC, AutogradValueAgent

SETTINGS: dict[str, float] = {"lr": 1.0, "gamma": 0.99, "lamda": 0.8, "kappa": 2.0}


def networks(n: int, n_inputs: int, n_outputs: int, hidden: int, n_hidden: int = 2) -> list[LayerNormMLP]:
    """``n`` seeded networks with dense random parameters (sparse init leaves most gradients zero)."""
    nets = [
        LayerNormMLP(n_inputs, n_outputs, hidden=hidden, n_hidden=n_hidden, generator=torch.Generator().manual_seed(i))
        for i in range(n)
    ]
    g = torch.Generator().manual_seed(100)
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return nets


def flat_grad(net: LayerNormMLP) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


SHAPES = [(4, 2, 32, 2), (11, 6, 128, 2), (3, 1, 5, 1), (7, 3, 16, 3)]


@pytest.mark.parametrize(("n_inputs", "n_outputs", "hidden", "n_hidden"), SHAPES)
@pytest.mark.parametrize("batch", [1, 2])
def test_forward_and_fused_backward_equal_autograd(
    n_inputs: int, n_outputs: int, hidden: int, n_hidden: int, batch: int
) -> None:
    nets = networks(3, n_inputs, n_outputs, hidden, n_hidden)
    references = [LayerNormMLP(n_inputs, n_outputs, hidden=hidden, n_hidden=n_hidden) for _ in nets]
    for ref, net in zip(references, nets, strict=True):
        ref.load_state_dict(net.state_dict())
    stack = LayerNormMLPStack(nets, **SETTINGS)
    g = torch.Generator().manual_seed(1)
    decay = SETTINGS["gamma"] * SETTINGS["lamda"]
    expected_traces = [torch.zeros(stack.params.shape[1]) for _ in nets]
    for _ in range(3):  # three accumulations: e <- gamma * lambda * e + grad
        x = torch.randn(3, batch, n_inputs, generator=g)
        grad_output = torch.randn(3, batch, n_outputs, generator=g)
        forward = stack.forward(x)
        stack.accumulate(forward, grad_output)
        for i, ref in enumerate(references):
            out = ref(x[i])
            torch.testing.assert_close(forward.output[i], out.detach())
            ref.zero_grad()
            (out * grad_output[i]).sum().backward()
            expected_traces[i] = decay * expected_traces[i] + flat_grad(ref)
    torch.testing.assert_close(stack.traces, torch.stack(expected_traces), rtol=1e-5, atol=1e-5)


def test_the_networks_stay_live_views_of_the_stack() -> None:
    nets = networks(2, 4, 2, 8)
    before = [net.state_dict() for net in nets]
    stack = LayerNormMLPStack(nets, **SETTINGS)
    for net, state in zip(nets, before, strict=True):  # adopted unchanged
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    stack.accumulate(stack.forward(torch.ones(2, 1, 4)), torch.ones(2, 1, 2))
    stack.step([0.5, -0.5], reset=False)
    torch.testing.assert_close(torch.cat([p.flatten() for p in nets[1].parameters()]), stack.params[1])
    nets[0].load_state_dict(before[0])  # writing through a module writes the stack
    torch.testing.assert_close(stack.params[0], torch.cat([v.flatten() for v in before[0].values()]))


def test_a_forward_pass_is_stale_once_the_parameters_move() -> None:
    stack = LayerNormMLPStack(networks(1, 4, 2, 8), **SETTINGS)
    forward = stack.forward(torch.ones(1, 1, 4))
    stack.accumulate(forward, torch.ones(1, 1, 2))
    stack.step([1.0], reset=False)
    with pytest.raises(RuntimeError, match=r"parameters changed after this forward pass; run forward\(\) again"):
        stack.accumulate(forward, torch.ones(1, 1, 2))


def test_stack_rejects_what_it_cannot_stack() -> None:
    with pytest.raises(ValueError, match="needs at least one network"):
        LayerNormMLPStack([], **SETTINGS)
    with pytest.raises(ValueError, match=r"network 1 has layer shapes .* network 0 has .* same n_inputs"):
        LayerNormMLPStack([LayerNormMLP(4, 2, hidden=8), LayerNormMLP(4, 2, hidden=16)], **SETTINGS)
    stack = LayerNormMLPStack(networks(2, 4, 2, 8), **SETTINGS)
    with pytest.raises(ValueError, match=r"state\['params'\] has shape \(1, 130\), this stack \(2, 130\)"):
        stack.load_state_dict({"params": torch.zeros(1, 130), "traces": torch.zeros(1, 130)})


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_stacked_update_equals_foreach_update_row_by_row(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    params, traces = torch.randn(3, 50, generator=g), torch.randn(3, 50, generator=g) * scale
    deltas, reset = [0.7, -3.0, 0.0], torch.tensor([False, True, False])
    expected = []
    for i, delta in enumerate(deltas):
        p, e = [params[i].clone()], [torch.zeros(50)]
        step = foreach_obgd_update(p, [traces[i]], e, delta, lr=1.0, kappa=2.0, gamma_lambda=0.0, reset=bool(reset[i]))
        expected.append((step, p[0], e[0]))
    steps = stacked_obgd_update(params, traces, deltas, lr=1.0, kappa=2.0, reset=reset)
    for (step, p, e), got_step, got_p, got_e in zip(expected, steps, params, traces, strict=True):
        assert got_step == pytest.approx(step, rel=1e-6)
        torch.testing.assert_close(got_p, p)
        torch.testing.assert_close(got_e, e)
    with pytest.raises(ValueError, match=r"delta N floats \(got \(3, 50\), \(3, 50\) and 2 TD errors\)"):
        stacked_obgd_update(params, traces, [0.1, 0.2], lr=1.0, kappa=2.0, reset=False)


# -- the agents, step by step against autograd ---------------------------------------------------------------------

STACKS = {"network_stack": "optimizer", "actor_stack": "actor_optimizer", "critic_stack": "critic_optimizer"}


def learned_state(agent: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameters, traces) per network, flat; the traces from the stack or, for the reference, from its ObGD."""
    state = []
    for stack_name, optimizer_name in STACKS.items():
        if hasattr(agent, stack_name):
            stack = getattr(agent, stack_name)
            optimizer = getattr(agent, optimizer_name, None)
            traces = stack.traces[0] if optimizer is None else torch.cat([e.flatten() for e in optimizer.traces])
            state.append((stack.params[0].clone(), traces.clone()))
    return state


def synchronise(reference: Any, fast: Any) -> None:
    """Give the reference the fast agent's parameters and traces (everything else is already shared)."""
    for stack_name, optimizer_name in STACKS.items():
        if hasattr(fast, stack_name):
            source = getattr(fast, stack_name)
            getattr(reference, stack_name).params.copy_(source.params)
            flat = source.traces[0]
            for e in getattr(reference, optimizer_name).traces:
                e.copy_(flat[: e.numel()].view_as(e))
                flat = flat[e.numel() :]


AGENT_PAIRS: dict[str, tuple[Callable[[], StreamAgent], Callable[[], StreamAgent], str]] = {
    "StreamQ": (
        lambda: StreamQ(4, 2, seed=0, exploration_steps=500),
        lambda: AutogradValueAgent(4, 2, bootstrap="max", seed=0, exploration_steps=500),
        "CartPole-v1",
    ),
    "StreamSARSA": (
        lambda: StreamSARSA(4, 2, seed=1, exploration_steps=500),
        lambda: AutogradValueAgent(4, 2, bootstrap="sarsa", seed=1, exploration_steps=500),
        "CartPole-v1",
    ),
    "StreamAC-softmax": (lambda: StreamAC(4, 2, seed=2), lambda: AutogradStreamAC(4, 2, seed=2), "CartPole-v1"),
    "StreamAC-gaussian": (
        lambda: StreamAC(3, 1, continuous=True, seed=3),
        lambda: AutogradStreamAC(3, 1, continuous=True, seed=3),
        "Pendulum-v1",
    ),
}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", AGENT_PAIRS)
def test_fused_agents_act_and_learn_as_the_autograd_reference(name: str) -> None:
    gym = pytest.importorskip("gymnasium", reason="the `rl` extra (gymnasium) is not installed")
    make_fast, make_reference, env_id = AGENT_PAIRS[name]
    fast, reference = make_fast(), make_reference()
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    resets = 0
    for _ in range(2_000):
        action = fast.act(obs)  # type: ignore[attr-defined]
        expected = reference.act(obs)  # type: ignore[attr-defined]
        if isinstance(action, np.ndarray):
            np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-5)
        else:
            assert action == expected
        next_obs, reward, terminated, truncated, _ = env.step(action)
        fast.observe(obs, action, reward, next_obs, terminated, truncated)  # type: ignore[attr-defined]
        reference.observe(obs, action, reward, next_obs, terminated, truncated)  # type: ignore[attr-defined]
        pairs = zip(learned_state(fast), learned_state(reference), strict=True)
        for (params, traces), (ref_params, ref_traces) in pairs:
            torch.testing.assert_close(params, ref_params, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(traces, ref_traces, rtol=1e-4, atol=1e-5)
        synchronise(reference, fast)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            resets += 1
    assert resets > 5 and fast.steps == reference.steps == 2_000


def test_stream_ac_reuses_the_actor_pass_of_act_while_the_actor_is_unchanged() -> None:
    agent = StreamAC(4, 2, hidden=16, seed=0)
    calls = []
    original = agent.actor_stack.forward
    agent.actor_stack.forward = lambda x: calls.append(x) or original(x)  # type: ignore[method-assign]
    obs, next_obs = np.ones(4), np.full(4, 0.5)
    agent.act(obs)
    agent.observe(obs, 1, 1.0, next_obs, False, False)
    assert len(calls) == 1  # observe() used act()'s pass
    agent.act(next_obs)
    agent.actor.load_state_dict(agent.actor.state_dict())  # parameters rewritten: the cached pass is stale
    agent.observe(next_obs, 0, 1.0, obs, False, False)
    assert len(calls) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("continuous", [False, True])
def test_agents_on_cuda_learn_as_on_the_cpu(continuous: bool) -> None:
    """The fused path is device-agnostic: the same seeds on CUDA act and learn as on the CPU (to rounding)."""
    rng = np.random.default_rng(0)
    agents: list[Any] = [StreamAC(4, 2, continuous=continuous, hidden=16, seed=0, device=d) for d in ("cpu", "cuda")]
    if not continuous:
        agents += [StreamQ(4, 2, seed=0, device=d) for d in ("cpu", "cuda")]
        agents += [BatchedStreamQ(3, 4, 2, seed=0, device=d) for d in ("cpu", "cuda")]
    for cpu, cuda in zip(agents[::2], agents[1::2], strict=True):
        batched = isinstance(cpu, BatchedStreamQ)
        shape = (3, 4) if batched else (4,)
        obs = rng.normal(size=shape)
        for t in range(30):
            action = cpu.act(obs)
            np.testing.assert_allclose(cuda.act(obs), action, rtol=1e-4, atol=1e-5)
            next_obs = rng.normal(size=shape)
            reward = np.ones(3) if batched else 1.0
            ends = np.full(3, t % 10 == 9) if batched else t % 10 == 9
            for agent in (cpu, cuda):
                agent.observe(obs, action, reward, next_obs, ends, np.zeros(3, bool) if batched else False)
            obs = next_obs
        for name in ("stack", "network_stack", "actor_stack", "critic_stack"):
            if hasattr(cpu, name):
                expected = getattr(cpu, name).state_dict()
                for key, value in getattr(cuda, name).state_dict().items():
                    torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5)
