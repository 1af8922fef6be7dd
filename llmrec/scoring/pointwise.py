"""Pointwise scoring of TALLRec prompts: P(positive verbalizer word) per prompt, and its AUC.

:class:`PointwiseScorer` binds a model, its tokenizer and a pointwise template: it renders samples (or
alpaca records) through :mod:`llmrec.prompts.render`, tokenises them (:class:`Prompts`) and scores them with
shared-head prefix scoring (:mod:`llmrec.scoring.prefix`) or full prompts (:mod:`llmrec.scoring.logits`);
under ``accelerate launch`` each process scores a shard (:func:`process_state`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from llmrec.data.alpaca import answer_label
from llmrec.metrics import auc
from llmrec.model import Verbalizer, verbalizer_for
from llmrec.prompts.render import render_alpaca, render_samples
from llmrec.prompts.template import Template
from llmrec.samples.tallrec import Sample
from llmrec.scoring.logits import encode_prompts, score_encoded

__all__ = ["Prompts", "PointwiseScorer", "process_state"]


@dataclass
class Prompts:
    """Tokenised prompts with labels.

    Attributes:
        input_ids: N lists of token ids, each ending right before the answer.
        labels: (N,) int64 array of 0/1 (or -1 when unknown).
        texts: the prompt texts.
    """

    input_ids: list[list[int]]
    labels: np.ndarray
    texts: list[str]

    @property
    def tokens(self) -> int:
        return int(sum(len(x) for x in self.input_ids))


class PointwiseScorer:
    """P(positive verbalizer word) for prompts, with a model, tokenizer and template bound together.

    Args:
        model: ``*ForCausalLM`` or peft model.
        tokenizer: its tokenizer.
        template: a pointwise :class:`~llmrec.prompts.Template`.
        dtype: scoring precision (:mod:`llmrec.precision`; ``"auto"``: bf16 autocast where native).
        batch_tokens: padded tokens per forward pass.
        shared_head: compute the prompts' common token prefix once (see :meth:`_score_ids`).
    """

    def __init__(self, model: Any, tokenizer: Any, template: Template, dtype: str = "auto",
                 batch_tokens: int = 8192, verbalizer: Verbalizer | None = None, shared_head: bool = True):
        if template.task != "pointwise":
            raise ValueError(f"template {template.name}: task {template.task!r}, PointwiseScorer needs 'pointwise'")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.dtype, self.batch_tokens, self.shared_head = dtype, batch_tokens, shared_head
        self.verbalizer = verbalizer

    def encode(self, texts: Sequence[str], labels: Sequence[int] | None = None) -> Prompts:
        """Tokenise prompt texts (no extra special tokens for chat-format output) and fix the verbalizer ids.

        Raises:
            ValueError: no texts, or a prompt longer than the model's context (:func:`llmrec.model.check_context`:
                refused, never truncated or scored past the positions the model was trained on).
        """
        if not texts:
            raise ValueError("no prompts to encode")
        from llmrec.prompts.collab_syntax import has_markers

        if any(has_markers(t) for t in texts):  # tokenised as text they would be silently wrong prompts
            raise ValueError(f"template {self.template.name}: its prompts hold collaborative tokens (item_token / "
                             f"user_token); score them with llmrec.collab (CollabScorer and a collaborative model)")
        if self.verbalizer is None:
            self.verbalizer = verbalizer_for(self.template, self.tokenizer, texts[0])
        ids = encode_prompts(self.tokenizer, texts, add_special_tokens=self.template.format != "chat")
        from llmrec.model import check_context

        check_context(self.model, [len(x) for x in ids])  # past the model's positions the score is wrong
        lab = np.asarray(labels if labels is not None else [-1] * len(texts), dtype=np.int64)
        return Prompts(ids, lab, list(texts))

    def encode_samples(self, samples: Sequence[Sample], catalog) -> Prompts:
        return self.encode(render_samples(self.template, samples, catalog, self.tokenizer), [s.label for s in samples])

    def encode_alpaca(self, records: Sequence[dict]) -> Prompts:
        """Render and tokenise alpaca records; label from ``label`` if present, else from ``output`` against
        the template's answers (-1 for a missing or empty output: unlabelled records can be scored)."""
        answers = tuple(self.template.targets[:2])
        labels = [int(r["label"]) if "label" in r else
                  (answer_label(r["output"], answers) if str(r.get("output") or "").strip() else -1) for r in records]
        return self.encode(render_alpaca(self.template, records, self.tokenizer), labels)

    def score(self, prompts: Prompts, progress: bool = False, desc: str = "scoring") -> np.ndarray:
        """(N,) float64 P(positive word) per prompt (TALLRec's score).

        Under ``accelerate launch`` (several processes) each process scores its shard of the prompts
        and the shards are gathered, so every process returns all N scores in input order.
        """
        if self.verbalizer is None:
            raise ValueError("call encode() first: the verbalizer ids come from the tokenised prompts")
        state = process_state()
        n = len(prompts.input_ids)
        if state.num_processes == 1 or n < state.num_processes:
            return self._score_ids(prompts.input_ids, progress, desc)
        from accelerate.utils import gather_object

        with state.split_between_processes(list(range(n))) as mine:
            local = self._score_ids([prompts.input_ids[i] for i in mine], progress and state.is_main_process, desc)
            pairs = gather_object(list(zip(mine, local.tolist())))
        out = np.empty(n, dtype=np.float64)
        for i, s in pairs:
            out[i] = s
        return out

    def _score_ids(self, input_ids, progress: bool, desc: str, chunk: int = 128) -> np.ndarray:
        """Shared-head scoring (:func:`llmrec.scoring.prefix.score_shared_head`): the template text common
        to all prompts is computed once per chunk of ``chunk`` prompts; equal to full-prompt scoring
        within 1e-5 in fp32 (tests/scoring/test_prefix.py)."""
        from llmrec.scoring.prefix import score_shared_head

        if not self.shared_head:
            return score_encoded(self.model, input_ids, self.verbalizer.token_ids,
                                 pad_id=self.tokenizer.pad_token_id or 0, batch_tokens=self.batch_tokens,
                                 dtype=self.dtype, progress=progress, desc=desc)[:, 0]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(input_ids), desc=desc, unit="prompt")
        out = []
        try:
            for i in range(0, len(input_ids), chunk):
                part = input_ids[i: i + chunk]
                out.append(score_shared_head(self.model, part, self.verbalizer.token_ids, dtype=self.dtype,
                                             batch_tokens=self.batch_tokens,
                                             pad_id=self.tokenizer.pad_token_id or 0)[:, 0])
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        return np.concatenate(out) if out else np.zeros(0)

    def evaluate(self, prompts: Prompts, progress: bool = False, desc: str = "scoring",
                 keep_scores: bool = False) -> dict:
        """AUC of the scores against the labels, with wall seconds and tokens/s (and, with ``keep_scores``,
        ``"scores"``: the (N,) float64 P(Yes) array)."""
        t0 = time.perf_counter()
        s = self.score(prompts, progress=progress, desc=desc)
        sec = time.perf_counter() - t0
        r = {"auc": auc(prompts.labels, s), "seconds": sec, "tokens": prompts.tokens,
             "tokens_per_s": prompts.tokens / sec if sec > 0 else float("nan"), "n": len(s)}
        if keep_scores:
            r["scores"] = s
        return r


def process_state():
    """accelerate's process state; on a machine without CUDA, processes started by ``accelerate launch``
    join a gloo (MULTI_CPU) group instead of running as independent copies."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
