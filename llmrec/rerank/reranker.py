"""The public reranker: reorder a user's candidate items with a (LoRA-tuned) causal LM.

* :class:`Reranker` - ``Reranker.from_pretrained(adapter_dir).rerank(history, candidates, top_k)``
  (listwise letters, LlamaRec: Yue et al. 2023; or pointwise Yes/No, TALLRec: Bao et al. 2023), over a
  list scorer (:class:`~llmrec.rerank.listwise.ListwiseScorer`,
  :class:`~llmrec.rerank.pointwise.PointwiseRerankScorer`, or for a model with collaborative tokens
  :class:`~llmrec.collab.rerank.CollabRerankScorer`: anything with ``score_lists`` and ``max_candidates``;
  one with ``takes_ids = True`` is given item ids, the others titles).
* :class:`RankedItem` - one result: ``item_id``, ``title``, ``score``, ``rank`` (1-based).
* :class:`Ranking` - what :meth:`Reranker.rerank` returns: a list of :class:`RankedItem` whose ``excluded``
  holds the candidates left out because they are in the history (the user has them already; Recommender never
  proposes them either). ``Reranker(..., exclude_history=False)`` ranks them like any other candidate.
* :class:`ItemLookup` - items given by id (``"50"`` or ``50``) or by exact title (``"Star Wars (1977)"``,
  case-insensitive; for duplicated titles the first catalogue entry wins).

Every method validates its input and raises ``ValueError`` with a one-line message for an unknown item, an
empty history, no candidates, or ``top_k`` < 1. Instances are safe to share between threads: model forwards
run under a per-instance lock, so concurrent calls give the results of sequential ones.
End to end (retrieve, then rerank) is :class:`llmrec.recommender.Recommender`.

Example (a tiny random model, so the order itself is meaningless; with a tuned adapter use
``Reranker.from_pretrained("runs/rerank/adapter-listwise")``)::
    >>> from tests.conftest import make_tiny_llama, make_tiny_tokenizer
    >>> from llmrec.data import Catalog
    >>> tok = make_tiny_tokenizer()
    >>> cat = Catalog.from_records([
    ...     {"item_id": "1", "title": "Toy Story (1995)", "year": 1995, "genres": ["Animation"]},
    ...     {"item_id": "2", "title": "Heat (1995)", "year": 1995, "genres": ["Action"]},
    ...     {"item_id": "3", "title": "Casino (1995)", "year": 1995, "genres": ["Drama"]},
    ...     {"item_id": "4", "title": "GoldenEye (1995)", "year": 1995, "genres": ["Action"]}])
    >>> rr = Reranker(make_tiny_llama(len(tok)), tok, cat)
    >>> ranked = rr.rerank(["1", "Heat (1995)"], ["3", "4"], top_k=2)
    >>> [r.rank for r in ranked], sorted(r.item_id for r in ranked)
    ([1, 2], ['3', '4'])
    >>> ranked[0].score >= ranked[1].score
    True
    >>> rr.rerank([], ["3"])
    Traceback (most recent call last):
    ...
    ValueError: history is empty: give at least one item the user interacted with
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["RankedItem", "Ranking", "Reranker", "ItemLookup", "as_catalog"]


@dataclass(frozen=True)
class RankedItem:
    """One ranked item.

    Attributes:
        item_id: the catalogue's item id (str).
        title: its title.
        score: the value it was ranked by (higher = better): the LM score (listwise: letter logit;
            pointwise: log-odds of Yes), the blended z-score when blending with the retriever, or the
            retriever's inner product for items beyond the reranked head.
        rank: 1-based position.
    """

    item_id: str
    title: str
    score: float
    rank: int


class Ranking(list):
    """A list of :class:`RankedItem` (best first) with ``excluded``: the ids of candidates left out because
    they are in the user's history (empty when none were, or with ``exclude_history=False``)."""

    def __init__(self, items: Iterable[RankedItem] = (), excluded: Sequence[str] = ()) -> None:
        super().__init__(items)
        self.excluded: list[str] = list(excluded)


def as_catalog(catalog: Any):
    """Catalog from a Catalog, a RecData, a dataset path, or None (the embedded MovieLens-100K)."""
    from llmrec.data import Catalog, load_dataset

    if isinstance(catalog, Catalog):
        return catalog
    if hasattr(catalog, "catalog"):
        return catalog.catalog
    if catalog is None:
        from llmrec import assets

        catalog = assets.ml100k_dir()
    return load_dataset(catalog).catalog


