"""Atomic writes: build a folder (or file) next to its destination, then swap it in.

A crash or an error while writing leaves the previous folder untouched (nothing half-written is ever
at the destination); used by :func:`llmrec.adapter.save_adapter` and :meth:`llmrec.recommender.Recommender.save`;
:func:`write_json_atomic` is the one atomic JSON file writer (CLI outputs, eval results, run fingerprints).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_dir", "check_replaceable", "write_json_atomic", "write_text_atomic"]


def check_replaceable(out: str | os.PathLike, marker: str, what: str) -> None:
    """Refuse to overwrite anything but an earlier output of the same kind.

    ``out`` may be missing, an empty folder, or a folder holding ``marker`` (the file every output of
    this kind has, e.g. ``manifest.json`` for an index): those are replaced. Anything else is a user's
    folder that a save would wipe.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder without ``marker``.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a {what} folder: choose another output folder")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise FileExistsError(f"{out} is not empty and holds no {marker}, so it is not a {what} written by "
                              f"llmrec: refusing to replace it (choose a new or empty folder)")


@contextmanager
def atomic_dir(out: str | os.PathLike, marker: str | None = None, what: str = "output") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on a clean exit it replaces ``out`` (an existing
    folder is moved aside first and removed after the swap); on an exception it is deleted and ``out`` is
    left as it was. With ``marker``, :func:`check_replaceable` guards ``out`` first (and again just before
    the swap).

    Raises:
        FileExistsError: from :func:`check_replaceable`.
    """
    out = Path(out)
    if marker is not None:
        check_replaceable(out, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result should be an ordinary folder
    try:
        yield tmp
        if marker is not None:
            check_replaceable(out, marker, what)
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


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` through a sibling temporary file and :func:`os.replace`, so a reader
    never sees a half-written file (numpy scalars and other numbers are written with ``float``)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=indent, default=float))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a sibling temporary file and :func:`os.replace` (as
    :func:`write_json_atomic`): an interrupted write never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
