"""Listwise reranking, LlamaRec style (Yue et al. 2023): one prompt per user lists up to 20 candidates
labelled (A)..(T); one forward pass; the logit of each letter token at the answer position is that
candidate's score (a verbalizer over letters, no generation).

The letter token ids come from the tokenizer (the template's verbalizer words as they follow the
prompt), are checked to be distinct single tokens, and are never hard-coded. Training targets are the
true item's letter (+ EOS), with candidates in shuffled order (see :mod:`llmrec.rerank.data`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmrec.prompts import Template
from llmrec.rerank.lm import add_special_tokens_for, answer_logits, resolve_template, single_token_verbalizer

__all__ = ["ListwiseScorer", "listwise_training_example", "DEFAULT_LISTWISE_TEMPLATE"]

DEFAULT_LISTWISE_TEMPLATE = "rerank-listwise"


def listwise_training_example(prompt_ids: Sequence[int], target_pos: int, target_ids: Sequence[Sequence[int]],
                              loss_on: str = "answer", max_length: int = 2048) -> dict[str, list[int]]:
    """Causal-LM example: prompt + the true candidate's letter (+ EOS), loss on the answer only.

    The listwise counterpart of :func:`llmrec.train.build_training_example` (which handles Yes/No).

    Raises:
        ValueError: ``target_pos`` outside the letters, or the example exceeds ``max_length``.
    """
    if not 0 <= target_pos < len(target_ids):
        raise ValueError(f"target_pos {target_pos} outside 0..{len(target_ids) - 1}")
    target = list(target_ids[target_pos])
    ids = list(prompt_ids) + target
    if len(ids) > max_length:
        raise ValueError(f"listwise example of {len(ids)} tokens exceeds max_length {max_length}")
    labels = ([-100] * len(prompt_ids) if loss_on == "answer" else list(prompt_ids)) + target
    return {"input_ids": ids, "labels": labels}


class ListwiseScorer:
    """Letter-logit scores of candidate lists for one model/tokenizer/template.

    Args:
        model: ``*ForCausalLM`` or peft model.
        tokenizer: its tokenizer.
        template: a ``task: listwise`` template (default ``rerank-listwise``) with variables
            ``history`` (list of titles, oldest first) and ``candidates`` (list of ``{letter, title}``).
        max_history: only the most recent titles go into the prompt (LlamaRec: 20).
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native).

    Raises:
        ValueError: the template is not listwise, or its letters are not distinct single tokens.
    """

    def __init__(self, model: Any, tokenizer: Any, template: Template | str | None = None, *, max_history: int = 10,
                 dtype: str = "auto", batch_tokens: int = 8192) -> None:
        template = resolve_template(template, DEFAULT_LISTWISE_TEMPLATE, "listwise", max_history, "ListwiseScorer")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_history, self.dtype, self.batch_tokens = int(max_history), dtype, int(batch_tokens)
        self.letters = list(template.verbalizer)
        probe = self.render(["x"], ["y"] * len(self.letters))
        self.verbalizer = single_token_verbalizer(template, tokenizer, probe)

    @property
    def max_candidates(self) -> int:
        return len(self.letters)

    def render(self, history: Sequence[str], candidates: Sequence[str]) -> str:
        """Prompt text for history titles and candidate titles (in presentation order).

        Raises:
            ValueError: no history, no candidates, or more candidates than letters.
        """
        if len(history) == 0:
            raise ValueError("history is empty: the listwise prompt needs at least one watched title")
        if len(candidates) == 0:
            raise ValueError("no candidates to rerank")
        if len(candidates) > len(self.letters):
            raise ValueError(f"{len(candidates)} candidates, but template {self.template.name} labels at most "
                             f"{len(self.letters)} ({self.letters[0]}..{self.letters[-1]})")
        cands = [{"letter": l, "title": t} for l, t in zip(self.letters, candidates)]
        return self.template.render({"history": list(history)[-self.max_history:], "candidates": cands},
                                    self.tokenizer)

    def encode(self, history: Sequence[str], candidates: Sequence[str]) -> list[int]:
        """Token ids of :meth:`render`'s prompt (ending right before the answer letter)."""
        text = self.render(history, candidates)
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens_for(self.template)).input_ids)

    def score_lists(self, lists: Sequence[tuple[Sequence[str], Sequence[str]]], progress: bool = False,
                    desc: str = "listwise") -> list[np.ndarray]:
        """Scores of many ``(history_titles, candidate_titles)`` lists.

        Returns:
            one float32 array ``(C_i,)`` per list: the logits of letters ``A..`` for its ``C_i``
            candidates at the answer position (higher = better), in presentation order.
        """
        from llmrec.model import check_context

        enc = [self.encode(h, c) for h, c in lists]
        check_context(self.model, [len(x) for x in enc], "listwise prompt")  # refused, never scored past it
        n_c = [len(c) for _, c in lists]
        W = max(n_c, default=0)
        logits = answer_logits(self.model, enc, self.verbalizer.token_ids[:W],
                               pad_id=self.tokenizer.pad_token_id or 0, dtype=self.dtype,
                               batch_tokens=self.batch_tokens, progress=progress, desc=desc)
        return [logits[i, :c].copy() for i, c in enumerate(n_c)]

    def training_example(self, history: Sequence[str], candidates: Sequence[str], target_pos: int,
                         loss_on: str = "answer", max_length: int = 2048) -> dict[str, list[int]]:
        """One training example whose answer is the letter of ``candidates[target_pos]``."""
        return listwise_training_example(self.encode(history, candidates), target_pos, self.verbalizer.target_ids,
                                         loss_on, max_length)
