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
from llmrec.cli.common import (BaseOpt, CliError, DataOpt, PromptsOpt, at_least, check_dtype, default,
                               flag_error)
from llmrec.model import LoraSettings
from llmrec.train import TrainSettings
from llmrec.recipe import DEFAULT_AUGMENT, DEFAULT_TEMPLATE, TEXT_TEMPLATE
from llmrec.precision import HELP as DTYPE_HELP

DataTemplateOpt = typer.Option("tallrec", "--template", help="Template name or .jinja path (the default renders "
                                                             "TALLRec's published JSON exactly).")
ScoreTemplateOpt = typer.Option(None, "--template", help="Template name or .jinja path; default: the adapter's own "
                                                         f"template, or {TEXT_TEMPLATE} without an adapter.")
TrainTemplateOpt = typer.Option(None, "--template", help=f"Template name (see prompts/) or .jinja path. Default: "
                                f"{DEFAULT_TEMPLATE} (collaborative tokens; the collaborative model of --collab, else the "
                                f"llmrec cache's) on the TALLRec-movie data, {TEXT_TEMPLATE} (text only) with "
                                f"--train-json records, --interactions data or any protocol option.")
AdapterBaseOpt = typer.Option(None, "--base-model", help="Embedded model name, local folder or HF id. Default: the "
                              "adapter's recorded base model, or smollm2-135m-instruct without --adapter. With "
                              "--adapter, its weights must be the ones the adapter was tuned on (fingerprint).")
AllowBaseOpt = typer.Option(False, "--allow-base-mismatch", help="Load the adapter onto base weights other than "
                            "the ones it was tuned on (recorded in the output as loaded_base).")
#: ``sample_k_shot`` names its arguments ``k=`` and ``seed=``; ``llmrec data`` sets k with --shots.
KSHOT_FLAGS = {"k": "--shots"}

# ------------------------------------------------------------------------ the user's data and protocol
InteractionsOpt = typer.Option(None, "--interactions", help="Your own interactions file (CSV, TSV or JSONL; one "
                               "rating or 0/1 label per row) instead of --data; columns named by --columns.")
ItemsOpt = typer.Option(None, "--items", help="Item file for --interactions (CSV, TSV or JSONL): item id, title and "
                        "any text columns (author, brand, ...) for --item-text.")
ColumnsOpt = typer.Option(None, "--columns", help="Column names of --interactions/--items as key=name pairs, keys "
                          "user, item, rating, label, timestamp, item_id, title (default user=user_id,item=item_id,"
                          "rating=rating,timestamp=timestamp,title=title; timestamp=none: file order is time order).")
RatingScaleOpt = typer.Option(None, "--rating-scale", help="LOW-HIGH[:STEP] every rating must lie on (e.g. 1-10); "
                              "a rating off it is refused with its line. The like threshold defaults to its midpoint.")
LikeThresholdOpt = typer.Option(None, "--like-threshold", help="liked = rating > this. Default: 3 (TALLRec) on "
                                "MovieLens, else the midpoint of the rating scale. Must lie inside the scale.")
HistoryLenOpt = typer.Option(None, "--history-len", help="History items per sample (default 10).")
HistoryOrderOpt = typer.Option(None, "--history-order", help="oldest-first (default, TALLRec) or newest-first.")
SplitByOpt = typer.Option(None, "--split-by", help="user (default, TALLRec: users' windows in order, so the parts "
                          "hold different users) or time (windows ordered by the target's timestamp).")
NKeepOpt = typer.Option(None, "--n-keep", help="Keep the last N windows before the 80/10/10 split (default 10000; "
                        "0 = all).")
ItemTextOpt = typer.Option(None, "--item-text", help="Item text from the item file's columns, e.g. "
                           "'{title} by {author}' (default '{title}').")
ItemNounOpt = typer.Option(None, "--item-noun", help="What an item is in the prompts (book, product); default movie "
                           "for MovieLens, item for --interactions.")
ValJsonOpt = typer.Option(None, "--val-json", help="Validation records for early stopping with --train-json "
                          "(alpaca JSON or structured JSONL); up to --val-size of them are used.")
#: Library argument names in protocol errors -> the flags that set them.
PROTOCOL_FLAGS = {"history_len": "--history-len", "history_order": "--history-order", "split": "--split-by",
                  "n_keep": "--n-keep", "like threshold": "--like-threshold", "item text": "--item-text",
                  "rating scale": "--rating-scale", "item_noun": "--item-noun"}


def _parse_columns(spec: Optional[str]) -> tuple:
    """``--columns`` -> ``(ColumnMap, item_id, title)`` (:func:`llmrec.data.tabular.parse_columns`)."""
    from llmrec.data.tabular import parse_columns

    try:
        return parse_columns(spec)
    except ValueError as e:
        raise CliError(f"--{e}") from None


def _protocol_options_given(*values) -> bool:
    return any(v is not None for v in values)


