"""Input validation and top-k helpers shared by the retrieval modules.

Everything works on *item indices*: contiguous ints in ``[0, n_items)`` (see
:func:`llmrec.data.loo.encode_ids` for the mapping from raw ids).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["check_histories", "check_k", "topk_excluding_seen", "seen_mask"]


def check_histories(histories: Sequence[Sequence[int]], n_items: int, name: str = "histories") -> list[np.ndarray]:
    """Validate a batch of item-index histories and return them as int64 arrays.

    Args:
        histories: sequence of 1-D integer sequences (oldest item first).
        n_items: catalogue size; valid indices are ``0 .. n_items-1``.
        name: field name used in error messages.

    Returns:
        list of ``np.ndarray`` (int64, 1-D), one per user.

    Raises:
        ValueError: no histories, an empty history, a non-1-D history, or an item index outside
            ``[0, n_items)`` (message names the field, the user position and the offending value).
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    if len(histories) == 0:
        raise ValueError(f"{name} is empty: need at least one user history")
    out = []
    for u, h in enumerate(histories):
        a = np.asarray(h)
        if a.ndim != 1:
            raise ValueError(f"{name}[{u}] must be 1-D, got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"{name}[{u}] is empty: every user needs at least one history item")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}[{u}] must hold integer item indices, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= n_items:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}[{u}] contains unknown item index {bad} (n_items={n_items})")
        out.append(a)
    return out


def check_k(k: int, n_items: int, name: str = "k") -> int:
    """Raise ValueError unless ``1 <= k <= n_items``; return ``int(k)``."""
    if int(k) != k or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if k > n_items:
        raise ValueError(f"{name}={k} is larger than the catalogue (n_items={n_items})")
    return int(k)


def seen_mask(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Boolean matrix ``(n_users, n_items)``: True where the item is in the user's history."""
    m = np.zeros((len(histories), n_items), dtype=bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    m[rows, np.concatenate(histories)] = True
    return m


def topk_excluding_seen(
    scores: np.ndarray, k: int, histories: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices of a dense score matrix, optionally dropping seen items.

    Args:
        scores: ``(n_users, n_items)`` float array (higher = better).
        k: list length, ``1 <= k <= n_items``.
        histories: per-user seen item indices to exclude, or None.

    Returns:
        ``(ids, scores)``: int64 ``(n_users, k)`` and float32 ``(n_users, k)``, best first. If a user
        has fewer than k unseen items, the tail is padded with id -1 and score -inf.
        Ties are broken by the lower item index (deterministic).
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_users, n_items), got shape {s.shape}")
    n_users, n_items = s.shape
    k = check_k(k, n_items)
    if histories is not None:
        if len(histories) != n_users:
            raise ValueError(f"histories has {len(histories)} users but scores has {n_users} rows")
        s[seen_mask(histories, n_items)] = -np.inf
    if k < n_items:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        # argpartition is not tie-stable; recover exact ties with the k-th score
        kth = np.take_along_axis(s, part, 1).min(axis=1, keepdims=True)
        cand = s >= kth
        # rows where ties at the boundary exceed k: fall back to full stable sort for those rows
        if (cand.sum(1) > k).any():
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        else:
            # sort the k survivors by item index, then stably by score: ties -> lower index first
            part = np.sort(part, axis=1)
            sub = np.take_along_axis(s, part, 1)
            order = np.take_along_axis(part, np.argsort(-sub, axis=1, kind="stable"), 1)
    else:
        order = np.argsort(-s, axis=1, kind="stable")
    top = np.take_along_axis(s, order, 1)
    ids = order.astype(np.int64)
    ids[~np.isfinite(top) & (top < 0)] = -1
    return ids, top.astype(np.float32)
