"""Evaluation metrics: leave-one-out ranking metrics and ROC-AUC.

Ranking metrics follow the leave-one-out protocol of SASRec (Kang & McAuley 2018) and LlamaRec
(Yue et al. 2023): every user has exactly one held-out (true) item; a ranked candidate list is scored
by the 1-based position ``r`` of the true item in it:

* Recall@K (= HitRate@K with one positive) = 1 if r <= K else 0
* NDCG@K = 1 / log2(r + 1) if r <= K else 0   (the ideal DCG is 1 with one positive)
* MRR@K  = 1 / r if r <= K else 0

A user whose true item is not in the list (e.g. the retriever missed it) scores 0 on all three.
All functions are vectorised over users and return the mean over users (float) unless
``reduce=False``, in which case they return per-user float64 arrays of shape ``(n_users,)``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["true_item_rank", "ndcg_at_k", "recall_at_k", "hit_rate_at_k", "mrr_at_k", "ranking_metrics", "auc", "uauc"]


def _check_ranked(ranked, true_items) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ranked)
    t = np.asarray(true_items)
    if r.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, list_len), got shape {r.shape}")
    if t.ndim != 1 or t.shape[0] != r.shape[0]:
        raise ValueError(f"true_items must be 1-D with {r.shape[0]} entries (one per row of ranked), got shape {t.shape}")
    if r.shape[0] == 0:
        raise ValueError("ranked is empty: need at least one user")
    if not np.issubdtype(r.dtype, np.integer) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"ranked and true_items must hold integer item ids, got {r.dtype} and {t.dtype}")
    if (t < 0).any():
        raise ValueError(f"true_items contains a negative id {int(t.min())}; negative ids mean padding in ranked")
    # duplicates (ignoring padding id -1) make the position ambiguous
    if r.shape[1] > 1:
        s = np.sort(r, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            row = int(np.nonzero(dup.any(1))[0][0])
            raise ValueError(f"ranked[{row}] contains a duplicate item id")
    return r.astype(np.int64, copy=False), t.astype(np.int64, copy=False)


def true_item_rank(ranked, true_items) -> np.ndarray:
    """1-based position of each user's true item in its ranked list, 0 when absent.

    Args:
        ranked: int array ``(n_users, L)``, best first; -1 may pad short lists.
        true_items: int array ``(n_users,)``, non-negative.

    Returns:
        int64 array ``(n_users,)``.

    Raises:
        ValueError: wrong shapes/dtypes, empty input, negative true id, duplicate ids within a row.
    """
    r, t = _check_ranked(ranked, true_items)
    hit = r == t[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, 0).astype(np.int64)


def _rank_k(ranked, true_items, k: int) -> np.ndarray:
    r = np.asarray(ranked)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if r.ndim == 2 and k > r.shape[1]:
        raise ValueError(f"k={k} is larger than the ranked list length {r.shape[1]}")
    rank = true_item_rank(ranked, true_items)
    return np.where((rank >= 1) & (rank <= k), rank, 0)


def _reduce(v: np.ndarray, reduce: bool):
    return float(v.mean()) if reduce else v


def ndcg_at_k(ranked, true_items, k: int, reduce: bool = True):
    """NDCG@K with one relevant item per user: ``1/log2(rank+1)`` if rank <= K else 0.

    Raises ValueError when k < 1 or k exceeds the list length (plus the checks of
    :func:`true_item_rank`).
    """
    rk = _rank_k(ranked, true_items, k)
    v = np.zeros(rk.shape, dtype=np.float64)
    m = rk > 0
    v[m] = 1.0 / np.log2(rk[m] + 1.0)
    return _reduce(v, reduce)


def recall_at_k(ranked, true_items, k: int, reduce: bool = True):
    """Recall@K with one relevant item per user (identical to HitRate@K): 1 if rank <= K else 0."""
    return _reduce((_rank_k(ranked, true_items, k) > 0).astype(np.float64), reduce)


hit_rate_at_k = recall_at_k


def mrr_at_k(ranked, true_items, k: int, reduce: bool = True):
    """MRR@K with one relevant item per user: ``1/rank`` if rank <= K else 0."""
    rk = _rank_k(ranked, true_items, k)
    v = np.zeros(rk.shape, dtype=np.float64)
    m = rk > 0
    v[m] = 1.0 / rk[m]
    return _reduce(v, reduce)


def ranking_metrics(
    ranked,
    true_items,
    ndcg_ks: Iterable[int] = (5, 10),
    recall_ks: Iterable[int] = (5, 10, 20),
    mrr_ks: Iterable[int] = (10,),
) -> dict[str, float]:
    """All leave-one-out metrics in one dict, keys like ``"NDCG@10"``, ``"Recall@20"``, ``"MRR@10"``.

    ``ranked`` must be at least ``max(all ks)`` long.
    """
    out: dict[str, float] = {}
    for k in ndcg_ks:
        out[f"NDCG@{k}"] = ndcg_at_k(ranked, true_items, k)
    for k in recall_ks:
        out[f"Recall@{k}"] = recall_at_k(ranked, true_items, k)
    for k in mrr_ks:
        out[f"MRR@{k}"] = mrr_at_k(ranked, true_items, k)
    return out


def auc(labels, scores) -> float:
    """ROC-AUC of binary labels against real-valued scores (``sklearn.metrics.roc_auc_score``).

    Args:
        labels: 1-D array of 0/1 (or bool) ground truth, shape ``(n,)``.
        scores: 1-D float array ``(n,)``, higher = more likely positive (e.g. P("Yes")).

    Returns:
        AUC in ``[0, 1]`` as a Python float (ties count 1/2, as in sklearn).

    Raises:
        ValueError: shapes differ or are not 1-D, empty input, labels not in {0, 1}, non-finite scores,
            or labels containing one class only (AUC is undefined then; the message names the class).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.shape[0]} entries but scores has {s.shape[0]}")
    if y.size == 0:
        raise ValueError("labels is empty")
    if y.dtype == bool:
        y = y.astype(np.int64)
    vals = np.unique(y)
    if not np.isin(vals, [0, 1]).all():
        raise ValueError(f"labels must be 0/1, found values {vals[~np.isin(vals, [0, 1])][:5].tolist()}")
    if vals.size < 2:
        raise ValueError(
            f"labels contain only one class ({int(vals[0])}); ROC-AUC needs both positives (1) and negatives (0)"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or infinite values")
    return float(roc_auc_score(y.astype(np.int64), s))


def uauc(users, labels, scores) -> dict:
    """User-averaged AUC (UAUC): the mean over users of each user's own ROC-AUC.

    Follows CoLLM (Zhang et al., "CoLLM: Integrating Collaborative Embeddings into Large Language Models for
    Recommendation", TKDE; ``uAUC`` in the authors' evaluation code): samples are grouped by user, a user
    counts only when its samples hold both labels, and the result is the unweighted mean of those users'
    AUCs (``sklearn.metrics.roc_auc_score`` per user, ties count 1/2). Because a user's like-rate is almost
    constant across the user's own samples, UAUC shows what a score knows beyond "this user likes most
    things"; a per-user constant scores exactly 0.5.

    Args:
        users: 1-D sequence ``(n,)`` of user ids (any hashable; compared with ``==``).
        labels: 1-D 0/1 (or bool) array ``(n,)``.
        scores: 1-D float array ``(n,)``, higher = more likely positive.

    Returns:
        ``{"uauc": float, "n_users": users counted, "n_users_total": distinct users, "n_samples": samples of
        the counted users}``. ``uauc`` is NaN when no user holds both labels.

    Raises:
        ValueError: lengths differ or are not 1-D, empty input, labels not in {0, 1}, non-finite scores.
    """
    from sklearn.metrics import roc_auc_score

    u = np.asarray(list(users), dtype=object)
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if u.ndim != 1 or y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"users, labels and scores must be 1-D, got shapes {u.shape}, {y.shape}, {s.shape}")
    if not u.shape == y.shape == s.shape:
        raise ValueError(f"users has {u.shape[0]} entries, labels {y.shape[0]}, scores {s.shape[0]}: must be equal")
    if y.size == 0:
        raise ValueError("labels is empty")
    if y.dtype == bool:
        y = y.astype(np.int64)
    bad = ~np.isin(y, [0, 1])
    if bad.any():
        raise ValueError(f"labels must be 0/1, found values {np.unique(y[bad])[:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or infinite values")
    groups: dict = {}
    for i, user in enumerate(u.tolist()):
        groups.setdefault(user, []).append(i)
    per_user, n_samples = [], 0
    for idx in groups.values():
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        per_user.append(roc_auc_score(yy.astype(np.int64), s[idx]))
        n_samples += len(idx)
    return {"uauc": float(np.mean(per_user)) if per_user else float("nan"), "n_users": len(per_user),
            "n_users_total": len(groups), "n_samples": n_samples}


