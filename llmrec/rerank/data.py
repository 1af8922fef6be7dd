"""Reranking data: listwise/pointwise training lists with the retriever's hard negatives (the leave-one-out
split itself is :mod:`llmrec.data.loo`).

Protocol (LlamaRec, Yue et al. 2023): the retriever's top-``n`` unseen items are the candidates of a
user; evaluation is leave-one-out (last item = test, second-to-last = validation). Training examples
come from the *training* part only: for a training user the target is the last training item, the
history is everything before it, and the candidates are the retriever's own top-``n`` for that history
(hard negatives, the distribution the reranker sees at test time). If the retriever misses the target,
it replaces the lowest-ranked candidate (or, with ``retrieved_only=True``, the list is dropped: an inserted
target is an item the retriever ranked low, a cue a reranker can learn that never occurs among the test users
whose target *was* retrieved, the only users a reranker can help). Candidates are then shuffled, so the true item lands in every
position (LlamaRec trained on random negatives in shuffled order but was tested on the retriever's
top-20 in score order: a train/test mismatch in position, which this avoids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from llmrec.data.loo import LOOSplit

__all__ = ["ListExample", "training_lists", "pointwise_pairs", "popularity_sampler"]


@dataclass
class ListExample:
    """One listwise example.

    Attributes:
        user: user index.
        history: int64 ``(L,)`` chronological item indices.
        candidates: int64 ``(C,)`` item indices in presentation (shuffled) order.
        target_pos: position of the true item in ``candidates`` (0-based), -1 if absent.
    """

    user: int
    history: np.ndarray
    candidates: np.ndarray
    target_pos: int


def training_lists(split: LOOSplit, retrieve: Callable[[list[np.ndarray], int], np.ndarray], n_candidates: int = 20,
                   users: Sequence[int] | None = None, seed: int = 0, min_history: int = 3,
                   positions: int = 1, retrieved_only: bool = False) -> list[ListExample]:
    """Listwise training examples with the retriever's hard negatives, shuffled.

    Args:
        split: the leave-one-out split; only ``split.train`` is read (no validation/test leakage).
        retrieve: ``retrieve(histories, k) -> int64 (n, k)`` item indices, seen items excluded
            (e.g. ``lambda h, k: sasrec.query_index(h, k, index)[0]``).
        n_candidates: candidates per list (20 in LlamaRec).
        users: user indices to draw from (default: all users).
        seed: seeds the shuffles.
        min_history: a list needs at least this many history items before its target.
        positions: lists per user: the last ``positions`` training items are each a target once, with
            the items before it as the history (1 = LlamaRec's one list per user; more lists give the
            reranker more training signal from the same users without touching validation/test items).
        retrieved_only: keep only the lists whose target the retriever returned in its top ``n_candidates``
            (default False: a missed target replaces the lowest-ranked candidate). With a pointwise reranker
            the inserted targets teach "an item the retriever ranks low is the positive", which inverts on the
            retrieved test subset; dropping them matches the training positives to the test ones.

    Returns:
        list of :class:`ListExample` (user-major, most recent target first), each with the true item
        inside the candidates at a uniformly random position.

    Raises:
        ValueError: ``positions`` < 1.
    """
    if isinstance(positions, bool) or int(positions) != positions or positions < 1:
        raise ValueError(f"positions must be an integer >= 1, got {positions!r}")
    if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 2:
        raise ValueError(f"n_candidates must be an integer >= 2, got {n_candidates!r}")
    positions, n_candidates = int(positions), int(n_candidates)
    if users is not None:
        bad = [int(u) for u in users if not 0 <= int(u) < split.n_users]
        if bad:
            raise ValueError(f"users contains index {bad[0]} outside 0..{split.n_users - 1}")
    rng = np.random.default_rng(seed)
    us, hists, tgts = [], [], []
    for u in (range(split.n_users) if users is None else users):
        tr = split.train[int(u)]
        for back in range(1, positions + 1):
            if len(tr) - back < max(min_history, 1):
                break
            us.append(int(u))
            hists.append(tr[:-back])
            tgts.append(int(tr[-back]))
    if not us:
        return []
    cands = np.asarray(retrieve(hists, n_candidates))
    if cands.ndim != 2 or len(cands) != len(hists):
        raise ValueError(f"retrieve(histories, k) must return an int array of shape ({len(hists)}, k), got shape "
                         f"{cands.shape} (pass the ids only, e.g. lambda h, k: retriever.query(h, k)[0])")
    out = []
    for u, h, t, c in zip(us, hists, tgts, cands):
        c = [int(x) for x in c if x >= 0]
        if t not in c:
            if retrieved_only:
                continue
            c = c[: n_candidates - 1] + [t]
        c = np.asarray(c, np.int64)[rng.permutation(len(c))]
        out.append(ListExample(u, np.asarray(h, np.int64), c, int(np.nonzero(c == t)[0][0])))
    return out


def popularity_sampler(train: Sequence[np.ndarray], n_items: int, seed: int = 0
                       ) -> Callable[[list[np.ndarray], int], np.ndarray]:
    """A ``retrieve`` stand-in for :func:`training_lists` that draws each history's candidates at random instead of
    taking a model's top ``k``: ``k`` distinct items, each with probability proportional to its number of
    interactions in ``train`` (popularity-weighted negative sampling, as in word2vec and many sequential
    recommenders), the history's own items excluded.

    Why: the training targets are next items, drawn roughly by popularity; negatives drawn by the same law leave
    popularity no cue, so a pointwise reranker can only separate them by what the history says about the item. They
    are easy negatives (a collaborative model separates them far better than it separates the retriever's top 20),
    which gives the reranker a clear signal to learn to read before it meets the hard test lists.

    Args:
        train: per-user int arrays of item indices (``LOOSplit.train``); items never seen there are never drawn.
        n_items: catalogue size (item indices ``0..n_items-1``).
        seed: seeds the draws (one generator, drawn in call order).

    Returns:
        ``sample(histories, k) -> int64 (n, k)``: row ``i`` holds ``k`` distinct items outside ``histories[i]``,
        padded with -1 when fewer than ``k`` items are left to draw.

    Raises:
        ValueError: ``n_items`` not an integer >= 1, an item index that is not an integer in ``0..n_items-1`` in
            ``train`` (or, when sampling, in a history; -1 included), no interaction, or (when sampling) ``k`` not an
            integer >= 0. Each names the field, row and value.
    """
    n_items = _count("n_items", n_items, 1)
    seqs = [_item_row("train", i, t, n_items) for i, t in enumerate(train)]
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    if flat.size == 0:
        raise ValueError("train has no interaction to weigh items by")
    weight = np.bincount(flat, minlength=n_items).astype(np.float64)
    rng = np.random.default_rng(seed)

    def sample(histories: list[np.ndarray], k: int) -> np.ndarray:
        k = _count("k", k, 0)
        rows = [_item_row("histories", i, h, n_items) for i, h in enumerate(histories)]
        out = np.full((len(rows), k), -1, np.int64)
        for i, h in enumerate(rows):
            w = weight.copy()
            w[h] = 0.0
            n = min(k, int(np.count_nonzero(w)))
            if n:
                out[i, :n] = rng.choice(len(w), size=n, replace=False, p=w / w.sum())
        return out

    return sample


def _count(name: str, value, low: int) -> int:
    """``value`` as an int >= ``low``; ValueError naming ``name`` otherwise (bools, floats with a fraction, NaN)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not np.isfinite(value) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _item_row(name: str, row: int, items, n_items: int) -> np.ndarray:
    """One row of item indices as int64; ValueError naming ``name[row]`` and the value when it is not a 1-d run of
    integers in ``0..n_items-1``."""
    a = np.asarray(items)
    if a.ndim != 1:
        raise ValueError(f"{name}[{row}] must be a 1-d sequence of item indices, got shape {a.shape}")
    if a.size and (a.dtype == bool or not np.issubdtype(a.dtype, np.number) or np.any(a != np.round(a))):
        raise ValueError(f"{name}[{row}] must hold integer item indices, got {a[:5].tolist()!r}")
    a = a.astype(np.int64)
    bad = a[(a < 0) | (a >= n_items)]
    if bad.size:
        raise ValueError(f"{name}[{row}] contains item index {int(bad[0])} outside 0..{n_items - 1}")
    return a


def pointwise_pairs(examples: Sequence[ListExample], negatives: int = 3, seed: int = 0
                    ) -> list[tuple[np.ndarray, int, int]]:
    """TALLRec-style (history, candidate, label) triples from listwise examples: the true item (label 1)
    and ``negatives`` hard negatives (label 0) drawn from the same retrieved list.

    Raises:
        ValueError: negatives < 0."""
    if negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {negatives}")
    rng = np.random.default_rng(seed)
    out = []
    for ex in examples:
        out.append((ex.history, int(ex.candidates[ex.target_pos]), 1))
        neg = np.delete(ex.candidates, ex.target_pos)
        for j in rng.choice(len(neg), size=min(negatives, len(neg)), replace=False):
            out.append((ex.history, int(neg[j]), 0))
    return out
