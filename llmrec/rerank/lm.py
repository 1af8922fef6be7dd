"""Shared LM plumbing for the rerankers: raw verbalizer logits at the answer position, letter/word
token ids checked under the tokenizer, and template rendering helpers.

Only the verbalizer rows of the LM head are applied (``hidden @ W[ids].T``,
:func:`llmrec.scoring.verbalizer_logits`), never the full vocabulary, and only at the last prompt token.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from llmrec.model import Verbalizer, verbalizer_for
from llmrec.scoring import _backbone_and_head, autocast_for, verbalizer_logits

__all__ = ["answer_logits", "single_token_verbalizer", "add_special_tokens_for"]


def add_special_tokens_for(template: Any) -> bool:
    """Chat-template output already holds its special tokens (BOS would otherwise be doubled)."""
    return template.format != "chat"


def single_token_verbalizer(template: Any, tokenizer: Any, example_prompt: str) -> Verbalizer:
    """:func:`llmrec.model.verbalizer_for`, plus a check that every verbalizer word is exactly one token
    (its training target may add EOS). Listwise letters must be distinct single tokens; ids come from the
    tokenizer, never hard-coded.

    Raises:
        ValueError: a word spans several tokens, or two words share a token (names the template).
    """
    verb = verbalizer_for(template, tokenizer, example_prompt)
    eos = tokenizer.eos_token_id
    for w, t, tgt in zip(verb.words, template.targets, verb.target_ids):
        body = [x for x in tgt if x != eos]
        if t == w and len(body) != 1:
            raise ValueError(f"template {template.name}: verbalizer word {w!r} is {len(body)} tokens {body} under "
                             f"this tokenizer; listwise letters must be single tokens")
    return verb


@torch.no_grad()
def answer_logits(model: Any, input_ids: Sequence[Sequence[int]], token_ids: Sequence[int], *, pad_id: int = 0,
                  dtype: str = "float32", batch_tokens: int = 8192, max_batch: int = 32,
                  progress: bool = False, desc: str = "scoring") -> np.ndarray:
    """Raw logits of ``token_ids`` at the last token of every prompt.

    Args:
        model: ``*ForCausalLM`` or peft model (merged or not).
        input_ids: N prompts (lists of int), each ending right before the answer; ragged lengths are
            right-padded within length-sorted batches of at most ``batch_tokens`` padded tokens.
        token_ids: W verbalizer token ids.
        dtype: ``"float32"`` or ``"bfloat16"``/``"float16"`` autocast.

    Returns:
        float32 array ``(N, W)``, equal to the full-vocabulary logits ``model(ids).logits[:, -1, token_ids]``
        (up to float rounding; soft-capping applied as the model does).

    Raises:
        ValueError: an empty prompt or no token ids.
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

