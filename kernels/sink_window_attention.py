"""Decode attention over an attention-sink + sliding-window KV cache, RoPE applied in-kernel: Triton + torch reference.

Each stream keeps the keys and values of its first ``sinks`` tokens and of its last ``capacity - sinks`` tokens (the
window) in one row of a preallocated cache (``inference.rolling_cache.RollingKVCache``). The window part is a ring:
once the stream has seen more than ``capacity`` tokens, its newest token overwrites the oldest window entry, so an
append costs one row write instead of a shift. Keys are cached **before** the rotary embedding (RoPE) and rotated
here at their *place in the cache* (0 .. valid-1: sinks first, then the window from oldest to newest), never at their
place in the stream, so the positions a query sees stay within ``0 .. capacity-1`` however long the stream runs
(StreamingLLM, §3.2). :func:`cache_positions` says which place each physical entry holds.

The query is the stream's newest token, whose key and value the caller has already written into the cache (``seen``
counts it): it sits at the last valid place, ``valid - 1``, and attends to every valid entry, itself included. A
stream with ``seen == 0`` has nothing to attend to and its output is zeros (the convention of both the kernel and
the reference).

The Triton path follows SGLang's two-stage split-K decode kernel: stage 1 runs one program per (stream, head,
split of the cache) with an online softmax and writes a partial output and its log-sum-exp; stage 2 merges the
splits. Splitting keeps the GPU busy when few streams attend to long windows.

References
----------
Xiao, G., Tian, Y., Chen, B., Han, S., Lewis, M. (2023). Efficient Streaming Language Models with Attention Sinks.
arXiv:2309.17453.
Su, J., Lu, Y., Pan, S., Murtadha, A., Wen, B., Liu, Y. (2021). RoFormer: Enhanced Transformer with Rotary Position
Embedding. arXiv:2104.09864.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

ROPE_BASE = 10000.0
BLOCK_N = 64  # cache entries per inner iteration of stage 1
PROGRAMS_PER_SM = 4  # split the cache until about this many stage-1 programs run per streaming multiprocessor
MAX_SPLITS = 32


def rope_inverse_frequencies(head_dim: int, base: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``head_dim // 2`` rotation frequencies ``base ** (-2i / head_dim)``, float32 (the kernel's formula).

    >>> rope_inverse_frequencies(4, 10000.0)
    tensor([1.0000, 0.0100])
    """
    exponent = -2.0 * math.log(base) / head_dim
    return torch.exp(torch.arange(head_dim // 2, device=device, dtype=torch.float32) * exponent)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = ROPE_BASE) -> torch.Tensor:
    """``x`` (``[..., head_dim]``) rotated at ``positions`` (broadcastable to ``x.shape[:-1]``), in float32.

    The "rotate half" form: dimension ``i`` pairs with ``i + head_dim // 2``. Scores between a query rotated at
    ``p`` and a key rotated at ``r`` depend on ``p - r`` only.

    >>> q, k = torch.randn(8), torch.randn(8)
    >>> a = apply_rope(q, torch.tensor(5)) @ apply_rope(k, torch.tensor(2))
    >>> b = apply_rope(q, torch.tensor(13)) @ apply_rope(k, torch.tensor(10))
    >>> torch.allclose(a, b, atol=1e-5)
    True
    """
    half = x.shape[-1] // 2
    angles = positions.to(torch.float32).unsqueeze(-1) * rope_inverse_frequencies(x.shape[-1], base, x.device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def cache_positions(seen: torch.Tensor, capacity: int, sinks: int) -> torch.Tensor:
    """The place in the cache (RoPE position) of the token stored at each physical index, ``[streams, capacity]``.

    ``seen`` is the number of tokens each stream has appended. Token ``t`` is stored at index ``t`` if ``t < sinks``,
    else at ``sinks + (t - sinks) % window``; so entries are in order until the ring wraps, and after that the
    window's oldest token is at ``sinks + ring`` with ``ring = (seen - sinks) % window``. Entries at or past
    ``min(seen, capacity)`` hold nothing.

    >>> cache_positions(torch.tensor([3, 7]), capacity=5, sinks=2)
    tensor([[0, 1, 2, 3, 4],
            [0, 1, 3, 4, 2]])
    """
    window = capacity - sinks
    index = torch.arange(capacity, device=seen.device)
    ring = torch.where(seen > capacity, (seen - sinks) % window, 0).unsqueeze(-1)
    return torch.where(index < sinks, index, sinks + (index - sinks - ring + window) % window)


def sink_window_decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    seen: torch.Tensor,
    *,
    sinks: int,
    rope_base: float = ROPE_BASE,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention written with plain torch ops: the definition of "correct" for the kernel.

    Parameters
    ----------
    q
        ``[batch, heads, head_dim]``: the newest token's query of each stream, before RoPE.
    k_cache, v_cache
        ``[slots, heads, capacity, head_dim]``: one layer of the cache (keys before RoPE); any strides.
    slots
        ``[batch]`` integers: the cache row of each stream.
    seen
        ``[batch]`` integers: tokens each stream has appended, the query's own included.
    sinks
        Entries at the front of every row that never roll out; the window is ``capacity - sinks`` (at least 1).
    rope_base, scale
        RoPE base, and the score scale (default ``head_dim ** -0.5``).

    Returns
    -------
    torch.Tensor
        ``[batch, heads, head_dim]`` in ``q``'s dtype; zeros for a stream with ``seen == 0``.

    Examples
    --------
    A stream that has seen one token attends to that token only, so the output is its value:

    >>> k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    >>> out = sink_window_decode_attention_reference(
    ...     torch.randn(1, 2, 4), k, v, torch.tensor([0]), torch.tensor([1]), sinks=2
    ... )
    >>> torch.allclose(out, v[:, :, 0])
    True
    """
    _check_inputs(q, k_cache, v_cache, slots, seen, sinks)
    capacity, head_dim = k_cache.shape[2], k_cache.shape[3]
    seen = seen.long()
    valid = seen.clamp(max=capacity)
    keys = apply_rope(k_cache[slots], cache_positions(seen, capacity, sinks).unsqueeze(1), rope_base)
    query = apply_rope(q, (valid - 1).clamp(min=0).unsqueeze(1), rope_base)
    scores = torch.einsum("bhd,bhld->bhl", query, keys) * (head_dim**-0.5 if scale is None else scale)
    live = torch.arange(capacity, device=q.device) < valid.unsqueeze(1)
    weights = torch.softmax(scores.masked_fill(~live.unsqueeze(1), -math.inf), dim=-1).nan_to_num(0.0)
    return torch.einsum("bhl,bhld->bhd", weights, v_cache[slots].float()).to(q.dtype)


@triton.jit
def _decode_split_kernel(  # type: ignore[no-untyped-def]
    q_ptr,
    k_ptr,
    v_ptr,
    slots_ptr,
    seen_ptr,
    part_out_ptr,
    part_lse_ptr,
    stride_qb,
    stride_qh,
    stride_ks,
    stride_kh,
    stride_kl,
    stride_vs,
    stride_vh,
    stride_vl,
    capacity,
    sinks,
    split_len,
    scale,
    neg_log_base_over_half,
    HEAD_DIM: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SPLITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    heads = tl.num_programs(1)
    slot = tl.load(slots_ptr + b).to(tl.int64)
    seen = tl.load(seen_ptr + b).to(tl.int64)  # a stream may run past 2**31 tokens; places in the cache fit int32
    valid = tl.minimum(seen, capacity).to(tl.int32)
    window = capacity - sinks
    ring = tl.where(seen > capacity, (seen - sinks) % window, 0).to(tl.int32)

    offs_half = tl.arange(0, BLOCK_HALF)
    mask_half = offs_half < HALF
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    inv_freq = tl.exp(offs_half.to(tl.float32) * neg_log_base_over_half)

    q_row = q_ptr + b * stride_qb + h * stride_qh
    q1 = tl.load(q_row + offs_half, mask=mask_half, other=0.0).to(tl.float32)
    q2 = tl.load(q_row + HALF + offs_half, mask=mask_half, other=0.0).to(tl.float32)
    q_angle = tl.maximum(valid - 1, 0).to(tl.float32) * inv_freq
    q_cos = tl.cos(q_angle)
    q_sin = tl.sin(q_angle)
    qr1 = (q1 * q_cos - q2 * q_sin) * scale
    qr2 = (q2 * q_cos + q1 * q_sin) * scale

    k_row = k_ptr + slot * stride_ks + h * stride_kh
    v_row = v_ptr + slot * stride_vs + h * stride_vh
    start = split * split_len
    end = tl.minimum(start + split_len, valid)
    e_max = -float("inf")
    e_sum = 0.0
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for block_start in range(start, end, BLOCK):
        offs_n = block_start + tl.arange(0, BLOCK)
        mask_n = offs_n < end
        position = tl.where(offs_n < sinks, offs_n, sinks + (offs_n - sinks - ring + window) % window)
        angle = position.to(tl.float32)[:, None] * inv_freq[None, :]
        cos = tl.cos(angle)
        sin = tl.sin(angle)
        mask_k = mask_n[:, None] & mask_half[None, :]
        k_block = k_row + offs_n[:, None] * stride_kl
        k1 = tl.load(k_block + offs_half[None, :], mask=mask_k, other=0.0).to(tl.float32)
        k2 = tl.load(k_block + HALF + offs_half[None, :], mask=mask_k, other=0.0).to(tl.float32)
        score = tl.sum(qr1[None, :] * (k1 * cos - k2 * sin) + qr2[None, :] * (k2 * cos + k1 * sin), 1)
        score = tl.where(mask_n, score, -float("inf"))
        new_max = tl.maximum(tl.max(score, 0), e_max)
        rescale = tl.exp(e_max - new_max)
        p = tl.exp(score - new_max)
        v = tl.load(
            v_row + offs_n[:, None] * stride_vl + offs_d[None, :], mask=mask_n[:, None] & mask_d[None, :], other=0.0
        ).to(tl.float32)
        acc = acc * rescale + tl.sum(p[:, None] * v, 0)
        e_sum = e_sum * rescale + tl.sum(p, 0)
        e_max = new_max
    part = (b * heads + h) * SPLITS + split
    if end > start:
        tl.store(part_out_ptr + part * HEAD_DIM + offs_d, acc / e_sum, mask=mask_d)
        tl.store(part_lse_ptr + part, e_max + tl.log(e_sum))


@triton.jit
def _merge_splits_kernel(  # type: ignore[no-untyped-def]
    part_out_ptr,
    part_lse_ptr,
    seen_ptr,
    out_ptr,
    stride_ob,
    stride_oh,
    capacity,
    split_len,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SPLITS: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    heads = tl.num_programs(1)
    valid = tl.minimum(tl.load(seen_ptr + b).to(tl.int64), capacity).to(tl.int32)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    e_max = -float("inf")
    e_sum = 0.0
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for split in range(0, SPLITS):
        if split * split_len < valid:
            part = (b * heads + h) * SPLITS + split
            lse = tl.load(part_lse_ptr + part)
            new_max = tl.maximum(lse, e_max)
            rescale = tl.exp(e_max - new_max)
            weight = tl.exp(lse - new_max)
            acc = acc * rescale + weight * tl.load(part_out_ptr + part * HEAD_DIM + offs_d, mask=mask_d, other=0.0)
            e_sum = e_sum * rescale + weight
            e_max = new_max
    result = tl.where(e_sum > 0.0, acc / tl.maximum(e_sum, 1e-30), 0.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, result.to(out_ptr.dtype.element_ty), mask=mask_d)


def sink_window_decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    seen: torch.Tensor,
    *,
    sinks: int,
    rope_base: float = ROPE_BASE,
    scale: float | None = None,
    splits: int | None = None,
) -> torch.Tensor:
    """The same attention as :func:`sink_window_decode_attention_reference`, in two Triton launches.

    ``q``, ``k_cache`` and ``v_cache`` must share one float dtype (float16, bfloat16 or float32) and one device and
    have unit stride in ``head_dim``; the cache may be a strided view (``RollingKVCache.layer``), read in place.
    ``slots`` must lie in ``[0, k_cache.shape[0])`` and ``seen`` be non-negative: they are not checked here, since
    that would synchronise with the device. ``splits`` cuts each cache row into that many parts for stage 1
    (default: enough for about ``PROGRAMS_PER_SM`` programs per multiprocessor on CUDA, one elsewhere).
    """
    _check_inputs(q, k_cache, v_cache, slots, seen, sinks)
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype:
            raise ValueError(
                f"sink_window_decode_attention: {name} is {t.dtype} but q is {q.dtype}; cast them to one dtype"
            )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(
            f"sink_window_decode_attention: the kernel takes float16, bfloat16 or float32 (got {q.dtype}); "
            "cast q and the cache with .to(torch.float32)"
        )
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(
                f"sink_window_decode_attention: {name} must have unit stride in head_dim (got strides "
                f"{tuple(t.stride())}); pass a view of a contiguous cache, or call .contiguous()"
            )
    batch, heads, head_dim = q.shape
    capacity = k_cache.shape[2]
    out = torch.empty_like(q)
    if batch == 0:
        return out
    if splits is None:
        programs = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 1
        splits = min(MAX_SPLITS, triton.cdiv(capacity, BLOCK_N), triton.cdiv(PROGRAMS_PER_SM * programs, batch * heads))
    if splits < 1:
        raise ValueError(f"sink_window_decode_attention: splits must be >= 1 (got {splits})")
    split_len = triton.cdiv(triton.cdiv(capacity, splits), BLOCK_N) * BLOCK_N
    part_out = torch.empty((batch, heads, splits, head_dim), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((batch, heads, splits), dtype=torch.float32, device=q.device)
    block_d = triton.next_power_of_2(head_dim)
    _decode_split_kernel[(batch, heads, splits)](
        q,
        k_cache,
        v_cache,
        slots,
        seen,
        part_out,
        part_lse,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        capacity,
        sinks,
        split_len,
        head_dim**-0.5 if scale is None else scale,
        -math.log(rope_base) / (head_dim // 2),
        HEAD_DIM=head_dim,
        HALF=head_dim // 2,
        BLOCK_HALF=block_d // 2,
        BLOCK_D=block_d,
        SPLITS=splits,
        BLOCK=BLOCK_N,
    )
    _merge_splits_kernel[(batch, heads)](
        part_out,
        part_lse,
        seen,
        out,
        out.stride(0),
        out.stride(1),
        capacity,
        split_len,
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        SPLITS=splits,
    )
    return out


def sink_window_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    seen: torch.Tensor,
    *,
    sinks: int,
    rope_base: float = ROPE_BASE,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention over a sink+window cache: the Triton kernel for CUDA tensors, the torch reference otherwise.

    Arguments and result as in :func:`sink_window_decode_attention_reference`.

    >>> k, v = torch.randn(4, 2, 6, 8), torch.randn(4, 2, 6, 8)
    >>> out = sink_window_decode_attention(
    ...     torch.randn(2, 2, 8), k, v, slots=torch.tensor([3, 1]), seen=torch.tensor([9, 0]), sinks=2
    ... )
    >>> out.shape, bool(out[1].eq(0).all())
    (torch.Size([2, 2, 8]), True)
    """
    attend = sink_window_decode_attention_triton if q.is_cuda else sink_window_decode_attention_reference
    return attend(q, k_cache, v_cache, slots, seen, sinks=sinks, rope_base=rope_base, scale=scale)


def _check_inputs(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, seen: torch.Tensor, sinks: int
) -> None:
    name = "sink_window_decode_attention"
    if q.dim() != 3:
        raise ValueError(f"{name}: q must be [batch, heads, head_dim] (got shape {tuple(q.shape)})")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"{name}: k_cache and v_cache must both be [slots, heads, capacity, head_dim] (got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}); pass RollingKVCache.layer(layer)"
        )
    batch, heads, head_dim = q.shape
    if (k_cache.shape[1], k_cache.shape[3]) != (heads, head_dim):
        raise ValueError(
            f"{name}: the cache has {k_cache.shape[1]} heads of {k_cache.shape[3]} dims but q has {heads} of "
            f"{head_dim}; build the cache with the model's heads and head_dim"
        )
    if head_dim % 2:
        raise ValueError(f"{name}: RoPE rotates pairs of dims, so head_dim must be even (got {head_dim})")
    for arg, t in (("slots", slots), ("seen", seen)):
        if t.shape != (batch,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(
                f"{name}: {arg} must be {batch} integers, one per query (got {t.dtype} of shape {tuple(t.shape)})"
            )
    if not 0 <= sinks < k_cache.shape[2]:
        raise ValueError(
            f"{name}: sinks must be in [0, capacity) so that the window holds at least one token (got sinks={sinks}, "
            f"capacity={k_cache.shape[2]})"
        )
    devices = {t.device for t in (q, k_cache, v_cache, slots, seen)}
    if len(devices) > 1:
        raise ValueError(
            f"{name}: q, the cache, slots and seen must be on one device (got {sorted(map(str, devices))})"
        )
