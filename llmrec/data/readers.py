"""Readers for MovieLens in its three common on-disk forms, all producing :class:`~llmrec.data.core.RecData`.

* GroupLens raw folder (``ml-100k.zip`` unpacked): ``u.data``, ``u.item``, optional ``u.user``/``u.genre``
  (Harper & Konstan 2015) -> :func:`read_grouplens`.
* RecBole atomic files: ``<name>.inter``, ``<name>.item``, optional ``<name>.user``, each with a header
  of ``field:type`` columns (Zhao et al., RecBole 2021) -> :func:`read_recbole`.
* MovieLens "latest" CSV (``ml-latest-small``): ``ratings.csv`` + ``movies.csv`` -> :func:`read_movielens_csv`.

:func:`load_dataset` picks the reader from the folder contents.

Every error is one line naming the file, and where it applies the line, field and value:
``FileNotFoundError`` for a missing folder or required file, ``ValueError`` for a malformed file.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .core import Catalog, Interactions, RecData, year_from_title

__all__ = [
    "GROUPLENS_GENRES",
    "RECBOLE_TYPES",
    "RECBOLE_RATING_SCALE",
    "read_grouplens",
    "read_recbole",
    "read_recbole_atomic",
    "read_movielens_csv",
    "load_dataset",
    "detect_format",
]

#: The 19 genre flags of ``u.item``, in column order (used when ``u.genre`` is absent).
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)

#: The rating scale ``(low, high, step)`` a RecBole ``rating`` column is checked against unless ``read_recbole``
#: is given another (``rating_scale=``): MovieLens stars, whole or half, which TALLRec's like rule
#: (``rating > 3``) assumes. ``None`` accepts any finite number.
RECBOLE_RATING_SCALE = (0.5, 5.0, 0.5)

#: Column types RecBole atomic files may declare.
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")

# RecBole's ml-100k.item writes the one title-less, date-less item (MovieLens id 267, "unknown") as
# "unkonwn" (sic) in both movie_title and release_year; "" and "unknown" are treated the same way.
_RECBOLE_MISSING = {"", "unknown", "unkonwn"}
_RELEASE_DATE_YEAR = re.compile(r"(\d{4})\s*$")


# --------------------------------------------------------------------------------------------- helpers
def _require_dir(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a data folder: {folder}")
    return folder


def _require_file(folder: Path, name: str) -> Path:
    p = folder / name
    if not p.is_file():
        raise FileNotFoundError(f"{name}: required file not found in {folder}")
    return p


def _decode_error(path: Path, encoding: str) -> ValueError:
    """The one-line error for a file that is not valid ``encoding`` text: file, byte offset (from the file's
    start) and line of the first bad byte."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as e:
        NL = b"\n"
        bad = raw[e.start:e.start + 1].hex()
        return ValueError(f"{path.name}: not valid {encoding} text: byte 0x{bad} at offset {e.start} "
                          f"(line {raw.count(NL, 0, e.start) + 1}); save it as {encoding}")
    return ValueError(f"{path.name}: not valid {encoding} text")


def _text_encoding(path: Path, declared: str = "ISO-8859-1") -> str:
    """GroupLens files are ISO-8859-1; one re-saved as UTF-8 (non-ASCII bytes that decode as UTF-8, which
    Latin-1 text almost never does) is read as UTF-8, so "Café Society" does not become "CafÃ© Society"."""
    raw = path.read_bytes()
    if not raw.isascii():
        try:
            raw.decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError:
            pass
    return declared


