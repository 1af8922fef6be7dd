"""The ``llmrec`` command line (also ``python -m llmrec``).

Modules: :mod:`~llmrec.cli.main` (the app: registers the command groups, prints errors),
:mod:`~llmrec.cli.common` (shared options, :class:`~llmrec.cli.common.CliError`, the one table mapping
library argument names to flags), :mod:`~llmrec.cli.tallrec` (``data``, ``train``, ``score``, ``eval``),
:mod:`~llmrec.cli.rec` (``index``, ``recommend``) and :mod:`~llmrec.cli.prompts` (``prompts ...``).
"""

from llmrec.cli.main import app, main

__all__ = ["app", "main"]
