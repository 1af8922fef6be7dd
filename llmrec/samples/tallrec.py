"""The TALLRec movie protocol (Bao et al., "TALLRec: An Effective and Efficient Tuning Framework to Align
Large Language Model with Recommendation", RecSys 2023; preprocessing as in the authors' repository,
``preprocess_movie.py``).

Protocol, from an :class:`~llmrec.data.Interactions` log (MovieLens-100K ``u.data`` order):

1. Group ratings by user; users are taken in the order they first appear in the file.
2. Sort each user's ratings by timestamp with a *stable* sort (ties keep file order). TALLRec sorts the
   timestamp *strings*; for ML-100K (all 9 digits) that equals the numeric order used here.
3. For every position ``i >= 10`` of a user's sequence, the 10 previous items are the history and item
   ``i`` the target. Liked means ``rating > 3``.
4. Concatenate all users' windows, keep the last 10,000, split 80/10/10 in that order
   (``[:int(.8 n)]``, ``[int(.8 n):int(.9 n)]``, ``[int(.9 n):]``) -> train 8,000 / valid 1,000 /
   test 1,000. The split is therefore by user, not by time.

On RecBole's ML-100K this regenerates TALLRec's published ``valid.json`` and ``test.json`` record for
record (tests/samples/test_samples.py checks all 2,000).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..data.alpaca import write_alpaca_json
from ..data.core import Catalog, Interactions

__all__ = [
    "SPLITS",
    "sample_for_user",
    "split_samples",
    "HISTORY_LEN",
    "LIKE_THRESHOLD",
    "N_KEEP",
    "TALLREC_INSTRUCTION",
    "Sample",
    "TallrecSplits",
    "is_liked",
    "build_windows",
    "tallrec_splits",
    "template_variables",
    "tallrec_input",
    "tallrec_instruction",
    "to_alpaca",
    "write_alpaca",
    "to_hf_dataset",
    "samples_from_hf_dataset",
]

HISTORY_LEN = 10
LIKE_THRESHOLD = 3.0
N_KEEP = 10_000
SPLIT_FRACTIONS = (0.8, 0.9)

TALLREC_INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the target movie "
    'by answering "Yes." or "No.".'
)


def tallrec_instruction(item_noun: str = "movie") -> str:
    """TALLRec's instruction with ``movie`` replaced by ``item_noun`` (``"movie"``: :data:`TALLREC_INSTRUCTION`;
    ``"book"``: the wording of TALLRec's book data)."""
    return TALLREC_INSTRUCTION.replace("target movie", f"target {item_noun}")


def is_liked(rating: float, threshold: float = LIKE_THRESHOLD) -> bool:
    """TALLRec's like rule: ``rating > threshold`` (3 on the 1-5 MovieLens scale)."""
    return float(rating) > threshold


@dataclass(frozen=True)
class Sample:
    """One (history, target) example.

    Attributes:
        user_id: the user (str token).
        history: ``HISTORY_LEN`` item ids (str), oldest first.
        history_ratings: their ratings (float), same order.
        target: the item to predict (str).
        target_rating: its rating (float).
        label: 1 if the target is liked (``target_rating > threshold``), else 0.
        like_threshold: the protocol's like rule, ``rating > like_threshold`` (TALLRec-movie: 3); the prompt's
            liked/disliked split, the like-rate baseline and augmentation read it from here.
        rating_scale: ``(low, high)`` of the ratings, or None (MovieLens' 1..5); ``mirror`` augmentation maps
            ``r -> low + high - r``. Label-only data (no ratings): ``(0.0, 1.0)`` with threshold 0.5.
    """

    user_id: str
    history: list[str]
    history_ratings: list[float]
    target: str
    target_rating: float
    label: int
    like_threshold: float = LIKE_THRESHOLD
    rating_scale: tuple | None = None

    def to_dict(self) -> dict:
        """The fields as a plain dict (lists copied)."""
        return asdict(self)


