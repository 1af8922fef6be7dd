"""LoRA tuning of the rerankers on hard-negative lists, through the project's Trainer machinery.

* Listwise: :func:`train_listwise` - examples ``prompt + letter of the true item (+ EOS)``, loss on the
  answer only; transformers' Trainer with :mod:`llmrec.train`'s sparse answer-only loss and collator.
  No validation-based early stopping (LlamaRec tunes one epoch); evaluate afterwards.
* Pointwise: :func:`train_pointwise` - TALLRec's Yes/No examples (true item = Yes, hard negatives from
  the same retrieved list = No) through :func:`llmrec.train.train_lora` unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from llmrec.model import LoraSettings, add_lora
from llmrec.precision import training_precision
from llmrec.train import (AnswerCollator, TrainResult, TrainSettings, _check_run_identity,
                          make_trainer_class, train_lora)

__all__ = ["train_examples", "train_listwise", "train_pointwise"]


def train_examples(model: Any, tokenizer: Any, examples: Sequence[dict], settings: TrainSettings,
                   lora: LoraSettings | None = None) -> TrainResult:
    """LoRA-tune on ready causal-LM examples (``input_ids`` + ``labels``, -100 = ignored).

    The generalisation of :func:`llmrec.train.train_lora` to any answer tokens (here: letters). Uses the
    same Trainer subclass (sparse LM head on answer positions) and collator; checkpoints per epoch in
    ``settings.output_dir/checkpoints`` (resumed if present and written by the same run). No evaluation
    during training.

    Raises:
        ValueError: no examples, or ``output_dir`` holds checkpoints of a different run.
    """
    from datasets import Dataset
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    if len(examples) == 0:
        raise ValueError("no training examples")
    set_seed(settings.seed)
    if not hasattr(model, "peft_config"):
        model = add_lora(model, lora or LoraSettings())
    ds = Dataset.from_list([dict(e) for e in examples])
    cuda = torch.cuda.is_available()
    precision = training_precision(settings.precision, "cuda" if cuda else "cpu")
    ckpt = Path(settings.output_dir) / "checkpoints"
    steps = math.ceil(len(examples) / (settings.batch_size * settings.grad_accum)) * settings.epochs
    args = TrainingArguments(
        output_dir=str(ckpt), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=int(settings.warmup_ratio * steps),
        weight_decay=settings.weight_decay, seed=settings.seed, data_seed=settings.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda, eval_strategy="no",
        save_strategy="epoch", save_total_limit=1, logging_steps=settings.logging_steps, report_to="none",
        remove_unused_columns=False, disable_tqdm=not settings.progress, dataloader_num_workers=0,
    )
    Trainer = make_trainer_class()
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=AnswerCollator(tokenizer.pad_token_id or 0))
    last = get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None
    # as train_lora: resume only checkpoints of this very run (else a rerun silently returns a stale adapter)
    fp_examples = [{k: [int(x) for x in v] for k, v in e.items()} for e in examples]
    _check_run_identity(Path(settings.output_dir), settings, lora or LoraSettings(), fp_examples, None, None,
                        resuming=last is not None)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    tuned = trainer.model
    tuned.eval()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return TrainResult(model=tuned, best_val_auc=None, val_auc_history=[], epochs_run=float(trainer.state.epoch),
                       train_seconds=seconds,
                       train_tokens=int(sum(len(e["input_ids"]) for e in examples) * trainer.state.epoch),
                       settings={**asdict(settings), "precision": precision, "loss_history": losses})


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
