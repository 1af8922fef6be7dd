"""Load any saved retriever: the class is read from its ``config.json`` (one registry of retriever classes;
the retrievers import :mod:`.base`, this module imports them, nothing imports back)."""

from __future__ import annotations

from pathlib import Path

from . import baselines, fusion, sasrec
from .base import Retriever, _read_config

__all__ = ["load_retriever"]


def load_retriever(directory: str | Path) -> Retriever:
    """Load any retriever saved by :meth:`Retriever.save`, picking the class from its ``config.json``.

    Raises:
        FileNotFoundError: ``config.json`` missing.
        ValueError: the saved class is not a known llmrec retriever.
    """
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"retriever folder {d}: config.json not found")
    name = _read_config(d).get("class")
    classes = {c.__name__: c for c in (baselines.Popularity, baselines.Transitions, baselines.EASE, sasrec.SASRec,
                                       fusion.Fusion)}
    if name not in classes:
        raise ValueError(f"retriever folder {d}: unknown class {name!r} (known: {', '.join(sorted(classes))})")
    return classes[name].load(d)
