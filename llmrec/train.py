"""LoRA tuning on a few labelled prompts through transformers' Trainer.

Because training goes through :class:`transformers.Trainer`, ``accelerate launch -m llmrec train ...``
runs it on several processes (DDP; FSDP via an accelerate config) unchanged. Early stopping and
best-checkpoint selection use the AUC of a validation subset (TALLRec, Bao et al. 2023: up to 200
epochs, early stopping on validation AUC); every epoch is checkpointed and a rerun with the same
``output_dir`` resumes from the last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llmrec.model import LoraSettings, Verbalizer, add_lora
from llmrec.precision import NAMES, training_precision
from llmrec.scoring.prefix import score_shared_head

__all__ = ["TrainSettings", "TrainResult", "AnswerCollator", "build_training_example", "make_trainer_class",
           "train_lora", "run_trainer", "TrainerRun"]


@dataclass
class TrainSettings:
    """Optimisation settings for :func:`train_lora`.

    Attributes:
        output_dir: checkpoints go to ``output_dir/checkpoints`` (resumed from if present).
        epochs: maximum epochs (early stopping usually ends sooner).
        learning_rate: peak AdamW learning rate.
        batch_size: prompts per device per step.
        grad_accum: gradient accumulation steps.
        lr_scheduler: transformers scheduler name (``cosine``, ``linear``, ``constant``...).
        warmup_ratio: fraction of steps of linear warm-up.
        weight_decay: AdamW weight decay.
        seed: seeds LoRA init, data order and dropout.
        loss_on: ``"answer"`` (loss on the answer tokens only) or ``"prompt"`` (whole sequence).
        patience: epochs without a better validation AUC before stopping (0 = never stop early).
        precision: ``"auto"`` (bf16 where the CUDA device or CPU runs it natively, see
            :mod:`llmrec.precision`), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        max_length: longest training sequence in tokens; longer prompts raise instead of losing the answer.
    """

    output_dir: str
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    loss_on: str = "answer"
    patience: int = 3
    precision: str = "auto"
    max_length: int = 2048
    logging_steps: int = 5
    progress: bool = True

    def __post_init__(self):
        if self.loss_on not in ("answer", "prompt"):
            raise ValueError(f"loss_on {self.loss_on!r}: expected 'answer' or 'prompt'")
        if self.precision not in NAMES:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(NAMES)}")
        if self.patience < 0:
            raise ValueError(f"patience {self.patience!r}: must be >= 0 (0 = no early stopping)")
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)!r}: must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate {self.learning_rate!r}: must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio {self.warmup_ratio!r}: must be in [0, 1)")
        from transformers import SchedulerType

        names = [t.value for t in SchedulerType]
        if self.lr_scheduler not in names:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r}: expected one of {', '.join(names)}")


@dataclass
class TrainResult:
    """What :func:`train_lora` returns: the tuned peft model and the run's record."""

    model: Any
    best_val_auc: float | None
    val_auc_history: list[float]
    epochs_run: float
    train_seconds: float
    train_tokens: int
    settings: dict = field(default_factory=dict)


def build_training_example(prompt_ids: Sequence[int], label: int, verbalizer: Verbalizer, loss_on: str,
                           max_length: int) -> dict[str, list[int]]:
    """One causal-LM example: prompt ids + target ids of the label's verbalizer word (+ EOS).

    ``label`` 1 -> ``verbalizer.target_ids[0]`` (positive word), 0 -> ``target_ids[1]``. With
    ``loss_on="answer"`` the prompt positions get label -100 (ignored by the loss).

    Raises:
        ValueError: the label is not 0/1, or the example exceeds ``max_length`` tokens (it is never
            truncated, which would cut the answer).
    """
    if label not in (0, 1):
        raise ValueError(f"label {label!r}: expected 0 or 1")
    target = verbalizer.target_ids[0 if label == 1 else 1]
    ids = list(prompt_ids) + list(target)
    if len(ids) > max_length:
        raise ValueError(f"max_length {max_length}: a training example has {len(ids)} tokens (prompt + answer); "
                         f"raise it or shorten the template (truncation would cut the answer)")
    labels = ([-100] * len(prompt_ids) if loss_on == "answer" else list(prompt_ids)) + list(target)
    return {"input_ids": ids, "labels": labels}


