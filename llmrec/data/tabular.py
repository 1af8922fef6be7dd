"""Generic readers for the user's own data: an interactions file plus an optional item metadata file.

Interactions: a CSV (``,``), TSV (``\\t``, ``.tsv``/``.tab``) or JSON Lines (``.jsonl``, one object per line) file,
with a header (CSV/TSV) and a column mapping naming the user, item, rating *or* label, and (optionally)
timestamp columns. Items: the same kinds of file, with an item id column, a title column and any other text
columns (author, brand, category, ...), which :meth:`llmrec.data.Catalog.item_text` can put in the item text
(``'{title} by {author}'``).

Every error is one line naming the file and, where it applies, the line (1-based, the header is line 1),
field and value: a missing column (the message lists the columns the file has), a non-numeric rating or
timestamp, a rating outside the declared scale, a label that is not 0/1, an item the metadata file lacks.
The CSV/TSV parsing, number and rating checks are :mod:`llmrec.data.readers`' own helpers.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .core import Catalog, RecData, year_from_title
from .readers import _decode_error, _interactions, _read_table, _to_number, _to_rating, _to_timestamp

__all__ = ["ColumnMap", "read_tabular", "read_table_file", "parse_rating_scale", "parse_columns", "COLUMN_KEYS",
           "LABEL_SCALE"]

#: The scale of a 0/1 label column read as ratings (liked = rating > 0.5).
LABEL_SCALE = (0.0, 1.0, 1.0)
_SEPS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


@dataclass(frozen=True)
class ColumnMap:
    """Which column of the interactions file holds what (names as in the file's header / JSON keys).

    Attributes:
        user / item: user and item id columns (read as str tokens).
        rating: numeric rating column, or None when ``label`` is given.
        label: 0/1 column (1 = liked; also ``true``/``false``/``yes``/``no``), read as ratings 1.0/0.0 on
            :data:`LABEL_SCALE`; exactly one of ``rating``/``label``.
        timestamp: integer seconds (or an ISO date/time); None: file order is time order.
    """

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    label: str | None = None
    timestamp: str | None = "timestamp"


#: Keys of a column mapping string (:func:`parse_columns`).
COLUMN_KEYS = ("user", "item", "rating", "label", "timestamp", "item_id", "title")


def parse_columns(spec: str | None) -> tuple[ColumnMap, str | None, str | None]:
    """``"user=reader,item=isbn,rating=stars,timestamp=none"`` -> ``(ColumnMap, item_id, title)`` for
    :func:`read_tabular` (keys :data:`COLUMN_KEYS`; ``none`` or empty: no such column; a ``label`` without a
    ``rating`` key means labels, not ratings). Unnamed keys keep :class:`ColumnMap`'s defaults; ``title``
    defaults to ``"title"``.

    Raises:
        ValueError: a part that is not ``key=column`` or an unknown key (names it and lists the keys).
    """
    vals: dict = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, name = part.partition("=")
        key, name = key.strip(), name.strip()
        if not sep or key not in COLUMN_KEYS:
            raise ValueError(f"columns {spec!r}: {part.strip()!r} is not key=column with key one of "
                             f"{', '.join(COLUMN_KEYS)}")
        vals[key] = None if name.lower() in ("", "none") else name
    if "label" in vals and "rating" not in vals:
        vals["rating"] = None
    cm = ColumnMap(**{k: v for k, v in vals.items() if k in ("user", "item", "rating", "label", "timestamp")})
    return cm, vals.get("item_id"), vals.get("title", "title")


def parse_rating_scale(spec: str | tuple | None) -> tuple | None:
    """``"1-10"`` / ``"1..10"`` / ``"0.5-5:0.5"`` (low-high[:step]) or a tuple -> ``(low, high, step)``
    (step None when not given: any value in range). None -> None.

    Raises:
        ValueError: malformed, or ``low >= high``, or ``step <= 0`` (names the value).
    """
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        low, high, *rest = spec
        step = rest[0] if rest else None
    else:
        text = str(spec).strip()
        body, _, step_s = text.partition(":")
        sep = ".." if ".." in body else "-"
        low_s, _, high_s = body.partition(sep) if not body.startswith("-") else body[1:].partition(sep)
        try:
            low = float(("-" if body.startswith("-") else "") + low_s)
            high = float(high_s)
            step = float(step_s) if step_s else None
        except ValueError:
            raise ValueError(f"rating scale {spec!r}: expected LOW-HIGH or LOW-HIGH:STEP, e.g. 1-10 or 0.5-5:0.5") \
                from None
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"rating scale {spec!r}: low {low:g} must be below high {high:g}")
    if step is not None and not float(step) > 0:
        raise ValueError(f"rating scale {spec!r}: step {step} must be > 0")
    return (low, high, None if step is None else float(step))


def jsonl_objects(path: Path, what: str = "a JSON object") -> Iterator[tuple[int, dict]]:
    """``(1-based line number, object)`` for every non-blank line of a UTF-8 JSON Lines file.

    Raises:
        ValueError: (one line naming the file and line) not UTF-8 (:func:`readers._decode_error`), invalid
            JSON, or a line that is not a JSON object (``what`` names what was expected).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise _decode_error(path, "utf-8") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name}: line {n}: invalid JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path.name}: line {n}: expected {what}, got {type(obj).__name__}")
        yield n, obj


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """JSON Lines -> all-string frame (columns: the union of keys in first-seen order; a key a row lacks is
    ``None``) and 1-based line numbers. Raises ValueError naming file and line for bad JSON / a non-object."""
    rows, lines = [], []
    cols: dict[str, None] = {}
    for n, obj in jsonl_objects(path):
        for k in obj:
            cols.setdefault(k, None)
        rows.append(obj)
        lines.append(n)
    if not rows:
        raise ValueError(f"{path.name}: file is empty (expected one JSON object per line)")

    def s(v):
        if v is None:
            return None
        if isinstance(v, bool):
            return "1" if v else "0"
        return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    frame = pd.DataFrame({c: pd.Series([s(r.get(c)) for r in rows], dtype=object) for c in cols})
    return frame, np.asarray(lines, dtype=np.int64)