def paired_bootstrap_auc(labels, scores_a, scores_b, *, n_resamples: int = 1000, seed: int = 0,
                         ci: float = 0.95) -> dict:
    """AUC of two score vectors on the same samples, their difference and a paired bootstrap CI.

    Each resample draws ``n`` sample indices with replacement (``numpy.random.default_rng(seed)``) and
    computes ``AUC(b) - AUC(a)`` on that same resample (``sklearn.metrics.roc_auc_score``); resamples
    holding one class only are skipped (counted in ``skipped``). The interval is the percentile interval.

    Args:
        labels: (n,) 0/1 labels; scores_a, scores_b: (n,) float scores of template A and B.

    Returns:
        ``{"auc_a", "auc_b", "diff"`` (b - a), ``"ci_low", "ci_high", "ci", "n", "n_resamples", "skipped",
        "p_value"}`` (two-sided bootstrap p of ``diff == 0``: twice the smaller tail fraction, capped at 1).

    Raises:
        ValueError: shapes differ, the labels hold one class only, or ``n_resamples`` < 1 (no interval).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(np.int64)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if not (y.ndim == a.ndim == b.ndim == 1 and y.shape == a.shape == b.shape):
        raise ValueError(f"labels {y.shape}, scores_a {a.shape} and scores_b {b.shape} must be equal 1-D shapes")
    if len(np.unique(y)) < 2:
        raise ValueError(f"labels hold one class only ({np.unique(y).tolist()}); AUC is undefined")
    if not 0 < ci < 1:
        raise ValueError(f"ci {ci!r}: must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples {n_resamples!r}: must be >= 1 (no resamples, no interval)")
    auc_a, auc_b = float(roc_auc_score(y, a)), float(roc_auc_score(y, b))
    rng = np.random.default_rng(seed)
    n, diffs, skipped = len(y), [], 0
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        yy = y[idx]
        if yy.min() == yy.max():
            skipped += 1
            continue
        diffs.append(roc_auc_score(yy, b[idx]) - roc_auc_score(yy, a[idx]))
    d = np.asarray(diffs)
    lo, hi = (np.percentile(d, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]) if d.size else (np.nan, np.nan))
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if d.size else float("nan")
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": auc_b - auc_a, "ci_low": float(lo), "ci_high": float(hi),
            "ci": ci, "n": n, "n_resamples": n_resamples, "skipped": skipped, "p_value": p}


#: Seed of the early-stopping draw inside :func:`llmrec.recipe.tune_k_shot` (its ``val_seed`` default).