class AnswerCollator:
    """Batches causal-LM examples (``input_ids`` + ``labels`` lists, e.g. from
    :func:`build_training_example`) for the Trainer.

    Each example is right-padded to the longest in the batch: ``input_ids`` with ``pad_id``, ``labels``
    with -100 (ignored by the loss), ``attention_mask`` 1 on real tokens and 0 on padding.

    Args:
        pad_id: the tokenizer's pad token id.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "labels", "attention_mask"}``: (batch, longest) long tensors."""
        L = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), L), self.pad_id, dtype=torch.long)
        labels = torch.full((len(feats), L), -100, dtype=torch.long)
        mask = torch.zeros((len(feats), L), dtype=torch.long)
        for i, f in enumerate(feats):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"])
            labels[i, :n] = torch.as_tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _check_run_identity(work: Path, settings: TrainSettings, lora: LoraSettings, examples, val_ids, val_labels,
                        resuming: bool) -> None:
    """Refuse to resume checkpoints written by a different run (other data, seed or settings).

    ``work/run.json`` holds a fingerprint of everything that determines the run; it is written before
    training. Resuming is allowed only when it matches, so a rerun never silently continues (and then
    saves) another run's weights.

    Raises:
        ValueError: the folder holds checkpoints of a different run (names the differing fields).
    """
    import hashlib
    import json

    fp = {k: v for k, v in asdict(settings).items() if k not in ("output_dir", "progress", "logging_steps")}
    fp["lora"] = {**asdict(lora), "target_modules": list(lora.target_modules)
                  if not isinstance(lora.target_modules, str) else lora.target_modules}
    blob = json.dumps([examples, list(map(list, val_ids or [])), list(map(int, val_labels or []))])
    fp["data_sha256"] = hashlib.sha256(blob.encode()).hexdigest()
    f = work / "run.json"
    if resuming:
        old = json.loads(f.read_text()) if f.is_file() else {}
        diff = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
        if diff:
            raise ValueError(f"{work} holds checkpoints of a different run (differs in {', '.join(diff)}); "
                             f"delete that folder or choose another output folder")
        return
    from llmrec._atomic import write_json_atomic

    write_json_atomic(f, fp)


def make_trainer_class():
    """The :class:`transformers.Trainer` subclass llmrec tunes with (built on call: transformers is
    imported lazily).

    The returned ``VerbalizerAUCTrainer`` takes, beside Trainer's own arguments, ``val_ids`` /
    ``val_labels`` (validation prompts and 0/1 labels), ``token_ids`` (verbalizer first-token ids),
    ``pad_id`` and ``score_dtype``. Its loss applies the LM head only at positions that carry a label
    (answer-only loss without full-vocabulary logits elsewhere; same value as the plain loss), and its
    ``evaluate`` reports the verbalizer AUC of the validation prompts (scored with their common instruction
    head computed once, :func:`llmrec.scoring.prefix.score_shared_head`) as ``eval_auc`` (appended to
    ``auc_history``). Used by :func:`train_lora` and :func:`llmrec.rerank.train.train_examples`.
    """
    from transformers import Trainer

    class VerbalizerAUCTrainer(Trainer):
        """Trainer whose evaluation is the verbalizer AUC of a validation subset (no full-vocab logits)."""

        def __init__(self, *a, val_ids=None, val_labels=None, token_ids=None, pad_id=0, score_dtype="float32", **kw):
            super().__init__(*a, **kw)
            self.val_ids, self.val_labels = val_ids, val_labels
            self.token_ids, self.pad_id, self.score_dtype = token_ids, pad_id, score_dtype
            self.auc_history: list[float] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """Causal-LM loss with the vocabulary projection only at positions that predict a label.

            With the loss on the answer tokens, a few positions per prompt carry labels; the LM head is
            applied at the union of those positions (``logits_to_keep`` as an index tensor) instead of
            at every position. The forward still goes through ``model(...)``, so DDP/FSDP wrappers work.
            """
            labels = inputs["labels"]
            shift = labels[:, 1:]
            keep = (shift != -100).any(0).nonzero().squeeze(1)
            if keep.numel() > labels.shape[1] // 2:  # loss on (most of) the prompt: plain path
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=keep)
            logits = out.logits.float()
            tgt = shift[:, keep]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            if num_items_in_batch is None:
                loss = loss / (tgt != -100).sum()
            else:  # token count summed over devices and accumulation steps, as Trainer.compute_loss does
                loss = loss / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            from sklearn.metrics import roc_auc_score

            # the validation prompts share the template's instruction text: computed once per evaluation
            probs = score_shared_head(self.model, self.val_ids, self.token_ids, pad_id=self.pad_id,
                                      dtype=self.score_dtype)[:, 0]
            auc = float(roc_auc_score(self.val_labels, probs))
            self.auc_history.append(auc)
            metrics = {f"{metric_key_prefix}_auc": auc}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return VerbalizerAUCTrainer