def _load_protocol(data, interactions, items, columns, rating_scale, like_threshold, history_len, history_order,
                   split_by, n_keep, item_text, item_noun):
    """``(splits, catalog, protocol record, ProtocolResult or None)`` of the data and protocol the flags name, with
    the like rule printed on stderr. No protocol flag: TALLRec-movie through :func:`llmrec.recipe.load_tallrec` (as
    before; None in the last place)."""
    from llmrec.samples.protocol import TALLREC_MOVIE, ProtocolConfig, data_sha256

    if interactions is not None and data is not None:
        raise CliError("give either --data (a MovieLens folder) or --interactions (your own file), not both")
    if interactions is None and (items is not None or columns is not None or rating_scale is not None):
        flag = "--items" if items is not None else "--columns" if columns is not None else "--rating-scale"
        raise CliError(f"{flag} needs --interactions FILE (it describes your own interactions file)")
    custom = _protocol_options_given(interactions, like_threshold, history_len, history_order, split_by, n_keep,
                                     item_text, item_noun)
    if not custom:
        from llmrec.recipe import load_tallrec

        rec, splits = load_tallrec(data)
        record = {"name": "tallrec-movie", "data": str(data or "ml-100k"), "like_threshold": TALLREC_MOVIE.like_threshold,
                  "like_rule": "liked = rating > 3 (TALLRec)", "history_len": TALLREC_MOVIE.history_len,
                  "item_noun": rec.catalog.item_noun, "item_text": "{title}", "split": "user",
                  "data_sha256": data_sha256(rec)}
        return splits, rec.catalog, record, None
    from llmrec.recipe import load_protocol

    cm, item_id, title = _parse_columns(columns)
    try:
        cfg = ProtocolConfig(like_threshold=like_threshold, history_len=history_len or TALLREC_MOVIE.history_len,
                             history_order=history_order or "oldest-first", split=split_by or "user",
                             n_keep=TALLREC_MOVIE.n_keep if n_keep is None else (n_keep or None),
                             item_text=item_text or "{title}", item_noun=item_noun)
        cfg.check()
        from llmrec.data.tabular import parse_rating_scale

        scale = parse_rating_scale(rating_scale)
        res = load_protocol(data, cfg, interactions=interactions, items=items, columns=cm, rating_scale=scale,
                            item_id=item_id, title=title, item_noun=item_noun)
    except ValueError as e:
        raise flag_error(e, PROTOCOL_FLAGS) from None
    c = res.config
    typer.echo(f"protocol: {res.rule}; {c.history_len}-item histories {c.history_order}, split by {c.split}; "
               f"train/valid/test {len(res.splits.train)}/{len(res.splits.valid)}/{len(res.splits.test)} samples; "
               f"items are {c.item_noun!r} ({c.item_text})", err=True)
    return res.splits, res.catalog, res.record(), res


def _read_sample_set(path: Path, flag: str, answers, catalog=None, like_threshold=None, item_noun=None):
    """Alpaca JSON (parsed into samples when in TALLRec's format) or structured JSONL: a SampleSet (an empty alpaca
    file gives an empty set, for the caller's own message)."""
    from llmrec.data.alpaca import read_alpaca_json
    from llmrec.samples.records import SampleSet, parse_tallrec_alpaca, read_samples_jsonl, sample_file_kind

    if sample_file_kind(path) == "jsonl":
        return read_samples_jsonl(path, catalog=catalog, like_threshold=like_threshold, item_noun=item_noun)
    records = read_alpaca_json(path, answers=answers)
    if not records:
        return SampleSet(None, None, "alpaca", path.name, [], None, "it holds no records")
    return parse_tallrec_alpaca(records, path.name)


def _refuse_text_records(tpl, flag: str) -> None:
    """Alpaca records are text: a template that places collaborative tokens (item ids) cannot score them.

    Raises:
        CliError: ``"--input F: alpaca records are text only, but template T places collaborative tokens ..."``.
    """
    from llmrec.prompts.collab_syntax import source_places_tokens

    if source_places_tokens(tpl.source):
        raise CliError(f"{flag}: alpaca records are text only, but template {tpl.name} places collaborative tokens "
                       f"(they need item ids); give structured sample JSONL, --user/--target or a split")


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _protocol_mismatch(meta: dict, current: dict) -> list[str]:
    """What differs between the protocol an adapter was tuned on and the one evaluated (threshold, item noun,
    history length, item text; the data only when both record a data hash and the protocol names match)."""
    tuned = meta.get("protocol") or {}
    out = []
    for k in ("like_threshold", "item_noun", "history_len", "item_text"):
        if k in tuned and k in current and tuned[k] is not None and current[k] is not None and tuned[k] != current[k]:
            out.append(f"{k} {tuned[k]!r} (tuned) vs {current[k]!r} (now)")
    return out


