"""What ``llmrec prompts`` does, callable without a CLI or a server.

* :mod:`llmrec.prompt_lab.render`: describe a template, token counts, diff two renderings;
* :mod:`llmrec.prompt_lab.lint`: variables, answer leaks, verbalizer tokens, prompt lengths;
* :mod:`llmrec.prompt_lab.compare`: A/B AUC of templates on the same samples, paired bootstrap CI;
* :mod:`llmrec.prompt_lab.playground`: a local web page to edit a template and see it live.

Templates themselves (format, sandbox, rendering) are :mod:`llmrec.prompts`; the commands are
:mod:`llmrec.cli.prompts`.
"""

from .compare import ES_VAL_SEED, compare_templates, eval_indices
from .lint import LEAK_VARIABLES, LISTWISE_VARIABLES, PROMPT_VARIABLES, Finding, LintReport, lint_template
from .render import describe, diff_renderings, token_lengths

__all__ = ["describe", "token_lengths", "diff_renderings", "PROMPT_VARIABLES", "LEAK_VARIABLES",
           "LISTWISE_VARIABLES", "Finding", "LintReport", "lint_template", "ES_VAL_SEED", "eval_indices",
           "compare_templates"]
