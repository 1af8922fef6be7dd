"""The one in-memory form every reader produces: :class:`Interactions`, :class:`Catalog`, :class:`RecData`.

Item and user ids stay *string tokens* exactly as the source writes them (``"242"``, not ``242``), so
ids from GroupLens raw files, RecBole atomic files and MovieLens CSV files compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Interactions", "Catalog", "RecData", "year_from_title", "format_fields", "INTERACTION_COLUMNS", "CATALOG_COLUMNS"]

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CATALOG_COLUMNS = ("item_id", "title", "year", "genres")

# The last "(yyyy)" group of a MovieLens title, e.g. "Seventh Seal, The (Sjunde inseglet, Det) (1957)"
# -> 1957 and "Land Before Time III: The Time of the Great Giving (1995) (V)" -> 1995.
_TITLE_YEAR = re.compile(r"\((\d{4})\)")


def year_from_title(title: str) -> int | None:
    """The release year MovieLens writes in a title: the last ``(yyyy)`` group, or None if there is none."""
    found = _TITLE_YEAR.findall(title)
    return int(found[-1]) if found else None


def format_fields(fmt: str, columns, what: str = "format") -> list[str]:
    """The field names of a ``str.format`` string, checked to be plain names among ``columns``.

    Raises:
        ValueError: malformed format; a field with attribute/index access, a conversion or a format spec; a
            positional field; a name not in ``columns`` (names it and lists the columns); no field at all.
    """
    import string

    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise ValueError(f"{what} {fmt!r}: malformed format string ({e})") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"{what} {fmt!r}: field {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                             f"must be a plain column name such as {{title}}")
        if name not in columns:
            raise ValueError(f"{what} {fmt!r}: no column {name!r} in the item catalogue (columns: "
                             f"{', '.join(columns)})")
        names.append(name)
    if not names:
        raise ValueError(f"{what} {fmt!r}: names no column (e.g. {{title}})")
    return names


@dataclass(eq=False)
class Interactions:
    """User-item ratings in source file order.

    Attributes:
        frame: DataFrame with exactly the columns ``user_id`` (str), ``item_id`` (str), ``rating``
            (float64) and ``timestamp`` (int64, seconds), one row per rating, rows in the order of the
            source file, index ``0..n-1``.

    Raises:
        ValueError: (on construction) a column is missing or has the wrong dtype.
    """

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"Interactions: missing column(s) {missing}; have {list(self.frame.columns)}")
        f = self.frame.loc[:, list(INTERACTION_COLUMNS)].reset_index(drop=True)
        f["user_id"] = f["user_id"].astype(str)
        f["item_id"] = f["item_id"].astype(str)
        f["rating"] = f["rating"].astype(np.float64)
        f["timestamp"] = f["timestamp"].astype(np.int64)
        self.frame = f

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def users(self) -> list[str]:
        """User ids in the order they first appear in the file."""
        return list(pd.unique(self.frame["user_id"]))

    @property
    def items(self) -> list[str]:
        """Item ids in the order they first appear in the file."""
        return list(pd.unique(self.frame["item_id"]))

    def equals(self, other: "Interactions") -> bool:
        """True when both hold the same rows in the same order with the same values."""
        return self.frame.equals(other.frame)


@dataclass(eq=False)
class Catalog:
    """Item metadata keyed by item id.

    Attributes:
        frame: DataFrame indexed by ``item_id`` (str, unique) with columns ``title`` (str: the title as
            MovieLens writes it, with the year, e.g. ``"Toy Story (1995)"``), ``year`` (pandas ``Int64``,
            missing as ``<NA>``) and ``genres`` (``list[str]`` per row, possibly empty), then any extra text
            columns the source has (e.g. ``author``, ``brand``; str, missing as ``""``) in source order.
            MovieLens readers produce no extra columns. :meth:`item_text` formats an item from all of them.
        item_noun: what an item is in a prompt's words (``"movie"``, the default, for MovieLens; ``"book"``,
            ``"product"``); templates read it as ``{{ item_noun }}``.

    Raises:
        ValueError: (on construction) a column is missing or an item id is duplicated.
    """

    frame: pd.DataFrame
    item_noun: str = "movie"

    def __post_init__(self) -> None:
        f = self.frame
        if f.index.name != "item_id" and "item_id" in f.columns:
            f = f.set_index("item_id")
        missing = [c for c in CATALOG_COLUMNS[1:] if c not in f.columns]
        if missing:
            raise ValueError(f"Catalog: missing column(s) {missing}; have {list(f.columns)}")
        extra = [c for c in f.columns if c not in CATALOG_COLUMNS]
        f = f.loc[:, list(CATALOG_COLUMNS[1:]) + extra].copy()
        f.index = f.index.astype(str)
        f.index.name = "item_id"
        dup = f.index[f.index.duplicated()]
        if len(dup):
            raise ValueError(f"Catalog: duplicate item_id {dup[0]!r}")
        f["title"] = f["title"].astype(str)
        f["year"] = pd.array([None if pd.isna(y) else int(y) for y in f["year"]], dtype="Int64")
        f["genres"] = [list(g) for g in f["genres"]]
        self.frame = f
        # plain-dict mirror for fast per-item look-ups (the frame is treated as read-only afterwards)
        self._index: dict[str, tuple[str, int | None, tuple[str, ...]]] = {
            i: (t, None if pd.isna(y) else int(y), tuple(g))
            for i, t, y, g in zip(f.index, f["title"], f["year"], f["genres"])
        }
        for c in extra:
            f[c] = ["" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in f[c]]
        self.extra_columns: tuple[str, ...] = tuple(extra)
        self._extra: dict[str, dict[str, str]] = (
            {i: dict(zip(extra, vals)) for i, *vals in zip(f.index, *(f[c] for c in extra))} if extra else {})

    @classmethod
    def from_records(cls, records: list[dict], extra_columns: tuple[str, ...] | list[str] = (),
                     item_noun: str = "movie") -> "Catalog":
        """Build from dicts with keys ``item_id``, ``title``, ``year`` (int or None), ``genres`` (list), plus the
        ``extra_columns`` (str) when given."""
        frame = pd.DataFrame.from_records(records, columns=list(CATALOG_COLUMNS) + list(extra_columns))
        return cls(frame.set_index("item_id"), item_noun)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column an item text format may use: ``title``, ``year``, ``genres``, then the extra columns."""
        return CATALOG_COLUMNS[1:] + self.extra_columns

    def fields(self, item_id: str) -> dict:
        """``{column: value}`` of one item (``genres`` joined with ``", "``, a missing year as ``""``).

        Raises:
            KeyError: unknown item id (named).
        """
        t, y, g = self._row(item_id)
        return {"title": t, "year": "" if y is None else str(y), "genres": ", ".join(g),
                **self._extra.get(str(item_id), {})}

    def item_text(self, fmt: str) -> "Catalog":
        """A copy whose ``title`` of every item is ``fmt`` formatted over its :meth:`fields` (e.g.
        ``'{title} by {author}'``); ids, years, genres and extra columns unchanged. ``"{title}"`` returns ``self``.

        Only plain ``{column}`` fields are allowed (no attribute or index access, no conversions or format specs:
        data never runs code); ``{{``/``}}`` are literal braces.

        Raises:
            ValueError: a malformed format, a field that is not a column (the message names it and lists
                :attr:`columns`), or a format with no field at all.
        """
        format_fields(fmt, self.columns, "item text")
        if fmt == "{title}":
            return self
        frame = self.frame.copy()
        frame["title"] = [fmt.format_map(self.fields(i)) for i in frame.index]
        return Catalog(frame, self.item_noun)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def _row(self, item_id: str) -> tuple[str, int | None, tuple[str, ...]]:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"item_id {item_id!r} not in catalog ({len(self)} items)") from None

    def title(self, item_id: str) -> str:
        """The MovieLens title with year. Raises KeyError naming the id if it is unknown."""
        return self._row(item_id)[0]

    def year(self, item_id: str) -> int | None:
        """Release year, or None. Raises KeyError naming the id if it is unknown."""
        return self._row(item_id)[1]

    def genres(self, item_id: str) -> list[str]:
        """Genre names (possibly empty). Raises KeyError naming the id if it is unknown."""
        return list(self._row(item_id)[2])

    def titles(self) -> dict[str, str]:
        """``{item_id: title}`` for every item (a plain dict, fast for bulk look-ups)."""
        return {i: r[0] for i, r in self._index.items()}

    def equals(self, other: "Catalog") -> bool:
        """True when both hold the same items in the same order with the same metadata."""
        a, b = self.frame, other.frame
        return (
            list(a.index) == list(b.index)
            and self.extra_columns == other.extra_columns
            and all(list(a[c]) == list(b[c]) for c in self.extra_columns)
            and list(a["title"]) == list(b["title"])
            and a["year"].equals(b["year"])
            and [list(g) for g in a["genres"]] == [list(g) for g in b["genres"]]
        )


@dataclass(eq=False)
class RecData:
    """What :func:`llmrec.data.load_dataset` returns: one source, read into the common form.

    Attributes:
        interactions: the ratings (:class:`Interactions`).
        catalog: item metadata (:class:`Catalog`).
        users: user features, DataFrame with a ``user_id`` (str) column and whatever else the source has
            (GroupLens / RecBole ML-100K: ``age`` Int64, ``gender``, ``occupation``, ``zip_code``), or None.
        format: ``"grouplens"``, ``"recbole"``, ``"movielens-csv"`` or ``"tabular"``
            (:func:`llmrec.data.tabular.read_tabular`).
        path: the folder (or, for ``"tabular"``, the interactions file) read.
        rating_scale: ``(low, high, step)`` the ratings were checked against (step None: any value in
            ``[low, high]``), or None when the source declares none; the like threshold is derived from it
            (:func:`llmrec.samples.protocol.derive_threshold`). Set by the tabular reader; the MovieLens readers
            leave it None (their protocol, TALLRec-movie, fixes the threshold at 3).
    """

    interactions: Interactions
    catalog: Catalog
    users: pd.DataFrame | None = None
    format: str = ""
    path: Path | None = field(default=None)
    rating_scale: tuple | None = None