@dataclass
class TallrecSplits:
    """The three parts of the protocol, each a ``list[Sample]`` in protocol order."""

    train: list[Sample] = field(default_factory=list)
    valid: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)

    def __iter__(self):
        return iter((("train", self.train), ("valid", self.valid), ("test", self.test)))


def build_windows(
    interactions: Interactions,
    history_len: int = HISTORY_LEN,
    like_threshold: float = LIKE_THRESHOLD,
    last: int | None = None,
    rating_scale: tuple | None = None,
) -> list[Sample]:
    """All sliding windows of the protocol (steps 1-3 of the module docstring), in protocol order.

    Args:
        interactions: the rating log; its row order is the file order.
        history_len: history length (TALLRec: 10); a user with ``<= history_len`` ratings gives none.
        like_threshold: ``label = int(target_rating > like_threshold)``.
        last: if given, build only the last ``last`` windows (same result as ``[-last:]``, cheaper).
        rating_scale: ``(low, high)`` recorded on every sample (see :class:`Sample`); None for MovieLens.

    Returns:
        ``list[Sample]``; ``sum(max(0, n_u - history_len))`` of them without ``last``.

    Raises:
        ValueError: ``history_len < 1`` or ``last < 0``.
    """
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, got {last}")
    f = interactions.frame
    users = f["user_id"].tolist()
    items = f["item_id"].tolist()
    ratings = f["rating"].tolist()
    stamps = f["timestamp"].tolist()

    rows_of: dict[str, list[int]] = {}  # insertion order = first appearance in the file
    for row, u in enumerate(users):
        rows_of.setdefault(u, []).append(row)

    per_user = [(u, rows) for u, rows in rows_of.items() if len(rows) > history_len]
    if last is not None:  # walk back from the end to find the users that hold the last `last` windows
        need, start = last, len(per_user)
        while need > 0 and start > 0:
            start -= 1
            need -= len(per_user[start][1]) - history_len
        per_user = per_user[start:]
        skip = max(0, -need)  # windows of the first kept user that fall before the cut
    else:
        skip = 0

    out: list[Sample] = []
    for u, rows in per_user:
        rows = sorted(rows, key=stamps.__getitem__)  # stable: ties keep file order
        seq_items = [items[r] for r in rows]
        seq_ratings = [ratings[r] for r in rows]
        for i in range(history_len, len(rows)):
            if skip:
                skip -= 1
                continue
            out.append(Sample(
                user_id=u,
                history=seq_items[i - history_len:i],
                history_ratings=seq_ratings[i - history_len:i],
                target=seq_items[i],
                target_rating=seq_ratings[i],
                label=int(seq_ratings[i] > like_threshold),
                like_threshold=float(like_threshold),
                rating_scale=rating_scale,
            ))
    return out


def tallrec_splits(
    interactions: Interactions,
    history_len: int = HISTORY_LEN,
    n_keep: int = N_KEEP,
    like_threshold: float = LIKE_THRESHOLD,
) -> TallrecSplits:
    """The full TALLRec protocol: windows, the last ``n_keep``, split 80/10/10 in order.

    Returns:
        :class:`TallrecSplits`; for ML-100K 8,000 / 1,000 / 1,000 samples. With fewer than ``n_keep``
        windows all are kept and split with the same fractions (as TALLRec's slicing does).

    Raises:
        ValueError: ``n_keep < 1`` or ``history_len < 1``.
    """
    if n_keep < 1:
        raise ValueError(f"n_keep must be >= 1, got {n_keep}")
    kept = build_windows(interactions, history_len, like_threshold, last=n_keep)
    n = len(kept)
    a, b = int(n * SPLIT_FRACTIONS[0]), int(n * SPLIT_FRACTIONS[1])
    return TallrecSplits(kept[:a], kept[a:b], kept[b:])


