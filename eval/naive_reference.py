"""The reference the scoring benchmarks time against: transformers' plain forward, one full prompt per row.

Shared by ``eval/bench_scoring.py`` and ``eval/bench_rerank.py`` so that both compare with the same baseline.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def naive_scores(model, prompts: list[list[int]], token_ids, batch: int, pad_id: int,
                 dtype: str = "float32") -> np.ndarray:
    """Verbalizer probabilities from full-vocabulary logits, no prefix sharing, no answer-only head.

    Args:
        prompts: N token-id lists; scored in right-padded batches of ``batch`` in input order.
        token_ids: the V answer token ids (verbalizer words or letters).
        dtype: CPU autocast dtype name (``float32``: none; ``bfloat16``).

    Returns:
        (N, V) float64 softmax over the answer tokens' logits at each prompt's last position.
    """
    from llmrec.scoring import autocast_for

    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i: i + batch]
        L = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for r, p in enumerate(chunk):
            ids[r, : len(p)] = torch.as_tensor(p)
            mask[r, : len(p)] = 1
        with autocast_for(torch.device("cpu"), dtype):
            logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.as_tensor([len(p) - 1 for p in chunk])
        sel = logits[torch.arange(len(chunk)), last][:, list(token_ids)].float()
        out.append(torch.softmax(sel, -1).double().numpy())
    return np.concatenate(out)
