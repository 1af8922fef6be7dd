"""Prefix-shared scoring: many prompts that share a token prefix, the prefix computed once.

Reranking scores many candidates for one user, and every candidate prompt is the same long history
prefix followed by a short candidate suffix. Instead of running ``N`` full prompts, this module

1. runs the shared prefix once (one row per user) and keeps every layer's key/value states (after RoPE), and
2. runs all candidate suffixes as right-padded batches (a token budget per forward: :func:`default_batch`,
   tens of thousands of tokens on a GPU) whose positions start at the prefix length; in every layer each
   suffix query attends to its user's single shared prefix K/V (never copied per candidate) and, causally,
   to its own suffix, as two partial softmaxes merged by their log-sum-exp. On CUDA through the custom op
   ``torch.ops.llmrec.prefix_shared_attention`` (the fused Triton kernel; traceable by ``torch.compile``);
   on CPU (``backend="cpu"``, :mod:`llmrec.kernels.prefix_attention_cpu`) by default the same decomposition
   with PyTorch's fused CPU flash-attention op for each partial (faster than the kernels' PyTorch reference
   on CPU; timings in the README, "Scoring speed"); ``backend="torch"`` selects that reference instead.
   :func:`score_users` packs the candidates of several users into the same forwards.

Per-call validation: the first suffix-pass layer of a call checks every input (shapes, dtypes, devices,
mask, unsupported attention features), fixes the compute dtype and path, and casts all layers' prefix K/V
once; every other layer runs a fast path without Python checks or host synchronisation, and a call copies
its probabilities to the host once.

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

from llmrec.scoring.logits import _backbone_and_head, autocast_for, score_encoded

__all__ = [
    "score_candidates",
    "score_users",
    "default_batch",
    "score_shared_head",
    "split_prompts",
    "common_prefix_length",
    "check_pad_multiple",
    "prefix_attention_mode",
    "ATTN_PREFIX",
    "ATTN_CAPTURE",
]

#: attention-implementation names registered in transformers' ``AttentionInterface``
ATTN_PREFIX = "llmrec_prefix"
ATTN_CAPTURE = "llmrec_prefix_capture"


@dataclass
class _PrefixState:
    """Side structure read by the registered attention functions (one per scoring call).

    Attributes:
        kv: layer_idx -> one ``(k_prefix, v_prefix)`` per user, each (Hkv, Lp_u, D) (filled by the capture pass;
            views into the capture batch, cast once per call to the compute dtype by the first suffix layer).
        prefix_lens: Lp_u per user.
        capture_users: during a capture pass, the users of its batch rows, in row order.
        suffix_mask: (B, Ls) bool, True = real suffix token, or None (suffix pass only).
        segments: ``(user, row_start, row_end)`` per user of the current suffix batch (rows grouped by user).
        backend: "auto", "cpu", "kernels", "torch" or "triton" (see :func:`score_candidates`).
        path: the attention path the fast per-layer hook takes, fixed by the first layer of the call:
            "op" (``torch.ops.llmrec.prefix_shared_attention``: Triton on CUDA), "cpu"
            (:func:`llmrec.kernels.prefix_attention_cpu.cpu_prefix_attention`), or "torch" / "triton"
            (:func:`llmrec.kernels.attention` with that backend, validated).
        dt: the compute dtype of the suffix pass, fixed by its first layer.
        checked: the first suffix-pass layer of this call validated the inputs (the others skip all checks).
    """

    kv: dict[int, list] = field(default_factory=dict)
    prefix_lens: list[int] = field(default_factory=list)
    capture_users: list[int] = field(default_factory=list)
    suffix_mask: torch.Tensor | None = None
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    backend: str = "auto"
    path: str = ""
    dt: torch.dtype | None = None
    checked: bool = False

    @property
    def prefix_len(self) -> int:
        """Lp of the first user (single-user calls)."""
        return self.prefix_lens[0] if self.prefix_lens else 0


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
    """Prefix pass (the prefixes of one or more users, right-padded): plain causal attention, and store this
    layer's K/V (after RoPE) per user, cut to the user's own prefix length (right padding and causality keep
    the real positions exact)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    st = _state(module)
    if query.shape[0] != len(st.capture_users):
        raise RuntimeError(f"prefix capture pass: batch {query.shape[0]} != {len(st.capture_users)} users")
    _check_unsupported(kwargs, key.shape[2])
    per_user = st.kv.setdefault(int(module.layer_idx), [None] * len(st.prefix_lens))
    for j, u in enumerate(st.capture_users):
        lp = st.prefix_lens[u]
        per_user[u] = (key[j, :, :lp], value[j, :, :lp])
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling,
                                  is_causal=True, **{k: v for k, v in kwargs.items() if k == "output_attentions"})


