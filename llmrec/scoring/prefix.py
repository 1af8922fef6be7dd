"""Prefix-shared scoring: many prompts that share a token prefix, the prefix computed once.

Reranking scores many candidates for one user, and every candidate prompt is the same long history
prefix followed by a short candidate suffix. Instead of running ``N`` full prompts, this module

1. runs the shared prefix once (batch 1) and keeps every layer's key/value states (after RoPE), and
2. runs all candidate suffixes as one right-padded batch whose positions start at the prefix length;
   in every layer each suffix query attends to the single shared prefix K/V (never copied per
   candidate) and, causally, to its own suffix, as two partial softmaxes merged by their log-sum-exp.
   Every path goes through the one dispatcher :func:`llmrec.kernels.attention`: on CUDA the fused Triton
   kernel; on CPU (``backend="cpu"``, :mod:`llmrec.kernels.prefix_attention_cpu`) by default the same
   decomposition with PyTorch's fused CPU
   flash-attention op for each partial (faster than the kernels' PyTorch reference on CPU; timings in the
   README, "Scoring speed"); ``backend="torch"`` selects that reference instead.

The final hidden state at each candidate's answer position (its last suffix token) goes through the
verbalizer rows of the LM head only (:func:`llmrec.scoring.verbalizer_logits`), never the vocabulary.
The result equals full-prompt scoring (:func:`llmrec.scoring.score_encoded` on the concatenations)
up to float rounding (tested to 1e-4 on P(Yes) in float32, GQA, LoRA merged and unmerged).

Mechanism in transformers: two attention functions are registered in transformers'
``AttentionInterface`` (``"llmrec_prefix_capture"`` for the prefix pass, ``"llmrec_prefix"`` for the
suffix pass); ``config._attn_implementation`` of the decoder is switched to them for the duration of a
call and always restored (also on errors). Per-layer prefix K/V reach the attention function through a
side structure keyed by ``module.layer_idx`` (a context variable, so concurrent threads do not mix).
These names are not in transformers' mask registry, so transformers builds no 4D mask for them; the
suffix padding mask is handed over in the side structure instead.

Sources: Hydragen (Juravsky et al., 2024, "Hydragen: High-Throughput LLM Inference with Shared
Prefixes"): attention decomposed over the shared prefix and the suffixes, the prefix part batched
across sequences; FlashInfer cascade attention (attention states ``(o, lse)`` and their merge).

Tokenisation: the prefix/suffix split must be at a token boundary, i.e.
``prefix_ids + suffix_ids == tokenizer(prefix_text + suffix_text)``; :func:`split_prompts` tokenises and
verifies this and raises ``ValueError`` when the boundary merges. Splitting the text right before a
whitespace or newline that precedes the candidate part (e.g. before `` "Title"``) keeps it safe for
byte-level BPE tokenizers.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from llmrec.scoring.logits import _backbone_and_head, autocast_for, score_encoded, verbalizer_logits

__all__ = [
    "score_candidates",
    "score_shared_head",
    "split_prompts",
    "common_prefix_length",
    "prefix_attention_mode",
    "ATTN_PREFIX",
    "ATTN_CAPTURE",
]

#: attention-implementation names registered in transformers' ``AttentionInterface``
ATTN_PREFIX = "llmrec_prefix"
ATTN_CAPTURE = "llmrec_prefix_capture"


@dataclass
class _PrefixState:
    """Side structure read by the registered attention functions.

    Attributes:
        kv: layer_idx -> (k_prefix, v_prefix), each (Hkv, Lp, D) (filled by the capture pass).
        suffix_mask: (B, Ls) bool, True = real suffix token (suffix pass only).
        prefix_len: Lp.
        backend: "auto", "cpu", "kernels", "torch" or "triton" (see :func:`score_candidates`).
    """

    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    suffix_mask: torch.Tensor | None = None
    prefix_len: int = 0
    backend: str = "auto"


_STATE: contextvars.ContextVar[_PrefixState | None] = contextvars.ContextVar("llmrec_prefix_state", default=None)


def _state(module: Any) -> _PrefixState:
    st = _STATE.get()
    if st is None:
        raise RuntimeError(f"attention implementation {ATTN_PREFIX!r} used outside llmrec.scoring.prefix "
                           "(it needs the prefix K/V prepared by score_candidates)")
    if getattr(module, "layer_idx", None) is None:
        raise RuntimeError(f"{type(module).__name__} has no layer_idx; prefix-shared scoring needs it to find "
                           "the layer's prefix K/V")
    return st


def _check_unsupported(kwargs: dict, total_len: int) -> None:
    if kwargs.get("softcap") is not None:
        raise NotImplementedError("prefix-shared attention does not support attention logit soft-capping")
    win = kwargs.get("sliding_window")
    if win is not None and total_len > int(win):
        raise NotImplementedError(f"prefix-shared attention: prompt length {total_len} exceeds the sliding "
                                  f"window {win}; score these prompts with llmrec.scoring.score_encoded")


def _capture_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Prefix pass (batch 1, no padding): plain causal attention, and store this layer's K/V (after RoPE)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    st = _state(module)
    if query.shape[0] != 1:
        raise RuntimeError(f"prefix capture pass expects batch 1, got {query.shape[0]}")
    _check_unsupported(kwargs, key.shape[2])
    st.kv[int(module.layer_idx)] = (key[0], value[0])
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling,
                                  is_causal=True, **{k: v for k, v in kwargs.items() if k == "output_attentions"})


def _prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Suffix pass: queries (B, Hq, Ls, D) attend to the shared prefix K/V of this layer and causally to
    their own suffix K/V (B, Hkv, Ls, D). Returns ``(out (B, Ls, Hq, D), None)`` (transformers' layout)."""
    from llmrec.kernels.prefix_attention import attention
    from llmrec.kernels.prefix_attention_cpu import FLASH_CPU

    st = _state(module)
    idx = int(module.layer_idx)
    if idx not in st.kv:
        raise RuntimeError(f"no prefix K/V captured for layer {idx}")
    _check_unsupported(kwargs, st.prefix_len + query.shape[2])
    kp, vp = st.kv[idx]
    # Under autocast RoPE leaves q/k in float32 while v is in the autocast dtype; the attention paths
    # need one dtype. Under autocast (CUDA, or the fused CPU op) use the autocast dtype, as sdpa does;
    # otherwise promote to the widest dtype (the PyTorch reference accumulates in float32 anyway).
    dt = query.dtype
    for t in (key, value, kp, vp):
        dt = torch.promote_types(dt, t.dtype)
    if query.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    elif (not query.is_cuda and st.backend in ("auto", "cpu") and FLASH_CPU is not None
          and torch.is_autocast_enabled("cpu")):
        dt = torch.get_autocast_dtype("cpu")  # the fused CPU op runs bf16 with fp32 accumulation
    query, key, value = query.to(dt), key.to(dt), value.to(dt)
    if kp.dtype != dt or vp.dtype != dt:
        kp, vp = kp.to(dt), vp.to(dt)
        st.kv[idx] = (kp, vp)  # cast once per call, not once per batch
    backend = st.backend
    if backend == "auto":
        backend = "kernels" if query.is_cuda else "cpu"
    if backend == "cpu":  # (B, Hq, Ls, D) view of a (B, Ls, Hq, D) tensor: transposed back without a copy
        return attention(query, key, value, kp, vp, suffix_mask=st.suffix_mask, scale=scaling,
                         backend="cpu").transpose(1, 2), None
    B, Hq, Ls, D = query.shape
    out = torch.empty((B, Ls, Hq, D), dtype=query.dtype, device=query.device).transpose(1, 2)
    attention(query, key, value, kp, vp, suffix_mask=st.suffix_mask, scale=scaling, out=out,
              backend="auto" if backend == "kernels" else backend)
    return out.transpose(1, 2), None


