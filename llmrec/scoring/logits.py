"""Score prompts: P(answer word) from the verbalizer tokens' logits at the answer position.

Follows TALLRec (Bao et al., RecSys 2023): the score of a pointwise prompt is
``softmax([logit_Yes, logit_No])[0]`` at the last prompt token. Only the verbalizer rows of the LM head
are used (``hidden @ W[ids].T``), never the full vocabulary, and only at the answer position.
Prompts are batched by a token budget after sorting by length, so little compute goes to padding.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

from llmrec import precision

__all__ = ["verbalizer_logits", "answer_logits", "score_encoded", "score_texts", "encode_prompts", "autocast_for"]


def autocast_for(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``dtype`` on ``device``: ``"auto"`` (bf16 where it is native, see
    :mod:`llmrec.precision`), ``"float32"`` (no autocast), ``"bfloat16"`` or ``"float16"``.

    Raises:
        ValueError: ``dtype`` is not a precision name.
    """
    name = precision.scoring_dtype("float32" if dtype is None else dtype, device)
    if name == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.DTYPES[name])


def _backbone_and_head(model: Any) -> tuple[Any, torch.Tensor, float | None]:
    """(decoder returning hidden states, LM head weight (V, H), final logit soft-cap or None)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    head = base.get_output_embeddings().weight
    cap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, cap


def verbalizer_logits(hidden: torch.Tensor, head_weight: torch.Tensor, token_ids: Sequence[int],
                      softcap: float | None = None) -> torch.Tensor:
    """Logits of the verbalizer tokens only.

    Args:
        hidden: final hidden states at the answer positions, (N, H), any float dtype.
        head_weight: LM head / tied embedding matrix, (V, H).
        token_ids: verbalizer token ids, length W.
        softcap: Gemma-style final logit soft-capping ``c * tanh(x / c)``, or None.

    Returns:
        (N, W) float32 logits, equal to the full-vocabulary logits at those ids.
    """
    w = head_weight[torch.as_tensor(list(token_ids), device=head_weight.device)]
    logits = hidden.float() @ w.float().T
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits


@torch.no_grad()
def answer_logits(model: Any, input_ids: Sequence[Sequence[int]], token_ids: Sequence[int], *, pad_id: int = 0,
                  dtype: str = "auto", batch_tokens: int = 8192, max_batch: int = 64,
                  progress: bool = False, desc: str = "scoring") -> np.ndarray:
    """Raw logits of ``token_ids`` at the last token of every prompt (verbalizer rows of the LM head only).

    Args:
        model: a ``*ForCausalLM`` or a peft ``PeftModel`` around one (LoRA merged or not).
        input_ids: N prompts, each a list of token ids ending right before the answer; they are sorted by
            length and right-padded within batches of at most ``batch_tokens`` padded tokens.
        token_ids: W verbalizer token ids.
        pad_id: id used for right padding (masked out; its value does not matter).
        batch_tokens: padded tokens per forward pass (batch size x longest prompt), a memory bound.
        max_batch: at most this many prompts per forward pass.
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native).
        progress: show a tqdm bar.

    Returns:
        (N, W) float32 array, equal to ``model(ids).logits[:, -1, token_ids]`` up to float rounding
        (Gemma-style soft-capping applied as the model does), in input order.

    Raises:
        ValueError: an empty prompt, or no verbalizer ids.
    """
    if len(token_ids) == 0:
        raise ValueError("token_ids is empty")
    n = len(input_ids)
    lengths = np.array([len(x) for x in input_ids], dtype=np.int64)
    if n and lengths.min() == 0:
        raise ValueError(f"prompt {int(np.argmin(lengths))} is empty")
    out = np.zeros((n, len(token_ids)), dtype=np.float32)
    if n == 0:
        return out
    decoder, head, cap = _backbone_and_head(model)
    device = head.device
    order = np.argsort(-lengths, kind="stable")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="prompt")
    was_training = model.training
    model.eval()
    try:
        i = 0
        while i < n:
            size = max(1, min(max_batch, batch_tokens // int(lengths[order[i]])))
            idx = order[i: i + size]
            i += size
            L = int(lengths[idx].max())
            ids = torch.full((len(idx), L), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, j in enumerate(idx):
                ids[r, : lengths[j]] = torch.as_tensor(list(input_ids[j]), dtype=torch.long)
                mask[r, : lengths[j]] = 1
            ids, mask = ids.to(device), mask.to(device)
            with autocast_for(device, dtype):
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            pos = torch.as_tensor(lengths[idx] - 1, device=device)
            h = hidden[torch.arange(len(idx), device=device), pos]
            out[idx] = verbalizer_logits(h, head, token_ids, cap).cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    return out


def score_encoded(model: Any, input_ids: Sequence[Sequence[int]], token_ids: Sequence[int], *,
                  pad_id: int = 0, batch_tokens: int = 8192, max_batch: int = 64, dtype: str = "auto",
                  progress: bool = False, desc: str = "scoring") -> np.ndarray:
    """Probabilities over the verbalizer words for tokenised prompts: softmax of :func:`answer_logits`.

    Arguments as in :func:`answer_logits`; ``token_ids[0]`` is the positive answer.

    Returns:
        (N, W) float64 array of softmax probabilities over the W verbalizer tokens, in input order.

    Raises:
        ValueError: an empty prompt, or fewer than two verbalizer ids.
    """
    if len(token_ids) < 2:
        raise ValueError(f"token_ids {list(token_ids)}: need at least two verbalizer tokens")
    logits = answer_logits(model, input_ids, token_ids, pad_id=pad_id, dtype=dtype, batch_tokens=batch_tokens,
                           max_batch=max_batch, progress=progress, desc=desc)
    return torch.softmax(torch.from_numpy(logits), dim=-1).double().numpy()


def encode_prompts(tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of prompt texts. Pass ``add_special_tokens=False`` for chat-template output, which
    already holds its special tokens (BOS would otherwise be doubled)."""
    return tokenizer(list(prompts), add_special_tokens=add_special_tokens).input_ids


def score_texts(model: Any, tokenizer: Any, prompts: Sequence[str], token_ids: Sequence[int], *,
                add_special_tokens: bool = True, **kw) -> np.ndarray:
    """Tokenise prompt texts with :func:`encode_prompts` and :func:`score_encoded` them.

    Returns:
        (N, W) float64 probabilities; column 0 is P(positive answer) for pointwise templates.
    """
    enc = encode_prompts(tokenizer, prompts, add_special_tokens)
    return score_encoded(model, enc, token_ids, pad_id=tokenizer.pad_token_id or 0, **kw)
