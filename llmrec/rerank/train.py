"""LoRA tuning of the rerankers on hard-negative lists, through the project's Trainer machinery.

* Listwise: :func:`train_listwise` - examples ``prompt + letter of the true item (+ EOS)``, loss on the
  answer only; transformers' Trainer with :mod:`llmrec.train`'s sparse answer-only loss and collator.
  No validation-based early stopping (LlamaRec tunes one epoch); evaluate afterwards.
* Pointwise: :func:`train_pointwise` - TALLRec's Yes/No examples (true item = Yes, hard negatives from
  the same retrieved list = No) through :func:`llmrec.train.train_lora` unchanged.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

from llmrec.model import LoraSettings
from llmrec.train import TrainResult, TrainSettings, run_trainer, train_lora

__all__ = ["train_examples", "train_listwise", "train_pointwise"]


def train_examples(model: Any, tokenizer: Any, examples: Sequence[dict], settings: TrainSettings,
                   lora: LoraSettings | None = None) -> TrainResult:
    """LoRA-tune on ready causal-LM examples (``input_ids`` + ``labels``, -100 = ignored).

    The generalisation of :func:`llmrec.train.train_lora` to any answer tokens (here: letters), through the
    same runner (:func:`llmrec.train.run_trainer`: sparse LM head on answer positions); checkpoints per epoch in
    ``settings.output_dir/checkpoints`` (resumed if present and written by the same run). No evaluation
    during training.

    Raises:
        ValueError: no examples, or ``output_dir`` holds checkpoints of a different run.
    """
    if len(examples) == 0:
        raise ValueError("no training examples")
    run = run_trainer(model, tokenizer, examples, settings, lora)
    losses = [x["loss"] for x in run.trainer.state.log_history if "loss" in x]
    return TrainResult(model=run.model, best_val_auc=None, val_auc_history=[], epochs_run=run.epochs,
                       train_seconds=run.seconds, train_tokens=run.tokens,
                       settings={**asdict(settings), "precision": run.precision, "loss_history": losses})


def train_listwise(scorer, lists: Sequence[tuple[Sequence[str], Sequence[str], int]], settings: TrainSettings,
                   lora: LoraSettings | None = None) -> TrainResult:
    """Tune a :class:`~llmrec.rerank.listwise.ListwiseScorer`'s model on ``(history_titles,
    candidate_titles, target_pos)`` lists (candidates already shuffled); the scorer's model is replaced
    by the tuned peft model."""
    ex = [scorer.training_example(h, c, t, settings.loss_on, settings.max_length) for h, c, t in lists]
    res = train_examples(scorer.model, scorer.tokenizer, ex, settings, lora)
    scorer.model = res.model
    return res


def train_pointwise(scorer, pairs: Sequence[tuple[Sequence[str], str, int]], settings: TrainSettings,
                    lora: LoraSettings | None = None,
                    val_pairs: Sequence[tuple[Sequence[str], str, int]] | None = None) -> TrainResult:
    """Tune a :class:`~llmrec.rerank.pointwise.PointwiseRerankScorer`'s model on ``(history_titles,
    target_title, label)`` triples with :func:`llmrec.train.train_lora` (Yes/No, optional validation AUC
    early stopping); the scorer's model is replaced by the tuned one."""
    ids = [scorer.encode(h, t) for h, t, _ in pairs]
    labels = [int(y) for _, _, y in pairs]
    v_ids = [scorer.encode(h, t) for h, t, _ in val_pairs] if val_pairs else None
    v_lab = [int(y) for _, _, y in val_pairs] if val_pairs else None
    res = train_lora(scorer.model, scorer.tokenizer, scorer.verbalizer, ids, labels, settings, lora, v_ids, v_lab)
    scorer.model = res.model
    return res