def _split(splits, name: str):
    if name not in ("train", "valid", "test"):
        raise CliError(f"--split {name!r}: expected train, valid or test")
    return getattr(splits, name)


def data(
    split: str = typer.Option("test", help="Which split: train, valid or test."),
    out: Path = typer.Option(..., "--out", help="Output file: .json (alpaca records), .jsonl (structured sample "
                                                "records) or a folder (datasets.Dataset)."),
    data: Optional[Path] = DataOpt,
    template: str = DataTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    shots: int = typer.Option(0, help="If > 0 (train split), export only k samples drawn with --seed."),
    seed: int = typer.Option(0, help="Seed of the k-shot draw."),
    interactions: Optional[Path] = InteractionsOpt, items: Optional[Path] = ItemsOpt,
    columns: Optional[str] = ColumnsOpt, rating_scale: Optional[str] = RatingScaleOpt,
    like_threshold: Optional[float] = LikeThresholdOpt, history_len: Optional[int] = HistoryLenOpt,
    history_order: Optional[str] = HistoryOrderOpt, split_by: Optional[str] = SplitByOpt,
    n_keep: Optional[int] = NKeepOpt, item_text: Optional[str] = ItemTextOpt, item_noun: Optional[str] = ItemNounOpt,
):
    """Build samples and export them: TALLRec's movie protocol by default (10-item windows, like = rating > 3,
    80/10/10), or any protocol over your own data (--interactions, --like-threshold, --history-len, ...)."""
    from llmrec.prompts import load_template
    from llmrec.samples.kshot import sample_k_shot
    from llmrec.samples.tallrec import to_alpaca, to_hf_dataset

    splits, catalog, record, _ = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                                history_len, history_order, split_by, n_keep, item_text, item_noun)
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

        records = to_alpaca(samples, catalog, render=render, answers=tuple(tpl.targets[:2]))
        write_json_atomic(out, records)
    elif out.suffix == ".jsonl":
        from llmrec.samples.records import write_samples_jsonl

        write_samples_jsonl(samples, catalog, out, protocol=record)
    else:
        to_hf_dataset(samples, catalog).save_to_disk(str(out))
    typer.echo(f"wrote {len(samples)} {split} samples to {out}")


