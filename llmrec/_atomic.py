"""Atomic folder writes: build a folder next to its destination, then swap it in.

A crash or an error while writing leaves the previous folder untouched (nothing half-written is ever
at the destination); used by :func:`llmrec.adapter.save_adapter` and :meth:`llmrec.api.Recommender.save`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_dir"]


@contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on a clean exit it replaces ``out`` (an existing
    folder is moved aside first and removed after the swap); on an exception it is deleted and ``out`` is
    left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
