#!/usr/bin/env python
"""Zero-shot and k-shot AUC on the TALLRec movie test set, beside TALLRec's published numbers -- or on any data.

    python eval/tallrec_auc.py --shots 16 64 256 --seeds 0 1 2 --out results/tallrec.json

On the TALLRec movie data the k-shot rows run the default recipe (``llmrec.recipe.DEFAULT_TEMPLATE``,
tallrec-last5-taste: collaborative tokens plus one ⟨taste⟩ token; LoRA and projector tuned together). Its
collaborative model (``--collab``; default: the one ``llmrec train`` uses, in the llmrec cache) is fitted on first
use from the interactions of every user without a valid/test window, no rating read (about 2 minutes, one thread);
the zero-shot row, which has no trained projector, uses the text template (``--zero-shot-template``), and a no-LM row
(the collaborative cosine probe x like-rate) shows what the vectors alone score. ``--template tallrec-last5`` runs
the text-only recipe.

Any data (issue 19), with the same tables (zero-shot, k-shot per seed, like-rate, AUC and UAUC):

    # your own interactions + item files, with a protocol (threshold derived from the scale unless given)
    python eval/tallrec_auc.py --interactions ratings.csv --items books.csv --columns user=reader,item=book_id \
        --rating-scale 1-10 --item-noun book --item-text '{title} by {author}' --shots 16 64
    # or sample files (alpaca JSON in TALLRec's format or structured JSONL): k shots drawn from --train-json
    python eval/tallrec_auc.py --train-json train.json --val-json valid.json --test-json test.json --shots 64

Protocol (Bao et al., RecSys 2023): MovieLens-100K, 10-item windows, like = rating > 3, the last 10,000
windows split 80/10/10; k training samples drawn from the train split with each seed; early stopping
on a fixed validation subset; AUC of P(Yes) on the 1,000 test samples. Every table also carries the
no-model like-rate baseline (fraction of liked history items) and TALLRec's LLaMA-7B rows.
The JSON holds per-run AUC, mean, std, wall seconds and tokens/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from llmrec._atomic import write_json_atomic
from llmrec.model import LoraSettings
from llmrec.train import TrainSettings
from llmrec.recipe import DEFAULT_AUGMENT, DEFAULT_TEMPLATE, TEXT_TEMPLATE
from llmrec.precision import HELP as DTYPE_HELP, NAMES as PRECISIONS

TALLREC_PUBLISHED = {  # AUC on the movie test set, from the paper's Table 2
    "TALLRec (LLaMA-7B)": {16: 0.6724, 64: 0.6748, 256: 0.7198},
    "SASRec": {16: 0.5043, 64: 0.5048, 256: 0.5225},
    "GRU4Rec": {16: 0.4907, 64: 0.4987, 256: 0.5289},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256], help="k values (0 = zero-shot only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("results/tallrec.json"))
    p.add_argument("--base-model", default="smollm2-135m-instruct")
    p.add_argument("--template", default=None, help=f"k-shot template; default {DEFAULT_TEMPLATE} on the TALLRec "
                   f"movie data (collaborative tokens, README \"Interaction tokens\"), {TEXT_TEMPLATE} (text only, the best "
                   "text row of eval/levers.py) on other data; tallrec is TALLRec's own prompt")
    p.add_argument("--zero-shot-template", default=TEXT_TEMPLATE, help="template of the zero-shot row when --template "
                   f"places collaborative tokens (no trained projector yet); default {TEXT_TEMPLATE}")
    p.add_argument("--collab", type=Path, default=None, help="collaborative model folder for a template with "
                   "collaborative tokens: loaded, or fitted there first; default: the llmrec cache's "
                   "(llmrec.collab.data.default_collab_dir, shared with `llmrec train`)")
    p.add_argument("--pair-form", default="score", choices=["score", "product"],
                   help="form of ⟨taste⟩ / ⟨match⟩ token rows (llmrec.collab.match.PAIR_FORMS)")
    p.add_argument("--prompts", action="append", default=None, help="extra template folder")
    p.add_argument("--data", default=None, help="dataset folder (default: embedded ML-100K)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: per k, the optimizer steps of 10 un-augmented epochs, at least "
                        "80 steps: llmrec.recipe.epoch_budget; mirror: 20 at 16 shots, 5 at 64 and 256)")
    p.add_argument("--lr", type=float, default=TrainSettings.learning_rate)
    p.add_argument("--lr-scheduler", default=TrainSettings.lr_scheduler, help="schedule after warm-up (transformers name)")
    p.add_argument("--warmup-ratio", type=float, default=TrainSettings.warmup_ratio, help="fraction of the steps of linear warm-up")
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--lora-rank", type=int, default=LoraSettings.rank)
    p.add_argument("--lora-alpha", type=float, default=LoraSettings.alpha)
    p.add_argument("--lora-dropout", type=float, default=LoraSettings.dropout)
    p.add_argument("--target-modules", default=",".join(LoraSettings().target_modules))
    p.add_argument("--loss-on", default=TrainSettings.loss_on, choices=["answer", "prompt"])
    p.add_argument("--augment", default=DEFAULT_AUGMENT, help="few-shot augmentation from the k samples only: comma "
                   "list of rotate, permute, drop, mirror (llmrec.samples.augment), or none; default "
                   f"{DEFAULT_AUGMENT} (the best measured row of eval/levers.py)")
    p.add_argument("--augment-copies", type=int, default=1, help="new samples per k-shot sample and augmentation")
    p.add_argument("--val-size", type=int, default=128)
    p.add_argument("--patience", type=int, default=TrainSettings.patience)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="training precision (auto = bf16 where the CPU/GPU runs it natively, else fp32)")
    p.add_argument("--dtype", default="auto", choices=PRECISIONS,
                   help=DTYPE_HELP + " bf16 moved zero-shot test AUC by 0.003 (0.5416 -> 0.5447); pass float32 "
                        "for strict fp32 numbers")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test samples (0 = all 1000)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot row")
    p.add_argument("--save-scores", action="store_true", help="keep per-sample test scores in the JSON")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default: <out>.work)")
    g = p.add_argument_group("any data (the options of `llmrec data/train/eval`; see README)")
    g.add_argument("--interactions", type=Path, default=None, help="your interactions file (CSV, TSV, JSONL)")
    g.add_argument("--items", type=Path, default=None, help="item file for --interactions")
    g.add_argument("--columns", default=None, help="key=column pairs: user, item, rating, label, timestamp, item_id, title")
    g.add_argument("--rating-scale", default=None, help="LOW-HIGH[:STEP], e.g. 1-10")
    g.add_argument("--like-threshold", type=float, default=None, help="liked = rating > this (default: derived)")
    g.add_argument("--history-len", type=int, default=None)
    g.add_argument("--history-order", default=None, choices=["oldest-first", "newest-first"])
    g.add_argument("--split-by", default=None, choices=["user", "time"])
    g.add_argument("--n-keep", type=int, default=None, help="last N windows before the split (0 = all)")
    g.add_argument("--item-text", default=None, help="e.g. '{title} by {author}'")
    g.add_argument("--item-noun", default=None, help="book, product, ... (default: movie on MovieLens)")
    g.add_argument("--train-json", type=Path, default=None, help="sample file to draw the k shots from (with --test-json)")
    g.add_argument("--val-json", type=Path, default=None, help="sample file for early stopping (default: none)")
    g.add_argument("--test-json", type=Path, default=None, help="sample file to test on")
    return p.parse_args(argv)


def _sample_files(args) -> bool:
    return bool(args.train_json or args.test_json or args.val_json)


def _custom_protocol(args) -> bool:
    return any(getattr(args, a) is not None for a in ("interactions", "like_threshold", "history_len", "history_order",
                                                      "split_by", "n_keep", "item_text", "item_noun"))


def resolve_template(args) -> str:
    """``--template``, else the default recipe's (collaborative tokens) on the TALLRec movie data, and the text one on
    other data (sample files, ``--interactions`` or protocol options) or when every k is 0 (zero-shot only: nothing
    is tuned, so no projector)."""
    if args.template is not None:
        return args.template
    zero_shot_only = not any(k > 0 for k in args.shots)  # nothing to tune: no projector, no collaborative model
    return TEXT_TEMPLATE if _sample_files(args) or _custom_protocol(args) or zero_shot_only else DEFAULT_TEMPLATE


def load_data(args, answers):
    """``(splits, encode, protocol record, published, rec)``: the samples to draw from / validate / test, how to
    render them, what protocol made them, whether TALLRec's published movie rows apply, and the dataset (None for
    sample files)."""
    from llmrec.samples.tallrec import TallrecSplits

    if _sample_files(args):
        if not (args.train_json and args.test_json):
            raise SystemExit("error: sample files need both --train-json and --test-json (and optionally --val-json)")
        from llmrec.data import Catalog
        from llmrec.samples.records import read_sample_file

        sets = {k: read_sample_file(f, answers=answers, like_threshold=args.like_threshold, item_noun=args.item_noun)
                for k, f in (("train", args.train_json), ("valid", args.val_json), ("test", args.test_json)) if f}
        for k, ss in sets.items():
            ss.require_structured(f"eval/tallrec_auc.py ({k})")
        kinds = {ss.kind for ss in sets.values()}
        if len(kinds) > 1:
            raise SystemExit(f"error: the sample files mix kinds {sorted(kinds)}; give all as alpaca or all as JSONL")
        first = sets["train"]
        if first.kind == "jsonl":
            texts = {}
            for ss in sets.values():
                texts.update({i: ss.catalog.title(i) for i in ss.catalog.frame.index})
            catalog = Catalog.from_records([{"item_id": i, "title": t, "year": None, "genres": []}
                                            for i, t in texts.items()], item_noun=first.item_noun)

            def encode(sc, samples):
                return sc.encode_samples(list(samples), catalog)
        else:
            def encode(sc, samples):
                return sc.encode_alpaca(first.alpaca(samples, answers=answers))
        splits = TallrecSplits(first.samples, sets["valid"].samples if "valid" in sets else [], sets["test"].samples)
        record = {"name": "records", "files": {k: str(f) for k, f in (("train", args.train_json),
                  ("valid", args.val_json), ("test", args.test_json)) if f}, "item_noun": first.item_noun}
        return splits, encode, record, False, None
    custom = _custom_protocol(args)
    from llmrec.recipe import load_protocol
    from llmrec.samples.protocol import TALLREC_MOVIE, ProtocolConfig

    config = TALLREC_MOVIE
    if custom:
        config = ProtocolConfig(like_threshold=args.like_threshold, history_len=args.history_len or 10,
                                history_order=args.history_order or "oldest-first", split=args.split_by or "user",
                                n_keep=TALLREC_MOVIE.n_keep if args.n_keep is None else (args.n_keep or None),
                                item_text=args.item_text or "{title}", item_noun=args.item_noun)
    cols, item_id, title = None, None, "title"
    if args.columns:
        from llmrec.data.tabular import parse_columns

        cols, item_id, title = parse_columns(args.columns)
    res = load_protocol(args.data, config, interactions=args.interactions, items=args.items, columns=cols,
                        rating_scale=args.rating_scale, item_id=item_id, title=title, item_noun=args.item_noun)
    print(f"protocol: {res.rule}; train/valid/test {len(res.splits.train)}/{len(res.splits.valid)}/"
          f"{len(res.splits.test)} samples; items are {res.config.item_noun!r}", flush=True)

    def encode(sc, samples):
        return sc.encode_samples(list(samples), res.catalog)
    return res.splits, encode, res.record(), not custom, res.rec


def check_templates(args):
    """``(k-shot template, zero-shot template)``, loaded and checked before any data or model: a token template's
    zero-shot row uses ``--zero-shot-template``, which must be text; ``--pair-form product`` needs a template with
    ⟨taste⟩ / ⟨match⟩ tokens. Exits with ``error: --flag value: why`` otherwise."""
    from llmrec.prompts import load_template
    from llmrec.prompts.collab_syntax import source_places_pairs, source_places_tokens

    def load(flag, name):
        try:
            return load_template(name, args.prompts)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {flag} {name}: {e}") from None

    tpl = load("--template", args.template)
    if args.pair_form != "score" and not source_places_pairs(tpl.source):
        raise SystemExit(f"error: --pair-form {args.pair_form}: template {tpl.name} places no ⟨taste⟩ / ⟨match⟩ "
                         f"token")
    if not source_places_tokens(tpl.source):
        return tpl, tpl
    zs = load("--zero-shot-template", args.zero_shot_template)
    if source_places_tokens(zs.source):
        raise SystemExit(f"error: --zero-shot-template {zs.name}: it places collaborative tokens, which need a trained "
                         f"projector; give a text template (default {TEXT_TEMPLATE})")
    return tpl, zs


def load_collab(args, tpl, rec, splits):
    """The collaborative model a token template needs (None for a text template): ``--collab`` loaded or fitted
    there, else the default one in the llmrec cache (fitted on first use; TALLRec movie data only). A model that saw
    interactions of a valid/test user is refused: its test AUC would not be a few-shot number."""
    from llmrec.prompts.collab_syntax import source_places_tokens

    if not source_places_tokens(tpl.source):
        if args.collab is not None:
            raise SystemExit(f"error: --collab {args.collab}: template {tpl.name} places no collaborative token")
        return None
    from llmrec.collab.data import default_collab_dir, load_or_fit_collab, missing_items, seen_evaluation_users
    from llmrec.samples.protocol import data_sha256

    if rec is None:
        raise SystemExit(f"error: template {tpl.name} places collaborative tokens, which need item ids and a "
                         f"collaborative model; sample files give neither (use --template {TEXT_TEMPLATE})")
    if not args.published and (args.collab is None or not (args.collab / "collab.json").is_file()):
        raise SystemExit(f"error: template {tpl.name} places collaborative tokens: give --collab DIR holding a "
                         f"collaborative model of your data (fitting one is built in for the TALLRec movie data only)")
    folder, where = ((args.collab, "--collab") if args.collab
                     else (default_collab_dir(data_sha256(rec)), "the default collaborative model"))
    try:
        cm, _ = load_or_fit_collab(folder, rec, splits, log=lambda m: print(m, flush=True))
    except ValueError as e:
        raise SystemExit(f"error: {where} {folder}: {str(e).removeprefix(f'{folder}: ')}") from None
    seen = seen_evaluation_users(cm, splits)
    if seen:
        raise SystemExit(f"error: collaborative model {folder} was fitted on interactions of {len(seen)} valid/test "
                         f"user(s) (first: {seen[0]!r}); the few-shot protocol leaves them out (fit one with "
                         f"llmrec.collab.data.load_or_fit_collab)")
    missing = missing_items(cm, [*splits.train, *splits.valid, *splits.test])
    if missing:
        raise SystemExit(f"error: collaborative model {folder}: {len(missing)} item(s) of the data are not in its "
                         f"catalogue (first: {missing[0]!r})")
    print(f"collaborative model {folder} (sha256 {cm.sha256[:12]}; {len(cm.excluded)} valid/test users left out)",
          flush=True)
    return cm


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def main(argv=None) -> int:
    args = parse_args(argv)
    from llmrec.metrics import auc, uauc as _uauc

    def uauc(users, labels, scores):  # records that name no users have no UAUC (not one user's AUC)
        return _uauc(users, labels, scores) if all(users) else {"uauc": None, "n_users": 0}
    from llmrec.model import LoraSettings, load_base_model
    from llmrec.recipe import LikeRateBlend, epoch_budget, like_rate_product, like_rate_scores, tune_k_shot
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.samples.augment import parse_augmentations
    from llmrec.precision import scoring_dtype
    from llmrec.train import TrainSettings

    augment = parse_augmentations(args.augment)
    dtype = scoring_dtype(args.dtype)
    args.template = resolve_template(args)
    tpl, zs_tpl = check_templates(args)
    splits, encode, protocol, published, rec = load_data(args, tuple(tpl.targets[:2]))
    args.published = published
    cm = load_collab(args, tpl, rec, splits)
    test = splits.test[: args.limit] if args.limit else splits.test
    labels = np.array([s.label for s in test])
    like_auc = auc(labels, like_rate_scores(test))
    users = [s.user_id for s in test]
    like_uauc = uauc(users, labels, like_rate_scores(test))
    out = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "scoring_dtype": dtype, "n_test": len(test), "like_rate_auc": like_auc,
           "like_rate_uauc": like_uauc["uauc"], "uauc_users": like_uauc["n_users"], "zero_shot": None, "runs": [],
           "summary": {}, "protocol": protocol}
    if cm is not None:  # what the collaborative vectors score without any LM (the ⟨taste⟩ token's own comparison)
        from llmrec.collab.match import taste_probe
        from llmrec.recipe import probe_x_like_rate

        probe = probe_x_like_rate(test, taste_probe(cm, test))
        out["collab"] = {"sha256": cm.sha256, "pair_form": args.pair_form, "probe_like_rate_auc": auc(labels, probe),
                         "probe_like_rate_uauc": uauc(users, labels, probe)["uauc"]}
    work = args.work_dir or args.out.with_suffix(".work")

    def save():
        write_json_atomic(args.out, out)

    if not args.no_zero_shot:  # no trained projector yet: a token template is scored with the text one
        model, tok = load_base_model(args.base_model)
        sc = PointwiseScorer(model, tok, zs_tpl, dtype=dtype)
        P = encode(sc, test)
        r = sc.evaluate(P, progress=True, desc="zero-shot test", keep_scores=True)
        r["uauc"] = uauc(users, P.labels, r.pop("scores"))["uauc"]
        r["template"] = zs_tpl.name
        out["zero_shot"] = r
        print(f"zero-shot AUC {r['auc']:.4f}, UAUC {_f(r['uauc'])} ({r['seconds']:.0f} s, {r['tokens_per_s']:.0f} tokens/s)", flush=True)
        save()

    lora = LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout,
                        target_modules=args.target_modules)
    for k in [k for k in args.shots if k > 0]:
        for seed in args.seeds:
            t0 = time.perf_counter()
            model, tok = load_base_model(args.base_model)
            epochs = args.epochs if args.epochs is not None else epoch_budget(
                augment, args.augment_copies, shots=k, batch_size=args.batch_size)
            settings = TrainSettings(output_dir=str(work / f"k{k}-s{seed}"), epochs=epochs,
                                     learning_rate=args.lr, batch_size=args.batch_size, seed=seed,
                                     loss_on=args.loss_on, patience=args.patience, precision=args.precision,
                                     lr_scheduler=args.lr_scheduler, warmup_ratio=args.warmup_ratio)
            scorer = None
            if cm is not None:  # LoRA + projector (peft modules_to_save), seeded; tuned together (README)
                from llmrec.collab.train import joint_scorer

                scorer = joint_scorer(model, tok, tpl, cm, lora, seed=seed, pair_form=args.pair_form, dtype=dtype)
                model = scorer.model
            run = tune_k_shot(model, tok, tpl, splits, None, shots=k, seed=seed, settings=settings,
                              lora=lora, val_size=args.val_size, dtype=dtype, augment=augment,
                              augment_copies=args.augment_copies, encode=encode, scorer=scorer)
            if hasattr(run.scorer.model, "merge_and_unload"):
                run.scorer.model = run.scorer.model.merge_and_unload()
            P = encode(run.scorer, test)
            t1 = time.perf_counter()
            p_test = run.scorer.score(P, progress=True, desc=f"{k}-shot seed {seed} test")
            test_seconds = time.perf_counter() - t1
            r = {"auc": auc(P.labels, p_test), "seconds": test_seconds, "tokens_per_s": P.tokens / test_seconds}
            rec_run = {**run.record, "test_auc": r["auc"], "test_seconds": r["seconds"],
                       "test_tokens_per_s": r["tokens_per_s"], "wall_seconds": time.perf_counter() - t0}
            rec_run["test_uauc"] = uauc(users, P.labels, p_test)["uauc"]
            rec_run["like_product_test_auc"] = auc(P.labels, like_rate_product(p_test, test))  # no fit, no labels
            rec_run["like_product_test_uauc"] = uauc(users, P.labels, like_rate_product(p_test, test))["uauc"]
            if run.val_samples:  # like-rate blend fitted on the early-stopping validation subset
                V = encode(run.scorer, run.val_samples)
                blend = LikeRateBlend.fit(run.scorer.score(V), like_rate_scores(run.val_samples), V.labels)
                rec_run["blend"] = vars(blend)
                rec_run["blend_test_auc"] = auc(P.labels, blend(p_test, like_rate_scores(test)))
            if args.save_scores:
                rec_run["test_scores"] = p_test.tolist()
            out["runs"].append(rec_run)
            print(f"{k}-shot seed {seed}: test AUC {r['auc']:.4f} (UAUC {_f(rec_run['test_uauc'])}), x like-rate {rec_run['like_product_test_auc']:.4f}, "
                  f"like-rate blend "
                  f"{rec_run.get('blend_test_auc', float('nan')):.4f}  (val AUC {run.record['best_val_auc']}, "
                  f"train {run.record['train_seconds']:.0f} s, {run.record['epochs_run']:.0f} epochs)", flush=True)
            mean, std = _mean_std([x["test_auc"] for x in out["runs"] if x["shots"] == k])
            bmean, bstd = _mean_std([x.get("blend_test_auc") for x in out["runs"] if x["shots"] == k])
            pmean, pstd = _mean_std([x.get("like_product_test_auc") for x in out["runs"] if x["shots"] == k])
            umean, ustd = _mean_std([x.get("test_uauc") for x in out["runs"] if x["shots"] == k])
            pumean, pustd = _mean_std([x.get("like_product_test_uauc") for x in out["runs"] if x["shots"] == k])
            out["summary"][str(k)] = {"mean_auc": mean, "std_auc": std, "blend_mean_auc": bmean, "blend_std_auc": bstd,
                                      "like_product_mean_auc": pmean, "like_product_std_auc": pstd,
                                      "mean_uauc": umean, "std_uauc": ustd,
                                      "like_product_mean_uauc": pumean, "like_product_std_uauc": pustd,
                                      "n_seeds": sum(1 for x in out["runs"] if x["shots"] == k),
                                      "mean_train_seconds": float(np.mean([x["train_seconds"] for x in out["runs"]
                                                                           if x["shots"] == k]))}
            save()
    print()
    print(format_table(out, args))
    print()
    print(format_uauc_table(out, args))
    save()
    print(f"\nwrote {args.out}")
    return 0


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _zero_shot_cell(out: dict, args, key: str) -> str:
    """The zero-shot cell: its value, with the template it used where that is not the row's (a token template's
    zero-shot row is scored with the text template)."""
    zs = out.get("zero_shot") or {}
    if zs.get(key) is None:
        return "-"
    tname = zs.get("template")
    return f"{zs[key]:.4f}" + (f" ({tname})" if tname and tname != args.template else "")


def format_table(out: dict, args) -> str:
    shots = [k for k in args.shots if k > 0]
    head = "| model | zero-shot | " + " | ".join(f"{k}-shot" for k in shots) + " |"
    sep = "|---|---|" + "---|" * len(shots)
    rows = [head, sep]
    rows.append(f"| like-rate baseline (no model) | {out['like_rate_auc']:.4f} | "
                + " | ".join(f"{out['like_rate_auc']:.4f}" for _ in shots) + " |")
    for name, vals in (TALLREC_PUBLISHED if getattr(args, "published", True) else {}).items():
        rows.append(f"| {name} (published) | - | " + " | ".join(
            f"{vals[k]:.4f}" if k in vals else "-" for k in shots) + " |")
    col = out.get("collab")
    if col:
        rows.append("| collaborative probe × like-rate (no LM, nothing fitted) | - | " + " | ".join(
            f"{col['probe_like_rate_auc']:.4f}" for _ in shots) + " |")
    cells = []
    for k in shots:
        s = out["summary"].get(str(k))
        cells.append(f"{s['mean_auc']:.4f} ± {s['std_auc']:.4f} (n={s['n_seeds']})" if s and s["mean_auc"] else "-")
    rows.append(f"| llmrec {args.base_model} / {args.template} | {_zero_shot_cell(out, args, 'auc')} | ")
    rows[-1] += " | ".join(cells) + " |"
    pcells = []
    for k in shots:
        s = out["summary"].get(str(k))
        pcells.append(f"{s['like_product_mean_auc']:.4f} ± {s['like_product_std_auc']:.4f}"
                      if s and s.get("like_product_mean_auc") else "-")
    if any(c != "-" for c in pcells):
        rows.append("| llmrec × like-rate (logit sum, no fit) | - | " + " | ".join(pcells) + " |")
    bcells = []
    for k in shots:
        s = out["summary"].get(str(k))
        bcells.append(f"{s['blend_mean_auc']:.4f} ± {s['blend_std_auc']:.4f}" if s and s.get("blend_mean_auc") else "-")
    if any(c != "-" for c in bcells):
        rows.append(f"| llmrec + like-rate blend (fit on val subset) | - | " + " | ".join(bcells) + " |")
    return "\n".join(rows)


def format_uauc_table(out: dict, args) -> str:
    """UAUC (mean per-user AUC over the users whose test samples hold both labels; CoLLM's metric). The
    like-rate is constant within a user, so its UAUC is 0.5 by construction: what rises above it is what a
    model knows beyond "this user likes most things". TALLRec did not publish UAUC."""
    shots = [k for k in args.shots if k > 0]
    rows = [f"UAUC over {out.get('uauc_users', '?')} test users with both labels",
            "| model | zero-shot | " + " | ".join(f"{k}-shot" for k in shots) + " |",
            "|---|---|" + "---|" * len(shots)]
    lr = out.get("like_rate_uauc")
    rows.append(f"| like-rate baseline (no model) | {_f(lr)} | " + " | ".join(_f(lr) for _ in shots) + " |")
    col = out.get("collab")
    if col:
        rows.append("| collaborative probe × like-rate (no LM, nothing fitted) | - | " + " | ".join(
            _f(col["probe_like_rate_uauc"]) for _ in shots) + " |")
    for label, key, std in ((f"llmrec {args.base_model} / {args.template}", "mean_uauc", "std_uauc"),
                            ("llmrec × like-rate (logit sum, no fit)", "like_product_mean_uauc",
                             "like_product_std_uauc")):
        cells = []
        for k in shots:
            s = out["summary"].get(str(k)) or {}
            cells.append(f"{s[key]:.4f} ± {s[std]:.4f}" if s.get(key) is not None else "-")
        first = _zero_shot_cell(out, args, "uauc") if key == "mean_uauc" else "-"
        rows.append(f"| {label} | {first} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
