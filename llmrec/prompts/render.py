"""Render samples and alpaca records through a :class:`~llmrec.prompts.template.Template`.

The render context of a sample is :func:`prompt_variables` (``template_variables`` without ``label``: the
answer never reaches the prompt); the one implementation used by the scorer, training and ``llmrec prompts``.
"""

from __future__ import annotations

from typing import Any, Sequence

from llmrec.prompts.template import Template
from llmrec.samples.tallrec import Sample, template_variables

__all__ = ["prompt_variables", "render_samples", "render_alpaca", "render_one"]


def prompt_variables(sample: Sample, catalog) -> dict:
    """The render context of a sample: ``template_variables`` without ``label`` (the answer never reaches the
    prompt)."""
    v = template_variables(sample, catalog)
    v.pop("label", None)
    return v


def render_samples(template: Template, samples: Sequence[Sample], catalog, tokenizer: Any = None) -> list[str]:
    """Prompt texts (ending at the answer) for samples. Raises TemplateRenderError naming the template."""
    return [template.render(prompt_variables(s, catalog), tokenizer) for s in samples]


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
    return template.render(prompt_variables(sample, catalog), tokenizer)
