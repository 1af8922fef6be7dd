"""Recommend end to end: SASRec x transitions x EASE retrieval through FAISS, then LM reranking.

:class:`Recommender` - ``Recommender.load(index_dir, adapter_dir).recommend(history, k)``: SASRec (Kang &
McAuley 2018) user vector -> FAISS pool of unseen items -> ordered by SASRec x item transitions x EASE
(:class:`llmrec.retrieval.Fusion`) -> top-``n_candidates`` reranked by the LM
(:class:`llmrec.rerank.reranker.Reranker`, optionally blended with the retriever score) -> top ``k``.
:meth:`Recommender.build` fits the retriever on the leave-one-out training part (:mod:`llmrec.data.loo`);
:meth:`Recommender.save` / :meth:`Recommender.load` write and read the index folder (``llmrec index``).

Items are given by id or exact title (:class:`~llmrec.rerank.reranker.ItemLookup`). Every method validates
its input and raises ``ValueError`` with a one-line message for an unknown item, an empty history, or ``k``
larger than the catalogue. Instances are safe to share between threads (retrieval runs under a lock).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmrec.rerank.reranker import ItemLookup, RankedItem, Reranker, as_catalog

__all__ = ["Recommender", "INDEX_FORMAT"]

INDEX_FORMAT = "llmrec-index/1"
COLD_NORM_SCALE = 0.5  # cold-start vector norm / trained items' median norm (best on ML-100K validation)


def _cold_item_vectors(catalog: Any, warm_ids: list[str], warm_vecs: np.ndarray, base_model: str | None,
                       norm_scale: float) -> tuple[np.ndarray, list[str], dict]:
    """Vectors for the catalogue items outside ``warm_ids`` (see :meth:`Recommender.build`).

    Returns ``(float32 (m, d), their ids, manifest info)``; m may be 0.
    """
    from llmrec.model import DEFAULT_BASE_MODEL, load_base_model
    from llmrec.retrieval import embed_texts
    from llmrec.retrieval.coldstart import TextToCF, item_features, item_text

    known = set(warm_ids)
    cold_ids = [str(i) for i in catalog.frame.index if str(i) not in known]
    info = {"cold_start": True, "n_cold": len(cold_ids)}
    if not cold_ids:
        return np.zeros((0, warm_vecs.shape[1]), np.float32), [], info
    # warm items without a catalogue row (no text) cannot teach the map; they keep their trained vectors
    known_rows = [j for j, i in enumerate(warm_ids) if i in catalog]
    if len(known_rows) < 2:
        raise ValueError(f"cold start: only {len(known_rows)} of the {len(warm_ids)} rated items have a catalogue "
                         "row (title, genres); the text map needs at least 2")
    model, tok = load_base_model(base_model or DEFAULT_BASE_MODEL)
    ids = [warm_ids[j] for j in known_rows] + cold_ids
    F = item_features(catalog, ids, embed_texts([item_text(catalog, i) for i in ids], model, tok))
    mapper = TextToCF().fit(F[: len(known_rows)], warm_vecs[known_rows])
    norm = norm_scale * float(np.median(np.linalg.norm(warm_vecs, axis=1)))
    info.update(cold_text_model=base_model or DEFAULT_BASE_MODEL, cold_ridge_l2=mapper.l2, cold_norm=norm)
    return mapper.predict(F[len(known_rows):], norm), cold_ids, info


class Recommender:
    """Retrieve with SASRec (x transitions x EASE) + FAISS, then rerank with an LM (optional).

    Args:
        retriever: fitted :class:`llmrec.retrieval.Fusion` or :class:`llmrec.retrieval.SASRec` (anything
            with ``query_index(histories, k, index)`` and ``n_items``).
        index: :class:`llmrec.retrieval.VectorIndex` over ``retriever.item_vectors()`` (ids = item indices).
        item_ids: raw item id of each item index (``item_ids[j]`` for index j).
        catalog: titles (Catalog / RecData / path / None = embedded ML-100K).
        reranker: a :class:`Reranker`, or None for retrieval only.
        n_candidates: how many retrieved items the reranker reorders (20; at most 20 for listwise).
        blend_alpha: weight of the LM in ``(1-a) z(retriever) + a z(LM)``; default the reranker's
            recorded value, else 1 (LM order only).
        user_histories: optional ``{user_id: [item ids, oldest first]}`` for :meth:`recommend_user`.

    ``item_ids`` (and the index) may hold more items than the retriever was fitted on: the extra rows are
    cold-start items (no interactions; vectors predicted from their text, :meth:`build` with
    ``cold_start=True``). They can be recommended; in a history they are skipped by the retriever (which
    has no embedding for them) but still never recommended again.

    Raises:
        ValueError: inconsistent sizes, n_candidates < 1, alpha outside [0, 1].
    """

    def __init__(self, retriever, index, item_ids: Sequence[str], catalog: Any = None, reranker: Reranker | None = None,
                 *, n_candidates: int = 20, blend_alpha: float | None = None,
                 user_histories: dict[str, list[str]] | None = None) -> None:
        self.retriever, self.index, self.reranker = retriever, index, reranker
        self.item_ids = np.asarray([str(x) for x in item_ids])
        if index.ntotal != len(self.item_ids) or not 0 < retriever.n_items <= len(self.item_ids):
            raise ValueError(f"retriever ({retriever.n_items}), index ({index.ntotal}) and item_ids "
                             f"({len(self.item_ids)}) disagree on the number of items")
        # items [0, n_warm) are the retriever's; the rest are cold-start rows (text-mapped vectors)
        self.n_warm = int(retriever.n_items)
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        if reranker is not None and reranker.max_candidates is not None:
            n_candidates = min(n_candidates, reranker.max_candidates)
        self.n_candidates = int(n_candidates)
        if blend_alpha is None:
            blend_alpha = reranker.blend_alpha if reranker is not None and reranker.blend_alpha is not None else 1.0
        if not 0.0 <= blend_alpha <= 1.0:
            raise ValueError(f"blend_alpha must be in [0, 1], got {blend_alpha}")
        self.blend_alpha = float(blend_alpha)
        self.catalog = reranker.lookup.catalog if reranker is not None and catalog is None else as_catalog(catalog)
        self.lookup = ItemLookup(self.catalog, allowed=self.item_ids)
        self.index_of = {i: j for j, i in enumerate(self.item_ids)}
        self.user_histories = user_histories or {}
        self._lock = threading.Lock()

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # --- persistence ----------------------------------------------------------------------------
    @classmethod
    def build(cls, data: Any = None, *, kcore: int = 5, epochs: int = 200, seed: int = 0,
              index_kind: str = "auto", retriever: str = "auto", cold_start: bool = False,
              base_model: str | None = None, cold_norm_scale: float = COLD_NORM_SCALE, log=None,
              **sasrec_overrides) -> "Recommender":
        """Fit the retriever on a dataset's leave-one-out training part and build the FAISS index.

        ``retriever="fusion"``: :class:`llmrec.retrieval.Fusion`, SASRec (early stopping on validation
        NDCG@10) times item transitions times EASE, weights tuned on validation NDCG@10; ``"sasrec"``:
        SASRec alone; ``"auto"`` (default): fusion up to ``llmrec.retrieval.fusion.MAX_ITEMS`` (20k) items,
        beyond that SASRec alone (the dense item x item matrices would not fit). ``data``: path or
        RecData (default embedded ML-100K). No reranker.

        ``cold_start=True``: catalogue items left out of the training data (no interactions, or dropped by
        the k-core filter) are indexed too, with vectors predicted from their text by
        :class:`llmrec.retrieval.coldstart.TextToCF` (``base_model``'s text embedding of "title (year) |
        genres" plus genre/year columns, ridge-fitted on the trained items), rescaled to
        ``cold_norm_scale`` x the trained items' median norm (0.5: the best on ML-100K validation,
        README "Cold-start items").

        Raises:
            ValueError: unknown ``retriever``, cold_norm_scale <= 0; data errors from the readers.
        """
        from llmrec.data.loo import load_loo_data
        from llmrec.retrieval import Fusion, SASRec, VectorIndex

        if retriever not in ("auto", "fusion", "sasrec"):
            raise ValueError(f"retriever must be 'auto', 'fusion' or 'sasrec', got {retriever!r}")
        if not 0 < cold_norm_scale < np.inf:
            raise ValueError(f"cold_norm_scale must be finite and > 0, got {cold_norm_scale}")
        rec, d = load_loo_data(data, kcore)
        _, vh, vt = d.split.valid_inputs()
        sas = SASRec(**{"epochs": epochs, "seed": seed, **sasrec_overrides})
        if retriever == "auto":
            from llmrec.retrieval.fusion import MAX_ITEMS

            retriever = "fusion" if d.split.n_items <= MAX_ITEMS else "sasrec"
        if retriever == "fusion":
            sas = Fusion(sas)
        sas.fit(d.split.train, d.split.n_items, vh if len(vh) else None, vt if len(vt) else None, log=log)
        vectors, item_ids, cold_info = sas.item_vectors(), [str(i) for i in d.item_ids], {}
        if cold_start:
            cold_vecs, cold_ids, cold_info = _cold_item_vectors(rec.catalog, item_ids, vectors, base_model,
                                                                cold_norm_scale)
            vectors, item_ids = np.concatenate([vectors, cold_vecs]), item_ids + cold_ids
        index = VectorIndex(index_kind).build(vectors)
        hist = {str(u): [str(d.item_ids[j]) for j in h] for u, h in zip(d.user_ids, d.full)}
        self = cls(sas, index, item_ids, rec.catalog, None, user_histories=hist)
        self._source = {"data": str(getattr(rec, "path", "") or data), "kcore": kcore, **cold_info}
        return self

    def save(self, directory: str | Path) -> Path:
        """Write ``retriever/`` (Fusion or SASRec), ``index/`` (FAISS), ``histories.safetensors`` and
        ``manifest.json`` into ``directory``, atomically (an existing folder is replaced only when the new
        one is complete).

        Raises:
            ValueError: a stored user history holds an item that is not in ``item_ids``.
            FileExistsError: ``directory`` is a file or a non-empty folder that is not an llmrec index (it
                would be wiped).
        """
        from safetensors.numpy import save_file

        from llmrec._atomic import atomic_dir

        users = [str(u) for u in self.user_histories]
        flat = []
        for u, h in zip(users, self.user_histories.values()):
            for i in h:
                j = self.index_of.get(str(i))
                if j is None:
                    raise ValueError(f"user_histories[{u!r}] holds item {i!r}, which is not in item_ids")
                flat.append(j)
        offsets = np.cumsum([0] + [len(h) for h in self.user_histories.values()]).astype(np.int64)
        src = getattr(self, "_source", {})
        out = Path(directory)
        with atomic_dir(out, "manifest.json", "recommender index") as tmp:  # replaced only once whole
            self.retriever.save(tmp / "retriever")
            self.index.save(tmp / "index")
            save_file({"flat": np.asarray(flat, np.int64), "offsets": offsets}, str(tmp / "histories.safetensors"))
            (tmp / "manifest.json").write_text(json.dumps(
                {"format": INDEX_FORMAT, **src, "n_items": self.n_items, "item_ids": self.item_ids.tolist(),
                 "user_ids": users, "index_kind": self.index.built_kind}, indent=1))
        return out

    @classmethod
    def load(cls, index_dir: str | Path, adapter_dir: str | Path | None = None, *, catalog: Any = None,
             reranker: Reranker | None = None, dtype: str = "auto", **kw) -> "Recommender":
        """Load what ``llmrec index`` wrote, plus an optional reranker adapter.

        Raises:
            FileNotFoundError: ``index_dir`` or its files are missing.
            ValueError: not an llmrec index folder.
        """
        from safetensors.numpy import load_file

        from llmrec.retrieval import VectorIndex, load_retriever

        d = Path(index_dir)
        if not (d / "manifest.json").is_file():
            raise FileNotFoundError(f"index folder {d}: manifest.json not found (run `llmrec index --out {d}`)")
        man = json.loads((d / "manifest.json").read_text())
        if man.get("format") != INDEX_FORMAT:
            raise ValueError(f"index folder {d}: format {man.get('format')!r}, expected {INDEX_FORMAT!r}")
        if catalog is None and man.get("data") and Path(man["data"]).exists():
            catalog = man["data"]
        if reranker is None and adapter_dir is not None:
            reranker = Reranker.from_pretrained(adapter_dir, catalog=catalog, dtype=dtype)
        sas = load_retriever(d / "retriever")
        index = VectorIndex.load(d / "index")
        item_ids = man.get("item_ids")
        if not isinstance(item_ids, list) or not item_ids:
            raise ValueError(f"index folder {d}: manifest.json has no item_ids list")
        if len(set(map(str, item_ids))) != len(item_ids):
            raise ValueError(f"index folder {d}: manifest.json item_ids has duplicates")
        hist = {}
        if (d / "histories.safetensors").is_file():
            a = load_file(str(d / "histories.safetensors"))
            flat, off = a["flat"], a["offsets"]
            bad_ids = flat.size and not 0 <= flat.min() <= flat.max() < len(item_ids)
            if len(off) != len(man.get("user_ids", [])) + 1 or bad_ids:
                raise ValueError(f"index folder {d}: histories.safetensors does not match manifest.json")
            hist = {u: [item_ids[j] for j in flat[off[i]: off[i + 1]]] for i, u in enumerate(man.get("user_ids", []))}
        self = cls(sas, index, item_ids, catalog if reranker is None else (catalog or reranker.lookup.catalog),
                   reranker, user_histories=hist, **kw)
        self._source = {k: man[k] for k in ("data", "kcore", "n_cold", "cold_start") if k in man}
        return self

    # --- recommending ---------------------------------------------------------------------------
    def history_of(self, user_id: Any) -> list[str]:
        """The stored full history (item ids, oldest first) of a user of the indexed dataset.

        Raises:
            ValueError: unknown user.
        """
        h = self.user_histories.get(str(user_id))
        if h is None:
            raise ValueError(f"unknown user {user_id!r}: not in the indexed dataset ({len(self.user_histories)} users)")
        return list(h)

    def recommend_user(self, user_id: Any, k: int = 10) -> list[RankedItem]:
        """:meth:`recommend` from a known user's stored history."""
        return self.recommend(self.history_of(user_id), k)

    def recommend(self, history: Sequence[Any], k: int = 10) -> list[RankedItem]:
        """Top-``k`` unseen items for a history (ids or titles, oldest first).

        The retriever proposes ``max(k, n_candidates)`` unseen items; the first ``n_candidates`` are
        reranked (blended with the retriever score by ``blend_alpha``); any further items follow in
        retriever order.

        Returns:
            ``k`` :class:`RankedItem`, ranks 1..k.

        Raises:
            ValueError: empty history, unknown item, k < 1, k larger than the catalogue or than the
                number of items the user has not seen.
        """
        return self.recommend_batch([history], k)[0]

    def recommend_batch(self, histories: Sequence[Sequence[Any]], k: int = 10) -> list[list[RankedItem]]:
        """:meth:`recommend` for many histories (one retrieval call, one rerank batch)."""
        from llmrec.rerank.blend import blend_scores

        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if k > self.n_items:
            raise ValueError(f"k={k} is larger than the catalogue ({self.n_items} items)")
        if len(histories) == 0:
            raise ValueError("no histories given")
        hist_ids, hist_idx = [], []
        for h in histories:
            if h is None or len(h) == 0:
                raise ValueError("history is empty: give at least one item the user interacted with")
            ids = self.lookup.resolve_all(h, "history item")
            unseen = self.n_items - len(set(ids))
            if k > unseen:
                raise ValueError(f"k={k} is larger than the {unseen} items this user has not seen")
            hist_ids.append(ids)
            hist_idx.append(np.asarray([self.index_of[i] for i in ids], np.int64))
        kk = min(max(int(k), self.n_candidates if self.reranker is not None else int(k)),
                 min(self.n_items - len(set(h)) for h in hist_ids))
        warm = [h[h < self.n_warm] for h in hist_idx]
        for h, w in zip(histories, warm):
            if w.size == 0:
                raise ValueError(f"history {list(h)[:5]}: only cold-start items (no interactions), the retriever "
                                 "needs at least one item it was trained on")
        n_cold_seen = max(len(set(h.tolist())) - len(set(w.tolist())) for h, w in zip(hist_idx, warm))
        with self._lock:
            idx, sc = self.retriever.query_index(warm, min(kk + n_cold_seen, self.n_items), self.index)
        if n_cold_seen:  # cold items of a history are not in the retriever's exclusion: drop them here
            keep = [~np.isin(row, h) for row, h in zip(idx, hist_idx)]
            idx = np.stack([row[m][:kk] for row, m in zip(idx, keep)])
            sc = np.stack([row[m][:kk] for row, m in zip(sc, keep)])
        rows = [[str(self.item_ids[j]) for j in row if j >= 0] for row in idx]
        if any(len(r) < k for r in rows):
            raise ValueError(f"the index returned fewer than k={k} unseen items for a history (an approximate "
                             f"index probing too few lists? raise its nprobe, or use kind='flat')")
        results: list[list[RankedItem]] = []
        if self.reranker is None:
            for row, s in zip(rows, sc):
                results.append([RankedItem(i, self.lookup.title(i), float(v), r + 1)
                                for r, (i, v) in enumerate(zip(row[:k], s[:k]))])
            return results
        heads = [row[: self.n_candidates] for row in rows]
        lm = self.reranker.scores_many([self.reranker.check(h, c) for h, c in zip(hist_ids, heads)])
        for row, s, head, l in zip(rows, sc, heads, lm):
            n = len(head)
            b = blend_scores(s[:n], l, self.blend_alpha) if self.blend_alpha < 1 else l
            order = np.argsort(-b, kind="stable")
            ranked = [(head[j], float(b[j])) for j in order] + [(i, float(v)) for i, v in zip(row[n:], s[n:])]
            results.append([RankedItem(i, self.lookup.title(i), v, r + 1) for r, (i, v) in enumerate(ranked[:k])])
        return results
