"""Render samples and alpaca records through a :class:`~llmrec.prompts.template.Template`.

The render context of a sample is :func:`prompt_variables` (``template_variables`` without ``label``: the
answer never reaches the prompt); the one implementation used by the scorer, training and ``llmrec prompts``.
A pointwise *reranking* template (:func:`is_rerank_template`) sees what the rerankers give it instead
(:func:`rerank_variables`: the history's titles and ids, the target's title and id) everywhere samples are
rendered (:func:`sample_variables`), so ``llmrec prompts render/lint/diff/eval`` show, check and score it on the same
samples.
"""

from __future__ import annotations

from typing import Any, Sequence

from llmrec.prompts.template import Template, TemplateRenderError
from llmrec.samples.tallrec import Sample, template_variables

__all__ = ["prompt_variables", "sample_variables", "render_samples", "render_alpaca", "render_one",
           "RERANK_POINTWISE_VARIABLES", "is_rerank_template", "rerank_variables"]

#: What a pointwise reranker gives its template (:meth:`llmrec.rerank.PointwiseRerankScorer.render` reads ``history``
#: and ``target``; :meth:`llmrec.collab.rerank.CollabRerankScorer.render` all four).
RERANK_POINTWISE_VARIABLES = frozenset({"history", "history_ids", "target", "target_id"})

#: History items a reranker shows by default (``max_history`` of the rerank scorers).
RERANK_MAX_HISTORY = 10


def is_rerank_template(template: Template) -> bool:
    """Whether a template is written for reranking (:mod:`llmrec.rerank`) rather than for TALLRec samples: a
    listwise one, one named ``rerank-*`` (the built-in convention), or one declaring ``history_ids`` in its header's
    ``variables`` (the collaborative-token rerankers' variable)."""
    return template.task == "listwise" or template.name.startswith("rerank-") or "history_ids" in template.variables


def rerank_variables(sample: Sample, catalog, max_history: int = RERANK_MAX_HISTORY) -> dict:
    """The render context a pointwise reranker builds for a sample's history and target (as
    :meth:`llmrec.collab.rerank.CollabRerankScorer.render` does): ``history`` = the last ``max_history`` history
    titles (oldest first, plain strings, no rating), ``history_ids`` = their item ids, ``target`` = the target's title,
    ``target_id``. The label and the ratings never reach it."""
    v = template_variables(sample, catalog)
    hist = v["history"][-max_history:] if max_history > 0 else []
    return {"history": [h["title"] for h in hist], "history_ids": [str(h["item_id"]) for h in hist],
            "target": v["target"], "target_id": str(v["target_id"])}


def prompt_variables(sample: Sample, catalog) -> dict:
    """The render context of a sample: ``template_variables`` without ``label`` (the answer never reaches the
    prompt)."""
    v = template_variables(sample, catalog)
    v.pop("label", None)
    return v


def sample_variables(template: Template, sample: Sample, catalog) -> dict:
    """The render context ``template`` gets for ``sample``: :func:`rerank_variables` for a reranking template
    (:func:`is_rerank_template`), else :func:`prompt_variables`. The one choice used by every renderer."""
    return rerank_variables(sample, catalog) if is_rerank_template(template) else prompt_variables(sample, catalog)


def _render(template: Template, sample: Sample, catalog, tokenizer: Any) -> str:
    try:
        return template.render(sample_variables(template, sample, catalog), tokenizer)
    except TemplateRenderError as e:
        if not is_rerank_template(template) or "is undefined" not in str(e):
            raise
        raise TemplateRenderError(
            f"{e} (template {template.name} is a reranking template, named rerank-* or declaring history_ids: it "
            f"gets only {', '.join(sorted(RERANK_POINTWISE_VARIABLES))}, as the rerankers give them)") from e


def render_samples(template: Template, samples: Sequence[Sample], catalog, tokenizer: Any = None) -> list[str]:
    """Prompt texts (ending at the answer) for samples, each rendered with :func:`sample_variables`.

    Raises:
        TemplateRenderError: naming the template (and, for a reranking template reading a variable it does not
            get, the variables it does get)."""
    return [_render(template, s, catalog, tokenizer) for s in samples]


def render_alpaca(template: Template, records: Sequence[dict], tokenizer: Any = None) -> list[str]:
    """Prompt texts for alpaca records (``instruction``/``input``), wrapped in the template's format."""
    return [template.wrap(r["instruction"], r.get("input", ""), tokenizer) for r in records]


def render_one(template: Template, sample: Sample, catalog, tokenizer: Any = None) -> str:
    """The full prompt text of one sample (ends where the answer starts).

    Raises:
        TemplateRenderError: rendering failed (names template, line and cause).
        ValueError: ``format: chat`` without a tokenizer with a chat template; a listwise template.
    """
    if template.task != "pointwise":
        raise ValueError(f"template {template.name}: task {template.task!r} renders candidate lists "
                         f"(llmrec.rerank), not TALLRec samples")
    return _render(template, sample, catalog, tokenizer)
