"""Cold-start items: collaborative vectors predicted from item text.

Items with no interactions have no trained SASRec vector, so an inner-product index can never return
them. Following the attribute-to-feature mapping of Gantner et al. ("Learning Attribute-to-Feature
Mappings for Cold-Start Recommendations", ICDM 2010), a ridge regression is fitted from the items' text
embeddings (:func:`llmrec.retrieval.text.embed_texts`: the base LM's mean-pooled hidden states of
``"Title (year) | genres"``) to their trained SASRec vectors on the warm items, then applied to the
cold items; the predicted vectors go into the FAISS index beside the trained ones.

``eval/coldstart_eval.py`` measures it by holding items out as pseudo-cold (README "Cold-start items").
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["item_text", "item_features", "TextToCF", "L2_GRID"]

L2_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def item_text(catalog: Any, item_id: str) -> str:
    """``"Toy Story (1995) | Animation, Children's, Comedy"`` (title with year, then genres if any).

    Raises:
        KeyError: unknown item id (from the catalogue).
    """
    g = catalog.genres(item_id)
    return catalog.title(item_id) + (" | " + ", ".join(g) if g else "")


def item_features(catalog: Any, item_ids: Sequence[str], text_vecs: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(n, d)`` features per item: ``text_vecs`` (if given), then one column per genre of the
    catalogue (1 if the item has it), then the release year (missing -> the mean year) and a
    missing-year flag.

    Raises:
        KeyError: unknown item id. ValueError: ``text_vecs`` rows differ from ``item_ids``.
    """
    if isinstance(item_ids, str):
        raise ValueError(f"item_ids must be a sequence of ids, got the string {item_ids!r}")
    ids = [str(i) for i in item_ids]
    genres = sorted({g for i in ids for g in catalog.genres(i)})
    col = {g: j for j, g in enumerate(genres)}
    G = np.zeros((len(ids), len(genres)), np.float32)
    years = np.full(len(ids), np.nan)
    for r, i in enumerate(ids):
        for g in catalog.genres(i):
            G[r, col[g]] = 1.0
        y = catalog.year(i)
        years[r] = np.nan if y is None else float(y)
    missing = np.isnan(years)
    fill = float(np.nanmean(years)) if (~missing).any() else 0.0
    Y = np.stack([np.where(missing, fill, years), missing.astype(float)], 1).astype(np.float32)
    parts = [G, Y]
    if text_vecs is not None:
        T = np.asarray(text_vecs, np.float32)
        if T.ndim != 2 or T.shape[0] != len(ids):
            raise ValueError(f"text_vecs must be ({len(ids)}, dim), got shape {T.shape}")
        parts.insert(0, T)
    return np.concatenate(parts, 1)


class TextToCF:
    """Ridge map ``item features -> collaborative vector`` (features standardised, with intercept), the
    ridge strength chosen by efficient leave-one-out cross-validation (``sklearn.linear_model.RidgeCV``)
    over ``l2_grid``. Features: the LM text embedding, optionally with metadata columns
    (:func:`item_features`).

    Args:
        l2_grid: candidate ridge strengths (each > 0).

    Raises:
        ValueError: empty grid or a non-positive value.
    """

    def __init__(self, l2_grid: Sequence[float] = L2_GRID) -> None:
        if len(l2_grid) == 0 or any(not 0 < a < np.inf for a in l2_grid):
            raise ValueError(f"l2_grid must be non-empty with finite values > 0, got {list(l2_grid)}")
        self.l2_grid = tuple(float(a) for a in l2_grid)
        self.model = None

    @property
    def l2(self) -> float:
        """The chosen ridge strength (after :meth:`fit`)."""
        self._require_fitted()
        return float(self.model[-1].alpha_)

    def fit(self, text_vecs: np.ndarray, cf_vecs: np.ndarray) -> "TextToCF":
        """Fit on warm items.

        Args:
            text_vecs: float ``(n, d_text)`` text embeddings of the warm items.
            cf_vecs: float ``(n, d)`` their collaborative vectors (e.g. ``SASRec.item_vectors()`` rows).

        Raises:
            ValueError: not 2-D, row counts differ, fewer than 2 items, or non-finite values.
        """
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, Y = self._check(text_vecs, "text_vecs"), self._check(cf_vecs, "cf_vecs")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"text_vecs has {X.shape[0]} rows but cf_vecs has {Y.shape[0]}")
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 warm items to fit the map, got {X.shape[0]}")
        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=self.l2_grid)).fit(X, Y)
        return self

    def predict(self, text_vecs: np.ndarray, norm: float | None = None) -> np.ndarray:
        """float32 ``(m, d)`` predicted collaborative vectors for ``(m, d_text)`` text embeddings.

        Ridge predictions shrink towards the mean item, so their inner products are smaller than a
        trained item's and an index would never return them; ``norm`` rescales every row to that L2
        norm (e.g. a multiple of the warm items' median norm, tuned on validation).

        Raises:
            RuntimeError: not fitted. ValueError: wrong width, non-finite values, norm <= 0.
        """
        self._require_fitted()
        X = self._check(text_vecs, "text_vecs")
        width = self.model[-1].coef_.shape[1]
        if X.shape[0] == 0 and X.shape[1] == width:
            return np.zeros((0, self.model[-1].coef_.shape[0]), np.float32)
        if X.shape[1] != width:
            raise ValueError(f"text_vecs has width {X.shape[1]}, the map was fitted on {width}")
        Y = self.model.predict(X)
        if norm is not None:
            if not 0 < norm < np.inf:
                raise ValueError(f"norm must be finite and > 0, got {norm}")
            Y = Y * (norm / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12))
        return Y.astype(np.float32)

    @staticmethod
    def _check(a: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (items, dim), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
        return a

    def _require_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError("TextToCF is not fitted: call fit() first")