def _first_layer(st: _PrefixState, module, query, key, value, scaling, kwargs) -> None:
    """Once per call (first suffix-pass layer): every check of the inputs, the compute dtype, the attention
    path, and the one cast of all layers' prefix K/V to that dtype. Later layers skip all of it."""
    from llmrec.kernels.prefix_attention import check_inputs
    from llmrec.kernels.prefix_attention_cpu import FLASH_CPU

    st = _state(module)
    idx = int(module.layer_idx)
    if idx not in st.kv:
        raise RuntimeError(f"no prefix K/V captured for layer {idx}")
    _check_unsupported(kwargs, max(st.prefix_lens) + query.shape[2])
    # Under autocast RoPE leaves q/k in float32 while v is in the autocast dtype; the attention paths
    # need one dtype. Under autocast (CUDA, or the fused CPU op) use the autocast dtype, as sdpa does;
    # otherwise promote to the widest dtype (the PyTorch reference accumulates in float32 anyway).
    kp0, vp0 = st.kv[idx][0]
    dt = query.dtype
    for t in (key, value, kp0, vp0):
        dt = torch.promote_types(dt, t.dtype)
    if query.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    elif (not query.is_cuda and st.backend in ("auto", "cpu") and FLASH_CPU is not None
          and torch.is_autocast_enabled("cpu")):
        dt = torch.get_autocast_dtype("cpu")  # the fused CPU op runs bf16 with fp32 accumulation
    st.dt = dt
    backend = st.backend
    if backend == "auto":
        backend = "kernels" if query.is_cuda else "cpu"
    st.path = "op" if backend == "kernels" else backend
    for layer, per_user in st.kv.items():  # cast once per call, not once per layer or batch
        st.kv[layer] = [(kp.to(dt), vp.to(dt)) for kp, vp in per_user]
    for u, a, b in st.segments:  # full validation of this batch's first layer (shapes, dtypes, devices, mask)
        kp, vp = st.kv[idx][u]
        check_inputs(query[a:b].to(dt), key[a:b].to(dt), value[a:b].to(dt), kp, vp,
                     None if st.suffix_mask is None else st.suffix_mask[a:b], scaling)
    st.checked = True


def _attend(path: str, q, k, v, kp, vp, mask, scale):
    """(B, Ls, Hq, D) attention output of one user's rows, no checks."""
    if path == "op":
        from llmrec.kernels.prefix_attention import prefix_shared_attention_op

        return prefix_shared_attention_op(q, k, v, kp, vp, mask, scale, validate=False)
    if path == "cpu":
        from llmrec.kernels.prefix_attention_cpu import cpu_prefix_attention

        return cpu_prefix_attention(q, k, v, kp, vp, mask, scale)
    from llmrec.kernels.prefix_attention import attention

    return attention(q, k, v, kp, vp, suffix_mask=mask, scale=scale, backend=path).transpose(1, 2)


