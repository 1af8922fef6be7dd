"""Non-neural retrieval baselines: popularity, recency-weighted item transitions, EASE.

All follow :class:`llmrec.retrieval.base.Retriever`: ``fit(train_sequences, n_items)``,
``score(histories) -> float32 (n_users, n_items)``, ``query``, ``save``/``load``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._checks import check_histories
from .base import Retriever, check_train_sequences

__all__ = ["Popularity", "Transitions", "EASE"]


class Popularity(Retriever):
    """Score = number of training interactions of the item (same list for every user)."""

    name = "popularity"

    def __init__(self) -> None:
        self.n_items = 0
        self.counts = np.zeros(0, np.float32)

    def fit(self, train_sequences, n_items: int) -> "Popularity":
        seqs = check_train_sequences(train_sequences, n_items)
        self.counts = np.bincount(np.concatenate(seqs), minlength=n_items).astype(np.float32)
        self.n_items = int(n_items)
        return self

    def score(self, histories) -> np.ndarray:
        hs = check_histories(histories, self._require_fitted())
        return np.broadcast_to(self.counts, (len(hs), self.n_items)).copy()

    def _arrays(self):
        return {"counts": self.counts}

    def _config(self):
        return {}

    @classmethod
    def _from_saved(cls, config, arrays):
        m = cls()
        m.counts, m.n_items = arrays["counts"].astype(np.float32), int(config["n_items"])
        return m


class Transitions(Retriever):
    """Recency-weighted item-to-item transitions (a first-order Markov / session-kNN style baseline).

    Fit: for every training sequence ``s`` and every gap ``g = 1..max_gap``, add
    ``gap_decay**(g-1)`` to ``W[s[t], s[t+g]]`` (``W`` is ``(n_items, n_items)``). Rows are then
    normalised by ``out_weight**row_norm`` (0 = raw counts, 1 = conditional frequencies).

    Score for a history ``h``: ``sum_{m < n_last} hist_decay**m * W[h[-1-m]]``, plus
    ``1e-6 * normalised popularity`` as a tie-breaker (users whose last items have no transitions fall
    back to popularity).

    Args:
        max_gap: how far ahead a transition counts (>= 1).
        gap_decay: weight multiplier per extra step of gap, in (0, 1].
        n_last: number of most recent history items used at scoring time (>= 1).
        hist_decay: weight multiplier per step back in the history, in (0, 1].
        row_norm: exponent of the row normalisation, in [0, 1].

    Defaults are the best of eval/retrieval_eval.py's grid on ML-100K 5-core validation (NDCG@10 0.1098 valid /
    0.1083 test).
    """

    name = "transitions"

    def __init__(self, max_gap: int = 5, gap_decay: float = 0.8, n_last: int = 5, hist_decay: float = 0.8,
                 row_norm: float = 0.5) -> None:
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {max_gap}")
        if n_last < 1:
            raise ValueError(f"n_last must be >= 1, got {n_last}")
        for nm, v in (("gap_decay", gap_decay), ("hist_decay", hist_decay)):
            if not 0 < v <= 1:
                raise ValueError(f"{nm} must be in (0, 1], got {v}")
        if not 0 <= row_norm <= 1:
            raise ValueError(f"row_norm must be in [0, 1], got {row_norm}")
        self.max_gap, self.gap_decay, self.n_last, self.hist_decay, self.row_norm = (
            int(max_gap), float(gap_decay), int(n_last), float(hist_decay), float(row_norm))
        self.n_items = 0
        self.W = np.zeros((0, 0), np.float32)
        self.pop = np.zeros(0, np.float32)

    def fit(self, train_sequences, n_items: int) -> "Transitions":
        seqs = check_train_sequences(train_sequences, n_items)
        W = np.zeros((n_items, n_items), np.float64)
        for g in range(1, self.max_gap + 1):
            src = np.concatenate([s[:-g] for s in seqs if s.size > g] or [np.zeros(0, np.int64)])
            dst = np.concatenate([s[g:] for s in seqs if s.size > g] or [np.zeros(0, np.int64)])
            np.add.at(W, (src, dst), self.gap_decay ** (g - 1))
        if self.row_norm > 0:
            out = W.sum(1, keepdims=True)
            W = W / np.maximum(out, 1e-12) ** self.row_norm
        pop = np.bincount(np.concatenate(seqs), minlength=n_items).astype(np.float64)
        self.W, self.pop, self.n_items = W.astype(np.float32), (pop / pop.max()).astype(np.float32), int(n_items)
        return self

    def score(self, histories) -> np.ndarray:
        hs = check_histories(histories, self._require_fitted())
        out = np.broadcast_to(1e-6 * self.pop, (len(hs), self.n_items)).astype(np.float32)
        for m in range(self.n_last):
            rows = np.array([u for u, h in enumerate(hs) if h.size > m], np.int64)
            if rows.size == 0:
                break
            last = np.array([hs[u][-1 - m] for u in rows], np.int64)
            out[rows] += np.float32(self.hist_decay ** m) * self.W[last]
        return out

    def _arrays(self):
        return {"W": self.W, "pop": self.pop}

    def _config(self):
        return {"max_gap": self.max_gap, "gap_decay": self.gap_decay, "n_last": self.n_last,
                "hist_decay": self.hist_decay, "row_norm": self.row_norm}

    @classmethod
    def _from_saved(cls, config, arrays):
        m = cls(**{k: config[k] for k in ("max_gap", "gap_decay", "n_last", "hist_decay", "row_norm")})
        n = int(config["n_items"])
        if arrays["W"].shape != (n, n) or arrays["pop"].shape != (n,):
            raise ValueError(f"W {arrays['W'].shape} / pop {arrays['pop'].shape} do not match n_items={n}")
        if not np.isfinite(arrays["W"]).all():
            raise ValueError("W contains NaN or inf")
        m.W, m.pop, m.n_items = arrays["W"], arrays["pop"], n
        return m


class EASE(Retriever):
    """EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    With the binary user-item matrix ``X`` (n_users, n_items) of the training sequences and
    ``G = X^T X + l2 * I``, ``P = G^{-1}``, the closed form is ``B = I - P diag(1/diag(P))``, i.e.
    ``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and ``B[j, j] = 0``. Score: ``x_h B`` with
    ``x_h`` the binary vector of the history. Cost: O(n_items^3) time, O(n_items^2) memory (fine up to
    ~20k items).

    Args:
        l2: ridge strength lambda (> 0); tune on validation (:func:`tune_ease` in the eval script).
    """

    name = "ease"

    def __init__(self, l2: float = 500.0) -> None:
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2 = float(l2)
        self.n_items = 0
        self.B = np.zeros((0, 0), np.float32)

    @staticmethod
    def _binary(seqs: Sequence[np.ndarray], n_items: int, dtype=np.float64):
        """Sparse CSR ``(len(seqs), n_items)`` 0/1 matrix (repeated items count once)."""
        from scipy import sparse

        rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        cols = np.concatenate([np.asarray(s, np.int64) for s in seqs] or [np.zeros(0, np.int64)])
        X = sparse.csr_matrix((np.ones(rows.size, dtype), (rows, cols)), shape=(len(seqs), n_items))
        X.sum_duplicates()
        X.data[:] = 1
        return X

    def fit(self, train_sequences, n_items: int) -> "EASE":
        seqs = check_train_sequences(train_sequences, n_items)
        X = self._binary(seqs, n_items)
        G = (X.T @ X).toarray()
        G[np.diag_indices(n_items)] += self.l2
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))[None, :]
        B[np.diag_indices(n_items)] = 0.0
        self.B, self.n_items = B.astype(np.float32), int(n_items)
        return self

    def score(self, histories) -> np.ndarray:
        hs = check_histories(histories, self._require_fitted())
        return np.asarray(self._binary(hs, self.n_items, np.float32) @ self.B, np.float32)

    def _arrays(self):
        return {"B": self.B}

    def _config(self):
        return {"l2": self.l2}

    @classmethod
    def _from_saved(cls, config, arrays):
        m = cls(config["l2"])
        n = int(config["n_items"])
        if arrays["B"].shape != (n, n):
            raise ValueError(f"B {arrays['B'].shape} does not match n_items={n}")
        if not np.isfinite(arrays["B"]).all():
            raise ValueError("B contains NaN or inf")
        m.B, m.n_items = arrays["B"], n
        return m
