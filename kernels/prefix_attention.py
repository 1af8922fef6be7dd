"""Prefix-shared (cascade) attention: Triton forward kernel, wrappers and a backend dispatcher.

Same function and layout as :mod:`llmrec.kernels.prefix_attention_ref` (the PyTorch reference)::

    q          (B, Hq,  Ls, D)   suffix queries of B candidates
    k_suffix   (B, Hkv, Ls, D)   suffix keys/values (RoPE already applied)
    v_suffix   (B, Hkv, Ls, D)
    k_prefix   (Hkv, Lp, D)      ONE shared copy of the prefix keys/values ((1, Hkv, Lp, D) accepted)
    v_prefix   (Hkv, Lp, D)
    suffix_mask (B, Ls) bool/int, optional, 1 = real token, 0 = right padding (excluded as key)
    -> out     (B, Hq,  Ls, D)   dtype of q

Grouped-query attention: ``Hq = G * Hkv`` and query head ``i`` uses KV head ``i // G`` (transformers'
``repeat_kv`` convention).  Each suffix query attends to all prefix keys and causally to the suffix keys
at positions ``<=`` its own.  Any strides are accepted (no ``.contiguous()`` copies are made).

Kernel design (one kernel, forward only).  For KV head ``h`` the ``B * G * Ls`` query rows of all
candidates and all query heads of the group are flattened into one row dimension (Hydragen's
inter-sequence batching: the prefix attention becomes one large matmul against the single prefix copy).
A program owns ``BLOCK_M`` consecutive rows, which may span several candidates, and

1. walks the prefix keys ``0 .. Lp`` in ``BLOCK_N`` tiles with the FlashAttention-2 online softmax
   (base-2 exponentials, running max ``m``, running sum ``l``, fp32 accumulator), then
2. continues the same online softmax over the suffix keys of the candidates its rows belong to
   (block-diagonal per candidate, causal, padding-masked).

Continuing the online softmax from the prefix state is exactly the LSE merge of the two partial
softmaxes (Hydragen; FlashInfer cascade attention's ``merge_state``), done in registers in fp32
without writing the partial states to memory.  ``DO_PREFIX`` / ``DO_SUFFIX`` / ``WRITE_LSE`` compile-
time flags give the two partials ``(o, lse)`` on their own (:func:`prefix_attention_partial`,
:func:`suffix_attention_partial`), for cascades over more levels.  LSEs are returned in natural log
(the kernel works in base 2 internally and converts).

Precision: dots accumulate in fp32; fp32 inputs use ``input_precision="ieee"`` (no TF32).  Supported
dtypes: float16, bfloat16, float32 on CUDA; on CPU the kernel runs only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before ``triton`` is first imported), where only float32 is meaningful.

Sources: Juravsky et al. 2024, "Hydragen: High-Throughput LLM Inference with Shared Prefixes";
FlashInfer cascade attention / merge_state (Ye et al.); Dao 2023, "FlashAttention-2" online softmax;
the Triton fused-attention tutorial.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from . import prefix_attention_ref as _ref
from .prefix_attention_ref import check_inputs

try:  # triton is an optional dependency (extra "kernels"); the torch backend works without it
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None
    HAS_TRITON = False

__all__ = [
    "prefix_shared_attention",
    "prefix_attention_partial",
    "suffix_attention_partial",
    "attention",
    "HAS_TRITON",
    "triton_interpreter_active",
    "prefix_shared_attention_op",
    "bucket_size",
    "SUFFIX_BUCKETS",
    "pad_to_buckets",
]

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634

if HAS_TRITON:

    # B, Ls, Lp vary with every request: keep them out of Triton's integer specialisation (value 1 and
    # divisibility by 16 would otherwise each select another compiled variant); strides stay specialised
    # (the unit inner strides let loads vectorise).
    @triton.jit(do_not_specialize=["B", "Ls", "Lp"])
    def _prefix_shared_attn_fwd(
        Q, KS, VS, KP, VP, MASK, O, LSE,
        stride_qb, stride_qh, stride_qs, stride_qd,
        stride_ksb, stride_ksh, stride_kss, stride_ksd,
        stride_vsb, stride_vsh, stride_vss, stride_vsd,
        stride_kph, stride_kpn, stride_kpd,
        stride_vph, stride_vpn, stride_vpd,
        stride_mb, stride_ms,
        stride_ob, stride_oh, stride_os, stride_od,
        stride_lb, stride_lh, stride_ls,
        B, Ls, Lp, D,
        qk_scale,  # softmax scale * log2(e)
        G: tl.constexpr,
        HAS_MASK: tl.constexpr,
        DO_PREFIX: tl.constexpr,
        DO_SUFFIX: tl.constexpr,
        WRITE_LSE: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        h = tl.program_id(1)  # KV head
        GLs = G * Ls
        n_rows = B * GLs
        row0 = pid_m * BLOCK_M
        rows = row0 + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        rb = rows // GLs  # candidate
        rg = (rows // Ls) % G  # query head within the group
        rs = rows % Ls  # suffix position
        hq = h * G + rg  # query head
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        offs_n = tl.arange(0, BLOCK_N)

        q_ptrs = (Q + rb.to(tl.int64)[:, None] * stride_qb + hq[:, None] * stride_qh
                  + rs[:, None] * stride_qs + offs_d[None, :] * stride_qd)
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        if DO_PREFIX:
            # every tile holds >= 1 valid key, so the running max is finite after the first tile
            for start_n in range(0, Lp, BLOCK_N):
                n = start_n + offs_n
                n_ok = n < Lp
                kt = tl.load(KP + h * stride_kph + n[None, :] * stride_kpn + offs_d[:, None] * stride_kpd,
                             mask=d_ok[:, None] & n_ok[None, :], other=0.0)
                qk = tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale
                qk = tl.where(n_ok[None, :], qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                alpha = tl.exp2(m_i - m_new)
                p = tl.exp2(qk - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(VP + h * stride_vph + n[:, None] * stride_vpn + offs_d[None, :] * stride_vpd,
                            mask=n_ok[:, None] & d_ok[None, :], other=0.0)
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
                m_i = m_new

        if DO_SUFFIX:
            # suffix keys of the candidates covered by this row tile, flattened as (candidate, position)
            b_lo = row0 // GLs
            b_hi = tl.minimum((row0 + BLOCK_M - 1) // GLs, B - 1)
            key_end = (b_hi + 1) * Ls
            for start_n in range(b_lo * Ls, key_end, BLOCK_N):
                n = start_n + offs_n
                n_ok = n < key_end
                kb = n // Ls
                kp = n % Ls
                kb64 = kb.to(tl.int64)
                kt = tl.load(KS + kb64[None, :] * stride_ksb + h * stride_ksh + kp[None, :] * stride_kss
                             + offs_d[:, None] * stride_ksd,
                             mask=d_ok[:, None] & n_ok[None, :], other=0.0)
                qk = tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale
                allowed = (kb[None, :] == rb[:, None]) & (kp[None, :] <= rs[:, None]) & n_ok[None, :]
                if HAS_MASK:
                    km = tl.load(MASK + kb64 * stride_mb + kp * stride_ms, mask=n_ok, other=0)
                    allowed = allowed & (km != 0)[None, :]
                qk = tl.where(allowed, qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                # rows with no admissible key so far keep m = -inf: use 0 as the shift to avoid inf - inf
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_use)
                p = tl.exp2(qk - m_use[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(VS + kb64[:, None] * stride_vsb + h * stride_vsh + kp[:, None] * stride_vss
                            + offs_d[None, :] * stride_vsd,
                            mask=n_ok[:, None] & d_ok[None, :], other=0.0)
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
                m_i = m_new

        has_keys = l_i > 0.0
        l_safe = tl.where(has_keys, l_i, 1.0)
        out = acc / l_safe[:, None]
        o_ptrs = (O + rb.to(tl.int64)[:, None] * stride_ob + hq[:, None] * stride_oh
                  + rs[:, None] * stride_os + offs_d[None, :] * stride_od)
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
        if WRITE_LSE:
            lse = tl.where(has_keys, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
            l_ptrs = LSE + rb.to(tl.int64) * stride_lb + hq * stride_lh + rs * stride_ls
            tl.store(l_ptrs, lse, mask=row_ok)


_INTERPRETED: Optional[bool] = None


def triton_interpreter_active() -> bool:
    """True when this module's kernel was built by Triton's CPU interpreter (``TRITON_INTERPRET=1``
    was set before ``triton`` was first imported in this process). Fixed at import, so cached."""
    global _INTERPRETED
    if _INTERPRETED is None:
        _INTERPRETED = False
        if HAS_TRITON:
            try:
                from triton.runtime.interpreter import InterpretedFunction

                _INTERPRETED = isinstance(_prefix_shared_attn_fwd, InterpretedFunction)
            except Exception:  # pragma: no cover
                pass
    return _INTERPRETED


def _default_launch(q: torch.Tensor, n_rows: int, D: int) -> Tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for this call."""
    if not q.is_cuda:  # interpreter: small tiles keep numpy work short and exercise multi-tile masking
        return 16, 16, 4, 1
    if q.dtype == torch.float32:
        bm, bn, warps, stages = 64, 32, 4, 2
    else:
        bm, bn, warps, stages = (128, 64, 8, 3) if D <= 64 else (128, 32, 8, 2)
    # do not launch mostly-empty tiles for tiny problems
    bm = max(16, min(bm, triton.next_power_of_2(max(n_rows, 1))))
    return bm, bn, warps, stages


