"""Prefix-shared attention on CPU, in PyTorch: the CPU paths of prefix scoring, beside the kernel and its reference.

* :func:`flash_cpu_prefix_attention` - Hydragen's decomposition with PyTorch's fused CPU flash-attention op
  for each partial (``(o, lse)``), merged by log-sum-exp; float32 / bfloat16.
* :func:`folded_prefix_attention` - one softmax over ``[prefix | suffix]`` keys in few large matmuls
  (any dtype; the fallback where the fused op is missing or the dtype is not supported).
* :func:`cpu_prefix_attention` - picks one of the two.

Layouts as :func:`prefix_attention.attention` takes them (q (B, Hq, Ls, D); suffix K/V (B, Hkv, Ls, D);
prefix K/V (Hkv, Lp, D), never expanded per candidate); they return (B, Ls, Hq, D), transformers' attention
output layout, and ``attention(..., backend="cpu")`` hands it back as a (B, Hq, Ls, D) view. Equal to
:func:`prefix_attention_ref.prefix_shared_attention` up to float rounding (tests/scoring/test_prefix.py).
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["FLASH_CPU", "flash_cpu_prefix_attention", "folded_prefix_attention", "cpu_prefix_attention"]

FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def flash_cpu_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: torch.Tensor,
                                vp: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Prefix-shared attention on CPU with PyTorch's fused flash-attention CPU op (Hydragen's
    decomposition): two partial softmaxes, each returning ``(o, lse)`` (natural log), merged by LSE.

    * prefix part: the query rows of all B candidates and the G query heads of a KV group are folded
      into one sequence of ``B*G*Ls`` rows per KV head, attending (non-causally) to the single prefix
      copy ``kp``/``vp`` (Hkv, Lp, D) -- never expanded per candidate;
    * suffix part: causal attention of each candidate over its own suffix (suffix K/V repeated to the
      query heads; they are per-candidate anyway). With right padding and causality a real query never
      sees a padded key, so no padding mask is needed (padded query rows are ignored by the caller).

    Args: q (B, Hq, Ls, D); k, v (B, Hkv, Ls, D); kp, vp (Hkv, Lp, D), all float32 or bfloat16 (the
    dtype of ``q`` is used). Returns: (B, Ls, Hq, D), dtype of ``q``.
    """
    B, Hq, Ls, D = q.shape
    Hkv, Lp = kp.shape[0], kp.shape[1]
    G = Hq // Hkv
    sc = scale if scale is not None else D ** -0.5
    rows = q.reshape(B, Hkv, G * Ls, D).transpose(0, 1).reshape(1, Hkv, B * G * Ls, D)
    o1, l1 = FLASH_CPU(rows, kp.unsqueeze(0), vp.unsqueeze(0), scale=sc)[:2]
    o1 = o1.view(Hkv, B, G * Ls, D).transpose(0, 1).reshape(B, Hq, Ls, D)
    l1 = l1.view(Hkv, B, G * Ls).transpose(0, 1).reshape(B, Hq, Ls)
    kr = k.repeat_interleave(G, dim=1) if G > 1 else k
    vr = v.repeat_interleave(G, dim=1) if G > 1 else v
    o2, l2 = FLASH_CPU(q, kr, vr, is_causal=True, scale=sc)[:2]
    m = torch.maximum(l1, l2)
    w1 = torch.exp(l1 - m)
    w2 = torch.exp(l2 - m)
    den = (w1 + w2).unsqueeze(-1)
    o = (w1.unsqueeze(-1) * o1.float() + w2.unsqueeze(-1) * o2.float()) / den  # (B, Hq, Ls, D) float32
    return o.transpose(1, 2).to(q.dtype)


def folded_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
                          suffix_mask: torch.Tensor | None, scale: float | None) -> torch.Tensor:
    """Prefix-shared attention for CPU in few large ops (one softmax over [prefix | suffix] keys).

    Same maths as :func:`prefix_attention_ref.prefix_shared_attention` (whose two partial
    softmaxes + LSE merge cost several extra elementwise passes on CPU): the query rows of all
    candidates and the query heads of a KV group are folded into one matrix per KV head and multiplied
    by the single prefix copy ``kp``/``vp`` (Hkv, Lp, D) -- never expanded per candidate; the suffix
    scores are per candidate, causal and padding-masked; the softmax is taken in float32. Matmuls run in
    the autocast dtype when autocast is on.

    Args: q (B, Hq, Ls, D); k, v (B, Hkv, Ls, D); kp, vp (Hkv, Lp, D); suffix_mask (B, Ls) bool or None.
    Returns: (B, Ls, Hq, D) (transformers' layout).
    """
    B, Hq, Ls, D = q.shape
    Hkv, Lp = kp.shape[0], kp.shape[1]
    G = Hq // Hkv
    q = q * (scale if scale is not None else D ** -0.5)
    qg = q.reshape(B, Hkv, G * Ls, D)
    rows = qg.transpose(0, 1).reshape(Hkv, B * G * Ls, D)
    s_pre = torch.matmul(rows, kp.transpose(1, 2)).view(Hkv, B, G * Ls, Lp).transpose(0, 1)  # (B,Hkv,GLs,Lp)
    s_suf = torch.matmul(qg, k.transpose(2, 3))  # (B, Hkv, G*Ls, Ls)
    allowed = torch.ones(Ls, Ls, dtype=torch.bool, device=q.device).tril().view(1, 1, 1, Ls, Ls)
    if suffix_mask is not None:
        allowed = allowed & suffix_mask.view(B, 1, 1, 1, Ls)
    s_suf = s_suf.view(B, Hkv, G, Ls, Ls).masked_fill(~allowed, float("-inf")).view(B, Hkv, G * Ls, Ls)
    p = torch.softmax(torch.cat([s_pre.float(), s_suf.float()], dim=-1), dim=-1)
    pdt = torch.promote_types(vp.dtype, v.dtype) if not torch.is_autocast_enabled("cpu") else \
        torch.get_autocast_dtype("cpu")
    p = p.to(pdt)
    p_pre = p[..., :Lp].transpose(0, 1).reshape(Hkv, B * G * Ls, Lp)
    o = torch.matmul(p_pre, vp.to(pdt)).view(Hkv, B, G * Ls, D).transpose(0, 1)
    o = o + torch.matmul(p[..., Lp:], v.to(pdt))  # (B, Hkv, G*Ls, D)
    return o.reshape(B, Hq, Ls, D).transpose(1, 2).to(q.dtype)


def cpu_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
                         suffix_mask: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """:func:`flash_cpu_prefix_attention` where PyTorch has the fused op and ``q`` is float32 / bfloat16 (all of
    q, k, v, kp, vp in one dtype), else :func:`folded_prefix_attention`. Returns (B, Ls, Hq, D)."""
    if FLASH_CPU is not None and q.dtype in (torch.float32, torch.bfloat16):
        return flash_cpu_prefix_attention(q, k, v, kp, vp, scale)
    return folded_prefix_attention(q, k, v, kp, vp, suffix_mask, scale)
