"""Pointwise reranking with collaborative tokens (issue 15; LLaRA, Liao et al. SIGIR 2024; CoLLM, Zhang et al.
TKDE): P(Yes) that a user watches a candidate next, from a prompt whose items are collaborative tokens
(``rerank-pointwise-tokens``) or titles followed by their tokens (``rerank-pointwise-hybrid``).

The scorer works on **item ids** (the catalogue's strings), not titles: a token needs the id, the title is
looked up (``title`` callable). Prompts of one user differ only from the target on, so the user's candidates
share everything before it: the split point is the longest common prefix of the users' *token ids*
(:func:`llmrec.scoring.prefix.common_prefix_length`), so prefix + suffix is exactly the full prompt and
prefix-shared scoring equals full-prompt scoring up to float rounding (no re-tokenisation at a text
boundary). Several users go through one :func:`llmrec.scoring.prefix.score_users` call.

Training (:func:`pointwise_id_pairs` + :func:`llmrec.rerank.train.train_pointwise`): the same Yes/No pairs as
the text reranker (target = Yes, the retriever's hard negatives = No), encoded with slot ids; the model is
:func:`llmrec.collab.train.attach`'s peft model, so LoRA and the projector train together through the
Trainer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from llmrec.model import Verbalizer, check_context, verbalizer_for
from llmrec.prompts.collab_syntax import has_markers
from llmrec.rerank.lm import add_special_tokens_for, resolve_template

from .tokens import SlotTable, encode_with_tokens

__all__ = ["CollabRerankScorer", "DEFAULT_COLLAB_RERANK_TEMPLATE", "COLLAB_RERANK_TEMPLATES"]

DEFAULT_COLLAB_RERANK_TEMPLATE = "rerank-pointwise-tokens"
#: Built-in reranking templates with collaborative tokens: token only, title + token, token + interaction token.
COLLAB_RERANK_TEMPLATES = ("rerank-pointwise-tokens", "rerank-pointwise-hybrid", "rerank-pointwise-match")


class CollabRerankScorer:
    """Yes/No log-odds of candidate items given a history, with collaborative tokens in the prompt.

    Args:
        model: causal LM (or peft model) with collaborative tokens installed (:func:`llmrec.collab.tokens.install`).
        tokenizer: its tokenizer.
        slots: the :class:`~llmrec.collab.tokens.SlotTable` of that model.
        title: item id (str) -> title, for templates that show titles (``history`` / ``target``).
        template: ``task: pointwise`` template over ``history_ids`` / ``target_id`` (and optionally ``history`` /
            ``target`` titles) that places the target last; default ``rerank-pointwise-tokens``.
        max_history: most recent history items kept in the prompt (>= 1).
        dtype: scoring precision (:mod:`llmrec.precision`).
        users_per_call: users packed into one :func:`~llmrec.scoring.prefix.score_users` call.

    Attributes:
        takes_ids: True: :meth:`score_lists` takes item ids (callers pass ids, not titles).
        max_candidates: None (pointwise: any number of candidates).

    Raises:
        ValueError: a template of another task, one that renders no collaborative token, or ``max_history`` < 1.
    """

    takes_ids = True
    max_candidates = None

    def __init__(self, model: Any, tokenizer: Any, slots: SlotTable, title: Callable[[str], str],
                 template: Any = None, *, max_history: int = 10, dtype: str = "auto", users_per_call: int = 16) -> None:
        template = resolve_template(template, DEFAULT_COLLAB_RERANK_TEMPLATE, "pointwise", max_history,
                                    "reranking with collaborative tokens")
        self.model, self.tokenizer, self.slots, self.title = model, tokenizer, slots, title
        self.template, self.max_history, self.dtype = template, int(max_history), dtype
        self.users_per_call = max(1, int(users_per_call))
        probe_item = slots.collab.catalog_items[0]
        text = self.render([probe_item], probe_item)
        if not has_markers(text):
            raise ValueError(f"template {template.name}: renders no collaborative token (item_token / user_token); "
                             f"use the text reranker (PointwiseRerankScorer) for it")
        self.verbalizer: Verbalizer = verbalizer_for(template, tokenizer, text)

    def render(self, history_ids: Sequence[str], target_id: str) -> str:
        """The prompt text (with markers) for one candidate.

        Raises:
            ValueError: empty history.
        """
        if len(history_ids) == 0:
            raise ValueError("history is empty: the pointwise prompt needs at least one item")
        h = [str(i) for i in history_ids][-self.max_history:]
        return self.template.render({"history_ids": h, "history": [self.title(i) for i in h],
                                     "target_id": str(target_id), "target": self.title(str(target_id))},
                                    self.tokenizer)

    def encode_many(self, history_ids: Sequence[str], target_ids: Sequence[str]) -> list[list[int]]:
        """Token ids (slot ids at the markers) of one user's prompts, one per target.

        Raises:
            KeyError: an item the collaborative model does not know. ValueError: empty history, a prompt past
                the model's context.
        """
        h = [str(i) for i in history_ids][-self.max_history:]
        texts = [self.render(h, t) for t in target_ids]
        ids = encode_with_tokens(self.tokenizer, texts, [h] * len(texts), self.slots,
                                 add_special_tokens=add_special_tokens_for(self.template))
        check_context(self.model, [len(x) for x in ids])
        return ids

    def encode(self, history_ids: Sequence[str], target_id: str) -> list[int]:
        """Token ids of one prompt (what :func:`llmrec.rerank.train.train_pointwise` encodes pairs with)."""
        return self.encode_many(history_ids, [target_id])[0]

    def _split(self, history_ids: Sequence[str], candidate_ids: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        ids = self.encode_many(history_ids, candidate_ids)
        from llmrec.scoring.prefix import common_prefix_length

        # every suffix keeps at least its last token (the answer position)
        cut = min(common_prefix_length(ids), min(len(x) for x in ids) - 1)
        return ids[0][:cut], [x[cut:] for x in ids]

    def score(self, history_ids: Sequence[str], candidate_ids: Sequence[str]) -> np.ndarray:
        """float64 ``(C,)`` log-odds ``log P(Yes) - log P(No)`` per candidate, in input order.

        Raises:
            ValueError: empty history or no candidates; KeyError: unknown item.
        """
        return self.score_lists([(history_ids, candidate_ids)])[0]

    def probs_lists(self, lists: Sequence[tuple[Sequence[str], Sequence[str]]], progress: bool = False,
                    desc: str = "collab pointwise") -> list[np.ndarray]:
        """Verbalizer probabilities of many ``(history_ids, candidate_ids)`` lists, ``users_per_call`` users per
        prefix-shared forward.

        Returns:
            per list, float64 ``(C, 2)``: ``[:, 0]`` = P(Yes), ``[:, 1]`` = P(No) (softmax over the whole
            vocabulary at the answer position), candidates in input order.

        Raises:
            ValueError: empty history or no candidates; KeyError: an item the collaborative model does not know.
        """
        from llmrec.scoring.prefix import score_users

        for h, c in lists:
            if len(c) == 0:
                raise ValueError("no candidates to rerank")
        out: list[np.ndarray] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(lists), desc=desc, unit="user")
        for i in range(0, len(lists), self.users_per_call):
            chunk = [self._split(h, c) for h, c in lists[i:i + self.users_per_call]]
            probs = score_users(self.model, chunk, self.verbalizer.token_ids[:2], dtype=self.dtype,
                                pad_id=self.tokenizer.pad_token_id or 0)
            out += [np.asarray(p, np.float64) for p in probs]
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out

    def score_lists(self, lists: Sequence[tuple[Sequence[str], Sequence[str]]], progress: bool = False,
                    desc: str = "collab pointwise") -> list[np.ndarray]:
        """:meth:`score` for many ``(history_ids, candidate_ids)`` lists (:meth:`probs_lists`).

        Returns:
            per list, float64 ``(C,)`` log-odds ``log P(Yes) - log P(No)``.
        """
        out = []
        for p in self.probs_lists(lists, progress, desc):
            p = np.clip(p, 1e-12, 1.0)
            out.append(np.log(p[:, 0]) - np.log(p[:, 1]))
        return out