def train(
    out: Path = typer.Option(..., "--out", help="Adapter folder to write (peft files + llmrec.json)."),
    shots: int = typer.Option(64, help="k: training samples drawn from the TALLRec train split."),
    seed: int = typer.Option(0, help="Seed of the k-shot draw, LoRA init and data order."),
    base_model: str = BaseOpt,
    template: Optional[str] = TrainTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    data: Optional[Path] = DataOpt,
    train_json: Optional[Path] = typer.Option(None, help="Train on these records instead of k-shot samples: alpaca JSON "
                                              "(TALLRec's format is read back into structured samples, so --augment "
                                              "works) or structured sample JSONL."),
    val_json: Optional[Path] = ValJsonOpt,
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
    collab: Optional[Path] = typer.Option(None, "--collab", help="Collaborative model folder, for a template with "
                                          "collaborative tokens (item_token / user_token / taste_token / match_token, "
                                          "e.g. the default tallrec-last5-taste): loaded if it holds one, else fitted "
                                          "there first (SASRec on the TALLRec-movie interactions without any "
                                          "valid/test user, no rating read; about 2 minutes). Default on TALLRec-movie "
                                          "data: a folder in the llmrec cache ($LLMREC_CACHE/collab), fitted once and "
                                          "shared with eval/tallrec_auc.py. The adapter carries it."),
    pair_form: str = typer.Option("score", "--pair-form", help="Form of ⟨taste⟩ / ⟨match⟩ token rows: score or product "
                                  "(llmrec.collab.match)."),
    interactions: Optional[Path] = InteractionsOpt, items: Optional[Path] = ItemsOpt,
    columns: Optional[str] = ColumnsOpt, rating_scale: Optional[str] = RatingScaleOpt,
    like_threshold: Optional[float] = LikeThresholdOpt, history_len: Optional[int] = HistoryLenOpt,
    history_order: Optional[str] = HistoryOrderOpt, split_by: Optional[str] = SplitByOpt,
    n_keep: Optional[int] = NKeepOpt, item_text: Optional[str] = ItemTextOpt, item_noun: Optional[str] = ItemNounOpt,
):
    """LoRA-tune the base model on k labelled samples (TALLRec's movie protocol, or any protocol over your data), or
    on your own records (--train-json, early stopping on --val-json); save the adapter (resumable checkpoints in
    --out). The adapter records the protocol used (data hash, like threshold, item noun, template). On the
    TALLRec-movie data the default recipe places collaborative tokens and one taste token (tallrec-last5-taste): LoRA and the token projector are tuned together, and the collaborative model (--collab,
    else the llmrec cache's, fitted there on first use) travels in the adapter. Elsewhere the text recipe
    (tallrec-last5) is the default."""
    from llmrec.adapter import save_adapter
    from llmrec.model import LoraSettings, load_base_model
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.recipe import tune_k_shot
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
    if val_json is not None and train_json is None:
        raise CliError("--val-json needs --train-json (k-shot runs validate on the protocol's valid split)")
    custom = _protocol_options_given(interactions, like_threshold, history_len, history_order, split_by, n_keep,
                                     item_text, item_noun)
    builtin = train_json is None and not custom  # TALLRec-movie data: the collaborative recipe is built in
    if template is None:
        template = DEFAULT_TEMPLATE if builtin else TEXT_TEMPLATE
        if not builtin and collab is None:
            typer.echo(f"llmrec: note: template {TEXT_TEMPLATE} (text only): the default {DEFAULT_TEMPLATE} needs a "
                       f"collaborative model of your data (pass --template and --collab to use one)", err=True)
    tpl = load_template(template, prompts)
    from llmrec.prompts.collab_syntax import source_places_tokens

    tokens = source_places_tokens(tpl.source)
    if tokens and collab is None and not builtin:
        raise CliError(f"--template {tpl.name}: it places collaborative tokens; give --collab DIR (a collaborative "
                       f"model of your data; fitting one is built in for the TALLRec-movie data only)")
    if collab is not None and not tokens:
        raise CliError(f"--collab {collab}: template {tpl.name} places no collaborative token (use e.g. "
                       f"--template tallrec-last5-taste)")
    from llmrec.collab.match import PAIR_FORMS

    if pair_form not in PAIR_FORMS:
        raise CliError(f"--pair-form {pair_form!r}: expected one of {', '.join(PAIR_FORMS)}")
    if pair_form != "score" and not tokens:
        raise CliError(f"--pair-form {pair_form}: template {tpl.name} places no collaborative token")
    epochs_given = epochs
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
    if collab is not None:  # the adapter is written atomically over --out and its checkpoints are deleted after
        c = collab.resolve()
        for o in (out.resolve(), Path(settings.output_dir).resolve()):
            if c == o or o in c.parents or c in o.parents:
                raise CliError(f"--collab {collab}: the same folder as, or nested with, --out {out} (or its "
                               f"checkpoints {settings.output_dir}); give the collaborative model its own folder")
    answers = tuple(tpl.targets[:2])
    uses_data = train_json is None or data is not None or interactions is not None
    splits = catalog = None
    protocol: dict = {}
    if uses_data:  # --train-json alone needs no dataset (MovieLens is not loaded)
        splits, catalog, protocol, _ = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                                      history_len, history_order, split_by, n_keep, item_text,
                                                      item_noun)
    if train_json is None and shots > len(splits.train):
        raise CliError(f"--shots {shots}: larger than the train split ({len(splits.train)} samples)")
    if train_json is not None:  # read and checked before the model loads
        threshold = like_threshold if like_threshold is not None else protocol.get("like_threshold")
        tr_set = _read_sample_set(train_json, "--train-json", answers, catalog, threshold, item_noun)
        if tr_set.kind != "jsonl":
            _refuse_text_records(tpl, f"--train-json {train_json}")
        if not len(tr_set):
            raise CliError(f"--train-json {train_json}: holds no records to train on")
        va_set = None
        if val_json is not None:
            va_set = _read_sample_set(val_json, "--val-json", answers, catalog, threshold, item_noun)
            if va_set.kind != "jsonl":
                _refuse_text_records(tpl, f"--val-json {val_json}")
            if not len(va_set):
                raise CliError(f"--val-json {val_json}: holds no records to validate on")
            if val_size > 0 and len(va_set) > val_size:
                from llmrec.samples.kshot import k_shot_indices

                va_set = va_set.subset(k_shot_indices(len(va_set), val_size, 1234))
            elif val_size == 0:
                va_set = None
        train_samples = None
        if augment_names:
            try:
                base = tr_set.require_structured(f"--augment {augment}")
            except ValueError as e:
                raise CliError(f"{e}; pass --augment none") from None
            from llmrec.samples.augment import augment_samples

            train_samples = augment_samples(base, augment_names, copies=augment_copies, seed=seed)
        n_train = len(train_samples) if train_samples is not None else len(tr_set)
        if epochs_given is None:
            from dataclasses import replace as _replace
            from llmrec.recipe import epoch_budget

            settings = _replace(settings, epochs=epoch_budget(augment_names, augment_copies, shots=len(tr_set),
                                                              batch_size=batch_size))
    cm = collab_dir = None
    if tokens:  # a saved collaborative model is loaded and checked before the base model loads; a fit comes after
        from llmrec.collab.data import default_collab_dir

        custom_data = protocol.get("name") != "tallrec-movie"  # (the default folder is for TALLRec-movie data only)
        collab_dir, where = ((collab, "--collab") if collab is not None else
                             (default_collab_dir(protocol["data_sha256"]), "the default collaborative model"))
        cm = _collab_model(collab_dir, where, data, custom_data, splits, fit=False)
        if cm is not None:  # every item a prompt can name must have a vector
            used = ([smp for ss in (tr_set, va_set) if ss is not None and ss.samples is not None for smp in ss.samples]
                    if train_json is not None else [*splits.train, *splits.valid])
            from llmrec.collab.data import missing_items

            missing = missing_items(cm, used)
            if missing:
                raise CliError(f"--collab {collab}: {len(missing)} item(s) of the training data are not in this "
                               f"collaborative model's catalogue (first: {missing[0]!r}); fit one on this data")
    model, tok = load_base_model(base_model)
    if tokens and cm is None:  # fitted on the TALLRec-movie data: every catalogue item gets a vector
        cm = _collab_model(collab_dir, where, data, False, splits, fit=True)
    if cm is not None:  # LoRA + projector (peft modules_to_save), seeded, tuned together
        from llmrec.collab.train import joint_scorer

        sc = joint_scorer(model, tok, tpl, cm, lora, seed=seed, pair_form=pair_form)
        model = sc.model
    else:
        sc = PointwiseScorer(model, tok, tpl)
    if train_json is not None:
        from llmrec.recipe import encode_sample_set

        tr = encode_sample_set(sc, tr_set, train_samples)
        va = encode_sample_set(sc, va_set) if va_set is not None else None
        try:
            res = train_lora(model, tok, sc.verbalizer, tr.input_ids, tr.labels.tolist(), settings, lora,
                             va.input_ids if va else None, va.labels.tolist() if va else None)
        except ValueError as e:
            raise flag_error(e) from None
        thresholds = sorted({s.like_threshold for s in tr_set.samples if s.rating_scale != (0.0, 1.0)}) \
            if tr_set.samples is not None else []  # label-only records (1/0 at 0.5) record no threshold
        record = {"train_json": str(train_json), "n": len(tr_set), "train_samples": n_train,
                  "augment": list(augment_names), "augment_copies": augment_copies if augment_names else 0,
                  "val_json": str(val_json) if val_json else None, "val_size": len(va_set) if va_set else 0,
                  "best_val_auc": res.best_val_auc, "val_auc_history": res.val_auc_history,
                  "epochs_run": res.epochs_run, "train_seconds": res.train_seconds, "settings": res.settings}
        model, verb = res.model, sc.verbalizer
        protocol = {"name": "records", "train_json": str(train_json), "train_sha256": _file_sha256(train_json),
                    "val_json": str(val_json) if val_json else None,
                    "val_sha256": _file_sha256(val_json) if val_json else None, "records_kind": tr_set.kind,
                    "structured": tr_set.samples is not None, "item_noun": tr_set.item_noun if tr_set.catalog else None,
                    "like_threshold": thresholds[0] if len(thresholds) == 1 else thresholds or None,
                    "template": tpl.name, **({"data_protocol": protocol} if protocol else {})}
    else:
        try:
            run = tune_k_shot(model, tok, tpl, splits, catalog, shots=shots, seed=seed, settings=settings,
                              lora=lora, val_size=val_size, augment=augment_names, augment_copies=augment_copies,
                              scorer=sc)
        except ValueError as e:
            raise flag_error(e) from None
        model, verb, record = run.scorer.model, run.scorer.verbalizer, run.record
        protocol = {**protocol, "shots": shots, "seed": seed, "template": tpl.name}
    from llmrec.scoring.pointwise import process_state

    if not process_state().is_main_process:  # under `accelerate launch`, one process writes
        return
    if cm is not None:
        from llmrec.collab.adapter import save_collab_adapter

        save_collab_adapter(model, out, collab=cm, base_model=base_model, template=tpl, verbalizer=verb,
                            kind="tallrec", protocol=protocol, metrics={"best_val_auc": record.get("best_val_auc")},
                            train={**record, "pair_form": pair_form})
    else:
        save_adapter(model, out, base_model=base_model, template=tpl, verbalizer=verb, kind="tallrec",
                     protocol=protocol, metrics={"best_val_auc": record.get("best_val_auc")}, train=record)
    import shutil

    shutil.rmtree(settings.output_dir, ignore_errors=True)  # checkpoints matter only until the adapter is saved
    best = record.get("best_val_auc")
    typer.echo(f"saved adapter to {out}" + (f" (best validation AUC {best:.4f})" if best is not None else ""))