def train_lora(model: Any, tokenizer: Any, verbalizer: Verbalizer, train_ids: Sequence[Sequence[int]],
               train_labels: Sequence[int], settings: TrainSettings, lora: LoraSettings | None = None,
               val_ids: Sequence[Sequence[int]] | None = None, val_labels: Sequence[int] | None = None) -> TrainResult:
    """LoRA-tune ``model`` on tokenised prompts with Yes/No labels.

    Args:
        model: base ``*ForCausalLM`` (or a ``PeftModel`` to continue tuning).
        tokenizer: its tokenizer (pad id, saved with checkpoints).
        verbalizer: from :func:`llmrec.model.verbalizer_for`.
        train_ids / train_labels: k prompts (token id lists ending before the answer) and 0/1 labels.
        settings: optimisation settings; lora: adapter shape (TALLRec defaults if None).
        val_ids / val_labels: validation subset for early stopping by AUC (needs both classes);
            None disables early stopping and the final adapter is the last epoch's.

    Returns:
        :class:`TrainResult` with the best (by validation AUC) peft model loaded.

    Raises:
        ValueError: empty or mismatched inputs, one-class validation labels, examples too long.
    """
    if len(train_ids) == 0:
        raise ValueError("train set is empty (k = 0): nothing to tune; use zero-shot scoring instead")
    if len(train_ids) != len(train_labels):
        raise ValueError(f"train_ids ({len(train_ids)}) and train_labels ({len(train_labels)}) differ in length")
    has_val = val_ids is not None and len(val_ids) > 0
    if has_val and len(set(int(x) for x in val_labels)) < 2:
        raise ValueError("validation labels hold one class only: AUC is undefined")

    from llmrec.model import check_context

    examples = [build_training_example(p, int(y), verbalizer, settings.loss_on, settings.max_length)
                for p, y in zip(train_ids, train_labels)]
    check_context(model, [len(e["input_ids"]) for e in examples], "training example")
    run = run_trainer(model, tokenizer, examples, settings, lora, verbalizer=verbalizer,
                      val_ids=list(val_ids) if has_val else None, val_labels=list(val_labels) if has_val else None,
                      fingerprint=examples)
    return TrainResult(model=run.model, best_val_auc=run.trainer.state.best_metric if has_val else None,
                       val_auc_history=list(run.trainer.auc_history), epochs_run=run.epochs,
                       train_seconds=run.seconds, train_tokens=run.tokens,
                       settings={**asdict(settings), "precision": run.precision, "world_size": run.world_size,
                                 "steps": run.trainer.state.global_step})


@dataclass
class TrainerRun:
    """What :func:`run_trainer` returns: the tuned peft model (eval mode) and the run's facts."""

    model: Any
    trainer: Any
    precision: str
    seconds: float
    tokens: int
    epochs: float
    world_size: int


