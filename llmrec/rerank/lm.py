"""Shared LM plumbing for the rerankers: raw verbalizer logits at the answer position, letter/word
token ids checked under the tokenizer, and template rendering helpers.

Only the verbalizer rows of the LM head are applied (``hidden @ W[ids].T``,
:func:`llmrec.scoring.verbalizer_logits`), never the full vocabulary, and only at the last prompt token.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from llmrec.model import Verbalizer, verbalizer_for
from llmrec.scoring.logits import answer_logits  # re-exported: the rerankers' raw letter/word logits

__all__ = ["answer_logits", "single_token_verbalizer", "add_special_tokens_for", "resolve_template",
           "score_shuffled"]


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




def resolve_template(template: Any, default: str, task: str, max_history: int, who: str) -> Any:
    """The rerankers' shared constructor checks: load ``template`` (a Template, a name/path, or None for
    ``default``), require ``template.task == task`` and ``max_history >= 1``.

    Raises:
        ValueError: wrong task (names the template and ``who``), or ``max_history`` < 1.
    """
    from llmrec.prompts import Template, load_template

    template = template if isinstance(template, Template) else load_template(template or default)
    if template.task != task:
        raise ValueError(f"template {template.name}: task {template.task!r}, {who} needs {task!r}")
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    return template


def presentation_orders(sizes: Sequence[int], seed: int, *, per_list: bool = False) -> list[np.ndarray]:
    """Seeded random presentation orders of candidate lists (no position cue from the retriever).

    ``per_list=False`` (evaluation): one generator ``default_rng(seed)``, one permutation drawn per list in
    list order, so users get different orders. ``per_list=True`` (:class:`~llmrec.rerank.reranker.Reranker`):
    every list gets ``default_rng(seed).permutation(size)``, so a list's order does not depend on the other
    lists of a batch (``rerank_batch`` equals one ``rerank`` per user).
    """
    if per_list:
        return [np.random.default_rng(seed).permutation(n) for n in sizes]
    g = np.random.default_rng(seed)
    return [g.permutation(n) for n in sizes]


def score_presented(scorer: Any, lists: Sequence[tuple[Sequence[str], Sequence[Any]]], perms: Sequence[np.ndarray],
                    title: Callable[[Any], str], **kw) -> list[np.ndarray]:
    """Score candidate lists shown in the orders ``perms`` and map the scores back to the given order: the one
    implementation of shuffled presentation (:func:`score_shuffled`, :meth:`Reranker.scores_many
    <llmrec.rerank.reranker.Reranker.scores_many>`).

    Args:
        scorer: anything with ``score_lists(lists, **kw)`` (listwise or pointwise rerank scorer).
        lists: ``(history, candidates)`` per user, items as ``title`` accepts them.
        perms: per list, the presentation order (a permutation of its candidates' positions).
        title: item -> the text shown in the prompt.

    Returns:
        per list, float64 ``(C,)``: ``out[c]`` is the score of ``candidates[c]``.
    """
    text = [([title(i) for i in h], [title(c[j]) for j in pm]) for (h, c), pm in zip(lists, perms)]
    out = []
    for pm, s in zip(perms, scorer.score_lists(text, **kw)):
        v = np.empty(len(pm), np.float64)
        v[pm] = s
        out.append(v)
    return out


def score_shuffled(scorer: Any, histories: Sequence[Sequence[int]], candidates: np.ndarray, seed: int,
                   title: Callable[[int], str], progress: bool = False, desc: str = "rerank") -> np.ndarray:
    """A reranker's scores of retrieved candidates shown in a seeded random order (no position cue from
    the retriever), mapped back to the retriever's order.

    Args:
        scorer: a :class:`~llmrec.rerank.listwise.ListwiseScorer` or pointwise scorer (``score_lists``).
        histories: per-user item indices, oldest first.
        candidates: int ``(n_users, C)`` item indices in retriever order.
        seed: seeds one permutation per user (drawn in user order; :func:`presentation_orders`).
        title: item index -> the text shown in the prompt.

    Returns:
        float64 ``(n_users, C)``: ``out[u, c]`` is the score of ``candidates[u, c]``.
    """
    perms = presentation_orders([candidates.shape[1]] * candidates.shape[0], seed)
    rows = score_presented(scorer, list(zip(histories, candidates)), perms, title, progress=progress, desc=desc)
    return np.stack(rows) if rows else np.zeros(candidates.shape, np.float64)