def template_variables(sample: Sample, catalog: Catalog, like_threshold: float | None = None,
                       item_noun: str | None = None) -> dict:
    """The variables a prompt template sees for one sample.

    Args:
        sample / catalog: the sample and the titles (item texts) of its items.
        like_threshold: liked means ``rating > like_threshold``; default: the sample's own
            (``sample.like_threshold``, 3 for TALLRec-movie).
        item_noun: what an item is, in the prompt's words (``"movie"``, ``"book"``); templates read it as
            ``{{ item_noun }}``. Default: the catalog's own (``catalog.item_noun``, ``"movie"`` for MovieLens).

    Returns:
        dict with keys
        ``user_id`` (str); ``item_noun`` (str);
        ``liked`` / ``disliked`` (``list[str]``: titles of the liked / not-liked history items, history order);
        ``history`` (``list[dict]`` with ``item_id``, ``title``, ``year`` (int | None), ``genres`` (list[str]),
        ``rating`` (float), ``liked`` (bool), oldest first);
        ``target`` (title), ``target_id``, ``target_year`` (int | None), ``target_genres`` (list[str]);
        ``label`` (int; the answer -- for rendering training targets only, never the prompt).

    Raises:
        KeyError: an item id is not in the catalog (the message names it).
    """
    if like_threshold is None:
        like_threshold = sample.like_threshold
    if item_noun is None:
        item_noun = getattr(catalog, "item_noun", "movie")
    history = []
    for item, rating in zip(sample.history, sample.history_ratings):
        title, year, genres = catalog._row(item)
        history.append({"item_id": item, "title": title, "year": year, "genres": list(genres),
                        "rating": float(rating), "liked": bool(rating > like_threshold)})
    t_title, t_year, t_genres = catalog._row(sample.target)
    return {
        "user_id": sample.user_id,
        "item_noun": item_noun,
        "liked": [h["title"] for h in history if h["liked"]],
        "disliked": [h["title"] for h in history if not h["liked"]],
        "history": history,
        "target": t_title,
        "target_id": sample.target,
        "target_year": t_year,
        "target_genres": list(t_genres),
        "label": int(sample.label),
    }


def _quoted(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def tallrec_input(variables: dict) -> str:
    """TALLRec's alpaca ``input`` from :func:`template_variables` output.

    ``User Preference: "t1", "t2"\\nUser Unpreference: "t3"\\nWhether the user will like the target movie "T"?``;
    an empty list leaves nothing after the colon-space (``User Unpreference: \\n``). The noun is
    ``variables["item_noun"]`` (default ``movie``).
    """
    noun = variables.get("item_noun", "movie")
    return (f"User Preference: {_quoted(variables['liked'])}\n"
            f"User Unpreference: {_quoted(variables['disliked'])}\n"
            f"Whether the user will like the target {noun} \"{variables['target']}\"?")


def to_alpaca(
    samples: Iterable[Sample],
    catalog: Catalog,
    render: Callable[[dict], tuple[str, str]] | None = None,
    answers: tuple[str, str] = ("Yes.", "No."),
    item_noun: str | None = None,
) -> list[dict]:
    """Samples -> alpaca records ``{"instruction", "input", "output"}``.

    Args:
        samples: the samples.
        catalog: titles for the item ids.
        render: ``variables -> (instruction, input)``; default TALLRec's (:data:`TALLREC_INSTRUCTION`,
            :func:`tallrec_input`).
        answers: outputs for label 1 and 0.
        item_noun: the item word of TALLRec's wording (``"movie"``, ``"book"``), also given to ``render``;
            default the catalog's (``"movie"`` for MovieLens).

    Returns:
        ``list[dict]``; with the defaults, identical to TALLRec's published records.

    Raises:
        KeyError: an item id is not in the catalog.
    """
    out = []
    for s in samples:
        v = template_variables(s, catalog, item_noun=item_noun)
        instruction, inp = render(v) if render else (tallrec_instruction(v["item_noun"]), tallrec_input(v))
        out.append({"instruction": instruction, "input": inp, "output": answers[0] if s.label else answers[1]})
    return out


def write_alpaca(samples: Iterable[Sample], catalog: Catalog, path: str | os.PathLike, **kw) -> Path:
    """:func:`to_alpaca` then :func:`llmrec.data.write_alpaca_json` (TALLRec's ``indent=4`` layout)."""
    return write_alpaca_json(to_alpaca(samples, catalog, **kw), path)


def to_hf_dataset(samples: Sequence[Sample], catalog: Catalog | None = None):
    """Samples -> ``datasets.Dataset``.

    Columns: ``user_id`` (string), ``history`` (list of string), ``history_ratings`` (list of float64),
    ``target`` (string), ``target_rating`` (float64), ``label`` (int64); with a ``catalog`` also
    ``history_titles`` (list of string) and ``target_title`` (string). Row order = sample order.
    """
    import datasets

    cols: dict[str, list] = {
        "user_id": [s.user_id for s in samples],
        "history": [list(s.history) for s in samples],
        "history_ratings": [[float(r) for r in s.history_ratings] for s in samples],
        "target": [s.target for s in samples],
        "target_rating": [float(s.target_rating) for s in samples],
        "label": [int(s.label) for s in samples],
    }
    features = {
        "user_id": datasets.Value("string"),
        "history": datasets.Sequence(datasets.Value("string")),
        "history_ratings": datasets.Sequence(datasets.Value("float64")),
        "target": datasets.Value("string"),
        "target_rating": datasets.Value("float64"),
        "label": datasets.Value("int64"),
    }
    if catalog is not None:
        cols["history_titles"] = [[catalog.title(i) for i in s.history] for s in samples]
        cols["target_title"] = [catalog.title(s.target) for s in samples]
        features["history_titles"] = datasets.Sequence(datasets.Value("string"))
        features["target_title"] = datasets.Value("string")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(features))


