"""Prefix-shared (cascade) attention: PyTorch implementation and reference.

Scoring many candidates for one user means many prompts that share one long history prefix and differ
only in a short candidate suffix.  The prefix keys/values are computed once (one KV cache) and every
suffix query attends to them; only the suffix part is per-candidate.

Layout (transformers' attention layout, grouped-query attention with ``Hq = G * Hkv``; query head ``i``
uses KV head ``i // G``, the same convention as transformers' ``repeat_kv``)::

    q          (B, Hq,  Ls, D)   suffix queries, B = number of candidates (suffixes)
    k_suffix   (B, Hkv, Ls, D)   suffix keys (RoPE already applied at positions Lp .. Lp+Ls-1)
    v_suffix   (B, Hkv, Ls, D)
    k_prefix   (Hkv, Lp, D)      ONE shared copy of the prefix keys (a leading batch dim of 1,
    v_prefix   (Hkv, Lp, D)      i.e. (1, Hkv, Lp, D), is accepted and dropped)
    suffix_mask (B, Ls) bool/int, optional: 1 = real token, 0 = right padding
    out        (B, Hq, Ls, D)    dtype of q

Every suffix query attends to all ``Lp`` prefix keys and, causally, to the suffix keys at positions
``<=`` its own; suffix keys with ``suffix_mask == 0`` are excluded.  Queries at padded positions are
computed too (they attend to the prefix and to the real suffix keys before them); callers ignore them.

The attention is computed as two partial softmaxes, one over the prefix and one over the suffix, each
returning its normalised output ``o`` and its natural-log log-sum-exp ``lse`` (both float32), merged
with::

    m   = max(lse1, lse2)
    out = (exp(lse1 - m) * o1 + exp(lse2 - m) * o2) / (exp(lse1 - m) + exp(lse2 - m))

Sources followed: Hydragen (Juravsky et al., 2024, "Hydragen: High-Throughput LLM Inference with Shared
Prefixes": decomposed attention over prefix and suffix, merged by their softmax denominators, with the
prefix part batched across sequences); FlashInfer cascade attention ("attention states" ``(o, lse)`` and
their merge operator); FlashAttention-2 (Dao, 2023) online softmax, used by the Triton kernel in
``prefix_attention.py``.

The prefix part never expands or copies the prefix K/V per candidate: the query heads of one KV group
are folded into the row dimension and contracted against the single ``(Hkv, Lp, D)`` copy with an
einsum (one batched matmul per KV head).  Inputs are upcast to float32 (float64 stays float64) and all
accumulation is in that dtype; the result is cast back to ``q.dtype``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

__all__ = [
    "prefix_shared_attention",
    "prefix_attention_partial",
    "suffix_attention_partial",
    "merge_attention_states",
    "check_inputs",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def check_inputs(
    q: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    allowed_dtypes: Tuple[torch.dtype, ...] = _FLOAT_DTYPES,
) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Validate the shapes/dtypes/devices of a prefix-shared attention call.

    Returns ``(k_prefix, v_prefix, scale)`` with a leading batch dim of 1 dropped from the prefix
    tensors (``(1, Hkv, Lp, D)`` -> ``(Hkv, Lp, D)``) and ``scale`` defaulted to ``1/sqrt(D)``.

    Raises:
        ValueError: wrong number of dims, mismatched B/Hkv/Ls/D between arguments, ``Hq`` not a
            multiple of ``Hkv``, dtypes that differ or are not in ``allowed_dtypes``, tensors on
            different devices, a ``suffix_mask`` of the wrong shape or a non-bool/non-integer dtype,
            or a non-positive / non-finite ``scale``.  The message names the argument and its value.
    """
    tensors = {"q": q, "k_suffix": k_suffix, "v_suffix": v_suffix, "k_prefix": k_prefix, "v_prefix": v_prefix}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name in ("q", "k_suffix", "v_suffix"):
        if tensors[name].dim() != 4:
            raise ValueError(f"{name} must have 4 dims (B, H, Ls, D), got shape {_shape(tensors[name])}")
    for name in ("k_prefix", "v_prefix"):
        t = tensors[name]
        if t.dim() == 4 and t.shape[0] == 1:
            tensors[name] = t[0]
        elif t.dim() != 3:
            raise ValueError(
                f"{name} must have shape (Hkv, Lp, D) (or (1, Hkv, Lp, D)), got shape {_shape(t)}"
            )
    k_prefix, v_prefix = tensors["k_prefix"], tensors["v_prefix"]

    B, Hq, Ls, D = q.shape
    if k_suffix.shape != v_suffix.shape:
        raise ValueError(f"k_suffix shape {_shape(k_suffix)} != v_suffix shape {_shape(v_suffix)}")
    Bk, Hkv, Lsk, Dk = k_suffix.shape
    if Bk != B or Lsk != Ls or Dk != D:
        raise ValueError(
            f"k_suffix must have shape (B={B}, Hkv, Ls={Ls}, D={D}) to match q {_shape(q)}, got {_shape(k_suffix)}"
        )
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"q heads Hq={Hq} must be a positive multiple of k_suffix heads Hkv={Hkv}")
    if k_prefix.shape != v_prefix.shape:
        raise ValueError(f"k_prefix shape {_shape(k_prefix)} != v_prefix shape {_shape(v_prefix)}")
    if k_prefix.shape[0] != Hkv or k_prefix.shape[2] != D:
        raise ValueError(f"k_prefix must have shape (Hkv={Hkv}, Lp, D={D}), got {_shape(k_prefix)}")
    if D == 0:
        raise ValueError(f"q head dim D must be > 0, got shape {_shape(q)}")

    dt = q.dtype
    if dt not in allowed_dtypes:
        raise ValueError(f"q dtype {dt} not supported; expected one of {list(allowed_dtypes)}")
    for name, t in (("k_suffix", k_suffix), ("v_suffix", v_suffix), ("k_prefix", k_prefix), ("v_prefix", v_prefix)):
        if t.dtype != dt:
            raise ValueError(f"{name} dtype {t.dtype} must equal q dtype {dt}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")

    if suffix_mask is not None:
        if not isinstance(suffix_mask, torch.Tensor):
            raise ValueError(f"suffix_mask must be a torch.Tensor or None, got {type(suffix_mask).__name__}")
        if tuple(suffix_mask.shape) != (B, Ls):
            raise ValueError(f"suffix_mask must have shape (B={B}, Ls={Ls}), got {_shape(suffix_mask)}")
        if suffix_mask.dtype.is_floating_point or suffix_mask.dtype.is_complex:
            raise ValueError(f"suffix_mask must be bool or integer (1 = real, 0 = pad), got dtype {suffix_mask.dtype}")
        if suffix_mask.device != q.device:
            raise ValueError(f"suffix_mask is on {suffix_mask.device} but q is on {q.device}")

    if scale is None:
        scale = 1.0 / math.sqrt(D)
    else:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite float, got {scale}")
    return k_prefix, v_prefix, scale


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _finish_partial(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """scores (..., N) with -inf at masked keys -> (probabilities, lse); rows with no key give p=0, lse=-inf."""
    lse = torch.logsumexp(scores, dim=-1)  # -inf for fully masked rows
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    p = torch.exp(scores - safe.unsqueeze(-1))  # exp(-inf) = 0 at masked keys
    return p, lse


def prefix_attention_partial(
    q: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    scale: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention of the suffix queries over the shared prefix only (one partial softmax).

    Args:
        q: (B, Hq, Ls, D) float16/bfloat16/float32/float64.
        k_prefix, v_prefix: (Hkv, Lp, D) (or (1, Hkv, Lp, D)), same dtype and device as ``q``;
            ``Hq`` must be a multiple of ``Hkv``.  Not copied per candidate.
        scale: softmax scale, default ``1/sqrt(D)``.

    Returns:
        ``(o, lse)``: ``o`` (B, Hq, Ls, D) and ``lse`` (B, Hq, Ls), float32 (float64 for float64 input);
        ``lse`` is the natural-log log-sum-exp of the scaled scores.  With ``Lp == 0`` ``o`` is 0 and
        ``lse`` is ``-inf``.

    Raises:
        ValueError: see :func:`check_inputs`.
    """
    if q.dim() != 4:
        raise ValueError(f"q must have 4 dims (B, Hq, Ls, D), got shape {_shape(q)}")
    B, Hq, Ls, D = q.shape
    kp = k_prefix[0] if (k_prefix.dim() == 4 and k_prefix.shape[0] == 1) else k_prefix
    if kp.dim() != 3:
        raise ValueError(f"k_prefix must have shape (Hkv, Lp, D) (or (1, Hkv, Lp, D)), got shape {_shape(k_prefix)}")
    Hkv = kp.shape[0]
    # reuse the full validation with a placeholder suffix of the right shape (never read)
    dummy = q.new_empty(()).expand(B, max(Hkv, 1), Ls, D)  # no allocation
    k_prefix, v_prefix, scale = check_inputs(q, dummy, dummy, k_prefix, v_prefix, None, scale)
    return _prefix_partial(q, k_prefix, v_prefix, scale)


def _prefix_partial(q, k_prefix, v_prefix, scale):
    B, Hq, Ls, D = q.shape
    Hkv, Lp, _ = k_prefix.shape
    G = Hq // Hkv
    cdt = _compute_dtype(q.dtype)
    if Lp == 0:
        return q.new_zeros((B, Hq, Ls, D), dtype=cdt), q.new_full((B, Hq, Ls), float("-inf"), dtype=cdt)
    qg = q.to(cdt).reshape(B, Hkv, G, Ls, D)
    kp = k_prefix.to(cdt)  # one copy (cast), shared by all candidates
    vp = v_prefix.to(cdt)
    scores = torch.einsum("bhgsd,hnd->bhgsn", qg, kp) * scale  # (B, Hkv, G, Ls, Lp)
    p, lse = _finish_partial(scores)
    o = torch.einsum("bhgsn,hnd->bhgsd", p, vp) / p.sum(-1, keepdim=True)
    return o.reshape(B, Hq, Ls, D), lse.reshape(B, Hq, Ls)


def suffix_attention_partial(
    q: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of the suffix queries over their own suffix keys only (one partial softmax).

    Args:
        q: (B, Hq, Ls, D); k_suffix, v_suffix: (B, Hkv, Ls, D), same dtype/device, ``Hq % Hkv == 0``.
        suffix_mask: optional (B, Ls) bool/int, 1 = real token, 0 = right padding (excluded as key).
        scale: softmax scale, default ``1/sqrt(D)``.

    Returns:
        ``(o, lse)`` as in :func:`prefix_attention_partial`.  A query with no admissible key (only
        possible for an all-padding suffix) gets ``o = 0`` and ``lse = -inf``.

    Raises:
        ValueError: see :func:`check_inputs`.
    """
    if k_suffix.dim() != 4:
        raise ValueError(f"k_suffix must have 4 dims (B, Hkv, Ls, D), got shape {_shape(k_suffix)}")
    Hkv, D = k_suffix.shape[1], k_suffix.shape[3]
    dummy = k_suffix.new_empty((Hkv, 0, D))
    _, _, scale = check_inputs(q, k_suffix, v_suffix, dummy, dummy, suffix_mask, scale)
    return _suffix_partial(q, k_suffix, v_suffix, suffix_mask, scale)


def _suffix_partial(q, k_suffix, v_suffix, suffix_mask, scale):
    B, Hq, Ls, D = q.shape
    Hkv = k_suffix.shape[1]
    G = Hq // Hkv
    cdt = _compute_dtype(q.dtype)
    qg = q.to(cdt).reshape(B, Hkv, G, Ls, D)
    scores = torch.einsum("bhgsd,bhtd->bhgst", qg, k_suffix.to(cdt)) * scale  # (B, Hkv, G, Ls, Ls)
    allowed = torch.ones(Ls, Ls, dtype=torch.bool, device=q.device).tril()  # [s, t]: t <= s
    allowed = allowed.view(1, 1, 1, Ls, Ls)
    if suffix_mask is not None:
        allowed = allowed & suffix_mask.to(torch.bool).view(B, 1, 1, 1, Ls)
    scores = scores.masked_fill(~allowed, float("-inf"))
    p, lse = _finish_partial(scores)
    denom = p.sum(-1, keepdim=True)
    o = torch.einsum("bhgst,bhtd->bhgsd", p, v_suffix.to(cdt)) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return o.reshape(B, Hq, Ls, D), lse.reshape(B, Hq, Ls)


def merge_attention_states(
    o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention states over disjoint key sets (FlashInfer ``merge_state``).

    ``out = (e^{lse1-m} o1 + e^{lse2-m} o2) / (e^{lse1-m} + e^{lse2-m})`` with ``m = max(lse1, lse2)``;
    merged ``lse = m + log(e^{lse1-m} + e^{lse2-m})``.  LSEs are natural log.  Computed in float32
    (float64 if either input is float64).  If both LSEs are ``-inf`` the merged output is 0, lse ``-inf``.

    Args:
        o1, o2: (..., D) partial outputs, each normalised over its own key set.
        lse1, lse2: (...) their log-sum-exps; shapes must equal ``o.shape[:-1]``.

    Returns:
        ``(o, lse)`` float32/float64, shapes of ``o1`` and ``lse1``.

    Raises:
        ValueError: shape mismatch between the four tensors.
    """
    if o1.shape != o2.shape:
        raise ValueError(f"o1 shape {_shape(o1)} != o2 shape {_shape(o2)}")
    if lse1.shape != lse2.shape or tuple(lse1.shape) != tuple(o1.shape[:-1]):
        raise ValueError(
            f"lse1 {_shape(lse1)} and lse2 {_shape(lse2)} must both have shape o1.shape[:-1] = {tuple(o1.shape[:-1])}"
        )
    cdt = torch.float64 if torch.float64 in (o1.dtype, o2.dtype, lse1.dtype, lse2.dtype) else torch.float32
    o1, o2, lse1, lse2 = o1.to(cdt), o2.to(cdt), lse1.to(cdt), lse2.to(cdt)
    m = torch.maximum(lse1, lse2)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1 = torch.exp(lse1 - m_safe)
    w2 = torch.exp(lse2 - m_safe)
    den = w1 + w2
    den_safe = torch.where(den > 0, den, torch.ones_like(den))
    o = (w1.unsqueeze(-1) * o1 + w2.unsqueeze(-1) * o2) / den_safe.unsqueeze(-1)
    lse = m_safe + torch.log(den)  # log(0) = -inf when both are empty
    return o, lse


def prefix_shared_attention(
    q: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    suffix_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Prefix-shared attention (PyTorch; any device): prefix partial + suffix partial + LSE merge.

    Args:
        q: (B, Hq, Ls, D) suffix queries, float16/bfloat16/float32/float64.
        k_suffix, v_suffix: (B, Hkv, Ls, D), ``Hq = G * Hkv``; query head ``i`` uses KV head ``i // G``.
        k_prefix, v_prefix: (Hkv, Lp, D) or (1, Hkv, Lp, D): one shared copy for all B candidates.
        suffix_mask: optional (B, Ls) bool/int; 0 marks right-padding suffix tokens (excluded as keys).
        scale: softmax scale, default ``1/sqrt(D)``.
        out: optional preallocated (B, Hq, Ls, D) tensor of ``q``'s dtype/device, written in place.

    Returns:
        (B, Hq, Ls, D) tensor of ``q.dtype`` (``out`` if given).  Accumulation in float32 (float64 for
        float64 input).

    Raises:
        ValueError: see :func:`check_inputs`; or ``out`` of the wrong shape/dtype/device.
    """
    k_prefix, v_prefix, scale = check_inputs(q, k_suffix, v_suffix, k_prefix, v_prefix, suffix_mask, scale)
    _check_out(out, q)
    o1, l1 = _prefix_partial(q, k_prefix, v_prefix, scale)
    o2, l2 = _suffix_partial(q, k_suffix, v_suffix, suffix_mask, scale)
    o, _ = merge_attention_states(o1, l1, o2, l2)
    if out is None:
        return o.to(q.dtype)
    out.copy_(o)
    return out


def _check_out(out: Optional[torch.Tensor], q: torch.Tensor) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(
            f"out must have q's shape {_shape(q)}, dtype {q.dtype} and device {q.device}; "
            f"got shape {_shape(out)}, dtype {out.dtype}, device {out.device}"
        )
