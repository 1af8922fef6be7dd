"""SASRec fused with item transitions and EASE: the default candidate retriever.

On MovieLens leave-one-out the next item depends strongly on the last few items, and also on the user's
long-run taste. SASRec (a learned sequence model), the recency-weighted transition counts (exact,
memorised item-to-item successions) and EASE (Steck 2019: item-item regression over the whole history,
order-free) make different mistakes, so their fusion beats each of them (ML-100K 5-core, validation /
test NDCG@10: SASRec 0.1237 / 0.1140, SASRec x transitions 0.1341 / 0.1261, all three 0.15 / 0.135; see
README "Retrieval").

Score, in log-probability space (a product of experts):

    score(u, j) = log softmax(sasrec(u))_j + weight * log(T(u, j) / sum_i T(u, i) + eps)
                  + ease_weight * E(u, j)

with ``T`` the :class:`~llmrec.retrieval.baselines.Transitions` score row and ``E`` the
:class:`~llmrec.retrieval.baselines.EASE` score row (a logit: ``exp(ease_weight * E)`` is the EASE
expert's unnormalised probability). Both weights are tuned on validation NDCG@10 in :meth:`Fusion.fit`
(a grid over the pair). Retrieval through FAISS: the SASRec inner product (the softmax's per-user
constant does not change the order) proposes a pool of ``pool`` unseen items from the
:class:`~llmrec.retrieval.index.VectorIndex`; the pool is re-scored with the fused score. The
transition and EASE matrices are dense ``(n_items, n_items)`` float32, so this retriever is for
catalogues up to some 20k items (1.6 GB each); beyond that use :class:`~llmrec.retrieval.sasrec.SASRec`
alone.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ._checks import check_histories, check_k, topk_excluding_seen
from .base import Retriever
from .baselines import EASE, Transitions
from .sasrec import SASRec

__all__ = ["Fusion", "WEIGHT_GRID", "EASE_WEIGHT_GRID", "EASE_L2", "MAX_ITEMS"]

WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
EASE_WEIGHT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
EASE_L2 = 100.0  # EASE's own best lambda on ML-100K validation (eval/retrieval_eval.py grid 25..1000)
MAX_ITEMS = 20_000  # dense 20k x 20k float64 while fitting: 3.2 GB (transitions), ~10 GB peak (EASE's inverse)


def _check_grid(grid: Sequence[float], allow_empty: bool, name: str = "grid") -> list[float]:
    """The grid as a list of distinct floats (first occurrence kept; -0.0 -> 0.0).

    Raises:
        ValueError: empty (unless allowed), not a sequence of numbers, or values not finite and >= 0.
    """
    try:
        vals = [float(w) for w in grid]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {grid!r}") from None
    if not allow_empty and not vals:
        raise ValueError(f"{name} must be non-empty with finite values >= 0, got {vals}")
    if any(not 0 <= w < np.inf for w in vals):
        raise ValueError(f"{name} values must be finite and >= 0, got {vals}")
    return list(dict.fromkeys(w + 0.0 for w in vals))


def _log_softmax(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, np.float64)
    m = s.max(axis=1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=1, keepdims=True))


class Fusion(Retriever):
    """SASRec x transitions x EASE product of experts (see the module docstring).

    Args:
        sasrec: a :class:`SASRec` (fitted or not; default ``SASRec()``, the tuned defaults).
        transitions: a :class:`Transitions` (default ``Transitions()``).
        weight: weight of the transitions term (>= 0; re-tuned by :meth:`fit` when validation data is
            given).
        eps: smoothing inside the transitions log (> 0), so unseen successions are not -inf.
        pool: SASRec candidates re-scored per user in :meth:`query_index` (>= 1; raised to k if smaller).
        ease: (keyword) an :class:`EASE`, ``True`` (default: ``EASE(EASE_L2)``) or ``False`` / ``None``
            (no EASE expert: SASRec x transitions only, the retriever of earlier releases).
        ease_weight: (keyword) weight of the EASE term (>= 0; re-tuned with ``weight``; ignored without
            EASE).

    Raises:
        ValueError: weight or ease_weight < 0 or not finite, eps <= 0, pool < 1, ease of another type.
    """

    name = "fusion"
    TUNE_CHUNK = 2048  # validation users scored at a time in tune_weight

    def __init__(self, sasrec: SASRec | None = None, transitions: Transitions | None = None, weight: float = 0.75,
                 eps: float = 1e-4, pool: int = 200, *, ease: EASE | bool | None = True,
                 ease_weight: float = 4.0) -> None:
        for nm, v in (("weight", weight), ("ease_weight", ease_weight)):
            if isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.number)) or not 0 <= v < np.inf:
                raise ValueError(f"{nm} must be a finite number >= 0, got {v!r}")
        if ease is True:
            ease = EASE(EASE_L2)
        elif ease is False:
            ease = None
        if ease is not None and not isinstance(ease, EASE):
            raise ValueError(f"ease must be an EASE, True or False, got {type(ease).__name__}")
        if not 0 < eps < np.inf:
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        if int(pool) < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.sasrec = sasrec if sasrec is not None else SASRec()
        self.transitions = transitions if transitions is not None else Transitions()
        self.ease = ease
        self.weight, self.eps, self.pool = float(weight) + 0.0, float(eps), int(pool)
        self.ease_weight = float(ease_weight) + 0.0 if ease is not None else 0.0
        self.n_items = 0
        self.weight_curve: dict[tuple[float, float], float] = {}

    @property
    def history(self) -> list[dict]:
        return self.sasrec.history

    @property
    def experts(self) -> str:
        """The experts fused, for reports: ``"SASRec x transitions x EASE"`` (or without EASE)."""
        return "SASRec x transitions" + (" x EASE" if self.ease is not None else "")

    # --- training -------------------------------------------------------------------------------
    def fit(self, train_sequences, n_items: int, valid_histories=None, valid_targets=None,
            log: Callable[[str], None] | None = print, grid: Sequence[float] = WEIGHT_GRID,
            ease_grid: Sequence[float] = EASE_WEIGHT_GRID) -> "Fusion":
        """Fit the experts on ``train_sequences``; with validation data, SASRec early-stops on it and
        ``(weight, ease_weight)`` is the grid pair with the best validation NDCG@10 (see
        :meth:`tune_weight`).

        Raises:
            ValueError: bad sequences (from the experts), negative grid values, n_items > MAX_ITEMS.
        """
        grid = _check_grid(grid, allow_empty=True)
        ease_grid = _check_grid(ease_grid, allow_empty=self.ease is None or not grid, name="ease_grid")
        try:
            integral = not isinstance(n_items, (bool, str)) and float(n_items).is_integer()
        except (TypeError, ValueError, OverflowError):
            integral = False
        if not integral:
            raise ValueError(f"n_items must be an integer, got {n_items!r}")
        n_items = int(n_items)
        if n_items > MAX_ITEMS:
            gib = (3 if self.ease is not None else 1) * 8 * n_items ** 2 / 2 ** 30
            raise ValueError(f"n_items={n_items}: Fusion keeps dense items x items transition and EASE matrices "
                             f"({gib:.1f} GiB while fitting); above {MAX_ITEMS} items use SASRec alone "
                             "(retriever='sasrec', llmrec index --retriever sasrec)")
        self.sasrec.fit(train_sequences, n_items, valid_histories, valid_targets, log=log)
        self.transitions.fit(train_sequences, n_items)
        if self.ease is not None:
            self.ease.fit(train_sequences, n_items)
        self.n_items = int(n_items)
        if valid_histories is not None and valid_targets is not None and len(grid):
            self.tune_weight(valid_histories, valid_targets, grid, log, ease_grid=ease_grid)
        return self

    @classmethod
    def from_fitted(cls, sasrec: SASRec, transitions: Transitions, ease: EASE | None = None, **kw) -> "Fusion":
        """Wrap experts fitted on the same catalogue (no refitting); without ``ease``, SASRec x
        transitions only.

        Raises:
            ValueError: the experts disagree on ``n_items`` (or are not fitted), or have the wrong types.
        """
        if not isinstance(sasrec, SASRec) or not isinstance(transitions, Transitions) or not (
                ease is None or isinstance(ease, EASE)):
            raise ValueError(f"from_fitted(sasrec, transitions, ease) takes a SASRec, a Transitions and an EASE "
                             f"(or None), got {type(sasrec).__name__}, {type(transitions).__name__} and "
                             f"{type(ease).__name__}")
        sizes = {"SASRec": sasrec.n_items, "Transitions": transitions.n_items}
        if ease is not None:
            sizes["EASE"] = ease.n_items
        if not sasrec.n_items or len(set(sizes.values())) > 1:
            raise ValueError("experts must be fitted on the same catalogue: "
                             + ", ".join(f"{k} n_items={v}" for k, v in sizes.items()))
        m = cls(sasrec, transitions, ease=ease if ease is not None else False, **kw)
        m.n_items = int(sasrec.n_items)
        return m

    def tune_weight(self, valid_histories, valid_targets, grid: Sequence[float] = WEIGHT_GRID,
                    log: Callable[[str], None] | None = print,
                    ease_grid: Sequence[float] = EASE_WEIGHT_GRID) -> tuple[float, float]:
        """Set ``(weight, ease_weight)`` to the grid pair with the best validation NDCG@10 (full
        catalogue, seen items excluded; ties -> the smaller ``weight + ease_weight``); all pairs' NDCG@10
        are kept in ``weight_curve`` (keyed by the pair). Without EASE only ``weight`` is searched
        (``ease_grid`` unused). Returns the pair.

        Raises:
            ValueError: negative or empty grid, bad histories, unknown targets.
        """
        from ..metrics import ndcg_at_k

        grid = _check_grid(grid, allow_empty=False)
        ease_grid = _check_grid(ease_grid, allow_empty=self.ease is None, name="ease_grid")
        vh = check_histories(valid_histories, self._require_fitted(), "valid_histories")
        vt = np.asarray(valid_targets).reshape(-1)
        if vt.size and not np.issubdtype(vt.dtype, np.integer):
            if not (np.issubdtype(vt.dtype, np.floating) and np.isfinite(vt).all() and (vt == np.round(vt)).all()):
                raise ValueError(f"valid_targets must be integer item indices, got {vt[:5].tolist()}...")
        vt = vt.astype(np.int64)
        if vt.size != len(vh):
            raise ValueError(f"valid_targets has {vt.size} entries but valid_histories has {len(vh)}")
        if vt.size and (vt.min() < 0 or vt.max() >= self.n_items):
            raise ValueError(f"valid_targets contains unknown item index {int(vt.max() if vt.max() >= self.n_items else vt.min())} "
                             f"(n_items={self.n_items})")
        egrid = ease_grid if self.ease is not None else (0.0,)
        pairs = [(w, we) for w in grid for we in egrid]  # grids are de-duplicated by _check_grid
        total = dict.fromkeys(pairs, 0.0)
        for lo in range(0, len(vh), self.TUNE_CHUNK):  # bounded memory: a few (chunk, n_items) float64 arrays
            hs, tg = vh[lo:lo + self.TUNE_CHUNK], vt[lo:lo + self.TUNE_CHUNK]
            sas, tr, ea = self._parts(hs)
            for w, we in pairs:
                ids, _ = topk_excluding_seen(sas + w * tr + (we * ea if ea is not None else 0.0), 10, hs)
                total[(w, we)] += float(ndcg_at_k(ids, tg, 10, reduce=False).sum())
        self.weight_curve = {p: v / max(len(vh), 1) for p, v in total.items()}
        best = max(self.weight_curve, key=lambda p: (self.weight_curve[p], -p[0] - p[1]))
        self.weight, self.ease_weight = best
        if log:
            ease = self.ease_weight if self.ease is not None else "off"
            log(f"fusion weights: transitions {self.weight}, EASE {ease} "
                f"(validation NDCG@10 {self.weight_curve[best]:.4f}; SASRec alone "
                f"{self.weight_curve.get((0.0, 0.0), float('nan')):.4f})")
        return best

    # --- scoring --------------------------------------------------------------------------------
    def _transition_logp(self, hs: list[np.ndarray]) -> np.ndarray:
        t = self.transitions.score(hs).astype(np.float64)
        return np.log(t / np.maximum(t.sum(axis=1, keepdims=True), 1e-30) + self.eps)

    def _parts(self, hs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ea = self.ease.score(hs).astype(np.float64) if self.ease is not None else None
        return _log_softmax(self.sasrec.score(hs)), self._transition_logp(hs), ea

    def _side(self, hs: list[np.ndarray]) -> np.ndarray:
        """float64 ``(n_users, n_items)``: the non-SASRec terms, weighted."""
        out = self.weight * self._transition_logp(hs)
        if self.ease is not None and self.ease_weight:
            out += self.ease_weight * self.ease.score(hs).astype(np.float64)
        return out

    def score(self, histories) -> np.ndarray:
        """float32 ``(n_users, n_items)`` fused log-scores (see the module docstring)."""
        hs = check_histories(histories, self._require_fitted())
        return (_log_softmax(self.sasrec.score(hs)) + self._side(hs)).astype(np.float32)

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
        terms of an item nobody interacted with: ``weight * log(eps)`` (no known succession) and EASE 0.

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
        side = self._side(hs)
        if total > self.n_items:  # cold-start rows after the trained items: no successions, EASE 0
            side = np.concatenate([side, np.full((len(hs), total - self.n_items), self.weight * np.log(self.eps))],
                                  axis=1)
        valid = ids >= 0
        fused = np.where(valid, sas.astype(np.float64) + np.take_along_axis(side, np.maximum(ids, 0), 1), -np.inf)
        order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        out_ids = np.take_along_axis(ids, order, 1)
        out_sc = np.take_along_axis(fused, order, 1)
        out_ids[~np.isfinite(out_sc)] = -1
        # scores on the log-probability scale (the softmax constant of SASRec is not subtracted here)
        return out_ids, out_sc.astype(np.float32)

    # --- persistence ----------------------------------------------------------------------------
    def _arrays(self):
        out = {**{f"sasrec.{k}": v for k, v in self.sasrec._arrays().items()},
               **{f"transitions.{k}": v for k, v in self.transitions._arrays().items()}}
        if self.ease is not None:
            out.update({f"ease.{k}": v for k, v in self.ease._arrays().items()})
        return out

    def _config(self):
        return {"weight": self.weight, "ease_weight": self.ease_weight, "eps": self.eps, "pool": self.pool,
                "weight_curve": [[w, we, v] for (w, we), v in self.weight_curve.items()],
                "sasrec": self.sasrec._config(), "transitions": self.transitions._config(),
                "ease": self.ease._config() if self.ease is not None else None}

    @classmethod
    def _from_saved(cls, config, arrays):
        n = int(config["n_items"])
        part = lambda p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + ".")}  # noqa: E731
        sas = SASRec._from_saved({**config["sasrec"], "n_items": n}, part("sasrec"))
        tr = Transitions._from_saved({**config["transitions"], "n_items": n}, part("transitions"))
        has_ease = config.get("ease") is not None
        if not has_ease and part("ease"):
            raise ValueError("EASE arrays are saved but config.json has no 'ease' entry")
        ea = EASE._from_saved({**config["ease"], "n_items": n}, part("ease")) if has_ease else False
        # folders saved before the EASE expert existed have neither 'ease' nor 'ease_weight'
        m = cls(sas, tr, config["weight"], config["eps"], config["pool"], ease=ea,
                ease_weight=config["ease_weight"] if has_ease else 0.0)
        m.n_items = n
        curve = config.get("weight_curve", [])
        if isinstance(curve, dict):  # saved by releases without EASE: {weight: ndcg}
            m.weight_curve = {(float(k), 0.0): float(v) for k, v in curve.items()}
        else:
            m.weight_curve = {(float(w), float(we)): float(v) for w, we, v in curve}
        return m
