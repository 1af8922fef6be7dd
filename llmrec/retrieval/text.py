"""Item text embeddings from a causal LM, for cold-start items with no interactions.

Mean-pooled last hidden states over the non-padding tokens, L2-normalised (a common sentence-embedding
recipe for decoder-only LMs; cf. LLM2Vec / "mean pooling" baselines). Right padding is forced so that
padding never shifts the positions of real tokens under causal attention: the embedding of a text does
not depend on what else is in its batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["embed_texts"]


@torch.no_grad()
def embed_texts(texts: Sequence[str], model, tokenizer, batch_size: int = 32, max_length: int = 64,
                device: str | torch.device | None = None) -> np.ndarray:
    """Embed item texts (e.g. ``"Toy Story (1995) | Animation Children's Comedy"``) with a HF LM.

    Args:
        texts: n strings (each non-empty).
        model: a ``transformers`` causal LM (or base model) accepting ``output_hidden_states=True``.
        tokenizer: its tokenizer; if it has no pad token, the EOS token (or id 0) is used for padding.
        batch_size: texts per forward pass.
        max_length: truncation length in tokens.
        device: where to run (default: the model's device).

    Returns:
        float32 ``(n, hidden_size)``, unit L2 norm per row (rows of all-zero states stay zero).

    Raises:
        ValueError: empty ``texts``, a non-string or empty text, batch_size/max_length < 1, or a text
            that tokenizes to zero tokens.
    """
    if len(texts) == 0:
        raise ValueError("texts is empty: need at least one item text")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"texts[{i}] must be a non-empty string, got {t!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.convert_ids_to_tokens(0)
    out = []
    try:
        for b in range(0, len(texts), batch_size):
            chunk = list(texts[b : b + batch_size])
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            mask = enc["attention_mask"].to(device)
            empty = (mask.sum(1) == 0).nonzero()
            if len(empty):
                raise ValueError(f"texts[{b + int(empty[0])}] tokenizes to zero tokens")
            res = model(input_ids=enc["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
            h = res.hidden_states[-1].float()
            m = mask.unsqueeze(-1).float()
            pooled = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    finally:
        tokenizer.padding_side = old_side
        tokenizer.pad_token = old_pad
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)