def run_trainer(model: Any, tokenizer: Any, examples: Sequence[dict], settings: TrainSettings,
                lora: LoraSettings | None = None, *, verbalizer: Verbalizer | None = None,
                val_ids: Sequence[Sequence[int]] | None = None, val_labels: Sequence[int] | None = None,
                fingerprint: Any = None) -> TrainerRun:
    """The one Trainer run behind :func:`train_lora` (Yes/No targets) and
    :func:`llmrec.rerank.train.train_examples` (letter targets).

    Adds LoRA (unless ``model`` is a peft model already), builds ``TrainingArguments`` from ``settings``
    (precision from :func:`llmrec.precision.training_precision`), checkpoints every epoch in
    ``settings.output_dir/checkpoints`` and resumes them only when written by the same run (``fingerprint``:
    the JSON-able examples; see :func:`_check_run_identity`). With ``val_ids``/``val_labels`` (and
    ``verbalizer``) it evaluates the AUC every epoch, stops early after ``settings.patience`` epochs without
    a better one and loads the best epoch's weights.

    Args:
        examples: dicts with ``input_ids`` and ``labels`` (-100 = ignored), e.g. from
            :func:`build_training_example`.

    Raises:
        ValueError: ``output_dir`` holds checkpoints of a different run.
    """
    import time

    from datasets import Dataset
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    has_val = val_ids is not None and len(val_ids) > 0
    lora = lora or LoraSettings()
    set_seed(settings.seed)
    if getattr(model, "_llmrec_auto_half", False):  # bf16 for scoring by load_base_model("auto") on a GPU
        model.float()  # tuning keeps float32 master weights (mixed precision comes from TrainingArguments)
        model._llmrec_auto_half = False
    if not hasattr(model, "peft_config"):
        model = add_lora(model, lora)
    ds = Dataset.from_list([dict(e) for e in examples])
    cuda = torch.cuda.is_available()
    precision = training_precision(settings.precision, "cuda" if cuda else "cpu")
    ckpt_dir = Path(settings.output_dir) / "checkpoints"
    steps_per_epoch = math.ceil(len(examples) / (settings.batch_size * settings.grad_accum))
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=int(settings.warmup_ratio * steps_per_epoch * settings.epochs),
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch",
        save_total_limit=2 if verbalizer is not None else 1,
        load_best_model_at_end=has_val,
        metric_for_best_model="auc" if has_val else None,
        greater_is_better=True,
        logging_steps=settings.logging_steps,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not settings.progress,
        dataloader_num_workers=0,
        save_only_model=False,
    )
    Trainer = make_trainer_class()
    pad_id = tokenizer.pad_token_id or 0
    kw = {}
    if has_val:
        kw = dict(val_ids=list(val_ids), val_labels=list(val_labels), token_ids=verbalizer.token_ids, pad_id=pad_id,
                  score_dtype="bfloat16" if precision == "bf16" else "float32")
    trainer = Trainer(
        model=model, args=args, train_dataset=ds, eval_dataset=ds if has_val else None,
        data_collator=AnswerCollator(pad_id),
        callbacks=[EarlyStoppingCallback(settings.patience)] if has_val and settings.patience > 0 else [],
        **kw,
    )
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    _check_run_identity(Path(settings.output_dir), settings, lora, fingerprint if fingerprint is not None else
                        [{k: [int(x) for x in v] for k, v in e.items()} for e in examples], val_ids, val_labels,
                        resuming=last is not None)
    if last is not None:
        print(f"llmrec: resuming from {last}", flush=True)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    tuned = trainer.model
    tuned.eval()
    return TrainerRun(model=tuned, trainer=trainer, precision=precision, seconds=seconds,
                      tokens=int(sum(len(e["input_ids"]) for e in examples) * trainer.state.epoch),
                      epochs=float(trainer.state.epoch), world_size=args.world_size)