_REGISTERED = False
_BACKENDS = ("auto", "cpu", "kernels", "torch", "triton")


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_PREFIX, _prefix_attention)
    AttentionInterface.register(ATTN_CAPTURE, _capture_attention)
    _REGISTERED = True


def _configs(model: Any) -> list[Any]:
    """Distinct config objects of the model and its submodules (usually one shared object)."""
    seen: dict[int, Any] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextlib.contextmanager
def prefix_attention_mode(model: Any, name: str) -> Iterator[None]:
    """Switch ``model``'s decoder to the registered attention ``name`` and restore the previous
    implementation afterwards (also when the body raises).

    Args:
        model: ``*ForCausalLM``, its decoder, or a peft ``PeftModel``.
        name: :data:`ATTN_PREFIX` or :data:`ATTN_CAPTURE`.
    """
    _register()
    cfgs = _configs(model)
    old = [c._attn_implementation for c in cfgs]
    try:
        for c in cfgs:
            c._attn_implementation = name
        yield
    finally:
        for c, o in zip(cfgs, old):
            c._attn_implementation = o


def _check_ids(ids: Sequence[int], what: str) -> None:
    if len(ids) == 0:
        raise ValueError(f"{what} is empty")


@torch.no_grad()
def _prefix_kv(decoder: Any, prefix_ids: Sequence[int], device: torch.device, dtype: str,
               backend: str) -> _PrefixState:
    st = _PrefixState(prefix_len=len(prefix_ids), backend=backend)
    ids = torch.as_tensor([list(prefix_ids)], dtype=torch.long, device=device)
    token = _STATE.set(st)
    try:
        with prefix_attention_mode(decoder, ATTN_CAPTURE), autocast_for(device, dtype):
            decoder(input_ids=ids, use_cache=False)
    finally:
        _STATE.reset(token)
    return st