def read_table_file(path: str | os.PathLike, sep: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV / TSV (with a header line) or JSONL file as all-string columns.

    Args:
        path: the file; its kind from ``sep`` if given, else the extension (``.csv``, ``.tsv``/``.tab``,
            ``.jsonl``).

    Returns:
        ``(frame, line_numbers)`` as :func:`llmrec.data.readers._read_table`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown extension (names it), malformed rows (file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name}: file not found in {path.parent}")
    ext = path.suffix.lower()
    if sep is None and ext in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if sep is None:
        if ext not in _SEPS:
            raise ValueError(f"{path.name}: unknown file kind {ext or '(no extension)'!r}: expected .csv, .tsv, "
                             f".tab or .jsonl (or give the separator)")
        sep = _SEPS[ext]
    return _read_table(path, sep=sep, header=True, quoting=csv.QUOTE_MINIMAL)


def _column(frame: pd.DataFrame, path: Path, name: str, role: str, lines: np.ndarray) -> pd.Series:
    """The column ``name`` (the file's column for ``role``); a missing column or a row without a value
    (JSONL) is an error naming the file, the role and, for a row, its line."""
    if name not in frame.columns:
        raise ValueError(f"{path.name}: no column {name!r} (the {role} column); the file has columns: "
                         f"{', '.join(map(str, frame.columns))}")
    col = frame[name]
    empty = col.isna() | (col.astype(str).str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(f"{path.name}: line {lines[i]}: field {name!r} (the {role}) is empty")
    return col.astype(str).str.strip()


_TRUE, _FALSE = {"1", "1.0", "true", "yes", "y"}, {"0", "0.0", "false", "no", "n"}


def _to_label(col: pd.Series, path: Path, field: str, lines: np.ndarray) -> np.ndarray:
    out = np.empty(len(col), dtype=np.float64)
    for i, v in enumerate(col):
        low = str(v).strip().lower()
        if low in _TRUE:
            out[i] = 1.0
        elif low in _FALSE:
            out[i] = 0.0
        else:
            raise ValueError(f"{path.name}: line {lines[i]}: field {field!r} has value {v!r}; expected a label 0 or 1 "
                             f"(or true/false, yes/no)")
    return out


def _to_time(col: pd.Series, path: Path, field: str, lines: np.ndarray) -> np.ndarray:
    """Integer seconds, or ISO dates/times (-> seconds since 1970 UTC); errors name file, line, field, value."""
    nums = pd.to_numeric(col, errors="coerce")
    if nums.notna().all():
        return _to_timestamp(col, path, field, lines)
    stamps = pd.to_datetime(col, errors="coerce", utc=True, format="ISO8601")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path.name}: line {lines[i]}: field {field!r} has value {col.iloc[i]!r}; expected integer "
                         f"seconds or an ISO date/time (2024-01-31 or 2024-01-31T12:00:00)")
    secs = (stamps - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)  # whatever the unit
    return secs.to_numpy(dtype=np.int64)