def _read_table(path: Path, *, sep: str, header: bool, names: list[str] | None = None,
                encoding: str = "utf-8", quoting: int = csv.QUOTE_NONE) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a delimited file as all-string columns.

    Blank lines are skipped. Every row must have as many fields as the header (or ``names``, or the
    first row). Returns ``(frame, line_numbers)``: ``line_numbers[i]`` is the 1-based file line of row ``i``.

    Raises:
        ValueError: undecodable text, an empty file, or a row with a different field count (one line,
            naming the file, the line and both counts).
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, encoding=encoding, newline="") as f:
            reader = csv.reader(f, delimiter=sep, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
            line = 0
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row or row == [""]:
                    continue
                rows.append(row)
                lines.append(start)
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except csv.Error as e:
        raise ValueError(f"{path.name}: malformed CSV near line {reader.line_num}: {e}") from None
    if header:
        if not rows:
            raise ValueError(f"{path.name}: file is empty (expected a header line)")
        head, rows, lines = rows[0], rows[1:], lines[1:]
        names = names or head
    if names is None:
        names = [str(k) for k in range(len(rows[0]))] if rows else []
    n = len(names)
    for row, ln in zip(rows, lines):
        if len(row) != n:
            raise ValueError(f"{path.name}: line {ln}: expected {n} fields, found {len(row)}")
    cols = list(zip(*rows)) if rows else [()] * n
    frame = pd.DataFrame({k: pd.Series(list(c), dtype=object) for k, c in zip(range(n), cols)})
    frame.columns = list(names)
    return frame, np.asarray(lines, dtype=np.int64)


def _to_number(col: pd.Series, path: Path, field: str, lines: np.ndarray) -> np.ndarray:
    """Column of strings -> float64 array; the first non-numeric or non-finite (``nan``, ``inf``) value
    raises a ValueError naming it."""
    vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        try:
            float(col.iloc[i])
            kind = "non-finite"
        except ValueError:
            kind = "non-numeric"
        raise ValueError(
            f"{path.name}: line {lines[i]}: field {field!r} has {kind} value {col.iloc[i]!r}"
        )
    return vals


def _to_rating(col: pd.Series, path: Path, lines: np.ndarray, scale: tuple[float, float, float] | None = None,
               field: str = "rating") -> np.ndarray:
    """Column of rating strings -> float64 array, checked against the format's rating scale.

    ``scale`` is ``(low, high, step)``: every rating must lie in ``[low, high]`` on the grid
    ``low, low + step, ...`` (``step`` None or 0: anywhere in ``[low, high]``) (GroupLens ML-100K: ``(1, 5, 1)``, whole stars; MovieLens "latest":
    ``(0.5, 5, 0.5)``, half stars).
    ``None`` (RecBole atomic files, any scale) only requires finite numbers.

    Raises:
        ValueError: a non-numeric, non-finite or off-scale rating (names file, line, field and value).
    """
    vals = _to_number(col, path, field, lines)
    if scale is not None:
        low, high, step = scale
        bad = (vals < low) | (vals > high)
        if step:  # None / 0: any value in [low, high]
            steps = (vals - low) / step
            bad |= np.abs(steps - np.round(steps)) > 1e-9
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = f"{low:g}..{high:g}" + ("" if not step else " in whole stars" if step == 1 else f" in steps of {step:g}")
            raise ValueError(f"{path.name}: line {lines[i]}: field {field!r} has value {col.iloc[i]!r}; "
                             f"expected a rating {what}")
    return vals


def _to_timestamp(col: pd.Series, path: Path, field: str, lines: np.ndarray) -> np.ndarray:
    vals = _to_number(col, path, field, lines)
    frac = vals != np.floor(vals)
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        raise ValueError(
            f"{path.name}: line {lines[i]}: field {field!r} has non-integer timestamp {col.iloc[i]!r}"
        )
    return vals.astype(np.int64)


def _optional_int(values, path: Path, field: str, lines: np.ndarray) -> pd.arrays.IntegerArray:
    out = []
    for i, v in enumerate(values):
        v = v.strip()
        if v == "":
            out.append(None)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise ValueError(
                f"{path.name}: line {lines[i]}: field {field!r} has non-integer value {v!r}"
            ) from None
    return pd.array(out, dtype="Int64")


def _interactions(users, items, ratings, timestamps, source: Path | None = None) -> Interactions:
    """Build :class:`Interactions`; raises ValueError naming ``source`` when it holds no ratings."""
    if len(users) == 0:
        raise ValueError(f"{source.name if source else 'interactions'}: no ratings (the file has no data rows)")
    return Interactions(pd.DataFrame({
        "user_id": np.asarray(users, dtype=object),
        "item_id": np.asarray(items, dtype=object),
        "rating": ratings,
        "timestamp": timestamps,
    }))


# ------------------------------------------------------------------------------------ GroupLens raw
def _read_genre_names(folder: Path) -> list[str]:
    p = folder / "u.genre"
    if not p.is_file():
        return list(GROUPLENS_GENRES)
    pairs = []
    for n, line in enumerate(p.read_text(encoding=_text_encoding(p)).splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, idx = line.rpartition("|")
        if not sep or not idx.strip().isdigit():
            raise ValueError(f"u.genre: line {n}: expected 'name|index', got {line!r}")
        pairs.append((int(idx), name))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise ValueError(f"u.genre: genre indices are not 0..{len(pairs) - 1}: {[i for i, _ in pairs]}")
    return [name for _, name in pairs]


def read_grouplens(folder: str | os.PathLike) -> RecData:
    """Read a GroupLens raw MovieLens-100K folder.

    Files: ``u.data`` (tab-separated ``user item rating timestamp``, no header; required), ``u.item``
    (``|``-separated, ISO-8859-1 -- or UTF-8 when the file decodes as UTF-8 with non-ASCII bytes, i.e. was
    re-saved so: ``id|title|release date|video release date|IMDb URL|<genre flags>``;
    required), ``u.genre`` (``name|index``; optional, else :data:`GROUPLENS_GENRES`), ``u.user``
    (``id|age|gender|occupation|zip``; optional).

    Returns:
        :class:`RecData` with ``format="grouplens"``; titles exactly as in ``u.item``; ``year`` from the
        title's last ``(yyyy)``, else from the release date; genres from the flags set to 1.

    Raises:
        FileNotFoundError: the folder, ``u.data`` or ``u.item`` is missing.
        ValueError: a malformed line, a non-numeric rating/timestamp, a rating outside 1..5 whole stars, or
            a genre-flag count that does not match the genre names (the message names file, line, field and
            value).
    """
    folder = _require_dir(folder)
    p_data = _require_file(folder, "u.data")
    p_item = _require_file(folder, "u.item")

    data, lines = _read_table(p_data, sep="\t", header=False, names=["user_id", "item_id", "rating", "timestamp"])
    inter = _interactions(
        data["user_id"], data["item_id"],
        _to_rating(data["rating"], p_data, lines, scale=(1, 5, 1)),
        _to_timestamp(data["timestamp"], p_data, "timestamp", lines), p_data,
    )

    genre_names = _read_genre_names(folder)
    n_fixed = 5
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url"] + genre_names
    items, lines = _read_table(p_item, sep="|", header=False, names=item_cols, encoding=_text_encoding(p_item))
    records = []
    for n, row in zip(lines, items.itertuples(index=False)):
        item_id, title, release = row[0], row[1], row[2]
        flags = row[n_fixed:]
        for g, flag in zip(genre_names, flags):
            if flag not in ("0", "1"):
                raise ValueError(f"u.item: line {n}: genre flag {g!r} has value {flag!r} (expected 0 or 1)")
        year = year_from_title(title)
        if year is None:
            m = _RELEASE_DATE_YEAR.search(release)
            year = int(m.group(1)) if m else None
        records.append({
            "item_id": item_id, "title": title, "year": year,
            "genres": [g for g, flag in zip(genre_names, flags) if flag == "1"],
        })
    catalog = Catalog.from_records(records)

    users = None
    p_user = folder / "u.user"
    if p_user.is_file():
        cols = ["user_id", "age", "gender", "occupation", "zip_code"]
        u, lines = _read_table(p_user, sep="|", header=False, names=cols, encoding=_text_encoding(p_user))
        u["age"] = _optional_int(u["age"], p_user, "age", lines)
        users = u
    return RecData(inter, catalog, users, "grouplens", folder)


# ---------------------------------------------------------------------------------- RecBole atomic
def read_recbole_atomic(path: str | os.PathLike) -> pd.DataFrame:
    """Read one RecBole atomic file into an all-string DataFrame whose columns are the bare field names
    (``frame.attrs["lines"]``: the 1-based file line of each row).

    The header is one tab-separated line of ``field:type`` (type in :data:`RECBOLE_TYPES`); the body is
    tab-separated, UTF-8, unquoted.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a header column without ``:type`` or with an unknown type, a duplicate field, or a
            row with a different number of columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name}: file not found in {path.parent}")
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        raise _decode_error(path, "utf-8") from None
    if not header:
        raise ValueError(f"{path.name}: empty header (expected tab-separated 'field:type' columns)")
    names = []
    for col in header.split("\t"):
        name, sep, typ = col.rpartition(":")
        if not sep or not name:
            raise ValueError(f"{path.name}: header column {col!r} is not 'field:type'")
        if typ not in RECBOLE_TYPES:
            raise ValueError(f"{path.name}: header field {name!r} has unknown type {typ!r} "
                             f"(expected one of {', '.join(RECBOLE_TYPES)})")
        if name in names:
            raise ValueError(f"{path.name}: header field {name!r} appears twice")
        names.append(name)
    df, lines = _read_table(path, sep="\t", header=True, names=names)
    df.attrs["lines"] = lines  # 1-based file line of each row, for error messages
    return df


def _pick(df: pd.DataFrame, path: Path, candidates: tuple[str, ...], required: bool) -> str | None:
    for c in candidates:
        if c in df.columns:
            return c
    if required:
        raise ValueError(f"{path.name}: required field {candidates[0]!r} not in header "
                         f"(fields: {', '.join(df.columns)})")
    return None


def _recbole_title(title: str, year: str | None) -> str:
    """MovieLens title from RecBole's split ``movie_title`` + ``release_year``.

    RecBole cut the trailing ``(...)`` group off each MovieLens title into ``release_year``, so
    ``title + " (" + year + ")"`` restores it -- also for ``(V)`` video titles, where RecBole's
    "year" is ``V``. The missing-value placeholder ``unkonwn`` (sic) maps back to MovieLens'
    ``unknown`` with no year.
    """
    if title.strip().lower() in _RECBOLE_MISSING:
        title = "unknown"
    if year is None or year.strip().lower() in _RECBOLE_MISSING:
        return title
    return f"{title} ({year})"


def read_recbole(folder: str | os.PathLike, name: str | None = None,
                 rating_scale: tuple[float, float, float] | None = RECBOLE_RATING_SCALE) -> RecData:
    """Read RecBole atomic files ``<name>.inter`` (required), ``<name>.item`` (required), ``<name>.user``.

    Columns are found by field name, not position: ``.inter`` needs ``user_id``, ``item_id``,
    ``rating``, ``timestamp``; ``.item`` needs ``item_id`` and ``movie_title`` (or ``title``), and may
    have ``release_year`` (or ``year``) and ``class`` (or ``genre``/``genres``; space-separated
    token_seq). Other columns are ignored. The title is rebuilt as MovieLens writes it (see
    :func:`_recbole_title`: ``"Toy Story" + "1995" -> "Toy Story (1995)"``).

    Args:
        folder: the folder holding the files.
        name: the dataset name (file stem); default: the stem of the only ``*.inter`` file there.
        rating_scale: ``(low, high, step)`` every rating must lie on (default :data:`RECBOLE_RATING_SCALE`,
            0.5..5 stars: a 0, 6 or -1 is refused rather than judged by the ``rating > 3`` like rule);
            None: any finite number.

    Returns:
        :class:`RecData` with ``format="recbole"``.

    Raises:
        FileNotFoundError: the folder, ``.inter`` or ``.item`` file is missing.
        ValueError: no or several ``*.inter`` files (when ``name`` is None), a malformed header, a missing
            required field, a non-numeric, non-finite or off-scale rating, a non-numeric timestamp, text that
            is not UTF-8 (message names file, line, field and value, or the byte offset).
    """
    folder = _require_dir(folder)
    if name is None:
        stems = sorted(p.stem for p in folder.glob("*.inter"))
        if len(stems) != 1:
            raise ValueError(f"{folder}: expected exactly one *.inter file, found {stems or 'none'}; pass name=")
        name = stems[0]
    p_inter = _require_file(folder, f"{name}.inter")
    p_item = _require_file(folder, f"{name}.item")

    df = read_recbole_atomic(p_inter)
    cols = {k: _pick(df, p_inter, (k,), required=True) for k in ("user_id", "item_id", "rating", "timestamp")}
    inter = _interactions(
        df[cols["user_id"]], df[cols["item_id"]],
        _to_rating(df[cols["rating"]], p_inter, df.attrs["lines"], scale=rating_scale),
        _to_timestamp(df[cols["timestamp"]], p_inter, "timestamp", df.attrs["lines"]), p_inter,
    )

    it = read_recbole_atomic(p_item)
    c_id = _pick(it, p_item, ("item_id",), required=True)
    c_title = _pick(it, p_item, ("movie_title", "title"), required=True)
    c_year = _pick(it, p_item, ("release_year", "year"), required=False)
    c_genre = _pick(it, p_item, ("class", "genre", "genres"), required=False)
    years = it[c_year].tolist() if c_year else [None] * len(it)
    genres = it[c_genre].tolist() if c_genre else [""] * len(it)
    records = []
    for item_id, raw_title, raw_year, g in zip(it[c_id], it[c_title], years, genres):
        title = _recbole_title(raw_title, raw_year)
        records.append({"item_id": item_id, "title": title, "year": year_from_title(title),
                        "genres": g.split()})
    catalog = Catalog.from_records(records)

    users = None
    p_user = folder / f"{name}.user"
    if p_user.is_file():
        users = read_recbole_atomic(p_user)
        _pick(users, p_user, ("user_id",), required=True)
        if "age" in users.columns:
            users["age"] = _optional_int(users["age"], p_user, "age", users.attrs.pop("lines"))
        users.attrs.pop("lines", None)
    return RecData(inter, catalog, users, "recbole", folder)


# ------------------------------------------------------------------------------ MovieLens latest CSV
def read_movielens_csv(folder: str | os.PathLike) -> RecData:
    """Read a MovieLens "latest" CSV folder (``ml-latest-small``, ``ml-25m``, ...).

    Files: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) and ``movies.csv`` (header
    ``movieId,title,genres``; ``title`` already ends with ``(yyyy)``; ``genres`` ``|``-separated,
    ``(no genres listed)`` -> ``[]``), UTF-8, standard CSV quoting. No user file.

    Returns:
        :class:`RecData` with ``format="movielens-csv"`` and ``users=None``.

    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: a missing header field, a non-numeric rating/timestamp, or a rating outside 0.5..5 in
            half-star steps (names file, line, field, value).
    """
    folder = _require_dir(folder)
    p_r = _require_file(folder, "ratings.csv")
    p_m = _require_file(folder, "movies.csv")
    r, lines = _read_table(p_r, sep=",", header=True, quoting=csv.QUOTE_MINIMAL)
    for f in ("userId", "movieId", "rating", "timestamp"):
        _pick(r, p_r, (f,), required=True)
    inter = _interactions(
        r["userId"], r["movieId"],
        _to_rating(r["rating"], p_r, lines, scale=(0.5, 5, 0.5)),
        _to_timestamp(r["timestamp"], p_r, "timestamp", lines), p_r,
    )
    m, _ = _read_table(p_m, sep=",", header=True, quoting=csv.QUOTE_MINIMAL)
    for f in ("movieId", "title"):
        _pick(m, p_m, (f,), required=True)
    genres = m["genres"].tolist() if "genres" in m.columns else [""] * len(m)
    records = []
    for item_id, title, g in zip(m["movieId"], m["title"], genres):
        gl = [] if g in ("", "(no genres listed)") else g.split("|")
        records.append({"item_id": item_id, "title": title, "year": year_from_title(title), "genres": gl})
    return RecData(inter, Catalog.from_records(records), None, "movielens-csv", folder)


# ------------------------------------------------------------------------------------- auto-detect
def detect_format(folder: str | os.PathLike) -> str:
    """``"grouplens"`` (has ``u.data``), ``"recbole"`` (has ``*.inter``) or ``"movielens-csv"``
    (has ``ratings.csv`` and ``movies.csv``).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: none of those files is there (message lists what was looked for).
    """
    folder = _require_dir(folder)
    if (folder / "u.data").is_file():
        return "grouplens"
    if any(folder.glob("*.inter")):
        return "recbole"
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return "movielens-csv"
    raise ValueError(f"{folder}: unknown data format: expected u.data (GroupLens raw), *.inter (RecBole) "
                     f"or ratings.csv + movies.csv (MovieLens latest)")


def load_dataset(path: str | os.PathLike) -> RecData:
    """Read a MovieLens folder in whichever format it is (see :func:`detect_format`).

    ``path`` may also be a RecBole ``.inter`` file, which selects that dataset name in its folder.

    Raises:
        FileNotFoundError / ValueError: as the chosen reader, or when the format is not recognised.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".inter":
        return read_recbole(path.parent, path.stem)
    fmt = detect_format(path)
    if fmt == "grouplens":
        return read_grouplens(path)
    if fmt == "recbole":
        return read_recbole(path)
    return read_movielens_csv(path)
