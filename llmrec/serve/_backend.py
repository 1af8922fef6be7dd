"""The one place where the service touches llmrec's internals (models, scorers, retrieval, playground).

Everything else in :mod:`llmrec.serve` talks to :class:`Backend` only, so a change of the package layout
changes this file and nothing else.

Batched calls (``*_batch``) take several requests' already-validated inputs and score them together:

* listwise rerank: every request's prompt goes into one :func:`score_shared_head` call: the template's
  fixed head (system prompt, instructions), common to all users, is computed once, and the rest of all
  prompts runs in length-sorted padded batches (one forward for a batch that fits ``batch_tokens``). The
  score of a candidate is the log-probability of its letter among its own list's letters
  (``logit - logsumexp(list's logits)``): the same whatever else is in the batch, and in the same order as
  :meth:`llmrec.Reranker.rerank`'s raw letter logits.
* pointwise rerank (a pointwise adapter): one shared-prefix pass per user (the user's history is the prefix).
* score (P(Yes), TALLRec-style): requests with the same history share their prefix (fan-out); the rest go
  together through :func:`score_shared_head` (shared template head).
* a pointwise adapter with collaborative tokens (:class:`llmrec.collab.rerank.CollabRerankScorer`, item ids in,
  not titles): rerank and score both go through its :meth:`~llmrec.collab.rerank.CollabRerankScorer.probs_lists`
  (requests with the same history are one list; several users packed per forward); items outside its
  collaborative model are refused as bad input.
* recommend: :meth:`llmrec.Recommender.recommend_batch` (one retrieval call, one padded rerank batch).

All of them give what one-by-one calls give, up to float rounding (``tests/serve/test_batching.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llmrec import RankedItem, Recommender, Reranker

__all__ = ["Backend", "BadInput", "RankedItem", "load_backend"]


class BadInput(ValueError):
    """A request that must not reach the model: names the field (``history[2]``) and the value."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.value, self.message = field, value, message


@dataclass(frozen=True)
class RerankJob:
    history: list[str]
    candidates: list[str]
    top_k: int


@dataclass(frozen=True)
class ScoreJob:
    history: list[str]
    target: str


@dataclass(frozen=True)
class RecommendJob:
    history: list[str]
    k: int


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = float(np.max(x))
    return x - (m + np.log(np.sum(np.exp(x - m))))