class ItemLookup:
    """Resolve items given by id or title against a catalogue (optionally restricted to known ids).

    Args:
        catalog: :class:`llmrec.data.Catalog`.
        allowed: item ids that may be used (e.g. the retriever's items); default all catalogue items.
    """

    def __init__(self, catalog, allowed: Iterable[str] | None = None) -> None:
        self.catalog = catalog
        titles = catalog.titles()
        self.allowed = set(map(str, allowed)) if allowed is not None else set(titles)
        self.by_title: dict[str, str] = {}
        for i, t in titles.items():
            if i in self.allowed:
                self.by_title.setdefault(t.strip().casefold(), i)

    def resolve(self, item: Any, what: str = "item") -> str:
        """The item id of ``item`` (an id, int or str, or an exact title).

        Raises:
            ValueError: unknown item (message names it).
        """
        s = str(item).strip()
        if s in self.allowed:
            return s
        i = self.by_title.get(s.casefold())
        if i is not None:
            return i
        extra = "" if len(self.allowed) == len(self.catalog) else " (or not indexed)"
        raise ValueError(f"unknown {what} {item!r}: not an item id or title in the catalogue{extra}")

    def resolve_all(self, items: Sequence[Any], what: str) -> list[str]:
        if isinstance(items, (str, bytes)):
            raise ValueError(f"{what} must be a list of items, got a single string {items!r}")
        return [self.resolve(x, what) for x in items]

    def title(self, item_id: str) -> str:
        return self.catalog.title(item_id) if item_id in self.catalog else f"item {item_id}"


def _same(item_id: str) -> str:
    return item_id


def _collab_slots(model: Any, template: Any, method: str) -> Any:
    """The model's :class:`~llmrec.collab.tokens.SlotTable` when the reranker should score with collaborative
    tokens (a template over ``history_ids`` / ``target_id`` on a model that has them), else None.

    Raises:
        ValueError: such a template for listwise reranking, or on a model without collaborative tokens.
    """
    if template is None or not {"history_ids", "target_id"} & set(template.referenced_variables()):
        return None
    if method != "pointwise":
        raise ValueError(f"template {template.name}: places collaborative tokens over item ids (history_ids / "
                         f"target_id); only pointwise reranking takes them")
    from llmrec.collab.tokens import slot_table

    slots = slot_table(model)
    if slots is None:
        raise ValueError(f"template {template.name}: places collaborative tokens, but the model has none installed "
                         f"(load an adapter with a 'collab' record: Reranker.from_pretrained)")
    return slots


def _check_top_k(top_k: int | None, n: int) -> int:
    if top_k is None:
        return n
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return min(int(top_k), n)


