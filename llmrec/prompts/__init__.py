"""Prompt templates: the file format, the Jinja2 sandbox and rendering (the foundation, no tooling).

* :mod:`llmrec.prompts.template`: :class:`Template` (YAML front matter + sandboxed Jinja2 body), the search
  path (``--prompts`` folders, ``$LLMREC_PROMPTS``, the built-ins shipped as ``llmrec.prompt_files``);
* :mod:`llmrec.prompts.render`: samples and alpaca records -> prompt texts.

The tooling around templates (``llmrec prompts``: render/diff, lint, A/B compare, playground) is
:mod:`llmrec.prompt_lab`.
"""

from .render import (RERANK_POINTWISE_VARIABLES, is_rerank_template, prompt_variables, render_alpaca, render_one,
                     render_samples, rerank_variables, sample_variables)
from .template import (ALPACA_WRAPPER, EncodedPrompt, Template, TemplateError, TemplateRenderError,
                       builtin_template_dir, list_templates, load_template)

__all__ = ["Template", "TemplateError", "TemplateRenderError", "EncodedPrompt", "ALPACA_WRAPPER",
           "builtin_template_dir", "list_templates", "load_template", "prompt_variables", "render_samples",
           "render_alpaca", "render_one", "RERANK_POINTWISE_VARIABLES", "is_rerank_template", "rerank_variables",
           "sample_variables"]
