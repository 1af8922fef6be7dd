"""SASRec fused with recency-weighted item transitions: the default candidate retriever.

On MovieLens leave-one-out the next item depends strongly on the last few items. SASRec (a learned
sequence model) and the transition counts (exact, memorised item-to-item successions) make different
mistakes, so their fusion beats both (ML-100K 5-core, validation NDCG@10: SASRec 0.1237, transitions
0.1098, fused 0.1341; see README "Retrieval").

Score, in log-probability space (a product of experts):

    score(u, j) = log softmax(sasrec(u))_j + weight * log(T(u, j) / sum_i T(u, i) + eps)

with ``T`` the :class:`~llmrec.retrieval.baselines.Transitions` score row. ``weight`` is tuned on
validation NDCG@10 in :meth:`Fusion.fit`. Retrieval through FAISS: the SASRec inner product (the
softmax's per-user constant does not change the order) proposes a pool of ``pool`` unseen items from the
:class:`~llmrec.retrieval.index.VectorIndex`; the pool is re-scored with the fused score. The
transition matrix is dense ``(n_items, n_items)`` float32, so this retriever is for catalogues up to
some 20k items (1.6 GB); beyond that use :class:`~llmrec.retrieval.sasrec.SASRec` alone.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ._checks import check_histories, check_k, topk_excluding_seen
from .base import Retriever
from .baselines import Transitions
from .sasrec import SASRec

__all__ = ["Fusion", "WEIGHT_GRID", "MAX_ITEMS"]

WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
MAX_ITEMS = 20_000  # the dense transition matrix: 20k x 20k float64 while fitting = 3.2 GB


def _check_grid(grid: Sequence[float], allow_empty: bool) -> None:
    if not allow_empty and len(grid) == 0:
        raise ValueError(f"grid must be non-empty with finite values >= 0, got {list(grid)}")
    if any(not 0 <= w < np.inf for w in grid):
        raise ValueError(f"grid values must be finite and >= 0, got {list(grid)}")


def _log_softmax(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, np.float64)
    m = s.max(axis=1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=1, keepdims=True))


class Fusion(Retriever):
    """SASRec x transitions product of experts (see the module docstring).

    Args:
        sasrec: a :class:`SASRec` (fitted or not; default ``SASRec()``, the tuned defaults).
        transitions: a :class:`Transitions` (default ``Transitions()``).
        weight: weight of the transitions term (>= 0; re-tuned by :meth:`fit` when validation data is
            given).
        eps: smoothing inside the transitions log (> 0), so unseen successions are not -inf.
        pool: SASRec candidates re-scored per user in :meth:`query_index` (>= 1; raised to k if smaller).

    Raises:
        ValueError: weight < 0, eps <= 0 or pool < 1.
    """

    name = "fusion"

    def __init__(self, sasrec: SASRec | None = None, transitions: Transitions | None = None, weight: float = 0.75,
                 eps: float = 1e-4, pool: int = 200) -> None:
        if not 0 <= weight < np.inf:
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        if not 0 < eps < np.inf:
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        if int(pool) < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.sasrec = sasrec if sasrec is not None else SASRec()
        self.transitions = transitions if transitions is not None else Transitions()
        self.weight, self.eps, self.pool = float(weight), float(eps), int(pool)
        self.n_items = 0
        self.weight_curve: dict[float, float] = {}

    @property
    def history(self) -> list[dict]:
        return self.sasrec.history

    # --- training -------------------------------------------------------------------------------
    def fit(self, train_sequences, n_items: int, valid_histories=None, valid_targets=None,
            log: Callable[[str], None] | None = print, grid: Sequence[float] = WEIGHT_GRID) -> "Fusion":
        """Fit both experts on ``train_sequences``; with validation data, SASRec early-stops on it and
        ``weight`` is the grid value with the best validation NDCG@10 (ties -> the smaller weight).

        Raises:
            ValueError: bad sequences (from the experts), negative grid values, n_items > MAX_ITEMS.
        """
        _check_grid(grid, allow_empty=True)
        if n_items > MAX_ITEMS:
            raise ValueError(f"n_items={n_items}: Fusion keeps a dense items x items transition matrix "
                             f"({8 * n_items ** 2 / 2 ** 30:.1f} GiB while fitting); above {MAX_ITEMS} items use "
                             "SASRec alone (retriever='sasrec', llmrec index --retriever sasrec)")
        self.sasrec.fit(train_sequences, n_items, valid_histories, valid_targets, log=log)
        self.transitions.fit(train_sequences, n_items)
        self.n_items = int(n_items)
        if valid_histories is not None and valid_targets is not None and len(grid):
            self.tune_weight(valid_histories, valid_targets, grid, log)
        return self

    @classmethod
    def from_fitted(cls, sasrec: SASRec, transitions: Transitions, **kw) -> "Fusion":
        """Wrap two experts fitted on the same catalogue (no refitting).

        Raises:
            ValueError: the experts disagree on ``n_items`` (or are not fitted).
        """
        if not isinstance(sasrec, SASRec) or not isinstance(transitions, Transitions):
            raise ValueError(f"from_fitted(sasrec, transitions) takes a SASRec and a Transitions, got "
                             f"{type(sasrec).__name__} and {type(transitions).__name__}")
        if not sasrec.n_items or sasrec.n_items != transitions.n_items:
            raise ValueError(f"experts must be fitted on the same catalogue: SASRec n_items={sasrec.n_items}, "
                             f"Transitions n_items={transitions.n_items}")
        m = cls(sasrec, transitions, **kw)
        m.n_items = int(sasrec.n_items)
        return m

    def tune_weight(self, valid_histories, valid_targets, grid: Sequence[float] = WEIGHT_GRID,
                    log: Callable[[str], None] | None = print) -> float:
        """Set ``weight`` to the grid value with the best validation NDCG@10 (full catalogue, seen items
        excluded; ties -> the smaller weight); the curve is kept in ``weight_curve``. Returns the weight.

        Raises:
            ValueError: negative or empty grid, bad histories.
        """
        from ..metrics import ndcg_at_k

        _check_grid(grid, allow_empty=False)
        vh = check_histories(valid_histories, self._require_fitted(), "valid_histories")
        vt = np.asarray(valid_targets, np.int64).reshape(-1)
        if vt.size != len(vh):
            raise ValueError(f"valid_targets has {vt.size} entries but valid_histories has {len(vh)}")
        if vt.size and (vt.min() < 0 or vt.max() >= self.n_items):
            raise ValueError(f"valid_targets contains unknown item index {int(vt.max() if vt.max() >= self.n_items else vt.min())} "
                             f"(n_items={self.n_items})")
        sas, tr = self._parts(vh)
        self.weight_curve = {}
        for w in grid:
            ids, _ = topk_excluding_seen(sas + w * tr, 10, vh)
            self.weight_curve[float(w)] = float(ndcg_at_k(ids, vt, 10))
        self.weight = max(self.weight_curve, key=lambda w: (self.weight_curve[w], -w))
        if log:
            log(f"fusion weight {self.weight} (validation NDCG@10 {self.weight_curve[self.weight]:.4f}; "
                f"SASRec alone {self.weight_curve.get(0.0, float('nan')):.4f})")
        return self.weight

    # --- scoring --------------------------------------------------------------------------------
    def _transition_logp(self, hs: list[np.ndarray]) -> np.ndarray:
        t = self.transitions.score(hs).astype(np.float64)
        return np.log(t / np.maximum(t.sum(axis=1, keepdims=True), 1e-30) + self.eps)

    def _parts(self, hs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _log_softmax(self.sasrec.score(hs)), self._transition_logp(hs)

    def score(self, histories) -> np.ndarray:
        """float32 ``(n_users, n_items)`` fused log-scores (see the module docstring)."""
        hs = check_histories(histories, self._require_fitted())
        sas, tr = self._parts(hs)
        return (sas + self.weight * tr).astype(np.float32)

    def user_vectors(self, histories) -> np.ndarray:
        """SASRec's float32 ``(n_users, hidden)`` user vectors (the FAISS query)."""
        return self.sasrec.user_vectors(histories)

    def item_vectors(self) -> np.ndarray:
        """SASRec's float32 ``(n_items, hidden)`` item vectors (what the FAISS index holds)."""
        self._require_fitted()
        return self.sasrec.item_vectors()

    def query_index(self, histories, k: int, index, exclude_seen: bool = True):
        """Top-k through a :class:`~llmrec.retrieval.index.VectorIndex` over :meth:`item_vectors`:
        FAISS proposes ``max(pool, k)`` items by SASRec inner product, the fused score orders them. Index
        rows beyond ``n_items`` (cold-start items, :mod:`llmrec.retrieval.coldstart`) get the
        transitions term of an item with no known succession, ``weight * log(eps)``.

        Returns:
            ``(ids int64 (n, k), scores float32 (n, k))`` best first; -1 / -inf pad short rows.

        Raises:
            ValueError: k out of range, empty history, unknown item index.
        """
        hs = check_histories(histories, self._require_fitted())
        if index.ntotal < self.n_items:
            raise ValueError(f"the index holds {index.ntotal} vectors but this retriever has {self.n_items} items: "
                             "build it over item_vectors() (plus any cold-start rows after them)")
        total = index.ntotal  # the retriever's items, then any cold-start rows
        k = check_k(k, total)
        pool = min(max(self.pool, k), total)
        ids, sas = index.search(self.user_vectors(hs), pool, exclude=hs if exclude_seen else None)
        if ids.size and ids.max() >= total:
            raise ValueError(f"the index returned id {int(ids.max())} >= {total}: it must use ids 0..ntotal-1 "
                             "(item indices), not custom ids")
        tr = self._transition_logp(hs)
        if total > self.n_items:  # cold-start rows after the trained items: no known successions
            tr = np.concatenate([tr, np.full((len(hs), total - self.n_items), np.log(self.eps))], axis=1)
        valid = ids >= 0
        fused = np.where(valid, sas.astype(np.float64) + self.weight * np.take_along_axis(tr, np.maximum(ids, 0), 1),
                         -np.inf)
        order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        out_ids = np.take_along_axis(ids, order, 1)
        out_sc = np.take_along_axis(fused, order, 1)
        out_ids[~np.isfinite(out_sc)] = -1
        # scores on the log-probability scale (the softmax constant of SASRec is not subtracted here)
        return out_ids, out_sc.astype(np.float32)

    # --- persistence ----------------------------------------------------------------------------
    def _arrays(self):
        return {**{f"sasrec.{k}": v for k, v in self.sasrec._arrays().items()},
                **{f"transitions.{k}": v for k, v in self.transitions._arrays().items()}}

    def _config(self):
        return {"weight": self.weight, "eps": self.eps, "pool": self.pool, "weight_curve": self.weight_curve,
                "sasrec": self.sasrec._config(), "transitions": self.transitions._config()}

    @classmethod
    def _from_saved(cls, config, arrays):
        n = int(config["n_items"])
        part = lambda p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + ".")}  # noqa: E731
        sas = SASRec._from_saved({**config["sasrec"], "n_items": n}, part("sasrec"))
        tr = Transitions._from_saved({**config["transitions"], "n_items": n}, part("transitions"))
        m = cls(sas, tr, config["weight"], config["eps"], config["pool"])
        m.n_items = n
        m.weight_curve = {float(k): float(v) for k, v in config.get("weight_curve", {}).items()}
        return m
