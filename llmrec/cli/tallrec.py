"""``llmrec data``, ``train``, ``score`` and ``eval``: the TALLRec protocol commands (Yes/No verbalizer).

Registered on the main app by :func:`register` (called from :mod:`llmrec.cli.main`). Bad input ends with a
one-line ``llmrec: error: ...`` naming the flag and value, and exit code 2; nothing saved before is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from llmrec._atomic import write_json_atomic
from llmrec.cli.common import (BaseOpt, CliError, DataOpt, PromptsOpt, TemplateOpt, at_least, check_dtype, default,
                               flag_error)
from llmrec.model import LoraSettings
from llmrec.train import TrainSettings
from llmrec.recipe import DEFAULT_AUGMENT, DEFAULT_TEMPLATE
from llmrec.precision import HELP as DTYPE_HELP

DataTemplateOpt = typer.Option("tallrec", "--template", help="Template name or .jinja path (the default renders "
                                                             "TALLRec's published JSON exactly).")
ScoreTemplateOpt = typer.Option(None, "--template", help="Template name or .jinja path; default: the adapter's own "
                                                         f"template, or {DEFAULT_TEMPLATE} without an adapter.")
AdapterBaseOpt = typer.Option(None, "--base-model", help="Embedded model name, local folder or HF id. Default: the "
                              "adapter's recorded base model, or smollm2-135m-instruct without --adapter. With "
                              "--adapter, its weights must be the ones the adapter was tuned on (fingerprint).")
AllowBaseOpt = typer.Option(False, "--allow-base-mismatch", help="Load the adapter onto base weights other than "
                            "the ones it was tuned on (recorded in the output as loaded_base).")
#: ``sample_k_shot`` names its arguments ``k=`` and ``seed=``; ``llmrec data`` sets k with --shots.
KSHOT_FLAGS = {"k": "--shots"}


def _split(splits, name: str):
    if name not in ("train", "valid", "test"):
        raise CliError(f"--split {name!r}: expected train, valid or test")
    return getattr(splits, name)


def data(
    split: str = typer.Option("test", help="Which TALLRec split: train, valid or test."),
    out: Path = typer.Option(..., "--out", help="Output file: .json (alpaca records) or a folder (datasets.Dataset)."),
    data: Optional[Path] = DataOpt,
    template: str = DataTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    shots: int = typer.Option(0, help="If > 0 (train split), export only k samples drawn with --seed."),
    seed: int = typer.Option(0, help="Seed of the k-shot draw."),
):
    """Build TALLRec samples (10-item windows, like = rating > 3, 80/10/10) and export them."""
    from llmrec.recipe import load_tallrec
    from llmrec.prompts import load_template
    from llmrec.samples.kshot import sample_k_shot
    from llmrec.samples.tallrec import template_variables, to_alpaca, to_hf_dataset

    rec, splits = load_tallrec(data)
    samples = _split(splits, split)
    if not samples:
        raise CliError(f"--split {split}: 0 samples (the data gives {len(splits.train)}/{len(splits.valid)}/"
                       f"{len(splits.test)} train/valid/test samples); nothing written")
    if shots:
        try:
            samples = sample_k_shot(samples, shots, seed)
        except ValueError as e:
            raise flag_error(e, KSHOT_FLAGS) from None
    if out.suffix == ".json":
        tpl = load_template(template, prompts)

        def render(v):
            v = dict(v)
            v.pop("label", None)
            parts = tpl.render_parts(v)
            return parts["instruction"], parts["input"]

        records = to_alpaca(samples, rec.catalog, render=render, answers=tuple(tpl.targets[:2]))
        write_json_atomic(out, records)
    else:
        to_hf_dataset(samples, rec.catalog).save_to_disk(str(out))
    typer.echo(f"wrote {len(samples)} {split} samples to {out}")


def train(
    out: Path = typer.Option(..., "--out", help="Adapter folder to write (peft files + llmrec.json)."),
    shots: int = typer.Option(64, help="k: training samples drawn from the TALLRec train split."),
    seed: int = typer.Option(0, help="Seed of the k-shot draw, LoRA init and data order."),
    base_model: str = BaseOpt,
    template: str = TemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    data: Optional[Path] = DataOpt,
    train_json: Optional[Path] = typer.Option(None, help="Train on these alpaca records instead of k-shot samples."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (early stopping on validation AUC). Default: the "
                                         "optimizer steps of 10 un-augmented epochs, at least 80 steps (64 shots: "
                                         "5 with --augment mirror, 10 with none; 16 shots + mirror: 20)."),
    lr: float = typer.Option(default(TrainSettings, "learning_rate"), "--lr", help="Peak learning rate."),
    lr_scheduler: str = typer.Option(default(TrainSettings, "lr_scheduler"), help="Learning-rate schedule after warm-up (transformers name: "
                                                    "cosine, linear, constant, ...)."),
    warmup_ratio: float = typer.Option(default(TrainSettings, "warmup_ratio"), help="Fraction of the optimizer steps of linear warm-up."),
    batch_size: int = typer.Option(default(TrainSettings, "batch_size"), help="Prompts per step per process."),
    lora_rank: int = typer.Option(default(LoraSettings, "rank"), help="LoRA rank r."),
    lora_alpha: float = typer.Option(default(LoraSettings, "alpha"), help="LoRA alpha (update scaled by alpha/r)."),
    lora_dropout: float = typer.Option(default(LoraSettings, "dropout"), help="LoRA dropout."),
    target_modules: str = typer.Option(default(LoraSettings, "target_modules"), help="Comma-separated module names, or all-linear."),
    loss_on: str = typer.Option(default(TrainSettings, "loss_on"), help="answer (answer tokens only) or prompt (whole sequence)."),
    val_size: int = typer.Option(128, help="Validation samples for early stopping (0 = none)."),
    patience: int = typer.Option(default(TrainSettings, "patience"), help="Epochs without better validation AUC before stopping."),
    precision: str = typer.Option(default(TrainSettings, "precision"), help="auto (bf16 where the CPU/GPU runs it natively, else fp32), bf16, fp16 or fp32."),
    augment: str = typer.Option(DEFAULT_AUGMENT, help="Few-shot augmentation from the k samples only: comma list "
                                                      "of rotate, permute, drop, mirror, or none."),
    augment_copies: int = typer.Option(1, help="New samples per k-shot sample and augmentation."),
    max_length: int = typer.Option(default(TrainSettings, "max_length"), "--max-length",
                                   help="Longest training example in tokens (prompt + answer); a longer one is "
                                        "refused, never truncated. The model's context is a limit too."),
):
    """LoRA-tune the base model on k labelled samples; save the adapter (resumable checkpoints in --out)."""
    from llmrec.adapter import save_adapter
    from llmrec.data.alpaca import read_alpaca_json
    from llmrec.model import LoraSettings, load_base_model
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.recipe import load_tallrec, tune_k_shot
    from llmrec.prompts import load_template
    from llmrec.train import TrainSettings, train_lora

    if train_json is None and shots < 1:
        raise CliError(f"--shots {shots}: must be >= 1 for tuning (zero-shot needs no adapter: "
                       f"run `llmrec eval` without --adapter)")
    at_least("--seed", seed, 0)
    at_least("--val-size", val_size, 0)
    at_least("--augment-copies", augment_copies, 1)
    from llmrec.samples.augment import parse_augmentations

    try:
        augment_names = parse_augmentations(augment)
    except ValueError as e:
        raise CliError(f"--augment {augment!r}: {e}") from None
    if augment_names and train_json is not None:
        raise CliError("--augment works on k-shot samples; it cannot be combined with --train-json")
    tpl = load_template(template, prompts)
    try:  # settings are checked here, before the data and the model load
        if epochs is None:
            from llmrec.recipe import epoch_budget

            epochs = epoch_budget(augment_names, augment_copies, shots=shots if train_json is None else None,
                                  batch_size=batch_size)
        settings = TrainSettings(output_dir=str(out.with_name(out.name + ".work")), epochs=epochs, learning_rate=lr,
                                 batch_size=batch_size, seed=seed, loss_on=loss_on, patience=patience,
                                 precision=precision, lr_scheduler=lr_scheduler, warmup_ratio=warmup_ratio,
                                 max_length=max_length)
        lora = LoraSettings(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, target_modules=target_modules)
    except ValueError as e:
        raise flag_error(e) from None
    from llmrec._atomic import check_replaceable
    from llmrec.adapter import META

    check_replaceable(out, META, "LoRA adapter")  # before tuning, not after
    rec, splits = load_tallrec(data)
    if train_json is None and shots > len(splits.train):
        raise CliError(f"--shots {shots}: larger than the train split ({len(splits.train)} samples)")
    if train_json is not None:  # read and checked before the model loads
        records = read_alpaca_json(train_json, answers=tuple(tpl.targets[:2]))
        if not records:
            raise CliError(f"--train-json {train_json}: holds no records to train on")
    model, tok = load_base_model(base_model)
    if train_json is not None:
        sc = PointwiseScorer(model, tok, tpl)
        tr = sc.encode_alpaca(records)
        try:
            res = train_lora(model, tok, sc.verbalizer, tr.input_ids, tr.labels.tolist(), settings, lora)
        except ValueError as e:
            raise flag_error(e) from None
        model, verb, record = res.model, sc.verbalizer, {"train_json": str(train_json), "n": len(records)}
    else:
        try:
            run = tune_k_shot(model, tok, tpl, splits, rec.catalog, shots=shots, seed=seed, settings=settings,
                              lora=lora, val_size=val_size, augment=augment_names, augment_copies=augment_copies)
        except ValueError as e:
            raise flag_error(e) from None
        model, verb, record = run.scorer.model, run.scorer.verbalizer, run.record
    from llmrec.scoring.pointwise import process_state

    if not process_state().is_main_process:  # under `accelerate launch`, one process writes
        return
    save_adapter(model, out, base_model=base_model, template=tpl, verbalizer=verb, kind="tallrec",
                 protocol={"name": "tallrec-movie", "shots": shots, "seed": seed, "data": str(data or "ml-100k")},
                 metrics={"best_val_auc": record.get("best_val_auc")}, train=record)
    import shutil

    shutil.rmtree(settings.output_dir, ignore_errors=True)  # checkpoints matter only until the adapter is saved
    best = record.get("best_val_auc")
    typer.echo(f"saved adapter to {out}" + (f" (best validation AUC {best:.4f})" if best is not None else ""))


def _template(adapter: Optional[Path], template: Optional[str], prompts):
    """The template a command scores with, resolved before any model loads: ``--template``, else the adapter's
    own (from its llmrec.json), else the default."""
    from llmrec.prompts import load_template

    if adapter is not None:
        from llmrec.adapter import check_kind, read_metadata, recorded_template

        meta = read_metadata(adapter)
        check_kind(adapter, meta, "tallrec", "llmrec score/eval")
        return load_template(template, prompts) if template is not None else recorded_template(adapter, meta)
    return load_template(template or DEFAULT_TEMPLATE, prompts)


def _scorer(adapter: Optional[Path], base_model: Optional[str], tpl, allow_template_mismatch: bool, dtype: str,
            allow_base_mismatch: bool = False):
    """The scorer, and what base model was loaded under an adapter (None without one)."""
    from llmrec.adapter import load_adapter
    from llmrec.model import DEFAULT_BASE_MODEL, load_base_model
    from llmrec.scoring.pointwise import PointwiseScorer

    if adapter is not None:  # --base-model, when given, is loaded under the adapter's fingerprint check
        model, tok, tpl, verb, meta = load_adapter(adapter, template=tpl, kind="tallrec", user="llmrec score/eval",
                                                   base_model=base_model, allow_base_mismatch=allow_base_mismatch,
                                                   allow_template_mismatch=allow_template_mismatch)
        return PointwiseScorer(model, tok, tpl, dtype=dtype, verbalizer=verb), meta["loaded_base"]
    if allow_base_mismatch:
        raise CliError("--allow-base-mismatch needs --adapter (it loads an adapter onto other base weights)")
    model, tok = load_base_model(base_model or DEFAULT_BASE_MODEL)
    return PointwiseScorer(model, tok, tpl, dtype=dtype), None


def score(
    adapter: Optional[Path] = typer.Option(None, help="Tuned adapter folder; without it, the base model zero-shot."),
    input: Optional[Path] = typer.Option(None, "--input", help="Alpaca JSON records to score."),
    user: Optional[str] = typer.Option(None, help="Score one user (with --target): last 10 ratings are the history."),
    target: Optional[str] = typer.Option(None, help="Target item id (with --user)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write scores as JSON here (else print every row "
                                                           "as a JSON line)."),
    base_model: Optional[str] = AdapterBaseOpt,
    template: Optional[str] = ScoreTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    data: Optional[Path] = DataOpt,
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    allow_template_mismatch: bool = typer.Option(False, help="Score with another template than the adapter's."),
    allow_base_mismatch: bool = AllowBaseOpt,
):
    """Score alpaca JSON records, or one (user, target) pair: P(Yes) per prompt. Records may be unlabelled
    (``output`` missing or empty); rows of labelled ones carry their ``label``."""
    from llmrec.data.alpaca import read_alpaca_json

    if (input is None) == (user is None):
        raise CliError("give either --input FILE or --user ID --target ITEM")
    if user is not None and target is None:
        raise CliError("--user needs --target ITEM")
    check_dtype(dtype)
    tpl = _template(adapter, template, prompts)
    if input is not None:  # read and checked before the model loads
        records = read_alpaca_json(input, answers=tuple(tpl.targets[:2]), unlabelled=True)
        if not records:
            raise CliError(f"--input {input}: holds no records to score")
    sc, loaded = _scorer(adapter, base_model, tpl, allow_template_mismatch, dtype, allow_base_mismatch)
    if loaded and loaded["mismatch_allowed"]:
        typer.echo(f"llmrec: warning: adapter {adapter} scored on {loaded['base_model']!r} (weights sha256 "
                   f"{loaded['sha256'][:12]}), not the base model it was tuned on (--allow-base-mismatch)", err=True)
    if input is not None:
        P = sc.encode_alpaca(records)
    else:
        from llmrec import assets
        from llmrec.data import load_dataset
        from llmrec.samples.tallrec import sample_for_user

        rec = load_dataset(data if data is not None else assets.ml100k_dir())
        s = sample_for_user(rec, user, target)  # history without the target (as `prompts render` shows it)
        from llmrec.prompts.render import render_samples

        P = sc.encode(render_samples(sc.template, [s], rec.catalog, sc.tokenizer))
    scores = sc.score(P, progress=len(P.input_ids) > 50)
    rows = [{"index": i, "p_yes": float(p), **({"label": int(y)} if y >= 0 else {})}
            for i, (p, y) in enumerate(zip(scores, P.labels))]
    if user is not None:  # LM x the user's like-rate (product of experts; see llmrec.recipe.like_rate_product)
        from llmrec.recipe import like_rate_product

        if s.target_rating > 0:  # the user rated the target: its label is known
            rows[0]["label"] = s.label
        rows[0]["p_yes_x_like_rate"] = float(1 / (1 + np.exp(-like_rate_product(scores, [s])[0])))
    if out:
        write_json_atomic(out, rows)
        typer.echo(f"wrote {len(rows)} scores to {out}")
    else:
        for r in rows:
            typer.echo(json.dumps(r))


def evaluate(
    adapter: Optional[Path] = typer.Option(None, help="Tuned adapter folder; without it, zero-shot."),
    split: str = typer.Option("test", help="TALLRec split to evaluate: valid or test."),
    input: Optional[Path] = typer.Option(None, "--input", help="Alpaca JSON records instead of a split."),
    base_model: Optional[str] = AdapterBaseOpt,
    template: Optional[str] = ScoreTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    data: Optional[Path] = DataOpt,
    limit: int = typer.Option(0, help="Evaluate only the first N samples (0 = all)."),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics JSON here."),
    allow_template_mismatch: bool = typer.Option(False),
    allow_base_mismatch: bool = AllowBaseOpt,
):
    """AUC and UAUC of P(Yes) on a TALLRec split (or alpaca JSON), beside the like-rate baseline. The records must hold
    both classes (checked before the model loads)."""
    from llmrec.data.alpaca import read_alpaca_json, require_both_classes
    from llmrec.metrics import auc, uauc
    from llmrec.recipe import like_rate_scores, load_tallrec

    if limit < 0:
        raise CliError(f"--limit {limit}: must be >= 0 (0 = all samples)")
    check_dtype(dtype)
    tpl = _template(adapter, template, prompts)
    answers = tuple(tpl.targets[:2])
    result = {}
    if input is not None:  # the data is read and checked before the model loads
        records = read_alpaca_json(input, answers=answers)
        records = records[:limit] if limit else records
        require_both_classes([r["label"] for r in records], f"--input {input.name}", answers)
    else:
        rec, splits = load_tallrec(data)
        samples = _split(splits, split)
        samples = samples[:limit] if limit else samples
        require_both_classes([s.label for s in samples], f"--split {split}" + (f" --limit {limit}" if limit else ""),
                             answers)
    sc, loaded = _scorer(adapter, base_model, tpl, allow_template_mismatch, dtype, allow_base_mismatch)
    if loaded is not None:
        result["loaded_base"] = loaded  # what the adapter ran on (a mismatch allowed is recorded here)
    if input is not None:
        P = sc.encode_alpaca(records)
    else:
        P = sc.encode_samples(samples, rec.catalog)
        result["like_rate_auc"] = auc(P.labels, like_rate_scores(samples))
    r = sc.evaluate(P, progress=True, keep_scores=True)
    scores = r.pop("scores")
    result.update(r)
    if input is None:  # the LM x like-rate product needs the history ratings (not in alpaca records)
        from llmrec.recipe import like_rate_product

        result["like_product_auc"] = auc(P.labels, like_rate_product(scores, samples))
        users = [s.user_id for s in samples]
        u = uauc(users, P.labels, scores)
        result.update(uauc=u["uauc"], uauc_users=u["n_users"],
                      like_rate_uauc=uauc(users, P.labels, like_rate_scores(samples))["uauc"])
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json_atomic(out, result)


def register(app: typer.Typer) -> None:
    """Add the ``data``, ``train``, ``score`` and ``eval`` commands to the ``llmrec`` app."""
    app.command("data")(data)
    app.command("train")(train)
    app.command("score")(score)
    app.command("eval")(evaluate)