def _read_items(path: Path, item_id: str, title: str | None, item_noun: str) -> Catalog:
    frame, lines = read_table_file(path)
    ids = _column(frame, path, item_id, "item id", lines)
    dup = ids[ids.duplicated()]
    if len(dup):
        i = int(np.flatnonzero(ids.duplicated().to_numpy())[0])
        raise ValueError(f"{path.name}: line {lines[i]}: field {item_id!r}: item id {ids.iloc[i]!r} appears twice")
    if title is not None:
        titles = _column(frame, path, title, "title", lines)
    else:
        titles = ids
    extra = [c for c in frame.columns if c not in (item_id, title, "year", "genres")]
    years = [None] * len(frame)
    if "year" in frame.columns:
        years = []
        for i, v in enumerate(frame["year"]):
            v = "" if v is None else str(v).strip()
            if v and not v.lstrip("-").isdigit():
                raise ValueError(f"{path.name}: line {lines[i]}: field 'year' has non-integer value {v!r}")
            years.append(int(v) if v else None)
    elif title is not None:
        years = [year_from_title(t) for t in titles]
    genres = [[g.strip() for g in str(v or "").split("|") if g.strip()] for v in frame["genres"]] \
        if "genres" in frame.columns else [[] for _ in range(len(frame))]
    records = []
    for k, (i, t) in enumerate(zip(ids, titles)):
        rec = {"item_id": i, "title": t, "year": years[k], "genres": genres[k]}
        for c in extra:
            v = frame[c].iloc[k]
            rec[c] = "" if v is None else str(v)
        records.append(rec)
    return Catalog.from_records(records, extra_columns=extra, item_noun=item_noun)


def read_tabular(interactions: str | os.PathLike, items: str | os.PathLike | None = None, *,
                 columns: ColumnMap = ColumnMap(), rating_scale: str | tuple | None = None,
                 item_id: str | None = None, title: str | None = "title", item_noun: str = "item") -> RecData:
    """Read the user's interactions file (and item metadata file) into :class:`~llmrec.data.RecData`.

    Args:
        interactions: CSV / TSV / JSONL file, one interaction per row, columns as ``columns`` maps them.
        items: item metadata file (CSV / TSV / JSONL) with an ``item_id`` column (named as in the interactions
            file unless ``item_id`` is given), a ``title`` column (None: the id is the title) and any other
            columns, kept as text (``year``: integer, ``genres``: ``|``-separated, as MovieLens). None: the item
            ids are the titles.
        columns: the :class:`ColumnMap`.
        rating_scale: ``(low, high, step)`` or ``"1-10"``; every rating must lie on it (the value and line of
            the first one that does not are named). None: no check, and the scale recorded is the observed
            ``(min, max, None)``. With ``columns.label``: :data:`LABEL_SCALE`.
        item_id / title: the item file's id and title columns.
        item_noun: what the items are in prompts (``"book"``); recorded on the catalog.

    Returns:
        :class:`RecData` with ``format="tabular"``, ``path=interactions``, ``rating_scale`` set; ratings float64
        (labels as 1.0 / 0.0); timestamps int64 seconds (file order ``0..n-1`` without a timestamp column);
        the catalog holds every item of the metadata file (or of the interactions), extra columns as text.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a missing column (lists the columns the file has), both or neither of rating/label, an empty
            id, a non-numeric or off-scale rating, a bad label or timestamp, an interaction whose item the
            metadata file lacks, a duplicated item id (each names the file, line, field and value).
    """
    p = Path(interactions)
    if (columns.rating is None) == (columns.label is None):
        raise ValueError(f"{p.name}: give exactly one of a rating column and a label column "
                         f"(got rating={columns.rating!r}, label={columns.label!r})")
    scale = parse_rating_scale(rating_scale)
    frame, lines = read_table_file(p)
    users = _column(frame, p, columns.user, "user", lines)
    item_col = _column(frame, p, columns.item, "item", lines)
    if columns.label is not None:
        ratings = _to_label(_column(frame, p, columns.label, "label", lines), p, columns.label, lines)
        scale = LABEL_SCALE
    else:
        col = _column(frame, p, columns.rating, "rating", lines)
        if scale is None:
            ratings = _to_number(col, p, columns.rating, lines)
            scale = (float(ratings.min()), float(ratings.max()), None) if len(ratings) else None
        else:
            ratings = _to_rating(col, p, lines, scale=scale, field=columns.rating)
    if columns.timestamp is not None:
        stamps = _to_time(_column(frame, p, columns.timestamp, "timestamp", lines), p, columns.timestamp, lines)
    else:
        stamps = np.arange(len(frame), dtype=np.int64)
    inter = _interactions(users, item_col, ratings, stamps, p)

    if items is not None:
        ip = Path(items)
        catalog = _read_items(ip, item_id or columns.item, title, item_noun)
        known = set(catalog.frame.index)
        missing = ~item_col.isin(known).to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValueError(f"{p.name}: line {lines[i]}: field {columns.item!r}: item {item_col.iloc[i]!r} is not in "
                             f"{ip.name} ({int(missing.sum())} interaction(s) name items it lacks)")
    else:
        catalog = Catalog.from_records([{"item_id": i, "title": i, "year": None, "genres": []}
                                        for i in pd.unique(item_col)], item_noun=item_noun)
    return RecData(inter, catalog, None, "tabular", p, rating_scale=scale)
