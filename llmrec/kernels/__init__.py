"""Prefix-shared (cascade) attention for scoring many suffixes against one shared prefix.

Public API (see :mod:`llmrec.kernels.prefix_attention` for layouts, dtypes and errors):

* :func:`attention` -- the one backend dispatcher (Triton on CUDA, PyTorch otherwise; ``backend="cpu"``: the
  CPU paths of prefix scoring, :mod:`prefix_attention_cpu`);
* :func:`prefix_shared_attention` -- the fused Triton kernel;
* :func:`prefix_attention_partial`, :func:`suffix_attention_partial` -- Triton partial states ``(o, lse)``;
* :mod:`prefix_attention_ref` -- the PyTorch implementation/reference (``prefix_shared_attention``,
  partials, :func:`merge_attention_states`, :func:`check_inputs`).

Sources: Hydragen (Juravsky et al., 2024); FlashInfer cascade attention; FlashAttention-2 (Dao, 2023).
"""

from . import prefix_attention_ref
from .prefix_attention import (
    HAS_TRITON,
    attention,
    prefix_attention_partial,
    prefix_shared_attention,
    suffix_attention_partial,
    triton_interpreter_active,
)
from .prefix_attention_ref import check_inputs, merge_attention_states

__all__ = [
    "attention",
    "prefix_shared_attention",
    "prefix_attention_partial",
    "suffix_attention_partial",
    "merge_attention_states",
    "check_inputs",
    "prefix_attention_ref",
    "HAS_TRITON",
    "triton_interpreter_active",
]
