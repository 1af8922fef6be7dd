"""Leave-one-out: k-core filtering, id encoding and the leave-one-out split on plain numpy interaction
arrays (:func:`leave_one_out`), and from any ``llmrec.data`` source with the raw ids kept
(:func:`loo_from_recdata`, :func:`load_loo_data` -> :class:`LOOData`). Retrieval, reranking, the
:class:`~llmrec.recommender.Recommender` and the eval scripts all start here.

Protocol (SASRec, Kang & McAuley 2018; LlamaRec, Yue et al. 2023): each user's interactions are sorted
by timestamp (stable: equal timestamps keep their input order); the last item is the test target, the
second-to-last the validation target, the rest is training history. Validation uses the training history
as input; test uses training history + the validation item.

ML-100K (RecBole ``ml-100k.inter``, 100,000 ratings, 943 users, 1,682 items): 5-core filtering removes
items with fewer than 5 interactions (333 items, 713 ratings); every user already has >= 20 ratings, so
the iteration converges after one round at 943 users, 1,349 items, 99,287 interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["kcore_filter", "encode_ids", "leave_one_out", "LOOSplit", "LOOData", "loo_from_recdata", "load_loo_data"]


def kcore_filter(users, items, k: int = 5, max_rounds: int = 100) -> np.ndarray:
    """Iteratively drop users and items with fewer than ``k`` interactions until none remain.

    Args:
        users, items: 1-D integer (or any hashable-valued) arrays of equal length ``n``.
        k: minimum interactions per user and per item (``k <= 1`` keeps everything).

    Returns:
        bool mask ``(n,)`` of interactions kept.

    Raises:
        ValueError: lengths differ, or k negative.
    """
    u = np.asarray(users)
    i = np.asarray(items)
    if u.shape != i.shape or u.ndim != 1:
        raise ValueError(f"users and items must be 1-D of equal length, got shapes {u.shape} and {i.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    _, uc = np.unique(u, return_inverse=True)
    _, ic = np.unique(i, return_inverse=True)
    keep = np.ones(u.shape[0], dtype=bool)
    for _ in range(max_rounds):
        n_before = int(keep.sum())
        icount = np.bincount(ic[keep], minlength=ic.max(initial=-1) + 1)
        keep &= icount[ic] >= k
        ucount = np.bincount(uc[keep], minlength=uc.max(initial=-1) + 1)
        keep &= ucount[uc] >= k
        if int(keep.sum()) == n_before:
            break
    return keep


def encode_ids(raw) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to contiguous indices ``0..n-1`` (sorted order of the unique raw ids).

    Returns:
        ``(codes int64 (n,), uniques (n_unique,))`` with ``uniques[codes] == raw``.
    """
    uniq, codes = np.unique(np.asarray(raw), return_inverse=True)
    return codes.astype(np.int64), uniq


