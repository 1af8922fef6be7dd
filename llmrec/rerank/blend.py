"""Blending the LM reranker's scores with the retriever's, weight tuned on validation.

``blended = (1 - alpha) * z(retriever) + alpha * z(lm)``, where ``z`` standardises a user's candidate
scores (mean 0, std 1; a constant row becomes 0). ``alpha = 0`` is the retriever's order, ``alpha = 1``
the LM's. :func:`tune_alpha` picks alpha on a grid by validation NDCG@10 (ties -> smaller alpha).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["zscore", "blend_scores", "rank_by", "tune_alpha", "ALPHA_GRID"]

ALPHA_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def zscore(x: np.ndarray) -> np.ndarray:
    """Row-wise standardisation of a float array ``(n, C)`` (or ``(C,)``); -inf entries stay -inf."""
    a = np.asarray(x, dtype=np.float64)
    one = a.ndim == 1
    a = np.atleast_2d(a).copy()
    fin = np.isfinite(a)
    out = np.full_like(a, -np.inf)
    for i in range(a.shape[0]):
        v = a[i, fin[i]]
        if v.size:
            sd = v.std()
            out[i, fin[i]] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out[0] if one else out


def blend_scores(retriever: np.ndarray, lm: np.ndarray, alpha: float) -> np.ndarray:
    """``(1-alpha) z(retriever) + alpha z(lm)`` (same shape as the inputs).

    Raises:
        ValueError: alpha outside [0, 1] or shapes differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    r, l = np.asarray(retriever, np.float64), np.asarray(lm, np.float64)
    if r.shape != l.shape:
        raise ValueError(f"retriever scores {r.shape} and LM scores {l.shape} differ in shape")
    if alpha == 0.0:
        return zscore(r)
    if alpha == 1.0:
        return zscore(l)
    return (1 - alpha) * zscore(r) + alpha * zscore(l)


def rank_by(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Candidates ``(n, C)`` reordered by descending score per row (stable: ties keep input order)."""
    order = np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")
    return np.take_along_axis(np.asarray(candidates), order, 1)


def tune_alpha(candidates: np.ndarray, retriever: np.ndarray, lm: np.ndarray, targets: np.ndarray,
               grid: Sequence[float] = ALPHA_GRID) -> tuple[float, dict[float, float]]:
    """Alpha maximising NDCG@10 of the blended order on validation lists.

    Args:
        candidates: int64 ``(n, C)`` candidate item ids (-1 pads).
        retriever, lm: float ``(n, C)`` scores aligned with ``candidates``.
        targets: int64 ``(n,)`` true items.

    Returns:
        ``(best_alpha, {alpha: ndcg10})``.
    """
    from llmrec.metrics import ndcg_at_k

    k = min(10, np.asarray(candidates).shape[1])
    curve = {float(a): float(ndcg_at_k(rank_by(candidates, blend_scores(retriever, lm, float(a))), targets, k))
             for a in grid}
    best = max(curve, key=lambda a: (curve[a], -a))
    return best, curve