def _collab_model(folder: Path, where: str, data: Optional[Path], custom: bool, splits=None, fit: bool = True):
    """The collaborative model for ``llmrec train``: loaded from ``folder`` (``--collab``, or the llmrec cache's
    default, named by ``where``), or fitted on the TALLRec-movie interactions (every valid/test user left out, no
    rating read) and saved there first (:func:`llmrec.collab.data.load_or_fit_collab`,
    :data:`llmrec.collab.data.DEFAULT_COLLAB_CONFIG`). A model fitted on interactions of valid/test users of
    ``splits`` is used with a warning (its valid/test AUC is not a few-shot number). With ``fit=False``, None where it
    would have to be fitted (the caller fits it later, after the base model loaded; the path is checked now). Under
    ``accelerate launch`` the main process fits it while the others wait, then they load it.

    Raises:
        CliError: the path cannot be a folder, the folder is not a readable collaborative model, or it must be fitted
            for a custom protocol (fit it on your data with the Python API first).
    """
    from llmrec.collab.data import check_collab_path, load_or_fit_collab, seen_evaluation_users
    from llmrec.scoring.pointwise import process_state

    def fail(e: ValueError) -> CliError:  # the library's "<folder>: why" as "--collab <folder>: why"
        return CliError(f"{where} {folder}: {str(e).removeprefix(f'{folder}: ')}")

    try:
        check_collab_path(folder)
    except ValueError as e:
        raise fail(e) from None
    holds = folder.is_dir() and any(folder.iterdir())
    if custom and not holds:
        raise CliError(f"--collab {folder}: holds no collaborative model, and fitting one is only built in for the "
                       f"TALLRec-movie data (no --interactions / --train-json without --data); fit it on your data "
                       f"with llmrec.collab.data.fit_collab_model and save it there")
    if not fit and not holds:
        return None
    rec = tsplits = None
    if not holds:  # the data is read again only to fit
        from llmrec.recipe import load_tallrec

        rec, tsplits = load_tallrec(data)
    try:
        with process_state().main_process_first():  # one process fits; the others then load its folder
            cm, _ = load_or_fit_collab(folder, rec, tsplits, log=lambda m: typer.echo(m, err=True))
    except ValueError as e:
        raise fail(e) from None
    evaluated = splits if splits is not None else tsplits
    seen = seen_evaluation_users(cm, evaluated) if evaluated is not None else []
    if seen:
        typer.echo(f"llmrec: warning: {where} {folder}: fitted on interactions of {len(seen)} valid/test user(s) of "
                   f"this protocol (first: {seen[0]!r}); its valid/test AUC is not a few-shot number", err=True)
    return cm


