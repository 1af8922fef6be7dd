"""A general TALLRec-style protocol over any dataset the readers load (GroupLens, RecBole, MovieLens CSV, or
:func:`llmrec.data.read_tabular`): like threshold, window length, history order, split by user or by time,
item text. TALLRec-movie (Bao et al., RecSys 2023) is the named preset :data:`TALLREC_MOVIE`, built by
:func:`llmrec.samples.tallrec.tallrec_splits` itself, so it still regenerates the published splits record
for record.

Like rule: ``liked = rating > like_threshold``. Given, it must lie in ``[low, high)`` of the rating scale
(else nothing, or everything, would be liked); not given, it is derived as the midpoint of the scale
(:func:`derive_threshold`: 1..5 -> 3, TALLRec's own rule; 1..10 -> 5.5; labels 0/1 -> 0.5), and the rule
is stated in words (:attr:`ProtocolResult.rule`) so that the commands print it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..data.core import Catalog, RecData, format_fields
from .tallrec import HISTORY_LEN, LIKE_THRESHOLD, N_KEEP, SPLIT_FRACTIONS, TallrecSplits, build_windows, tallrec_splits

__all__ = ["ProtocolConfig", "ProtocolResult", "TALLREC_MOVIE", "PRESETS", "HISTORY_ORDERS", "SPLIT_KINDS",
           "derive_threshold", "check_threshold", "build_protocol", "data_sha256", "default_item_noun"]

HISTORY_ORDERS = ("oldest-first", "newest-first")
SPLIT_KINDS = ("user", "time")


@dataclass(frozen=True)
class ProtocolConfig:
    """How samples are built from a rating log.

    Attributes:
        name: a label recorded with the samples and in adapters (``"custom"`` unless a preset).
        like_threshold: liked = ``rating > like_threshold``; None: the midpoint of the data's rating scale.
        history_len: history items per sample (>= 1); a user with ``<= history_len`` ratings gives none.
        history_order: ``"oldest-first"`` (TALLRec) or ``"newest-first"`` (the history lists reversed).
        split: ``"user"`` (TALLRec: users' windows concatenated in first-appearance order, then cut in that
            order, so the parts hold different users) or ``"time"`` (windows ordered by the target's timestamp,
            stable; the earliest are train, the latest test).
        n_keep: keep only the last ``n_keep`` windows (in the split's order) before splitting; None: all.
        split_fractions: ``(a, b)``: train ``[:int(a n)]``, valid ``[int(a n):int(b n)]``, test the rest.
        item_text: ``str.format`` string over the catalogue's columns (``"{title}"``, ``"{title} by {author}"``).
        item_noun: the item word of the prompts; None: the catalogue's own (``"movie"`` for MovieLens).
    """

    name: str = "custom"
    like_threshold: float | None = None
    history_len: int = HISTORY_LEN
    history_order: str = "oldest-first"
    split: str = "user"
    n_keep: int | None = N_KEEP
    split_fractions: tuple = SPLIT_FRACTIONS
    item_text: str = "{title}"
    item_noun: str | None = None

    def check(self) -> None:
        """Raises ValueError naming the first bad field and its value."""
        if isinstance(self.history_len, bool) or not isinstance(self.history_len, int) or self.history_len < 1:
            raise ValueError(f"history_len {self.history_len!r}: must be an int >= 1")
        if self.history_order not in HISTORY_ORDERS:
            raise ValueError(f"history_order {self.history_order!r}: expected one of {', '.join(HISTORY_ORDERS)}")
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"split {self.split!r}: expected one of {', '.join(SPLIT_KINDS)}")
        if self.n_keep is not None and self.n_keep < 1:
            raise ValueError(f"n_keep {self.n_keep!r}: must be >= 1 (or None: keep all)")
        a, b = self.split_fractions
        if not 0 < a <= b <= 1:
            raise ValueError(f"split_fractions {tuple(self.split_fractions)!r}: need 0 < train <= train+valid <= 1")
        if self.item_noun is not None and not str(self.item_noun).strip():
            raise ValueError("item_noun '': must be a word such as 'book'")


#: TALLRec's movie protocol (module :mod:`llmrec.samples.tallrec`): rating > 3, 10 items, by user, last 10,000.
TALLREC_MOVIE = ProtocolConfig(name="tallrec-movie", like_threshold=LIKE_THRESHOLD, item_noun="movie")
PRESETS = {"tallrec-movie": TALLREC_MOVIE}


def _fmt_scale(scale) -> str:
    return f"[{scale[0]:g}, {scale[1]:g}]"


def derive_threshold(scale: tuple) -> tuple[float, str]:
    """The like threshold of a rating scale: its midpoint, and the rule in words.

    ``(1, 5)`` -> ``3.0`` (TALLRec's ``rating > 3``); ``(1, 10)`` -> ``5.5``; ``(0, 1)`` (labels) -> ``0.5``.

    Returns:
        ``(threshold, "liked = rating > 5.5 (the midpoint of the rating scale [1, 10])")``.
    """
    low, high = float(scale[0]), float(scale[1])
    t = (low + high) / 2
    return t, f"liked = rating > {t:g} (the midpoint of the rating scale {_fmt_scale(scale)})"


def check_threshold(threshold: float, scale: tuple | None, source: str = "like threshold") -> None:
    """Refuse a threshold with which no rating, or every rating, of ``scale`` would be liked.

    Raises:
        ValueError: ``threshold < low`` or ``threshold >= high`` (names both), or a non-finite threshold.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"{source} {threshold!r}: must be a finite number")
    if scale is None:
        return
    low, high = float(scale[0]), float(scale[1])
    if threshold < low or threshold >= high:
        what = "every rating would be liked" if threshold < low else "no rating would be liked"
        raise ValueError(f"{source} {threshold:g} is outside the rating scale {_fmt_scale(scale)}: {what} "
                         f"(liked = rating > threshold; use a value in [{low:g}, {high:g}))")


def default_item_noun(rec: RecData) -> str:
    """``"movie"`` for the MovieLens readers' formats, else the catalogue's own noun (``"item"`` unless set)."""
    return rec.catalog.item_noun


def data_sha256(rec: RecData) -> str:
    """sha256 (hex) of the rating log as read: ``user_id,item_id,rating,timestamp`` rows in file order, so the
    same data read from another format or path hashes the same. Recorded in adapters."""
    f = rec.interactions.frame
    h = hashlib.sha256()
    for chunk in range(0, len(f), 100_000):
        part = f.iloc[chunk:chunk + 100_000]
        h.update(part.to_csv(index=False, header=False, float_format="%.6g").encode("utf-8"))
    return h.hexdigest()


@dataclass
class ProtocolResult:
    """What :func:`build_protocol` returns.

    Attributes:
        splits: :class:`~llmrec.samples.tallrec.TallrecSplits` (train/valid/test ``list[Sample]``), each sample
            carrying the threshold and rating scale.
        catalog: the catalogue with the item text applied (``title`` = formatted text) and ``item_noun`` set.
        config: the config as applied (``like_threshold`` resolved, ``item_noun`` resolved).
        rule: the like rule in words (printed by the commands).
        rating_scale: ``(low, high, step)`` of the data, or None when unknown.
        data: ``data`` (path), ``data_format``, ``data_sha256`` for the record.
        rec: the :class:`~llmrec.data.RecData` read.
    """

    splits: TallrecSplits
    catalog: object
    config: ProtocolConfig
    rule: str
    rating_scale: tuple | None = None
    data: dict = field(default_factory=dict)
    rec: RecData | None = field(default=None, repr=False)  # the data the samples were built from

    def record(self) -> dict:
        """The protocol as recorded in adapters and sample files (JSON-serialisable)."""
        c = asdict(self.config)
        c["split_fractions"] = list(c["split_fractions"])
        return {**c, "like_rule": self.rule,
                "rating_scale": None if self.rating_scale is None else list(self.rating_scale),
                "sizes": {k: len(v) for k, v in self.splits}, **self.data}


#: The rating scales the MovieLens readers check (RecBole's is not fixed: None).
_FORMAT_SCALES = {"grouplens": (1.0, 5.0, 1.0), "movielens-csv": (0.5, 5.0, 0.5), "recbole": None}


def _resolve_threshold(cfg: ProtocolConfig, rec: RecData) -> tuple[float, str, tuple | None]:
    """``(threshold, rule in words, rating scale)`` of a config on a dataset (module docstring)."""
    scale = rec.rating_scale if rec.rating_scale is not None else _FORMAT_SCALES.get(rec.format)
    if cfg.like_threshold is not None:
        t = float(cfg.like_threshold)
        check_threshold(t, scale)
        where = f" (given; rating scale {_fmt_scale(scale)})" if scale else " (given)"
        return t, f"liked = rating > {t:g}{where}", scale
    if rec.format in _FORMAT_SCALES:  # MovieLens: TALLRec's own rule (the midpoint of 1..5 too)
        return LIKE_THRESHOLD, f"liked = rating > {LIKE_THRESHOLD:g} (TALLRec's MovieLens rule)", scale
    if scale is None:
        raise ValueError("like threshold: the data declares no rating scale; give the threshold or the scale")
    t, rule = derive_threshold(scale)
    return t, rule, scale


def build_protocol(rec: RecData, config: ProtocolConfig = TALLREC_MOVIE, *, source: str | None = None) -> ProtocolResult:
    """Samples of ``config`` from ``rec``.

    Args:
        rec: the data (:func:`llmrec.data.load_dataset` or :func:`llmrec.data.read_tabular`).
        config: the protocol; :data:`TALLREC_MOVIE` reproduces TALLRec's movie splits (via
            :func:`~llmrec.samples.tallrec.tallrec_splits`).
        source: how to name the data in the record (a path); default ``rec.path``.

    Returns:
        :class:`ProtocolResult`.

    Raises:
        ValueError: a bad config field (named), a threshold outside the rating scale, an item text naming a
            column the catalogue lacks (named, with the columns it has), or no samples at all (says why).
    """
    config.check()
    threshold, rule, scale = _resolve_threshold(config, rec)
    format_fields(config.item_text, rec.catalog.columns, "item text")
    noun = config.item_noun or default_item_noun(rec)
    catalog = rec.catalog.item_text(config.item_text)
    if catalog.item_noun != noun:
        catalog = Catalog(catalog.frame, noun)
    resolved = replace(config, like_threshold=threshold, item_noun=noun)
    pair = None if scale is None else (float(scale[0]), float(scale[1]))
    if scale is not None and pair == (1.0, 5.0):
        pair = None  # MovieLens' own scale: samples stay as the TALLRec module builds them (mirror: 6 - r)
    is_preset = (resolved.like_threshold == LIKE_THRESHOLD and resolved.split == "user"
                 and resolved.history_order == "oldest-first" and tuple(resolved.split_fractions) == SPLIT_FRACTIONS
                 and resolved.n_keep is not None and pair is None)
    if is_preset:
        splits = tallrec_splits(rec.interactions, resolved.history_len, resolved.n_keep, threshold)
    else:
        windows = build_windows(rec.interactions, resolved.history_len, threshold, rating_scale=pair)
        if resolved.split == "time":
            times = _target_times(rec, resolved.history_len)
            order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
            windows = [windows[i] for i in order]
        if resolved.n_keep is not None:
            windows = windows[-resolved.n_keep:]
        if resolved.history_order == "newest-first":
            windows = [replace(s, history=s.history[::-1], history_ratings=s.history_ratings[::-1]) for s in windows]
        n = len(windows)
        a, b = int(n * resolved.split_fractions[0]), int(n * resolved.split_fractions[1])
        splits = TallrecSplits(windows[:a], windows[a:b], windows[b:])
    if not (splits.train or splits.valid or splits.test):
        counts = rec.interactions.frame["user_id"].value_counts()
        raise ValueError(f"data {source or rec.path}: no samples: every user has <= {resolved.history_len} ratings "
                         f"(most: {int(counts.max()) if len(counts) else 0}; a sample is {resolved.history_len} history "
                         f"ratings and a target; lower the history length)")
    data = {"data": str(source or rec.path or ""), "data_format": rec.format, "data_sha256": data_sha256(rec)}
    return ProtocolResult(splits, catalog, resolved, rule, scale, data, rec)


def _target_times(rec: RecData, history_len: int) -> list[int]:
    """The target timestamp of every window, in :func:`build_windows` order (users by first appearance,
    each user's ratings stably sorted by time)."""
    f = rec.interactions.frame
    stamps = f["timestamp"].tolist()
    rows_of: dict[str, list[int]] = {}
    for row, u in enumerate(f["user_id"].tolist()):
        rows_of.setdefault(u, []).append(row)
    out = []
    for rows in rows_of.values():
        if len(rows) <= history_len:
            continue
        ts = sorted(stamps[r] for r in rows)
        out.extend(ts[history_len:])
    return out