@dataclass
class LOOSplit:
    """Leave-one-out split over users ``0..n_users-1`` and items ``0..n_items-1``.

    Attributes:
        train: list (length n_users) of int64 arrays, chronological training items per user.
        valid: int64 ``(n_users,)`` validation target per user, -1 when the user has < 3 interactions.
        test: int64 ``(n_users,)`` test target per user, -1 when the user has < 3 interactions.
        n_items: catalogue size.
    """

    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray
    n_items: int

    @property
    def n_users(self) -> int:
        return len(self.train)

    def eval_users(self) -> np.ndarray:
        """Indices of users that have validation and test targets (int64)."""
        return np.nonzero(self.test >= 0)[0]

    def valid_inputs(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """``(users, histories, targets)`` for validation: history = train part."""
        us = self.eval_users()
        return us, [self.train[u] for u in us], self.valid[us]

    def test_inputs(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """``(users, histories, targets)`` for test: history = train part + validation item."""
        us = self.eval_users()
        hist = [np.append(self.train[u], self.valid[u]) for u in us]
        return us, hist, self.test[us]


def leave_one_out(users, items, timestamps, n_users: int | None = None, n_items: int | None = None) -> LOOSplit:
    """Split interactions by leave-one-out (see module docstring).

    Args:
        users: int array ``(n,)`` of user indices in ``[0, n_users)``.
        items: int array ``(n,)`` of item indices in ``[0, n_items)``.
        timestamps: numeric array ``(n,)`` (any unit; only the order matters).
        n_users, n_items: sizes; default ``max + 1``.

    Returns:
        :class:`LOOSplit`. Users with fewer than 3 interactions keep everything in train and get
        valid = test = -1.

    Raises:
        ValueError: lengths differ, empty input, negative or out-of-range indices.
    """
    u = np.asarray(users)
    i = np.asarray(items)
    t = np.asarray(timestamps)
    if not (u.ndim == i.ndim == t.ndim == 1) or not (u.shape == i.shape == t.shape):
        raise ValueError(f"users, items, timestamps must be 1-D of equal length, got {u.shape}, {i.shape}, {t.shape}")
    if u.size == 0:
        raise ValueError("users is empty: no interactions to split")
    for name, a in (("users", u), ("items", i)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integer indices (use encode_ids), got dtype {a.dtype}")
        if a.min() < 0:
            raise ValueError(f"{name} contains negative index {int(a.min())}")
    n_users = int(u.max()) + 1 if n_users is None else int(n_users)
    n_items = int(i.max()) + 1 if n_items is None else int(n_items)
    if u.max() >= n_users:
        raise ValueError(f"users contains index {int(u.max())} >= n_users={n_users}")
    if i.max() >= n_items:
        raise ValueError(f"items contains index {int(i.max())} >= n_items={n_items}")
    order = np.lexsort((t, u))  # stable: by user, then timestamp, ties keep input order
    u_s, i_s = u[order].astype(np.int64), i[order].astype(np.int64)
    counts = np.bincount(u_s, minlength=n_users)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    train, valid, test = [], np.full(n_users, -1, np.int64), np.full(n_users, -1, np.int64)
    for uu in range(n_users):
        seq = i_s[bounds[uu] : bounds[uu + 1]]
        if seq.size >= 3:
            train.append(seq[:-2].copy())
            valid[uu], test[uu] = seq[-2], seq[-1]
        else:
            train.append(seq.copy())
    return LOOSplit(train=train, valid=valid, test=test, n_items=n_items)


@dataclass
class LOOData:
    """A leave-one-out split with the raw ids behind its indices.

    Attributes:
        split: :class:`LOOSplit` over item indices ``0..n_items-1``.
        user_ids: ``(n_users,)`` array of raw user id strings; ``user_ids[u]`` is user index u.
        item_ids: ``(n_items,)`` array of raw item id strings; ``item_ids[j]`` is item index j.
        full: per-user chronological item indices including the validation and test items
            (what ``llmrec recommend --user`` uses as the history).
    """

    split: LOOSplit
    user_ids: np.ndarray
    item_ids: np.ndarray
    full: list[np.ndarray]

    def item_index(self) -> dict[str, int]:
        """``{raw item id: index}``."""
        return {str(r): j for j, r in enumerate(self.item_ids)}


def load_loo_data(data=None, kcore: int = 5):
    """Read a dataset and split it leave-one-out: what every eval script and ``Recommender.build`` start
    with.

    Args:
        data: a dataset folder (GroupLens raw, RecBole atomic, MovieLens CSV; see
            :func:`llmrec.data.load_dataset`), an already loaded :class:`llmrec.data.RecData`, or ``None``
            for the embedded ML-100K.
        kcore: as in :func:`loo_from_recdata`.

    Returns:
        ``(RecData, LOOData)``.

    Raises:
        the readers' errors (FileNotFoundError, ValueError), and those of :func:`loo_from_recdata`.
    """
    if data is None:
        from llmrec import assets

        data = assets.ml100k_dir()
    if not hasattr(data, "interactions"):
        from llmrec.data.readers import load_dataset

        data = load_dataset(data)
    return data, loo_from_recdata(data, kcore)


def loo_from_recdata(rec, kcore: int = 5) -> LOOData:
    """k-core filter, encode ids (sorted raw ids) and split leave-one-out from any ``llmrec.data`` source.

    Args:
        rec: :class:`llmrec.data.RecData` (``interactions.frame`` with user_id, item_id, timestamp).
        kcore: minimum interactions per user and item (<= 1 keeps everything).

    Returns:
        :class:`LOOData`. On ML-100K (5-core): 943 users, 1,349 items.

    Raises:
        ValueError: no interactions survive the filter.
    """
    f = rec.interactions.frame
    ru, ri, ts = f["user_id"].to_numpy(), f["item_id"].to_numpy(), f["timestamp"].to_numpy()
    keep = kcore_filter(ru, ri, kcore) if kcore > 1 else np.ones(len(ru), bool)
    if not keep.any():
        raise ValueError(f"no interactions left after {kcore}-core filtering")
    uc, uraw = encode_ids(ru[keep])
    ic, iraw = encode_ids(ri[keep])
    split = leave_one_out(uc, ic, ts[keep], len(uraw), len(iraw))
    full = [np.concatenate([split.train[u], [split.valid[u], split.test[u]]]) if split.test[u] >= 0
            else split.train[u] for u in range(split.n_users)]
    return LOOData(split, uraw.astype(str), iraw.astype(str), [np.asarray(x, np.int64) for x in full])