def _template(adapter: Optional[Path], template: Optional[str], prompts):
    """The template a command scores with, resolved before any model loads: ``--template``, else the adapter's
    own (from its llmrec.json), else the default."""
    from llmrec.prompts import load_template

    if adapter is not None:
        from llmrec.adapter import check_kind, read_metadata, recorded_template

        meta = read_metadata(adapter)
        check_kind(adapter, meta, "tallrec", "llmrec score/eval")
        return load_template(template, prompts) if template is not None else recorded_template(adapter, meta)
    return load_template(template or TEXT_TEMPLATE, prompts)  # zero-shot: no trained projector for tokens


def _scorer(adapter: Optional[Path], base_model: Optional[str], tpl, allow_template_mismatch: bool, dtype: str,
            allow_base_mismatch: bool = False):
    """The scorer, and what base model was loaded under an adapter (None without one). An adapter with
    collaborative tokens (a ``collab`` record) scores with :class:`llmrec.collab.train.CollabScorer`."""
    from llmrec.adapter import load_adapter
    from llmrec.model import DEFAULT_BASE_MODEL, load_base_model
    from llmrec.scoring.pointwise import PointwiseScorer

    if adapter is not None:  # --base-model, when given, is loaded under the adapter's fingerprint check
        model, tok, tpl, verb, meta = load_adapter(adapter, template=tpl, kind="tallrec", user="llmrec score/eval",
                                                   base_model=base_model, allow_base_mismatch=allow_base_mismatch,
                                                   allow_template_mismatch=allow_template_mismatch)
        if meta.get("collab"):
            from llmrec.collab.tokens import slot_table
            from llmrec.collab.train import CollabScorer

            return CollabScorer(model, tok, tpl, slot_table(model), dtype=dtype, verbalizer=verb), meta["loaded_base"]
        return PointwiseScorer(model, tok, tpl, dtype=dtype, verbalizer=verb), meta["loaded_base"]
    if allow_base_mismatch:
        raise CliError("--allow-base-mismatch needs --adapter (it loads an adapter onto other base weights)")
    model, tok = load_base_model(base_model or DEFAULT_BASE_MODEL)
    return PointwiseScorer(model, tok, tpl, dtype=dtype), None