class Backend:
    """Reranker + recommender (+ playground context, built on first use), with batched scoring calls.

    Args:
        recommender: a :class:`llmrec.Recommender` whose ``reranker`` is set.
        info: what ``/readyz`` reports (model, index, adapter).
        playground: a zero-argument callable returning a :class:`llmrec.prompt_lab.playground.PlaygroundContext`
            (called once, lazily), or None for no playground.
        pad_to_multiple_of: listwise and P(Yes) batches pad their prompt remainders to a multiple of this many
            tokens (masked; 1: none), so traffic of any length meets a bounded set of matrix shapes (see
            :func:`llmrec.scoring.prefix.score_candidates`): RSS stops growing with new shapes.

    Raises:
        ValueError: a recommender without a reranker, a ``pad_to_multiple_of`` below 1.
    """

    def __init__(self, recommender: Recommender, info: dict | None = None,
                 playground: Callable[[], Any] | None = None, pad_to_multiple_of: int = 1) -> None:
        if recommender.reranker is None:
            raise ValueError("the service needs a reranker (an adapter, or the zero-shot base model)")
        from llmrec.scoring.prefix import check_pad_multiple

        self.pad_multiple = check_pad_multiple(pad_to_multiple_of)
        self.rec = recommender
        self.rr: Reranker = recommender.reranker
        self.info = dict(info or {})
        self.lookup = self.rec.lookup  # the indexed items: what the service accepts
        self._pg_factory, self._pg, self._pg_lock = playground, None, threading.Lock()
        from llmrec.rerank.pointwise import PointwiseRerankScorer

        if self.rr.method == "pointwise":
            self.pointwise = self.rr.scorer
        else:  # P(Yes) scores from the same model with the pointwise template
            self.pointwise = PointwiseRerankScorer(self.rr.scorer.model, self.rr.scorer.tokenizer,
                                                   max_history=self.rr.scorer.max_history, dtype=self.rr.scorer.dtype)
        self.lock = threading.Lock()  # model forwards are serialised (one CPU worker thread anyway)

    # ------------------------------------------------------------------ facts
    @property
    def method(self) -> str:
        return self.rr.method

    @property
    def max_candidates(self) -> int | None:
        return self.rr.max_candidates

    @property
    def n_items(self) -> int:
        return self.rec.n_items

    # ------------------------------------------------------------------ validation (cheap, event loop)
    @property
    def _takes_ids(self) -> bool:
        return bool(getattr(self.pointwise, "takes_ids", False))

    def _resolve(self, items: Sequence[Any], field: str, what: str) -> list[str]:
        out = []
        known = self.rr.collab_items  # collaborative tokens: only the collaborative model's items
        for j, x in enumerate(items):
            try:
                i = self.lookup.resolve(x, what)
            except ValueError:
                raise BadInput(f"{field}[{j}]", x, f"unknown {what}: not an item id or title of the index") from None
            if known is not None and i not in known:
                raise BadInput(f"{field}[{j}]", x, f"unknown {what}: item {i!r} is not in the adapter's collaborative "
                                                   f"model")
            out.append(i)
        return out

    def check_history(self, history: Sequence[Any] | None, field: str = "history") -> list[str]:
        if not history:
            raise BadInput(field, history, "history is empty: give at least one item the user interacted with")
        return self._resolve(history, field, "history item")

    def check_rerank(self, history: Sequence[Any], candidates: Sequence[Any], top_k: int | None) -> RerankJob:
        h = self.check_history(history)
        if not candidates:
            raise BadInput("candidates", candidates, "candidates is empty: nothing to rerank")
        mc = self.max_candidates
        if mc is not None and len(candidates) > mc:
            raise BadInput("candidates", f"{len(candidates)} items",
                           f"listwise reranking takes at most {mc} candidates, got {len(candidates)}")
        c = self._resolve(candidates, "candidates", "candidate")
        seen: dict[str, int] = {}
        for j, x in enumerate(c):
            if x in seen:
                raise BadInput(f"candidates[{j}]", candidates[j], f"duplicate: the same item as candidates[{seen[x]}]")
            seen[x] = j
        k = len(c) if top_k is None else min(int(top_k), len(c))
        return RerankJob(h, c, k)

    def check_score(self, history: Sequence[Any], target: Any) -> ScoreJob:
        h = self.check_history(history)
        try:
            return ScoreJob(h, self.lookup.resolve(target, "target"))
        except ValueError:
            raise BadInput("target", target, "unknown target: not an item id or title of the index") from None

    def check_recommend(self, history: Sequence[Any] | None, user_id: Any, k: int) -> RecommendJob:
        if k > self.n_items:
            raise BadInput("k", k, f"larger than the catalogue ({self.n_items} items)")
        if user_id is not None:
            try:
                h = self.rec.history_of(user_id)
            except ValueError:
                raise BadInput("user_id", user_id, "unknown user: not in the indexed dataset") from None
            field = "user_id"
        else:
            h, field = self.check_history(history), "history"
        unseen = self.n_items - len(set(h))
        if k > unseen:
            raise BadInput("k", k, f"larger than the {unseen} items this user has not seen")
        warm = set(map(str, self.rec.item_ids[: self.rec.n_warm]))
        if not any(i in warm for i in h):
            raise BadInput(field, history if user_id is None else user_id,
                           "only cold-start items: the retriever needs at least one item it was trained on")
        return RecommendJob(h, int(k))

    # ------------------------------------------------------------------ batched scoring (worker thread)
    def _titles(self, ids: Sequence[str]) -> list[str]:
        return [self.lookup.title(i) for i in ids]

    def _ranked(self, ids: Sequence[str], s: np.ndarray, top_k: int) -> list[RankedItem]:
        order = np.argsort(-s, kind="stable")[:top_k]
        return [RankedItem(ids[j], self.lookup.title(ids[j]), float(s[j]), r + 1) for r, j in enumerate(order)]

    def _listwise_scores(self, jobs: Sequence[RerankJob]) -> list[np.ndarray]:
        from llmrec.scoring.prefix import score_shared_head

        sc = self.rr.scorer
        perms = [np.random.default_rng(self.rr.seed).permutation(len(j.candidates)) if self.rr.shuffle
                 else np.arange(len(j.candidates)) for j in jobs]
        prompts = [sc.encode(self._titles(j.history), self._titles([j.candidates[p] for p in pm]))
                   for j, pm in zip(jobs, perms)]
        W = max(len(j.candidates) for j in jobs)
        tok = sc.verbalizer.token_ids[:max(W, 2)]
        probs = score_shared_head(sc.model, prompts, tok, dtype=sc.dtype, pad_id=sc.tokenizer.pad_token_id or 0,
                                  batch_tokens=sc.batch_tokens, pad_to_multiple_of=self.pad_multiple)
        out = []
        for j, pm, p in zip(jobs, perms, probs):
            n = len(j.candidates)
            ls = _log_softmax(np.log(np.clip(p[:n], 1e-300, None)))  # renormalised over this list's letters
            v = np.empty(n, np.float64)
            v[pm] = ls
            out.append(v)
        return out

    def rerank_batch(self, jobs: Sequence[RerankJob]) -> list[list[RankedItem]]:
        with self.lock:
            if self.method == "listwise":
                scores = self._listwise_scores(jobs)
            elif self._takes_ids:
                scores = self.pointwise.score_lists([(j.history, j.candidates) for j in jobs])
            else:
                scores = [self.pointwise.score(self._titles(j.history), self._titles(j.candidates)) for j in jobs]
        return [self._ranked(j.candidates, s, j.top_k) for j, s in zip(jobs, scores)]

    def score_batch(self, jobs: Sequence[ScoreJob]) -> list[tuple[float, float]]:
        """``(P(Yes), log-odds)`` per job."""
        from llmrec.scoring.prefix import score_candidates, score_shared_head, split_prompts
        from llmrec.rerank.lm import add_special_tokens_for

        sc = self.pointwise
        if self._takes_ids:
            return self._score_batch_ids(jobs)
        pad, tok = sc.tokenizer.pad_token_id or 0, sc.verbalizer.token_ids[:2]
        special = add_special_tokens_for(sc.template)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(tuple(j.history), []).append(i)
        p = np.zeros((len(jobs), 2), np.float64)
        singles = []
        with self.lock:
            for h, idx in groups.items():
                parts = sc.split(self._titles(h), self._titles([jobs[i].target for i in idx])) if len(idx) > 1 else None
                ids = None
                if parts is not None:
                    try:
                        ids = split_prompts(sc.tokenizer, parts[0], parts[1], add_special_tokens=special)
                    except ValueError:
                        ids = None
                if ids is not None and ids[0]:
                    p[idx] = score_candidates(sc.model, ids[0], ids[1], tok, dtype=sc.dtype, pad_id=pad,
                                              pad_to_multiple_of=self.pad_multiple)
                else:
                    singles += idx
            if singles:
                prompts = [sc.encode(self._titles(jobs[i].history), self.lookup.title(jobs[i].target)) for i in singles]
                p[singles] = score_shared_head(sc.model, prompts, tok, dtype=sc.dtype, pad_id=pad,
                                               pad_to_multiple_of=self.pad_multiple)
        pc = np.clip(p, 1e-12, 1.0)
        return [(float(p[i, 0]), float(np.log(pc[i, 0]) - np.log(pc[i, 1]))) for i in range(len(jobs))]

    def _score_batch_ids(self, jobs: Sequence[ScoreJob]) -> list[tuple[float, float]]:
        """:meth:`score_batch` for a scorer over item ids: one list per distinct history."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(tuple(j.history), []).append(i)
        p = np.zeros((len(jobs), 2), np.float64)
        with self.lock:
            probs = self.pointwise.probs_lists([(list(h), [jobs[i].target for i in idx]) for h, idx in groups.items()])
        for idx, pr in zip(groups.values(), probs):
            p[idx] = pr
        pc = np.clip(p, 1e-12, 1.0)
        return [(float(p[i, 0]), float(np.log(pc[i, 0]) - np.log(pc[i, 1]))) for i in range(len(jobs))]

    def recommend_batch(self, jobs: Sequence[RecommendJob]) -> list[list[RankedItem]]:
        out: list[list[RankedItem] | None] = [None] * len(jobs)
        by_k: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_k.setdefault(j.k, []).append(i)
        with self.lock:
            for k, idx in by_k.items():
                for i, r in zip(idx, self.rec.recommend_batch([jobs[i].history for i in idx], k)):
                    out[i] = r
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ playground
    def playground(self):
        """The playground context (built on first use), or None when the service has none."""
        if self._pg_factory is None:
            return None
        with self._pg_lock:
            if self._pg is None:
                self._pg = self._pg_factory()
        return self._pg

    def preview(self, template: str, indices: Sequence[int], split: str, score: bool) -> dict:
        from llmrec.prompt_lab.playground import preview

        ctx = self.playground()
        with self.lock:
            return preview(template, indices, split, context=ctx, score=score)


def playground_page() -> str:
    """The playground's page with its API calls made relative (it is served under ``/playground/``)."""
    from llmrec.prompt_lab.playground import _PAGE

    page = _PAGE.replace("fetch('/api/", "fetch('api/")
    if "fetch('/api/" in page or "fetch('api/" not in page:
        raise RuntimeError("llmrec.prompt_lab.playground page changed: cannot mount it under /playground/")
    return page