class Reranker:
    """Reorder a user's candidate items with a causal LM.

    Args:
        model: ``*ForCausalLM`` or peft model (eval mode).
        tokenizer: its tokenizer.
        catalog: item titles (:class:`llmrec.data.Catalog`, a ``RecData``, a dataset path, or None for
            the embedded MovieLens-100K).
        method: ``"listwise"`` (one pass, letters (A)..(T), at most 20 candidates) or ``"pointwise"``
            (P(Yes) per candidate, history prefix shared). Default: the template's task, else listwise.
        template: template name/path/object (default ``rerank-<method>``).
        max_history: most recent history titles shown to the LM.
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native).
        shuffle: present listwise candidates in a fixed seeded random order (the order tuned adapters
            were trained on) instead of the caller's order.
        seed: seed of that order.
        exclude_history: :meth:`rerank` leaves out candidates that are in the history (reported in
            :attr:`Ranking.excluded`); False ranks them like any other. :meth:`scores` always scores every
            candidate it is given.

    Collaborative tokens (issue 15): a pointwise template over item ids (``history_ids`` / ``target_id``, e.g.
    ``rerank-pointwise-tokens`` / ``rerank-pointwise-hybrid``) on a model with collaborative tokens installed
    (``llmrec.collab.tokens.slot_table(model)`` is not None, e.g. :meth:`from_pretrained` on an adapter with a
    ``collab`` record) scores with :class:`~llmrec.collab.rerank.CollabRerankScorer` (titles from ``catalog``);
    items outside the collaborative model are refused by :meth:`check`.

    Raises:
        ValueError: unknown method, a template of the other task, or a template over item ids (collaborative
            tokens) that is listwise or whose model has no collaborative tokens installed.
    """

    def __init__(self, model: Any, tokenizer: Any, catalog: Any = None, *, method: str | None = None,
                 template: Any = None, max_history: int = 10, dtype: str = "auto", shuffle: bool = True,
                 seed: int = 0, metadata: dict | None = None, exclude_history: bool = True) -> None:
        from llmrec.prompts import Template, load_template
        from llmrec.rerank.listwise import ListwiseScorer
        from llmrec.rerank.pointwise import PointwiseRerankScorer

        if template is not None and not isinstance(template, Template):
            template = load_template(template)
        method = method or (template.task if template is not None else "listwise")
        if method not in ("listwise", "pointwise"):
            raise ValueError(f"method must be 'listwise' or 'pointwise', got {method!r}")
        self.lookup = ItemLookup(as_catalog(catalog))
        slots = _collab_slots(model, template, method)
        if slots is not None:
            from llmrec.collab.rerank import CollabRerankScorer

            self.scorer = CollabRerankScorer(model, tokenizer, slots, self.lookup.title, template,
                                             max_history=max_history, dtype=dtype)
        else:
            Scorer = ListwiseScorer if method == "listwise" else PointwiseRerankScorer
            self.scorer = Scorer(model, tokenizer, template, max_history=max_history, dtype=dtype)
        self._collab_items = frozenset(map(str, slots.collab.catalog_items)) if slots is not None else None
        self.method, self.shuffle, self.seed = method, bool(shuffle), int(seed)
        self.exclude_history = bool(exclude_history)
        self.metadata = metadata or {}
        self._lock = threading.Lock()

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, *, catalog: Any = None, base_model: str | None = None,
                        dtype: str = "auto", merge: bool = True, allow_base_mismatch: bool = False,
                        collab: Any = None, **kw) -> "Reranker":
        """Load base model + LoRA adapter saved by ``eval/rerank_eval.py`` (or :func:`llmrec.adapter.save_adapter`).

        ``catalog`` defaults to the dataset recorded in the adapter (``protocol.data``), else the embedded
        MovieLens-100K; ``max_history`` defaults to the recorded one. A pointwise adapter with collaborative tokens
        (a ``collab`` record, :func:`llmrec.collab.adapter.save_collab_adapter`) loads them
        (:func:`llmrec.adapter.load_adapter`) and scores with :class:`~llmrec.collab.rerank.CollabRerankScorer`;
        ``collab`` (a :class:`llmrec.collab.data.CollabModel`) replaces the collaborative model stored in it (its
        content hash must be the recorded ``collab.sha256``).

        Raises:
            FileNotFoundError / llmrec.adapter.AdapterError: missing or corrupt adapter, or one of another kind
                (a ``llmrec train`` TALLRec adapter: one line naming both kinds, before the model loads), a
                listwise adapter with collaborative tokens, a ``collab.sha256`` or base-model mismatch.
        """
        from llmrec.adapter import AdapterError, adapter_kind, load_adapter, read_metadata

        meta = read_metadata(adapter_dir)
        if meta.get("collab") and adapter_kind(meta) == "rerank-listwise":  # refused before the model loads
            raise AdapterError(f"adapter {adapter_dir}: a listwise reranker adapter with collaborative tokens (a "
                               f"'collab' record): listwise reranking takes titles only; use a pointwise one")
        model, tok, template, _verb, meta = load_adapter(adapter_dir, base_model=base_model, merge=merge,
                                                         allow_base_mismatch=allow_base_mismatch, collab=collab,
                                                         kind=("rerank-listwise", "rerank-pointwise"),
                                                         user="a reranker (Reranker.from_pretrained, llmrec "
                                                              "recommend --adapter)")
        proto = meta.get("protocol", {})
        if catalog is None and proto.get("data") and Path(proto["data"]).exists():
            catalog = proto["data"]
        kw.setdefault("max_history", int(proto.get("max_history", 10)))
        return cls(model, tok, catalog, template=template, dtype=dtype, metadata=meta, **kw)

    @classmethod
    def zero_shot(cls, base_model: str = "smollm2-135m-instruct", *, catalog: Any = None,
                  method: str = "listwise", dtype: str = "auto", **kw) -> "Reranker":
        """An untuned reranker on a base model (embedded name, folder or HF id)."""
        from llmrec.model import load_base_model

        model, tok = load_base_model(base_model)
        return cls(model, tok, catalog, method=method, dtype=dtype, **kw)

    @property
    def blend_alpha(self) -> float | None:
        """The blend weight tuned on validation and recorded in the adapter, if any."""
        a = self.metadata.get("protocol", {}).get("blend_alpha")
        return None if a is None else float(a)

    @property
    def collab_items(self) -> frozenset[str] | None:
        """With collaborative tokens: the ids of the collaborative model's items (the only items :meth:`check`
        accepts); None for a text reranker."""
        return self._collab_items

    @property
    def max_candidates(self) -> int | None:
        """Most candidates per call (20 for listwise letters), None when unbounded (pointwise)."""
        return self.scorer.max_candidates if self.method == "listwise" else None

    # --- scoring --------------------------------------------------------------------------------
    def check(self, history: Sequence[Any], candidates: Sequence[Any]) -> tuple[list[str], list[str]]:
        """``(history ids, candidate ids)`` resolved from ids or titles and validated (what
        :meth:`scores_many` takes).

        Raises:
            ValueError: empty history/candidates, unknown item, duplicate candidate, too many candidates.
        """
        if history is None or len(history) == 0:
            raise ValueError("history is empty: give at least one item the user interacted with")
        if candidates is None or len(candidates) == 0:
            raise ValueError("candidates is empty: nothing to rerank")
        h = self.lookup.resolve_all(history, "history item")
        c = self.lookup.resolve_all(candidates, "candidate")
        if self._collab_items is not None:  # collaborative tokens exist only for the collaborative model's items
            for what, ids, given in (("history item", h, history), ("candidate", c, candidates)):
                for i, g in zip(ids, given):
                    if i not in self._collab_items:
                        raise ValueError(f"unknown {what} {g!r}: item {i!r} is not in the collaborative model "
                                         f"({len(self._collab_items)} items) behind this reranker's tokens")
        if len(set(c)) != len(c):
            dup = next(x for x in c if c.count(x) > 1)
            raise ValueError(f"candidate {dup!r} is given twice")
        mc = self.max_candidates
        if mc is not None and len(c) > mc:
            raise ValueError(f"{len(c)} candidates, but listwise reranking takes at most {mc}; retrieve fewer or use "
                             f"method='pointwise'")
        return h, c

    def scores_many(self, lists: Sequence[tuple[list[str], list[str]]]) -> list[np.ndarray]:
        """LM scores of checked ``(history ids, candidate ids)`` lists (from :meth:`check`), in the given
        candidate order; listwise candidates are shown in the seeded order of
        :func:`~llmrec.rerank.lm.presentation_orders` (``per_list=True``) when ``shuffle`` is on. The scorer gets
        titles, or the item ids themselves when it ``takes_ids`` (collaborative tokens).

        Returns:
            per list, float64 ``(C,)``."""
        from llmrec.rerank.lm import presentation_orders, score_presented

        sizes = [len(c) for _, c in lists]
        if self.shuffle and self.method == "listwise":
            perms = presentation_orders(sizes, self.seed, per_list=True)
        else:
            perms = [np.arange(n) for n in sizes]
        shown = _same if getattr(self.scorer, "takes_ids", False) else self.lookup.title
        with self._lock:
            return score_presented(self.scorer, lists, perms, shown)

    def scores(self, history: Sequence[Any], candidates: Sequence[Any]) -> np.ndarray:
        """float64 ``(C,)`` LM scores of ``candidates`` (in the given order), higher = better.

        Raises:
            ValueError: empty history/candidates, unknown item, duplicate candidate, too many candidates.
        """
        return self.scores_many([self.check(history, candidates)])[0]

    def rerank(self, history: Sequence[Any], candidates: Sequence[Any], top_k: int | None = None) -> Ranking:
        """Candidates sorted by LM score (ties keep the given order), the best ``top_k`` (default all).
        Candidates that are in the history are left out (their ids in ``.excluded`` of the result) unless the
        reranker was made with ``exclude_history=False``.

        Args:
            history: items the user interacted with, oldest first (ids or titles).
            candidates: items to reorder (ids or titles), e.g. a retriever's top-20.
            top_k: how many to return.

        Returns:
            :class:`Ranking` (a list of :class:`RankedItem`), ranks 1..top_k, scores non-increasing.

        Raises:
            ValueError: as :meth:`scores`, top_k < 1, or every candidate is in the history.
        """
        return self.rerank_batch([history], [candidates], top_k)[0]

    def rerank_batch(self, histories: Sequence[Sequence[Any]], candidate_lists: Sequence[Sequence[Any]],
                     top_k: int | None = None) -> list[Ranking]:
        """:meth:`rerank` for many users (one validation pass, then the forwards)."""
        if len(histories) != len(candidate_lists):
            raise ValueError(f"{len(histories)} histories but {len(candidate_lists)} candidate lists")
        lists, excluded = [], []
        for h, c in zip(histories, candidate_lists):
            h, c = self.check(h, c)
            seen = set(h) if self.exclude_history else set()
            drop = [x for x in c if x in seen]
            if drop:
                c = [x for x in c if x not in seen]
                if not c:
                    raise ValueError(f"every candidate ({len(drop)}) is in the history: nothing to rerank (the user "
                                     f"has them already; exclude_history=False ranks them anyway)")
                import logging

                logging.getLogger(__name__).info("left out %d candidate(s) that are in the history", len(drop))
            lists.append((h, c))
            excluded.append(drop)
        if top_k is not None:
            _check_top_k(top_k, 1)
        out = []
        for (h, c), s, drop in zip(lists, self.scores_many(lists), excluded):
            out.append(self._ranked(c, s, top_k, drop))
        return out

    def _ranked(self, ids: Sequence[str], s: np.ndarray, top_k: int | None, excluded: Sequence[str] = ()) -> Ranking:
        k = _check_top_k(top_k, len(ids))
        order = np.argsort(-s, kind="stable")[:k]
        return Ranking((RankedItem(ids[j], self.lookup.title(ids[j]), float(s[j]), r + 1) for r, j in enumerate(order)),
                       excluded)