def _next_bucket(lengths: np.ndarray, order: np.ndarray, i: int, max_batch: int, batch_tokens: int,
                 pad_tolerance: float = 0.15, min_rows: int = 8) -> np.ndarray:
    """Next batch of the length-sorted (descending) rows starting at ``order[i]``: at most ``max_batch``
    rows and ``batch_tokens`` padded tokens; a row shorter than ``(1 - pad_tolerance)`` x the batch's
    longest starts a new batch once the batch has ``min_rows`` rows (little compute goes to padding)."""
    longest = int(lengths[order[i]])
    size = max(1, min(max_batch, batch_tokens // longest))
    j = i + 1
    while j < min(len(order), i + size):
        if j - i >= min_rows and lengths[order[j]] < (1.0 - pad_tolerance) * longest:
            break
        j += 1
    return order[i:j]


@torch.no_grad()
def _score_suffixes(decoder: Any, head: torch.Tensor, cap: float | None, st: _PrefixState,
                    suffix_ids: Sequence[Sequence[int]], token_ids: Sequence[int], *, pad_id: int,
                    batch_tokens: int, max_batch: int, dtype: str) -> np.ndarray:
    """(N, W) float64 verbalizer probabilities of the suffixes, each continuing the prefix in ``st``."""
    device = head.device
    n = len(suffix_ids)
    lengths = np.array([len(s) for s in suffix_ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((n, len(token_ids)), dtype=np.float64)
    Lp = st.prefix_len
    i = 0
    token = _STATE.set(st)
    try:
        with prefix_attention_mode(decoder, ATTN_PREFIX):
            while i < n:
                idx = _next_bucket(lengths, order, i, max_batch, batch_tokens)
                i += len(idx)
                L = int(lengths[idx].max())
                ids = torch.full((len(idx), L), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), L), dtype=torch.bool)
                for r, j in enumerate(idx):
                    ids[r, : lengths[j]] = torch.as_tensor(list(suffix_ids[j]), dtype=torch.long)
                    mask[r, : lengths[j]] = True
                ids, mask = ids.to(device), mask.to(device)
                st.suffix_mask = None if bool(mask.all()) else mask
                pos = (torch.arange(L, device=device) + Lp).unsqueeze(0).expand(len(idx), L)
                with autocast_for(device, dtype):
                    hidden = decoder(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
                last = torch.as_tensor(lengths[idx] - 1, device=device)
                h = hidden[torch.arange(len(idx), device=device), last]
                probs = torch.softmax(verbalizer_logits(h, head, token_ids, cap), dim=-1)
                out[idx] = probs.double().cpu().numpy()
    finally:
        st.suffix_mask = None
        _STATE.reset(token)
    return out


def score_candidates(model: Any, prefix_ids: Sequence[int], suffix_ids: Sequence[Sequence[int]],
                     token_ids: Sequence[int], *, dtype: str = "auto", max_batch: int = 64,
                     batch_tokens: int = 4096, pad_id: int = 0, backend: str = "auto") -> np.ndarray:
    """Verbalizer probabilities of ``N`` prompts ``prefix_ids + suffix_ids[i]`` with the prefix run once.

    Args:
        model: a ``*ForCausalLM`` (Llama-style attention modules with ``layer_idx``) or a peft
            ``PeftModel`` around one, LoRA merged or not.
        prefix_ids: Lp shared token ids (the user's history part), list of int. If empty the prompts are
            scored with :func:`llmrec.scoring.score_encoded`.
        suffix_ids: N candidate suffixes, each a non-empty list of int ending right before the answer;
            ragged lengths are right-padded within length-sorted batches.
        token_ids: W >= 2 verbalizer token ids (``token_ids[0]`` = positive answer).
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native) (both passes).
        max_batch: at most this many suffixes per forward pass.
        batch_tokens: padded suffix tokens per forward pass (batch x longest suffix), a memory bound.
        pad_id: id used for suffix right padding (masked; its value does not matter).
        backend: ``"auto"`` (CUDA: :func:`llmrec.kernels.attention`, i.e. the Triton kernel; CPU: the
            fused flash-op path), ``"cpu"`` (``llmrec.kernels.attention(backend="cpu")``: that path, or the
            folded single softmax where the op is missing or for float16/float64),
            ``"kernels"`` (``llmrec.kernels.attention(backend="auto")``), ``"torch"`` / ``"triton"``
            (``llmrec.kernels.attention`` with that backend: the PyTorch reference / the Triton kernel).

    Returns:
        (N, W) float64 softmax probabilities over the verbalizer tokens, in input order; equal to
        ``score_encoded(model, [prefix_ids + s for s in suffix_ids], token_ids)`` up to float rounding.

    Raises:
        ValueError: an empty suffix, fewer than two verbalizer ids, an unknown dtype or backend.
        NotImplementedError: a model with attention soft-capping, or a sliding window shorter than a prompt.
        RuntimeError: attention modules without ``layer_idx``.
    """
    if len(token_ids) < 2:
        raise ValueError(f"token_ids {list(token_ids)}: need at least two verbalizer tokens")
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {_BACKENDS}")
    for i, s in enumerate(suffix_ids):
        _check_ids(s, f"suffix {i}")
    if len(suffix_ids) == 0:
        return np.zeros((0, len(token_ids)), dtype=np.float64)
    if len(prefix_ids) == 0:
        return score_encoded(model, [list(s) for s in suffix_ids], token_ids, pad_id=pad_id,
                             batch_tokens=batch_tokens, max_batch=max_batch, dtype=dtype)
    autocast_for(torch.device("cpu"), dtype)  # validates dtype
    decoder, head, cap = _backbone_and_head(model)
    was_training = model.training
    model.eval()
    try:
        st = _prefix_kv(decoder, prefix_ids, head.device, dtype, backend)
        return _score_suffixes(decoder, head, cap, st, suffix_ids, token_ids, pad_id=pad_id,
                               batch_tokens=batch_tokens, max_batch=max_batch, dtype=dtype)
    finally:
        if was_training:
            model.train()


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix of all prompts (0 for no prompts)."""
    if not prompts:
        return 0
    arrs = [np.asarray(p, dtype=np.int64) for p in prompts]
    n = min(len(a) for a in arrs)
    first = arrs[0][:n]
    lcp = n
    for a in arrs[1:]:
        diff = np.nonzero(a[:lcp] != first[:lcp])[0]
        if diff.size:
            lcp = int(diff[0])
        if lcp == 0:
            break
    return lcp


def score_shared_head(model: Any, prompts: Sequence[Sequence[int]], token_ids: Sequence[int], *,
                      dtype: str = "auto", max_batch: int = 64, batch_tokens: int = 8192, pad_id: int = 0,
                      min_prefix: int = 8, backend: str = "auto") -> np.ndarray:
    """Score independent prompts that share a common head (e.g. a template's instruction text).

    Finds the longest common token prefix of all prompts (capped so every prompt keeps at least one
    token), computes it once, and scores the remainders with :func:`score_candidates`'s mechanism in
    length-sorted batches (padding only up to the longest remainder of each batch).

    Args:
        model: ``*ForCausalLM`` or peft ``PeftModel``.
        prompts: N token-id lists, each ending right before the answer.
        token_ids: W >= 2 verbalizer ids.
        dtype, max_batch, batch_tokens, pad_id, backend: as in :func:`score_candidates`.
        min_prefix: below this common length, fall back to :func:`llmrec.scoring.score_encoded`.

    Returns:
        (N, W) float64 probabilities in input order.

    Raises:
        ValueError: an empty prompt, fewer than two verbalizer ids.
    """
    for i, p in enumerate(prompts):
        _check_ids(p, f"prompt {i}")
    if not prompts:
        return np.zeros((0, len(token_ids)), dtype=np.float64)
    lcp = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    if lcp < min_prefix:
        return score_encoded(model, [list(p) for p in prompts], token_ids, pad_id=pad_id, batch_tokens=batch_tokens,
                             max_batch=max_batch, dtype=dtype)
    prefix = list(prompts[0][:lcp])
    return score_candidates(model, prefix, [list(p[lcp:]) for p in prompts], token_ids, dtype=dtype,
                            max_batch=max_batch, batch_tokens=batch_tokens, pad_id=pad_id, backend=backend)


def split_prompts(tokenizer: Any, prefix_text: str, suffix_texts: Sequence[str], *,
                  add_special_tokens: bool = True) -> tuple[list[int], list[list[int]]]:
    """Tokenise a shared prefix and candidate suffixes so that ``prefix_ids + suffix_ids[i]`` equals
    ``tokenizer(prefix_text + suffix_texts[i])`` exactly.

    Args:
        tokenizer: a Hugging Face tokenizer.
        prefix_text: the shared text (special tokens such as BOS are added to it if the tokenizer adds
            them and ``add_special_tokens``).
        suffix_texts: N candidate texts, each non-empty.
        add_special_tokens: as in the tokenizer call (False for chat-template text).

    Returns:
        ``(prefix_ids, suffix_ids)``: list of int, and N lists of int.

    Raises:
        ValueError: a suffix is empty, or the token boundary merges: the tokens of ``prefix + suffix``
            do not start with the prefix's own tokens (the message names the suffix and the tokens at
            the seam; split the text before a space or newline instead), or the tokenizer appends
            special tokens at the end.
    """
    prefix_ids = list(tokenizer(prefix_text, add_special_tokens=add_special_tokens).input_ids)
    fulls = tokenizer([prefix_text + s for s in suffix_texts], add_special_tokens=add_special_tokens).input_ids
    out = []
    Lp = len(prefix_ids)
    for i, (s, full) in enumerate(zip(suffix_texts, fulls)):
        if not s:
            raise ValueError(f"suffix {i} is empty")
        full = list(full)
        if full[:Lp] != prefix_ids or len(full) == Lp:
            k = next((j for j in range(min(Lp, len(full))) if full[j] != prefix_ids[j]), min(Lp, len(full)))
            seam_p = tokenizer.convert_ids_to_tokens(prefix_ids[max(0, k - 2):])
            seam_f = tokenizer.convert_ids_to_tokens(full[max(0, k - 2):k + 3])
            raise ValueError(
                f"suffix {i} ({s[:40]!r}) merges with the end of the prefix under this tokenizer: prefix ends "
                f"with tokens {seam_p}, prefix+suffix has {seam_f} there; split the text right before a space "
                "or newline that precedes the candidate part")
        out.append(full[Lp:])
    return prefix_ids, out