def playground_limits() -> tuple[int, int]:
    from llmrec.prompt_lab.playground import MAX_BODY_BYTES, MAX_SAMPLES

    return MAX_SAMPLES, MAX_BODY_BYTES


def playground_context(rec: Any, model: Any, tokenizer: Any, base_model: str | None, data: Any = None) -> Callable[[], Any]:
    """A factory of the playground context: TALLRec splits of ``data`` (default: the embedded MovieLens-100K),
    the service's own model and tokenizer (scores share the model), the built-in templates."""

    def build():
        from llmrec.recipe import load_tallrec
        from llmrec.prompt_lab.playground import PlaygroundContext
        from llmrec.model import model_max_positions
        from llmrec.prompts import list_templates

        r, splits = load_tallrec(data)
        templates = {n: p.read_text(encoding="utf-8") for n, p in sorted(list_templates(None).items())}
        try:
            max_pos = model_max_positions(base_model) if base_model else None
        except Exception:  # a model without a readable config: no length findings
            max_pos = None
        return PlaygroundContext(r, splits, tokenizer, model, base_model, max_pos, templates, "tallrec")

    return build


def load_backend(index_dir: str | Path, adapter_dir: str | Path | None = None, *, base_model: str | None = None,
                 dtype: str = "auto", n_candidates: int = 20, playground: bool = True,
                 pad_to_multiple_of: int = 1) -> Backend:
    """Load the index, the reranker (the adapter, else the zero-shot base model, listwise) and the model.
    ``pad_to_multiple_of``: as in :class:`Backend`.

    Raises:
        FileNotFoundError / ValueError: a missing or invalid index or adapter (one-line messages).
    """
    from llmrec.model import DEFAULT_BASE_MODEL

    idx = Recommender.load(index_dir)
    if adapter_dir is not None:
        rr = Reranker.from_pretrained(adapter_dir, catalog=idx.catalog, base_model=base_model, dtype=dtype)
    else:
        rr = Reranker.zero_shot(base_model or DEFAULT_BASE_MODEL, catalog=idx.catalog, dtype=dtype)
    rec = Recommender(idx.retriever, idx.index, idx.item_ids, idx.catalog, rr, n_candidates=n_candidates,
                      user_histories=idx.user_histories)
    name = base_model or rr.metadata.get("base_model") or DEFAULT_BASE_MODEL
    info = {"index": str(index_dir), "adapter": str(adapter_dir) if adapter_dir else None, "base_model": str(name),
            "method": rr.method, "n_items": rec.n_items, "dtype": dtype}
    data = getattr(idx, "_source", {}).get("data")
    pg = playground_context(rec, rr.scorer.model, rr.scorer.tokenizer, str(name),
                            data if data and Path(data).exists() else None) if playground else None
    return Backend(rec, info, pg, pad_to_multiple_of=pad_to_multiple_of)
