"""The ``llmrec`` app (also ``python -m llmrec``): registers the command groups and prints errors.

Every subcommand has ``--help``. Bad input ends with a one-line ``llmrec: error: ...`` naming the flag and
value (library messages name Python arguments; :func:`llmrec.cli.common.flag_name` maps them), and exit
code 2; nothing saved before is touched. The only CLI module that imports the others.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from llmrec.cli import prompts, rec, serve, tallrec
from llmrec.cli.common import CliError, flag_name

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Few-shot LLM recommender: LoRA-tuned verbalizer scoring (TALLRec protocol).")
tallrec.register(app)
serve.register(app)
rec.register(app)
serve.register(app)
app.add_typer(prompts.app, name="prompts", help="List, show, render, lint, diff and A/B-evaluate templates.")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the CLI; known user errors become one line on stderr and exit code 2."""
    from llmrec.adapter import AdapterError
    from llmrec.assets import AssetError
    from llmrec.prompts import TemplateError, TemplateRenderError

    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (CliError, AdapterError, AssetError, TemplateError, TemplateRenderError, FileNotFoundError,
            KeyError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"llmrec: error: {flag_name(msg)}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("llmrec: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors (typer may bundle its own click: match by shape, not class)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        raise
