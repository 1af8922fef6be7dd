"""Alpaca-style instruction records (``instruction``/``input``/``output``), as TALLRec publishes its splits.

A file is one JSON array of objects; TALLRec writes it with ``json.dump(records, f, indent=4)``
(ASCII-escaped), which :func:`write_alpaca_json` reproduces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ALPACA_KEYS", "validate_alpaca_records", "read_alpaca_json", "write_alpaca_json", "answer_label",
           "require_both_classes"]

ALPACA_KEYS = ("instruction", "input", "output")


def answer_label(output: str, answers: tuple[str, str] = ("Yes.", "No.")) -> int:
    """1 for the positive answer, 0 for the negative one.

    Raises:
        ValueError: ``output`` is neither (the message names both expected answers).
    """
    if output == answers[0]:
        return 1
    if output == answers[1]:
        return 0
    raise ValueError(f"output {output!r} is neither {answers[0]!r} nor {answers[1]!r}")


def require_both_classes(labels, source: str, answers: tuple[str, str] = ("Yes.", "No.")) -> None:
    """Refuse labels that cannot give an AUC (checked before any model loads): some unlabelled (-1), or one
    class only.

    Raises:
        ValueError: ``"{source}: AUC needs both classes: all 12 records are 'Yes.'"`` or ``"... 3 of 12 records
            have no label"``.
    """
    labels = [int(x) for x in labels]
    if not labels:
        raise ValueError(f"{source}: no records to evaluate")
    missing = sum(1 for x in labels if x < 0)
    if missing:
        raise ValueError(f"{source}: AUC needs a label on every record, but {missing} of {len(labels)} records have "
                         f"no {answers[0]!r}/{answers[1]!r} output (score them with `llmrec score --input`)")
    if len(set(labels)) < 2:
        only = answers[0] if labels[0] == 1 else answers[1]
        raise ValueError(f"{source}: AUC needs both classes, but all {len(labels)} records are {only!r}")


def validate_alpaca_records(records: object, source: str = "records", *,
                            answers: tuple[str, str] | None = ("Yes.", "No."),
                            unlabelled: bool = False) -> list[dict]:
    """Check a list of alpaca records and return them as ``list[dict]`` with an added int ``label``.

    Args:
        records: the decoded JSON (must be a list of objects with string ``instruction``, ``input``,
            ``output``; extra keys are kept).
        source: name used in error messages (a file name).
        answers: ``(positive, negative)`` outputs; ``label`` is 1/0 from them. None: no label, any output.
        unlabelled: records to score, not to evaluate: ``output`` may be missing or empty (whitespace
            only); such records get ``label`` -1 (and ``output`` ``""``).

    Raises:
        ValueError: not a list; record *i* not an object, missing key *k*, a non-string value, or an
            output that is not one of ``answers`` (the message names the source, index and key).
    """
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON array of records, got {type(records).__name__}")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{source}: record {i} is a {type(rec).__name__}, not an object")
        if unlabelled and (rec.get("output") is None or (isinstance(rec.get("output"), str)
                                                          and not rec["output"].strip())):
            rec = {**rec, "output": ""}
        for k in ALPACA_KEYS:
            if k not in rec:
                raise ValueError(f"{source}: record {i} is missing key {k!r} (has {sorted(rec)})")
            if not isinstance(rec[k], str):
                raise ValueError(f"{source}: record {i} key {k!r} is a {type(rec[k]).__name__}, not a string")
        rec = dict(rec)
        if answers is not None and unlabelled and not rec["output"]:
            rec["label"] = -1
        elif answers is not None:
            try:
                rec["label"] = answer_label(rec["output"], answers)
            except ValueError as e:
                raise ValueError(f"{source}: record {i}: {e}") from None
        out.append(rec)
    return out


def read_alpaca_json(path: str | os.PathLike, *, answers: tuple[str, str] | None = ("Yes.", "No."),
                     unlabelled: bool = False) -> list[dict]:
    """Read and validate an alpaca JSON file (see :func:`validate_alpaca_records`).

    Returns:
        ``list[dict]`` with keys ``instruction``, ``input``, ``output`` (str) and ``label`` (int 0/1,
        -1 for an unlabelled record when ``unlabelled``; absent when ``answers`` is None), in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 (names the file and byte offset), invalid JSON (names the file, line and column)
            or an invalid record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alpaca JSON file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        NL = b"\n"
        raise ValueError(f"{path.name}: not valid UTF-8 JSON: byte 0x{raw[e.start:e.start + 1].hex()} at offset "
                         f"{e.start} (line {raw.count(NL, 0, e.start) + 1}); save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return validate_alpaca_records(data, path.name, answers=answers, unlabelled=unlabelled)


def write_alpaca_json(records: list[dict], path: str | os.PathLike) -> Path:
    """Write records (only their ``instruction``/``input``/``output`` keys) as TALLRec does
    (``json.dump(..., indent=4)``, ASCII-escaped). Returns the path.

    Raises:
        ValueError: a record is invalid (see :func:`validate_alpaca_records`, any output allowed).
    """
    path = Path(path)
    recs = validate_alpaca_records(records, str(path.name), answers=None)
    slim = [{k: r[k] for k in ALPACA_KEYS} for r in recs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(slim, f, indent=4)
    return path
