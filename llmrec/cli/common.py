"""What the ``llmrec`` command modules share: options, :class:`CliError`, and the one place that maps
library errors (which name Python arguments: ``learning_rate 0.0: must be > 0``) to the flags a user
typed (``--lr 0.0: must be > 0``).

Imported by the command modules; imports no other CLI module.
"""

from __future__ import annotations

from typing import Mapping, Optional

import typer

from llmrec.assets import MODELS
from llmrec.model import DEFAULT_BASE_MODEL

__all__ = ["CliError", "FLAGS", "flag_error", "default", "at_least", "check_dtype", "DataOpt", "PromptsOpt", "BaseOpt"]


class CliError(Exception):
    """A user error reported as one line."""


#: The Python name a library error message starts with (``"learning_rate 0.0: ..."``) -> the flag that sets
#: it. The one table: commands whose flag differs for the same name (``k``) pass ``flag_error`` an override.
FLAGS = {
    "epochs": "--epochs", "learning_rate": "--lr", "batch_size": "--batch-size", "loss_on": "--loss-on",
    "patience": "--patience", "precision": "--precision", "lr_scheduler": "--lr-scheduler",
    "warmup_ratio": "--warmup-ratio", "lora rank": "--lora-rank", "lora alpha": "--lora-alpha",
    "lora dropout": "--lora-dropout", "lora target_modules": "--target-modules", "seed": "--seed",
    "base_model": "--base-model", "split": "--split", "user": "--user", "target": "--target", "n": "--n",
    "shots": "--shots", "prompts": "--prompts", "start_template": "--template", "dtype": "--dtype",
    "max_length": "--max-length", "allow_base_mismatch": "--allow-base-mismatch",
}


def flag_name(msg: str, overrides: Optional[Mapping[str, str]] = None) -> str:
    """``msg`` with its Python argument names replaced by their flags: a leading name (followed by a space,
    ``=`` or ``:``), and inside the message ``(name)`` (where a value came from) and ``pass name=``."""
    table = {**FLAGS, **(overrides or {})}
    for name in sorted(table, key=len, reverse=True):  # "lora target_modules" before a shorter name
        msg = msg.replace(f"({name})", f"({table[name]})").replace(f"pass {name}=", f"pass {table[name]}")
    for name in sorted(table, key=len, reverse=True):
        if msg.startswith(name) and msg[len(name):len(name) + 1] in (" ", "=", ":"):
            rest = msg[len(name):]
            return table[name] + (" " + rest[1:] if rest[0] == "=" else rest)
    return msg


def flag_error(e: Exception, overrides: Optional[Mapping[str, str]] = None) -> CliError:
    """``e`` as a :class:`CliError` whose message names the CLI flag instead of the library's argument name
    (see :data:`FLAGS`; ``overrides`` maps names whose flag differs in one command, e.g. ``{"k": "--shots"}``).
    A message with no known prefix is kept as it is."""
    return CliError(flag_name(str(e), overrides))


def default(settings: type, name: str):
    """The default of field ``name`` of a settings dataclass (:class:`llmrec.train.TrainSettings`,
    :class:`llmrec.model.LoraSettings`): command options read their defaults here, so each lives once."""
    import dataclasses

    f = {x.name: x for x in dataclasses.fields(settings)}[name]
    if f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        return ",".join(v) if isinstance(v, (list, tuple)) else v
    return f.default


def at_least(flag: str, value: int, minimum: int, why: str = "") -> None:
    """Refuse ``value`` below ``minimum``, naming the flag: ``--seed -1: must be >= 0``."""
    if value < minimum:
        raise CliError(f"{flag} {value}: must be >= {minimum}" + (f" ({why})" if why else ""))


def check_dtype(dtype: str) -> None:
    """Fail fast (before a model loads) on a ``--dtype`` the scorer would refuse after loading it."""
    from llmrec.precision import NAMES

    if dtype not in NAMES:
        raise CliError(f"--dtype {dtype!r}: expected one of {', '.join(NAMES)}")


DataOpt = typer.Option(None, "--data", help="Dataset folder (GroupLens raw, RecBole atomic or MovieLens CSV); "
                                            "default: the embedded MovieLens-100K.")
PromptsOpt = typer.Option(None, "--prompts", help="Extra template folder(s), searched before the built-ins.")
BaseOpt = typer.Option(DEFAULT_BASE_MODEL, "--base-model", help=f"Embedded model name ({', '.join(MODELS)}), local "
                                                               "folder or HF id.")