def _prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Suffix pass: queries (B, Hq, Ls, D) attend to their user's shared prefix K/V of this layer and causally
    to their own suffix K/V (B, Hkv, Ls, D). Returns ``(out (B, Ls, Hq, D), None)`` (transformers' layout).

    Per-layer fast path: no Python input checks and no host synchronisation; the first layer of a call
    validates everything (:func:`_first_layer`). Rows of several users are attended per user (one kernel
    call per user and layer; the projections and MLPs of all users run as one batch)."""
    st = _STATE.get()
    if st is None or not st.checked:
        st = _state(module)
        _first_layer(st, module, query, key, value, scaling, kwargs)
    dt = st.dt
    if query.dtype != dt:
        query = query.to(dt)
    if key.dtype != dt:
        key = key.to(dt)
    if value.dtype != dt:
        value = value.to(dt)
    per_user = st.kv[module.layer_idx]
    mask = st.suffix_mask
    segs = st.segments
    if len(segs) == 1:
        kp, vp = per_user[segs[0][0]]
        return _attend(st.path, query, key, value, kp, vp, mask, scaling), None
    outs = []
    for u, a, b in segs:
        kp, vp = per_user[u]
        outs.append(_attend(st.path, query[a:b], key[a:b], value[a:b], kp, vp,
                            None if mask is None else mask[a:b], scaling))
    return torch.cat(outs, 0), None


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


#: (max_batch, batch_tokens) of the suffix passes when not given: CPU (unchanged) and GPU. On a GPU eager
#: transformers is launch-bound below tens of thousands of tokens per forward (SmolLM2-135M: 30 layers,
#: ~15 kernels each), and 64K suffix tokens of a 135M model take < 1 GB of activations in bf16.
CPU_BATCH = (64, 4096)
GPU_BATCH = (8192, 65536)


def default_batch(device: torch.device | str) -> tuple[int, int]:
    """``(max_batch, batch_tokens)`` for suffix passes on ``device``: :data:`GPU_BATCH` on CUDA, else
    :data:`CPU_BATCH`."""
    return GPU_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; on CUDA through pinned memory, asynchronously (no host sync)."""
    t = torch.from_numpy(a)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


@torch.no_grad()
def _prefix_kv(decoder: Any, prefixes: Sequence[Sequence[int]], device: torch.device, dtype: str,
               backend: str, batch_tokens: int) -> _PrefixState:
    """Run the users' prefixes (right-padded, several per forward within ``batch_tokens``) and keep every
    layer's K/V per user."""
    st = _PrefixState(prefix_lens=[len(p) for p in prefixes], backend=backend)
    order = np.argsort([-len(p) for p in prefixes], kind="stable")
    token = _STATE.set(st)
    try:
        with prefix_attention_mode(decoder, ATTN_CAPTURE), autocast_for(device, dtype):
            i = 0
            while i < len(order):
                L = len(prefixes[order[i]])
                users = [int(u) for u in order[i: i + max(1, batch_tokens // L)]]
                i += len(users)
                ids = np.zeros((len(users), L), dtype=np.int64)
                for r, u in enumerate(users):
                    ids[r, : len(prefixes[u])] = prefixes[u]
                st.capture_users = users
                decoder(input_ids=_to_device(ids, device), use_cache=False)
    finally:
        st.capture_users = []
        _STATE.reset(token)
    return st


def check_pad_multiple(m: Any) -> int:
    """``m`` as an int, for ``pad_to_multiple_of``. Raises ValueError (naming the value) unless an integer >= 1."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"pad_to_multiple_of {m!r}: expected an integer >= 1 (1: no padding)")
    return int(m)


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
def _score_rows(decoder: Any, head: torch.Tensor, cap: float | None, st: _PrefixState,
                suffix_ids: Sequence[Sequence[int]], users: np.ndarray, token_ids: Sequence[int], *, pad_id: int,
                batch_tokens: int, max_batch: int, dtype: str, bucket: bool,
                pad_to_multiple_of: int = 1) -> np.ndarray:
    """(N, W) float64 verbalizer probabilities of the suffixes, suffix ``i`` continuing user ``users[i]``'s
    prefix in ``st``. One host-to-device copy of ids/positions per batch and one device-to-host copy of
    the probabilities per call; no host synchronisation inside the batch loop."""
    from llmrec.kernels.prefix_attention import SUFFIX_BUCKETS, bucket_size

    device = head.device
    n = len(suffix_ids)
    W = len(token_ids)
    lengths = np.array([len(s) for s in suffix_ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    plens = np.asarray(st.prefix_lens, dtype=np.int64)
    res = torch.empty((n, W), dtype=torch.float32, device=device)
    # the verbalizer rows of the LM head, gathered once per call (verbalizer_logits would copy the ids to the
    # device once per batch)
    w_verb = head[torch.as_tensor(list(token_ids), device=device)].float()
    i = 0
    token = _STATE.set(st)
    try:
        with prefix_attention_mode(decoder, ATTN_PREFIX):
            while i < n:
                row_cap = max_batch
                if bucket:  # full batches exactly a power of two rows: only the call's last batch pads rows
                    row_cap = 1 << (max(1, min(max_batch, batch_tokens // bucket_size(
                        int(lengths[order[i]]), SUFFIX_BUCKETS))).bit_length() - 1)
                idx = _next_bucket(lengths, order, i, row_cap, batch_tokens)
                i += len(idx)
                idx = idx[np.argsort(users[idx], kind="stable")]  # rows grouped by user: one segment each
                L = int(lengths[idx].max())
                rows = len(idx)
                if bucket:  # a handful of (rows, L) shapes: few Triton variants / compiled graphs
                    L = bucket_size(L, SUFFIX_BUCKETS)
                    rows = bucket_size(rows)
                elif pad_to_multiple_of > 1:  # few distinct shapes: bounded per-shape caches (oneDNN)
                    L = -(-L // pad_to_multiple_of) * pad_to_multiple_of
                row_user = np.empty(rows, dtype=np.int64)
                row_user[: len(idx)] = users[idx]
                row_user[len(idx):] = users[idx[-1]]  # padding rows join the last user's segment
                row_len = np.zeros(rows, dtype=np.int64)
                row_len[: len(idx)] = lengths[idx]
                ids = np.full((rows, L), pad_id, dtype=np.int64)
                for r, j in enumerate(idx):
                    ids[r, : lengths[j]] = suffix_ids[j]
                pos = plens[row_user][:, None] + np.arange(L, dtype=np.int64)[None, :]
                cuts = np.flatnonzero(np.diff(row_user)) + 1
                bounds = [0, *cuts.tolist(), rows]
                st.segments = [(int(row_user[a]), a, b) for a, b in zip(bounds[:-1], bounds[1:])]
                padded = bool((row_len < L).any())
                st.suffix_mask = (_to_device(np.arange(L)[None, :] < row_len[:, None], device)
                                  if padded or bucket else None)
                with autocast_for(device, dtype):
                    hidden = decoder(input_ids=_to_device(ids, device), position_ids=_to_device(pos, device),
                                     use_cache=False).last_hidden_state
                last = _to_device(lengths[idx] - 1, device)
                h = hidden[torch.arange(len(idx), device=device), last]
                probs = torch.softmax(_verb_logits(h, w_verb, cap), dim=-1)
                res[_to_device(idx.astype(np.int64), device)] = probs
    finally:
        st.suffix_mask = None
        st.segments = []
        _STATE.reset(token)
    return res.cpu().double().numpy()


def _verb_logits(hidden: torch.Tensor, w_verb: torch.Tensor, cap: float | None) -> torch.Tensor:
    """:func:`llmrec.scoring.verbalizer_logits` with the verbalizer rows already gathered (``w_verb`` (W, H))."""
    logits = hidden.float() @ w_verb.T
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return logits


def score_users(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                token_ids: Sequence[int], *, dtype: str = "auto", max_batch: int | None = None,
                batch_tokens: int | None = None, pad_id: int = 0, backend: str = "auto",
                bucket: bool | None = None, pad_to_multiple_of: int = 1) -> list[np.ndarray]:
    """Score the candidates of several users, packed into shared forwards.

    Each request is ``(prefix_ids, suffix_ids)`` as in :func:`score_candidates`. The prefixes run once each
    (right-padded, several users per forward), then the suffixes of all users are batched together by a
    token budget: one forward holds rows of several users (the projections and MLPs run as one batch), and
    in every layer each user's rows attend to that user's prefix K/V (one attention call per user and layer).

    Args:
        model, token_ids, dtype, pad_id, backend: as in :func:`score_candidates`.
        requests: U ``(prefix_ids, suffix_ids)`` pairs; every prefix non-empty, every suffix non-empty.
        max_batch, batch_tokens, bucket, pad_to_multiple_of: as in :func:`score_candidates`.

    Returns:
        U arrays, ``(N_u, W)`` float64 probabilities each, in input order; each equals
        :func:`score_candidates` of that request alone up to float rounding.

    Raises:
        ValueError: an empty prefix or suffix, fewer than two verbalizer ids, an unknown dtype or backend.
        NotImplementedError / RuntimeError: as in :func:`score_candidates`.
    """
    if len(token_ids) < 2:
        raise ValueError(f"token_ids {list(token_ids)}: need at least two verbalizer tokens")
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {_BACKENDS}")
    for u, (prefix, sufs) in enumerate(requests):
        _check_ids(prefix, f"prefix of request {u}")
        for i, s in enumerate(sufs):
            _check_ids(s, f"suffix {i} of request {u}" if len(requests) > 1 else f"suffix {i}")
    autocast_for(torch.device("cpu"), dtype)  # validates dtype
    out = [np.zeros((0, len(token_ids)), dtype=np.float64) for _ in requests]
    live = [u for u, (_, sufs) in enumerate(requests) if len(sufs)]
    if not live:
        return out
    decoder, head, cap = _backbone_and_head(model)
    mb, bt = default_batch(head.device)
    max_batch = mb if max_batch is None else int(max_batch)
    batch_tokens = bt if batch_tokens is None else int(batch_tokens)
    bucket = bool(bucket)
    pad_to_multiple_of = check_pad_multiple(pad_to_multiple_of)
    prefixes = [list(requests[u][0]) for u in live]
    sufs = [list(s) for u in live for s in requests[u][1]]
    users = np.concatenate([np.full(len(requests[u][1]), k, dtype=np.int64) for k, u in enumerate(live)])
    was_training = model.training
    model.eval()
    try:
        st = _prefix_kv(decoder, prefixes, head.device, dtype, backend, batch_tokens)
        probs = _score_rows(decoder, head, cap, st, sufs, users, token_ids, pad_id=pad_id,
                            batch_tokens=batch_tokens, max_batch=max_batch, dtype=dtype, bucket=bucket,
                            pad_to_multiple_of=pad_to_multiple_of)
    finally:
        if was_training:
            model.train()
    start = 0
    for u in live:
        k = len(requests[u][1])
        out[u] = probs[start: start + k]
        start += k
    return out


def score_candidates(model: Any, prefix_ids: Sequence[int], suffix_ids: Sequence[Sequence[int]],
                     token_ids: Sequence[int], *, dtype: str = "auto", max_batch: int | None = None,
                     batch_tokens: int | None = None, pad_id: int = 0, backend: str = "auto",
                     bucket: bool | None = None, pad_to_multiple_of: int = 1) -> np.ndarray:
    """Verbalizer probabilities of ``N`` prompts ``prefix_ids + suffix_ids[i]`` with the prefix run once.

    Args:
        model: a ``*ForCausalLM`` (Llama-style attention modules with ``layer_idx``) or a peft
            ``PeftModel`` around one, LoRA merged or not (merge it for speed: :func:`llmrec.adapter.load_adapter`
            does by default).
        prefix_ids: Lp shared token ids (the user's history part), list of int. If empty the prompts are
            scored with :func:`llmrec.scoring.score_encoded`.
        suffix_ids: N candidate suffixes, each a non-empty list of int ending right before the answer;
            ragged lengths are right-padded within length-sorted batches.
        token_ids: W >= 2 verbalizer token ids (``token_ids[0]`` = positive answer).
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native) (both passes).
        max_batch: at most this many suffixes per forward pass; None: :func:`default_batch` of the model's device
            (64 on a CPU, 8192 on a GPU).
        batch_tokens: padded suffix tokens per forward pass (batch x longest suffix), a memory bound; None:
            4096 on a CPU, 65536 on a GPU.
        pad_id: id used for suffix right padding (masked; its value does not matter).
        backend: ``"auto"`` (CUDA: the custom op ``torch.ops.llmrec.prefix_shared_attention``, i.e. the Triton
            kernel; CPU: the fused flash-op path), ``"cpu"`` (``llmrec.kernels.attention(backend="cpu")``: that
            path, or the folded single softmax where the op is missing or for float16/float64),
            ``"kernels"`` (the custom op: Triton on CUDA, the PyTorch reference elsewhere), ``"torch"`` /
            ``"triton"`` (``llmrec.kernels.attention`` with that backend: the PyTorch reference / the Triton
            kernel).
        bucket: pad each batch to bucketed shapes (suffix length to
            :data:`llmrec.kernels.prefix_attention.SUFFIX_BUCKETS`, rows to a power of two; full batches are
            sized to a power of two, so only a call's last batch pads rows; padding is masked, results
            unchanged) so a handful of shapes cover all traffic: what compiled variants / CUDA graphs of the
            forward need. Off by default (None, False): eager PyTorch runs any shape, and the Triton kernel does
            not specialise on B, Ls or Lp, so padding would only cost compute.
        pad_to_multiple_of: without ``bucket``, pad each batch's suffix length up to a multiple of this (rows are
            not padded; 1: no padding). Bounds the number of distinct (rows, L) shapes, and with it the CPU's
            per-shape caches: with bf16 on a CPU, oneDNN keeps a primitive (and more native memory) for every
            new matrix shape, so a server fed ragged batches grows by ~0.3 MB per request until the shapes
            repeat (measured: ``eval/bench_serve_memory.py``); 16 costs < 16 padded tokens per row. Padding is
            masked.

    Returns:
        (N, W) float64 softmax probabilities over the verbalizer tokens, in input order; equal to
        ``score_encoded(model, [prefix_ids + s for s in suffix_ids], token_ids)`` up to float rounding.

    Raises:
        ValueError: an empty suffix, fewer than two verbalizer ids, an unknown dtype or backend, a
            ``pad_to_multiple_of`` below 1.
        NotImplementedError: a model with attention soft-capping, or a sliding window shorter than a prompt.
        RuntimeError: attention modules without ``layer_idx``.
    """
    if len(token_ids) < 2:
        raise ValueError(f"token_ids {list(token_ids)}: need at least two verbalizer tokens")
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {_BACKENDS}")
    check_pad_multiple(pad_to_multiple_of)
    for i, s in enumerate(suffix_ids):
        _check_ids(s, f"suffix {i}")
    if len(suffix_ids) == 0:
        return np.zeros((0, len(token_ids)), dtype=np.float64)
    if len(prefix_ids) == 0:
        mb, bt = default_batch(_backbone_and_head(model)[1].device)
        return score_encoded(model, [list(s) for s in suffix_ids], token_ids, pad_id=pad_id,
                             batch_tokens=bt if batch_tokens is None else batch_tokens,
                             max_batch=mb if max_batch is None else max_batch, dtype=dtype)
    return score_users(model, [(prefix_ids, suffix_ids)], token_ids, dtype=dtype, max_batch=max_batch,
                       batch_tokens=batch_tokens, pad_id=pad_id, backend=backend, bucket=bucket,
                       pad_to_multiple_of=pad_to_multiple_of)[0]


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
                      dtype: str = "auto", max_batch: int | None = None, batch_tokens: int | None = None,
                      pad_id: int = 0, min_prefix: int = 8, backend: str = "auto",
                      pad_to_multiple_of: int = 1) -> np.ndarray:
    """Score independent prompts that share a common head (e.g. a template's instruction text).

    Finds the longest common token prefix of all prompts (capped so every prompt keeps at least one
    token), computes it once, and scores the remainders with :func:`score_candidates`'s mechanism in
    length-sorted batches (padding only up to the longest remainder of each batch).

    Args:
        model: ``*ForCausalLM`` or peft ``PeftModel``.
        prompts: N token-id lists, each ending right before the answer.
        token_ids: W >= 2 verbalizer ids.
        dtype, pad_id, backend, pad_to_multiple_of: as in :func:`score_candidates` (the remainders are
            padded; the ``min_prefix`` fallback is not).
        max_batch, batch_tokens: as in :func:`score_candidates`; None: 64 / 8192 on a CPU (as before),
            :data:`GPU_BATCH` on a GPU.
        min_prefix: below this common length, fall back to :func:`llmrec.scoring.score_encoded`.

    Returns:
        (N, W) float64 probabilities in input order.

    Raises:
        ValueError: an empty prompt, fewer than two verbalizer ids, a ``pad_to_multiple_of`` below 1.
    """
    for i, p in enumerate(prompts):
        _check_ids(p, f"prompt {i}")
    check_pad_multiple(pad_to_multiple_of)
    if not prompts:
        return np.zeros((0, len(token_ids)), dtype=np.float64)
    if max_batch is None or batch_tokens is None:
        mb, bt = default_batch(_backbone_and_head(model)[1].device)
        if bt == CPU_BATCH[1]:
            bt = 8192  # this function's CPU default
        max_batch = mb if max_batch is None else max_batch
        batch_tokens = bt if batch_tokens is None else batch_tokens
    lcp = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    if lcp < min_prefix:
        return score_encoded(model, [list(p) for p in prompts], token_ids, pad_id=pad_id, batch_tokens=batch_tokens,
                             max_batch=max_batch, dtype=dtype)
    prefix = list(prompts[0][:lcp])
    return score_candidates(model, prefix, [list(p[lcp:]) for p in prompts], token_ids, dtype=dtype,
                            max_batch=max_batch, batch_tokens=batch_tokens, pad_id=pad_id, backend=backend,
                            pad_to_multiple_of=pad_to_multiple_of)


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
