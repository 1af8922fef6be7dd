"""Pointwise reranking, TALLRec style (Bao et al., RecSys 2023): one Yes/No prompt per (user, candidate),
score = log-odds ``log P(Yes) - log P(No)`` from the two verbalizer logits at the answer position.

Every prompt of one user is the same history prefix followed by a short candidate suffix, so the
prefix is computed once per user with :func:`llmrec.scoring.prefix.score_candidates` (Hydragen-style
shared-prefix attention) when that module is present and the prefix/suffix token boundary is clean;
otherwise the full prompts go through :func:`llmrec.scoring.score_encoded`. Both give the same scores up
to float rounding.

The template must render the target once, after the history (``rerank-pointwise`` does): the text
before the target (backed off to the preceding whitespace, a safe BPE boundary) is the shared prefix.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmrec.model import Verbalizer, verbalizer_for
from llmrec.prompts import Template
from llmrec.rerank.lm import add_special_tokens_for, resolve_template
from llmrec.scoring.logits import score_encoded

__all__ = ["PointwiseRerankScorer", "DEFAULT_POINTWISE_TEMPLATE", "prefix_scoring_available"]

DEFAULT_POINTWISE_TEMPLATE = "rerank-pointwise"
_SENTINEL = "\u241fLLMREC_TARGET\u241f"


def prefix_scoring_available() -> bool:
    """True when :mod:`llmrec.scoring.prefix` (shared-prefix scoring) can be imported."""
    try:
        from llmrec.scoring.prefix import score_candidates  # noqa: F401
    except ImportError:
        return False
    return True


class PointwiseRerankScorer:
    """Yes/No log-odds of candidates given a history, prefix shared across one user's candidates.

    Args:
        model, tokenizer: causal LM (or peft model) and its tokenizer.
        template: ``task: pointwise`` template with variables ``history`` (titles) and ``target``
            (default ``rerank-pointwise``).
        max_history: most recent titles kept in the prompt.
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native).
        use_prefix: use shared-prefix scoring when available (False: full prompts).

    Raises:
        ValueError: the template is not pointwise.
    """

    def __init__(self, model: Any, tokenizer: Any, template: Template | str | None = None, *, max_history: int = 10,
                 dtype: str = "auto", use_prefix: bool = True, batch_tokens: int = 8192) -> None:
        template = resolve_template(template, DEFAULT_POINTWISE_TEMPLATE, "pointwise", max_history,
                                    "pointwise reranking")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_history, self.dtype, self.batch_tokens = int(max_history), dtype, int(batch_tokens)
        self.use_prefix = bool(use_prefix) and prefix_scoring_available()
        self.verbalizer: Verbalizer = verbalizer_for(template, tokenizer, self.render(["x"], "y"))
        self.prefix_used = 0  # users scored with the shared prefix (for reports)

    def render(self, history: Sequence[str], target: str) -> str:
        if len(history) == 0:
            raise ValueError("history is empty: the pointwise prompt needs at least one watched title")
        return self.template.render({"history": list(history)[-self.max_history:], "target": target}, self.tokenizer)

    def encode(self, history: Sequence[str], target: str) -> list[int]:
        return list(self.tokenizer(self.render(history, target),
                                   add_special_tokens=add_special_tokens_for(self.template)).input_ids)

    def split(self, history: Sequence[str], candidates: Sequence[str]) -> tuple[str, list[str]] | None:
        """``(prefix_text, suffix_texts)`` with ``prefix + suffix_i == render(history, candidates[i])``,
        or None when the template does not place the target once at a splittable point."""
        text = self.render(history, _SENTINEL)
        if text.count(_SENTINEL) != 1:
            return None
        at = text.index(_SENTINEL)
        cut = max(text.rfind(" ", 0, at), text.rfind("\n", 0, at))
        if cut <= 0:
            return None
        prefix, tail = text[:cut], text[cut:]
        return prefix, [tail.replace(_SENTINEL, c) for c in candidates]

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """float64 ``(C,)`` log-odds ``log P(Yes) - log P(No)`` per candidate, in input order.

        Raises:
            ValueError: empty history or no candidates.
        """
        if len(candidates) == 0:
            raise ValueError("no candidates to rerank")
        probs = None
        parts = self.split(history, candidates) if self.use_prefix else None
        if parts is not None:
            from llmrec.scoring.prefix import score_candidates, split_prompts

            try:
                p_ids, s_ids = split_prompts(self.tokenizer, parts[0], parts[1],
                                             add_special_tokens=add_special_tokens_for(self.template))
            except ValueError:
                p_ids = None
            if p_ids:
                probs = score_candidates(self.model, p_ids, s_ids, self.verbalizer.token_ids[:2], dtype=self.dtype,
                                         pad_id=self.tokenizer.pad_token_id or 0)
                self.prefix_used += 1
        if probs is None:
            enc = [self.encode(history, c) for c in candidates]
            probs = score_encoded(self.model, enc, self.verbalizer.token_ids[:2],
                                  pad_id=self.tokenizer.pad_token_id or 0, dtype=self.dtype,
                                  batch_tokens=self.batch_tokens)
        p = np.clip(probs, 1e-12, 1.0)
        return np.log(p[:, 0]) - np.log(p[:, 1])

    def score_lists(self, lists: Sequence[tuple[Sequence[str], Sequence[str]]], progress: bool = False,
                    desc: str = "pointwise") -> list[np.ndarray]:
        """:meth:`score` for many ``(history_titles, candidate_titles)`` lists (one prefix pass each)."""
        it = lists
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(lists, desc=desc, unit="user")
        return [self.score(h, c) for h, c in it]