def score(
    adapter: Optional[Path] = typer.Option(None, help="Tuned adapter folder; without it, the base model zero-shot."),
    input: Optional[Path] = typer.Option(None, "--input", help="Records to score: alpaca JSON or structured sample "
                                         "JSONL (labels optional)."),
    user: Optional[str] = typer.Option(None, help="Score one user (with --target): the last --history-len (10) "
                                                  "ratings are the history."),
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
    interactions: Optional[Path] = InteractionsOpt, items: Optional[Path] = ItemsOpt,
    columns: Optional[str] = ColumnsOpt, rating_scale: Optional[str] = RatingScaleOpt,
    like_threshold: Optional[float] = LikeThresholdOpt, history_len: Optional[int] = HistoryLenOpt,
    item_text: Optional[str] = ItemTextOpt, item_noun: Optional[str] = ItemNounOpt,
):
    """Score records (alpaca JSON or structured JSONL), or one (user, target) pair of a dataset (MovieLens or your
    own --interactions): P(Yes) per prompt. Records may be unlabelled (alpaca ``output`` or JSONL ``label`` missing
    or empty); rows of labelled ones carry their ``label``."""
    from llmrec.data.alpaca import read_alpaca_json
    from llmrec.samples.records import read_samples_jsonl, sample_file_kind

    if (input is None) == (user is None):
        raise CliError("give either --input FILE or --user ID --target ITEM")
    if user is not None and target is None:
        raise CliError("--user needs --target ITEM")
    check_dtype(dtype)
    tpl = _template(adapter, template, prompts)
    jsonl = None
    custom = _protocol_options_given(interactions, like_threshold, history_len, item_text, item_noun)
    if input is not None:  # read and checked before the model loads
        if sample_file_kind(input) == "jsonl":
            catalog = None
            if data is not None or interactions is not None:
                _, catalog, _, _ = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                                  history_len, None, None, None, item_text, item_noun)
            jsonl = read_samples_jsonl(input, catalog=catalog, like_threshold=like_threshold, item_noun=item_noun,
                                       unlabelled=True)
        else:
            _refuse_text_records(tpl, f"--input {input}")
            records = read_alpaca_json(input, answers=tuple(tpl.targets[:2]), unlabelled=True)
            if not records:
                raise CliError(f"--input {input}: holds no records to score")
    elif custom or items is not None or columns is not None or rating_scale is not None:  # before the model loads
        _, catalog, _, res = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                            history_len, None, None, None, item_text, item_noun)
    sc, loaded = _scorer(adapter, base_model, tpl, allow_template_mismatch, dtype, allow_base_mismatch)
    if loaded and loaded["mismatch_allowed"]:
        typer.echo(f"llmrec: warning: adapter {adapter} scored on {loaded['base_model']!r} (weights sha256 "
                   f"{loaded['sha256'][:12]}), not the base model it was tuned on (--allow-base-mismatch)", err=True)
    if jsonl is not None:
        P = sc.encode_samples(jsonl.samples, jsonl.catalog)
    elif input is not None:
        P = sc.encode_alpaca(records)
    else:
        from llmrec.samples.tallrec import sample_for_user

        if custom or items is not None or columns is not None or rating_scale is not None:
            c = res.config
            pair = None if res.rating_scale is None else tuple(float(x) for x in res.rating_scale[:2])
            s = sample_for_user(res.rec, user, target, c.history_len, c.like_threshold,
                                None if pair == (1.0, 5.0) else pair)
        else:
            from llmrec import assets
            from llmrec.data import load_dataset

            rec = load_dataset(data if data is not None else assets.ml100k_dir())
            catalog = rec.catalog
            s = sample_for_user(rec, user, target)  # history without the target (as `prompts render` shows it)
        P = sc.encode_samples([s], catalog)  # (collaborative tokens need the sample, not only its text)
        P.labels[:] = -1  # the label is added below only when the user rated the target
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
    split: str = typer.Option("test", help="Split to evaluate: valid or test."),
    input: Optional[Path] = typer.Option(None, "--input", help="Records instead of a split: alpaca JSON (TALLRec's "
                                         "format is read back into samples: like-rate and UAUC too) or structured "
                                         "sample JSONL."),
    base_model: Optional[str] = AdapterBaseOpt,
    template: Optional[str] = ScoreTemplateOpt,
    prompts: Optional[List[Path]] = PromptsOpt,
    data: Optional[Path] = DataOpt,
    limit: int = typer.Option(0, help="Evaluate only the first N samples (0 = all)."),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics JSON here."),
    allow_template_mismatch: bool = typer.Option(False),
    allow_base_mismatch: bool = AllowBaseOpt,
    interactions: Optional[Path] = InteractionsOpt, items: Optional[Path] = ItemsOpt,
    columns: Optional[str] = ColumnsOpt, rating_scale: Optional[str] = RatingScaleOpt,
    like_threshold: Optional[float] = LikeThresholdOpt, history_len: Optional[int] = HistoryLenOpt,
    history_order: Optional[str] = HistoryOrderOpt, split_by: Optional[str] = SplitByOpt,
    n_keep: Optional[int] = NKeepOpt, item_text: Optional[str] = ItemTextOpt, item_noun: Optional[str] = ItemNounOpt,
):
    """AUC and UAUC of P(Yes) on a split of any protocol (or on records), beside the like-rate baseline
    (``like_rate_auc``: the fraction of liked history items). The records must hold both classes (checked before the
    model loads). An adapter tuned on another protocol (threshold, item noun, history length) is reported."""
    from llmrec.data.alpaca import require_both_classes
    from llmrec.metrics import auc, uauc
    from llmrec.recipe import encode_sample_set, like_rate_product, like_rate_scores

    if limit < 0:
        raise CliError(f"--limit {limit}: must be >= 0 (0 = all samples)")
    check_dtype(dtype)
    tpl = _template(adapter, template, prompts)
    answers = tuple(tpl.targets[:2])
    result = {}
    sset = None
    protocol: dict = {}
    if input is not None:  # the data is read and checked before the model loads
        catalog = None
        if data is not None or interactions is not None:
            _, catalog, protocol, _ = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                                     history_len, history_order, split_by, n_keep, item_text,
                                                     item_noun)
        threshold = like_threshold if like_threshold is not None else protocol.get("like_threshold")
        sset = _read_sample_set(input, "--input", answers, catalog, threshold, item_noun)
        if sset.kind != "jsonl":
            _refuse_text_records(tpl, f"--input {input}")
        if limit and len(sset) > limit:
            sset = sset.subset(range(limit))
        require_both_classes(sset.labels, f"--input {input.name}", answers)
        samples = sset.samples
        if sset.catalog is not None:
            protocol = {**protocol, "item_noun": sset.item_noun}
        rated = [s for s in samples or [] if s.rating_scale != (0.0, 1.0)]  # label-only: no rating threshold
        ths = {s.like_threshold for s in rated}
        protocol["like_threshold"] = ths.pop() if len(ths) == 1 else None
    else:
        splits, catalog, protocol, _ = _load_protocol(data, interactions, items, columns, rating_scale, like_threshold,
                                                      history_len, history_order, split_by, n_keep, item_text,
                                                      item_noun)
        samples = _split(splits, split)
        samples = samples[:limit] if limit else samples
        require_both_classes([s.label for s in samples], f"--split {split}" + (f" --limit {limit}" if limit else ""),
                             answers)
    if adapter is not None:
        from llmrec.adapter import read_metadata

        diff = _protocol_mismatch(read_metadata(adapter), protocol)
        if diff:
            result["protocol_mismatch"] = diff
            typer.echo(f"llmrec: warning: adapter {adapter} was tuned on another protocol: {'; '.join(diff)}", err=True)
    sc, loaded = _scorer(adapter, base_model, tpl, allow_template_mismatch, dtype, allow_base_mismatch)
    if loaded is not None:
        result["loaded_base"] = loaded  # what the adapter ran on (a mismatch allowed is recorded here)
    if input is None and getattr(sc, "slots", None) is not None:  # the honest few-shot protocol, checked on the split
        from llmrec.collab.data import seen_evaluation_users

        seen = seen_evaluation_users(sc.slots.collab, splits)
        if seen:
            result["collab_seen_evaluation_users"] = len(seen)
            typer.echo(f"llmrec: warning: adapter {adapter}: its collaborative model was fitted on interactions of "
                       f"{len(seen)} valid/test user(s) of this protocol (first: {seen[0]!r}); this AUC is not a "
                       f"few-shot number", err=True)
    P = encode_sample_set(sc, sset) if sset is not None else sc.encode_samples(samples, catalog)
    if samples is not None:
        result["like_rate_auc"] = auc(P.labels, like_rate_scores(samples))
    r = sc.evaluate(P, progress=True, keep_scores=True)
    scores = r.pop("scores")
    result.update(r)
    if samples is not None:  # the LM x like-rate product needs the history (structured samples)
        result["like_product_auc"] = auc(P.labels, like_rate_product(scores, samples))
        if all(s.user_id for s in samples):
            users = [s.user_id for s in samples]
            u = uauc(users, P.labels, scores)
            result.update(uauc=u["uauc"], uauc_users=u["n_users"],
                          like_rate_uauc=uauc(users, P.labels, like_rate_scores(samples))["uauc"])
        else:
            result["not_computed"] = {"uauc": "the records name no users"}
    else:
        result["not_computed"] = {"like_rate_auc": sset.unstructured, "uauc": sset.unstructured}
        typer.echo(f"llmrec: note: no like-rate or UAUC for --input {input.name}: {sset.unstructured}", err=True)
    if protocol:
        result["protocol"] = {k: protocol[k] for k in ("name", "like_threshold", "item_noun", "history_len", "data",
                                                       "data_sha256") if k in protocol}
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json_atomic(out, result)


def register(app: typer.Typer) -> None:
    """Add the ``data``, ``train``, ``score`` and ``eval`` commands to the ``llmrec`` app."""
    app.command("data")(data)
    app.command("train")(train)
    app.command("score")(score)
    app.command("eval")(evaluate)