def samples_from_hf_dataset(ds) -> list[Sample]:
    """Inverse of :func:`to_hf_dataset` (extra columns ignored)."""
    return [
        Sample(r["user_id"], list(r["history"]), [float(x) for x in r["history_ratings"]], r["target"],
               float(r["target_rating"]), int(r["label"]))
        for r in ds
    ]


SPLITS = ("train", "valid", "test", "all")


def split_samples(splits, name: str) -> list:
    """``splits.train/valid/test`` or all three concatenated (``"all"``), as a list of Sample.

    Raises:
        ValueError: unknown split name.
    """
    if name not in SPLITS:
        raise ValueError(f"split {name!r}: expected one of {', '.join(SPLITS)}")
    if name == "all":
        return list(splits.train) + list(splits.valid) + list(splits.test)
    return list(getattr(splits, name))


def sample_for_user(rec, user: str, target: str, history_len: int = HISTORY_LEN,
                    like_threshold: float = LIKE_THRESHOLD, rating_scale: tuple | None = None):
    """A :class:`~llmrec.samples.tallrec.Sample` for one (user, target) pair, as ``llmrec score --user --target``
    and ``llmrec prompts render --user --target`` build it (the one implementation).

    The history is the user's last ``history_len`` ratings by time, without the target item itself. If the
    user rated the target, ``target_rating``/``label`` are that rating (``> like_threshold`` = liked); else 0.0 / 0.

    Raises:
        ValueError: unknown user (no ratings) or unknown target item id.
    """
    inter = rec.interactions.frame
    hist = inter[inter["user_id"] == str(user)]
    if hist.empty:
        raise ValueError(f"user {user!r}: unknown user (no ratings in the data)")
    if str(target) not in rec.catalog:
        raise ValueError(f"target {target!r}: unknown item id")
    hist = hist.sort_values("timestamp", kind="stable")
    own = hist[hist["item_id"] == str(target)]
    rating = float(own["rating"].iloc[-1]) if not own.empty else 0.0
    hist = hist[hist["item_id"] != str(target)].tail(history_len)
    return Sample(str(user), hist["item_id"].tolist(), hist["rating"].astype(float).tolist(), str(target), rating,
                  int(rating > like_threshold), float(like_threshold), rating_scale)