def _launch(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale, out, lse,
            do_prefix, do_suffix, block_m, block_n, num_warps, num_stages):
    B, Hq, Ls, D = q.shape
    Hkv = k_suffix.shape[1]
    Lp = k_prefix.shape[1]
    G = Hq // Hkv
    n_rows = B * G * Ls
    if n_rows == 0 or D == 0:
        return
    bm, bn, warps, stages = _default_launch(q, n_rows, D)
    bm = block_m or bm
    bn = block_n or bn
    warps = num_warps or warps
    stages = num_stages or stages
    for name, val in (("block_m", bm), ("block_n", bn)):
        if val < 16 or val & (val - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {val}")
    block_d = max(16, triton.next_power_of_2(D))

    if suffix_mask is None:
        mask_t, smb, sms = q, 0, 0  # placeholder pointer, never read (HAS_MASK=False)
    else:
        mask_t = suffix_mask.view(torch.uint8) if suffix_mask.dtype == torch.bool else suffix_mask
        smb, sms = mask_t.stride()
    if lse is None:
        lse_t, slb, slh, sls = out, 0, 0, 0  # placeholder, never written (WRITE_LSE=False)
    else:
        lse_t = lse
        slb, slh, sls = lse.stride()

    grid = (triton.cdiv(n_rows, bm), Hkv)
    _prefix_shared_attn_fwd[grid](
        q, k_suffix, v_suffix, k_prefix, v_prefix, mask_t, out, lse_t,
        *q.stride(), *k_suffix.stride(), *v_suffix.stride(),
        *k_prefix.stride(), *v_prefix.stride(),
        smb, sms,
        *out.stride(),
        slb, slh, sls,
        B, Ls, Lp, D,
        float(scale) * _LOG2E,
        G=G,
        HAS_MASK=suffix_mask is not None,
        DO_PREFIX=do_prefix,
        DO_SUFFIX=do_suffix,
        WRITE_LSE=lse is not None,
        INPUT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=block_d,
        num_warps=warps,
        num_stages=stages,
    )


def _check_triton(q: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch' or install llmrec[kernels]")
    if q.dtype not in _TRITON_DTYPES:
        raise ValueError(f"q dtype {q.dtype} not supported by the triton kernel; expected one of {list(_TRITON_DTYPES)}")
    if not q.is_cuda and not triton_interpreter_active():
        raise RuntimeError(
            f"the triton kernel needs CUDA tensors (q is on {q.device}); on CPU set TRITON_INTERPRET=1 "
            "before triton is first imported, or use backend='torch'"
        )


def prefix_shared_attention(
    q: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    *,
    block_m: Optional[int] = None,
    block_n: Optional[int] = None,
    num_warps: Optional[int] = None,
    num_stages: Optional[int] = None,
) -> torch.Tensor:
    """Prefix-shared attention with the fused Triton kernel (forward only).

    Args:
        q: (B, Hq, Ls, D) suffix queries; float16, bfloat16 or float32; CUDA (or CPU under
            ``TRITON_INTERPRET=1``, float32 only meaningful there).
        k_suffix, v_suffix: (B, Hkv, Ls, D), same dtype/device; ``Hq = G * Hkv``.
        k_prefix, v_prefix: (Hkv, Lp, D) or (1, Hkv, Lp, D): one shared copy, read in place.
        suffix_mask: optional (B, Ls) bool/int, 0 = right-padding token (excluded as key).
        scale: softmax scale, default ``1/sqrt(D)``.
        out: optional preallocated (B, Hq, Ls, D) output of ``q``'s dtype/device (any strides).
        block_m, block_n, num_warps, num_stages: launch overrides (powers of two >= 16 for blocks).

    Returns:
        (B, Hq, Ls, D) tensor of ``q.dtype`` (``out`` if given); fp32 accumulation.

    Raises:
        ValueError: bad shapes/dtypes/devices (names the argument and value), bad ``out``, bad blocks.
        RuntimeError: triton missing, or CPU tensors without the Triton interpreter.
    """
    k_prefix, v_prefix, scale = check_inputs(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale,
                                             allowed_dtypes=_TRITON_DTYPES)
    _ref._check_out(out, q)
    _check_triton(q)
    if out is None:
        out = torch.empty_like(q)
    _launch(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale, out, None,
            True, True, block_m, block_n, num_warps, num_stages)
    return out


def prefix_attention_partial(
    q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, scale: Optional[float] = None,
    *, block_m: Optional[int] = None, block_n: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Triton partial over the shared prefix only: ``(o (B, Hq, Ls, D) float32, lse (B, Hq, Ls) float32)``,
    natural-log LSE.  Arguments and errors as in :func:`prefix_shared_attention`."""
    if q.dim() != 4:
        raise ValueError(f"q must have 4 dims (B, Hq, Ls, D), got shape {tuple(q.shape)}")
    B, Hq, Ls, D = q.shape
    kp = k_prefix[0] if (k_prefix.dim() == 4 and k_prefix.shape[0] == 1) else k_prefix
    Hkv = kp.shape[0] if kp.dim() == 3 else 1
    placeholder = q.new_empty(()).expand(B, max(Hkv, 1), Ls, D)  # never read (DO_SUFFIX=False)
    k_prefix, v_prefix, scale = check_inputs(q, placeholder, placeholder, k_prefix, v_prefix, None, scale,
                                             allowed_dtypes=_TRITON_DTYPES)
    _check_triton(q)
    o = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    _launch(q, placeholder, placeholder, k_prefix, v_prefix, None, scale, o, lse,
            True, False, block_m, block_n, None, None)
    return o, lse


def suffix_attention_partial(
    q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None, scale: Optional[float] = None,
    *, block_m: Optional[int] = None, block_n: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Triton partial over each candidate's own suffix only (causal, padding-masked):
    ``(o float32, lse float32)``; rows with no admissible key get ``o = 0, lse = -inf``.
    Arguments and errors as in :func:`prefix_shared_attention`."""
    if k_suffix.dim() != 4:
        raise ValueError(f"k_suffix must have 4 dims (B, Hkv, Ls, D), got shape {tuple(k_suffix.shape)}")
    Hkv, D = k_suffix.shape[1], k_suffix.shape[3]
    empty = k_suffix.new_empty((Hkv, 0, D))
    _, _, scale = check_inputs(q, k_suffix, v_suffix, empty, empty, suffix_mask, scale,
                               allowed_dtypes=_TRITON_DTYPES)
    _check_triton(q)
    o = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    _launch(q, k_suffix, v_suffix, empty, empty, suffix_mask, scale, o, lse,
            False, True, block_m, block_n, None, None)
    return o, lse


def attention(
    q: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Prefix-shared attention with a backend choice.

    ``backend="auto"`` uses the Triton kernel for CUDA tensors of a supported dtype (fp16/bf16/fp32)
    when triton is installed, and the PyTorch implementation otherwise (CPU, float64, no triton).
    ``"triton"`` forces the kernel (CPU only under ``TRITON_INTERPRET=1``); ``"torch"`` forces
    :func:`llmrec.kernels.prefix_attention_ref.prefix_shared_attention`; ``"cpu"`` the CPU paths of prefix
    scoring (:mod:`llmrec.kernels.prefix_attention_cpu`; the result is a (B, Hq, Ls, D) view of a
    (B, Ls, Hq, D) tensor unless ``out`` is given).
    Shapes, dtypes and errors as in :func:`prefix_shared_attention`; also ValueError for an unknown
    ``backend``.
    """
    if backend not in ("auto", "triton", "torch", "cpu"):
        raise ValueError(f"backend must be 'auto', 'triton', 'torch' or 'cpu', got {backend!r}")
    if backend == "cpu":  # PyTorch's fused CPU flash op per partial, else folded matmuls (prefix_attention_cpu)
        from . import prefix_attention_cpu as _cpu

        o = _cpu.cpu_prefix_attention(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale).transpose(1, 2)
        if out is None:
            return o
        out.copy_(o)
        return out
    if backend == "auto":
        use_triton = (HAS_TRITON and isinstance(q, torch.Tensor) and q.is_cuda and q.dtype in _TRITON_DTYPES)
        backend = "triton" if use_triton else "torch"
    if backend == "triton":
        return prefix_shared_attention(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale, out)
    return _ref.prefix_shared_attention(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale, out)


# ----------------------------------------------------------------------------------------------------
# torch.library custom op: llmrec::prefix_shared_attention
# ----------------------------------------------------------------------------------------------------
def _op_forward(q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor, k_prefix: torch.Tensor,
                v_prefix: torch.Tensor, suffix_mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Body of the custom op (no input validation: callers validate once per call).  Returns a new
    contiguous (B, Ls, Hq, D) tensor (transformers' attention-output layout) of ``q.dtype``."""
    B, Hq, Ls, D = q.shape
    out = torch.empty((B, Ls, Hq, D), dtype=q.dtype, device=q.device)
    if HAS_TRITON and q.dtype in _TRITON_DTYPES and (q.is_cuda or triton_interpreter_active()):
        _launch(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale, out.transpose(1, 2), None,
                True, True, None, None, None, None)
        return out
    o1, l1 = _ref._prefix_partial(q, k_prefix, v_prefix, scale)
    o2, l2 = _ref._suffix_partial(q, k_suffix, v_suffix, suffix_mask, scale)
    o, _ = _ref.merge_attention_states(o1, l1, o2, l2)
    out.copy_(o.transpose(1, 2))
    return out


def _op_fake(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale):
    B, Hq, Ls, D = q.shape
    return q.new_empty((B, Ls, Hq, D))


def _register_op():
    """Register ``llmrec::prefix_shared_attention`` once per process (this file can be imported under two
    module names through the ``llmrec/kernels`` symlinks); return the op."""
    ns = torch.ops.llmrec
    try:
        return getattr(ns, "prefix_shared_attention").default
    except (AttributeError, RuntimeError):
        pass
    op = torch.library.custom_op("llmrec::prefix_shared_attention", mutates_args=())(_op_signature)
    op.register_fake(_op_fake)
    return torch.ops.llmrec.prefix_shared_attention.default


def _op_signature(q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor, k_prefix: torch.Tensor,
                  v_prefix: torch.Tensor, suffix_mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    return _op_forward(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale)


_OP = _register_op()


def prefix_shared_attention_op(q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor,
                               k_prefix: torch.Tensor, v_prefix: torch.Tensor,
                               suffix_mask: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                               *, validate: bool = True) -> torch.Tensor:
    """Prefix-shared attention through the PyTorch custom op ``torch.ops.llmrec.prefix_shared_attention``.

    The op has a fake (meta) implementation, so ``torch.compile`` (also ``fullgraph=True``) traces a
    function calling it without a graph break, and CUDA graphs can capture it (the Triton launch has no
    host synchronisation).  Device dispatch inside the op: CUDA tensors of fp16/bf16/fp32 -> the fused
    Triton kernel (also CPU tensors when Triton's interpreter is active, ``TRITON_INTERPRET=1``: how the
    tests run this launch path without a GPU); anything else (CPU, float64) -> the PyTorch reference (two
    partial softmaxes + LSE merge, :mod:`prefix_attention_ref`).  Forward only (no autograd formula).

    Args:
        q: (B, Hq, Ls, D); k_suffix, v_suffix: (B, Hkv, Ls, D); k_prefix, v_prefix: (Hkv, Lp, D) or
            (1, Hkv, Lp, D); suffix_mask: optional (B, Ls) bool/int (0 = right padding); scale: default
            ``1/sqrt(D)``.  Any strides.
        validate: run :func:`check_inputs` (default).  ``False`` skips all Python checks: the per-layer fast
            path of :mod:`llmrec.scoring.prefix`, which validates once per call; then ``k_prefix`` must
            already be (Hkv, Lp, D) and ``scale`` a float.

    Returns:
        a new contiguous **(B, Ls, Hq, D)** tensor of ``q.dtype`` (transformers' attention-output layout;
        ``.transpose(1, 2)`` gives the (B, Hq, Ls, D) view).

    Raises:
        ValueError: as :func:`check_inputs` (only with ``validate=True``).
    """
    if validate:
        k_prefix, v_prefix, scale = check_inputs(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale)
    elif scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return _OP(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, float(scale))


# ----------------------------------------------------------------------------------------------------
# shape buckets
# ----------------------------------------------------------------------------------------------------
#: suffix-length buckets: a suffix of length Ls is right-padded (masked) to the smallest bucket >= Ls
SUFFIX_BUCKETS: Tuple[int, ...] = (4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_size(n: int, buckets: Optional[Tuple[int, ...]] = None) -> int:
    """The smallest bucket >= ``n``.

    ``buckets=None`` uses powers of two (1, 2, 4, ...; candidate counts).  Beyond the last entry of
    ``buckets``, ``n`` is rounded up to a multiple of that entry.  Each distinct (B, Ls) pair is one
    compiled variant / one CUDA graph, so a handful of buckets cover all traffic; padding costs at most
    the bucket step (<= 25% of suffix tokens up to 64 for :data:`SUFFIX_BUCKETS`, <= 50% beyond; < 2x rows for
    powers of two, which :mod:`llmrec.scoring.prefix` pays only on the last batch of a call).

    Raises:
        ValueError: ``n < 1``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"bucket_size: n must be >= 1, got {n}")
    if buckets is None:
        return 1 << (n - 1).bit_length()
    for b in buckets:
        if b >= n:
            return int(b)
    last = int(buckets[-1])
    return -(-n // last) * last


def pad_to_buckets(q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor,
                   suffix_mask: Optional[torch.Tensor], *, ls_buckets: Optional[Tuple[int, ...]] = SUFFIX_BUCKETS,
                   pad_rows: bool = True):
    """Pad (B, H, Ls, D) suffix tensors to bucketed shapes: Ls -> :func:`bucket_size` (Ls, ls_buckets),
    B -> the next power of two (if ``pad_rows``).  Padded positions are zero and masked out as keys
    (``suffix_mask`` False), so the attention of every real (row, position) is unchanged; padded candidate
    rows attend only to the prefix and are dropped by the caller (``out[:B, :Ls]``).

    Returns:
        ``(q, k_suffix, v_suffix, suffix_mask, (B, Ls))``: padded tensors, a (B', Ls') bool mask (always
        present), and the original sizes.
    """
    B, Hq, Ls, D = q.shape
    Lb = bucket_size(Ls, ls_buckets) if ls_buckets else Ls
    Bb = bucket_size(B) if pad_rows else B
    mask = torch.ones((B, Ls), dtype=torch.bool, device=q.device) if suffix_mask is None else suffix_mask.bool()
    if (Bb, Lb) == (B, Ls):
        return q, k_suffix, v_suffix, mask, (B, Ls)

    def pad(t):
        return torch.nn.functional.pad(t, (0, 0, 0, Lb - Ls, 0, 0, 0, Bb - B))

    m = torch.nn.functional.pad(mask, (0, Lb - Ls, 0, Bb - B), value=False)
    return pad(q), pad(k_suffix), pad(v_suffix), m, (B, Ls)
