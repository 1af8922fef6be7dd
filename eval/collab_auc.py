#!/usr/bin/env python
"""TALLRec movie test AUC / UAUC with collaborative tokens in the prompt (issue 15), one row per order.

    python eval/collab_auc.py --order two-stage --template tallrec-last5-hybrid --shots 64 --seeds 0 \\
        --out results/collab/two-stage-hybrid.json
    python eval/collab_auc.py --table results/collab/*.json          # print the table of finished runs

Orders (``llmrec.collab.train``): ``text`` (the text-only default: tallrec-last5 + mirror, no tokens),
``two-stage`` (alignment on implicit next-item prompts, LoRA + projector; then k-shot, both), ``collm``
(k-shot LoRA on text, then k-shot projector only on the token template, LoRA frozen), ``joint`` (one k-shot
stage, both). Every k-shot stage is the default recipe: k samples drawn with the seed, mirror augmentation,
the default epoch budget, early stopping on the fixed 128-sample validation subset.

The collaborative model (``--collab``, from ``eval/collab_probe.py``) never saw a rating or a TALLRec
valid/test user. The alignment stage (order ``two-stage``) draws its implicit prompts with seed 0 for
every seed of a row; the projector and LoRA it starts from are initialised with the run's seed, so it is
refitted in each run. Each run records AUC, UAUC, x like-rate (both), tokens per prompt, training and
scoring seconds.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

ORDERS = ("text", "two-stage", "collm", "joint")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", choices=ORDERS, default="two-stage")
    p.add_argument("--template", default="tallrec-last5-hybrid")
    p.add_argument("--text-template", default="tallrec-last5", help="the text template (order text and collm)")
    p.add_argument("--shots", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--collab", type=Path, default=Path("results/collab/model"))
    p.add_argument("--align-n", type=int, default=200, help="alignment draws (each: 1 positive + --align-neg negatives)")
    p.add_argument("--align-neg", type=int, default=1)
    p.add_argument("--align-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kshot-epochs", type=int, default=None, help="epoch cap of each k-shot stage (default: the recipe's "
                   "budget, llmrec.recipe.epoch_budget: 5 at 64 shots + mirror); lower it on a loaded CPU and say so")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test samples (0 = all 1000)")
    p.add_argument("--test-stride", type=int, default=1, help="score every S-th test sample (2: 500 samples, every "
                   "user kept); --table restricts full runs to the same subset from their saved scores")
    p.add_argument("--pair-form", choices=("score", "product"), default="score",
                   help="form of ⟨taste⟩ / ⟨match⟩ token rows (llmrec.collab.match.PAIR_FORMS)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--base-model", default="smollm2-135m-instruct")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--table", nargs="*", default=None, help="print the table of these result files and exit")
    p.add_argument("--with-probe", action="store_true", help="with --table: also print each row's LM score added to "
                   "the no-LM cosine probe x like-rate (z-sum, nothing fitted; needs --collab): does the LM add "
                   "anything to the collaborative vectors?")
    return p.parse_args(argv)


def _settings(out: Path, epochs: int, seed: int, lr: float, val: bool):
    from llmrec.train import TrainSettings

    return TrainSettings(output_dir=str(out), epochs=epochs, learning_rate=lr, seed=seed, precision="fp32",
                         patience=3 if val else 0)


def run_one(args, seed: int, rec, splits, collab) -> dict:
    import torch

    from llmrec.collab.data import implicit_sequences
    from llmrec.collab.train import CollabScorer, alignment_samples, attach, tune_stage
    from llmrec.metrics import auc, uauc
    from llmrec.model import LoraSettings, load_base_model
    from llmrec.prompts import load_template
    from llmrec.recipe import DEFAULT_AUGMENT, epoch_budget, like_rate_product
    from llmrec.samples.augment import augment_samples, parse_augmentations
    from llmrec.samples.kshot import sample_k_shot
    from llmrec.scoring.pointwise import PointwiseScorer

    work = args.work_dir / f"{args.order}-{Path(args.template).stem}-k{args.shots}-s{seed}"
    aug = parse_augmentations(DEFAULT_AUGMENT)
    kshot = augment_samples(sample_k_shot(splits.train, args.shots, seed), aug, copies=1, seed=seed)
    val = sample_k_shot(splits.valid, 128, 1234)
    test = _test_subset(splits, args.test_stride, args.limit)
    epochs = args.kshot_epochs or epoch_budget(aug, 1, shots=args.shots)
    lora = LoraSettings()
    model, tok = load_base_model(args.base_model)
    tpl = load_template(args.template)
    text_tpl = load_template(args.text_template)
    stages = []
    if args.order == "text":
        from llmrec.model import add_lora

        peft = add_lora(model, lora, seed=seed)
        scorer = PointwiseScorer(peft, tok, text_tpl, dtype="float32")
        from llmrec.train import train_lora

        tr, va = scorer.encode_samples(kshot, rec.catalog), scorer.encode_samples(val, rec.catalog)
        res = train_lora(peft, tok, scorer.verbalizer, tr.input_ids, tr.labels.tolist(),
                         _settings(work / "kshot", epochs, seed, args.lr, True), lora, va.input_ids, va.labels.tolist())
        scorer.model = res.model
        stages.append({"stage": "k-shot text (LoRA)", "train_seconds": res.train_seconds, "best_val_auc": res.best_val_auc,
                       "epochs_run": res.epochs_run, "mean_prompt_tokens": float(np.mean([len(x) for x in tr.input_ids]))})
    else:
        peft, slots = attach(model, collab, lora, seed=seed)
        slots.pair_form = args.pair_form
        scorer = CollabScorer(peft, tok, tpl, slots, dtype="float32")
        if args.order == "two-stage":
            seqs = implicit_sequences(rec.interactions, collab.excluded)
            al = alignment_samples(collab, seqs, args.align_n, seed=0, negatives=args.align_neg)
            st = tune_stage(peft, scorer, al, [], rec.catalog, _settings(work / "align", args.align_epochs, 0, args.lr, False), lora)
            stages.append({"stage": f"alignment ({len(al)} implicit prompts, LoRA + projector)", **st.record})
            peft = st.model
        if args.order == "collm":
            text_scorer = PointwiseScorer(peft, tok, text_tpl, dtype="float32")
            st = tune_stage(peft, text_scorer, kshot, val, rec.catalog, _settings(work / "kshot-text", epochs, seed, args.lr, True),
                            lora, train_projector=False)
            stages.append({"stage": "k-shot text (LoRA)", **st.record})
            peft = st.model
            st = tune_stage(peft, scorer, kshot, val, rec.catalog, _settings(work / "kshot-proj", epochs, seed, args.lr, True),
                            lora, train_lora_params=False)
            stages.append({"stage": "k-shot tokens (projector only)", **st.record})
        else:
            st = tune_stage(peft, scorer, kshot, val, rec.catalog, _settings(work / "kshot", epochs, seed, args.lr, True), lora)
            stages.append({"stage": "k-shot tokens (LoRA + projector)", **st.record})
        scorer.model = st.model
    scorer.model = scorer.model.merge_and_unload() if hasattr(scorer.model, "merge_and_unload") else scorer.model
    scorer.model.eval()
    P = scorer.encode_samples(test, rec.catalog)
    t0 = time.perf_counter()
    with torch.no_grad():
        p = scorer.score(P)
    score_s = time.perf_counter() - t0
    users = [s.user_id for s in test]
    prod = like_rate_product(p, test)
    tname = args.template if args.order != "text" else args.text_template
    from llmrec.prompts.collab_syntax import source_places_pairs

    if args.order != "text" and source_places_pairs(tpl.source):
        tname = f"{tname} ({args.pair_form})"  # the interaction row form is part of the recipe
    return {"order": args.order, "template": tname, "pair_form": args.pair_form if "(" in tname else None,
            "shots": args.shots, "seed": seed, "n_test": len(test), "test_stride": args.test_stride,
            "kshot_epochs": epochs, "align_n": args.align_n if args.order == "two-stage" else 0, "auc": auc(P.labels, p),
            "uauc": uauc(users, P.labels, p)["uauc"], "like_product_auc": auc(P.labels, prod),
            "like_product_uauc": uauc(users, P.labels, prod)["uauc"],
            "test_prompt_tokens": float(np.mean([len(x) for x in P.input_ids])),
            "train_seconds": float(sum(s.get("train_seconds", 0) for s in stages)), "score_seconds": score_s,
            "stages": stages, "test_scores": p.tolist(), "threads": torch.get_num_threads()}


def _test_subset(splits, stride: int, limit: int = 0):
    test = splits.test[::stride]
    return test[:limit] if limit else test


def restrict(run: dict, splits, stride: int) -> dict:
    """A full-test run's metrics on the every-``stride``-th subset, recomputed from its saved scores."""
    from llmrec.metrics import auc, uauc
    from llmrec.recipe import like_rate_product

    if run.get("test_stride", 1) == stride or run["n_test"] != len(splits.test) or stride == 1:
        return run
    test = splits.test[::stride]
    p = np.asarray(run["test_scores"])[::stride]
    y = np.array([s.label for s in test])
    users = [s.user_id for s in test]
    prod = like_rate_product(p, test)
    scale = len(test) / run["n_test"]
    return {**run, "n_test": len(test), "test_stride": stride, "auc": auc(y, p), "uauc": uauc(users, y, p)["uauc"],
            "like_product_auc": auc(y, prod), "like_product_uauc": uauc(users, y, prod)["uauc"],
            "score_seconds": run["score_seconds"] * scale}


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    if not sd > 1e-12 * max(1.0, float(np.abs(x).max())):  # float rounding leaves ~1e-17 on a constant
        raise ValueError("a score that is constant over the test set cannot be z-scored")
    return (x - x.mean()) / sd


def probe_fusion(p_yes: np.ndarray, samples, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The no-LM cosine probe x like-rate, and the same with the LM's score added, as log-odds (nothing fitted).

    ``base = logit(r) + z(cos) * sd(logit r)`` (eval/collab_probe.py's z-sum; r the Laplace-smoothed like-rate of
    the sample's history) and ``base + z(logit p_yes) * sd(logit r)``: each expert weighted like the like-rate.
    z-scores use the scored set's own mean and standard deviation (no labels).

    Args:
        p_yes: (N,) the LM's P(Yes) per sample. samples: N TALLRec samples. cos: (N,) the liked-disliked cosine
            probe (``collab_probe.probe_features(...)["cos"]``).

    Returns:
        ``(base, fused)``: two (N,) float64 arrays.

    Raises:
        ValueError: lengths differ, or a score is constant.
    """
    p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-6, 1 - 1e-6)
    if not (p.shape == (len(samples),) == np.shape(cos)):
        raise ValueError(f"p_yes {p.shape}, cos {np.shape(cos)} and {len(samples)} samples must match")
    base, scale = _probe_base(samples, cos)
    return base, base + _z(np.log(p / (1 - p))) * scale


def _probe_base(samples, cos) -> tuple[np.ndarray, float]:
    """``(logit(r) + z(cos) * sd(logit r), sd(logit r))`` (see :func:`probe_fusion`;
    :func:`llmrec.recipe.probe_x_like_rate`)."""
    from llmrec.recipe import like_rate_product, probe_x_like_rate

    return probe_x_like_rate(samples, cos), float(like_rate_product(np.full(len(samples), 0.5), samples).std())


def probe_table(runs: list[dict], splits, collab_dir: Path) -> str:
    """Markdown rows: the no-LM cosine probe x like-rate, and each (order, template) group's LM added to it."""
    from collections import defaultdict

    from collab_probe import probe_features
    from llmrec.collab.data import CollabModel
    from llmrec.metrics import auc, uauc

    test = splits.test
    y, users = np.array([s.label for s in test]), [s.user_id for s in test]
    cos = probe_features(CollabModel.load(collab_dir), test)["cos"]
    groups = defaultdict(list)
    for r in runs:
        if r["n_test"] == len(test):
            groups[(r["order"], r["template"], r["shots"])].append(r)
    if not groups:
        return "(no run on the full test set: nothing to fuse)"
    base, _ = _probe_base(test, cos)
    lines = ["| score | seeds | AUC | UAUC |", "|---|---|---|---|",
             f"| (no LM) cosine probe x like-rate | - | {auc(y, base):.4f} | {uauc(users, y, base)['uauc']:.4f} |"]
    for (o, t, k), rs in sorted(groups.items(), key=str):
        a, u = [], []
        for r in rs:
            _, fused = probe_fusion(np.asarray(r["test_scores"]), test, cos)
            a.append(auc(y, fused))
            u.append(uauc(users, y, fused)["uauc"])
        sd = lambda xs: f" ± {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else ""
        lines.append(f"| {o} {t} k={k} + probe x like-rate | {','.join(str(r['seed']) for r in rs)} | "
                     f"{np.mean(a):.4f}{sd(a)} | {np.mean(u):.4f}{sd(u)} |")
    return "\n".join(lines)


def format_table(runs: list[dict]) -> str:
    from collections import defaultdict

    groups = defaultdict(list)
    for r in runs:
        groups[(r["order"], r["template"], r["shots"], r["n_test"], r.get("kshot_epochs"))].append(r)

    def ms(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{np.mean(xs):.4f}" + (f" ± {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else "")

    rows = ["| order | template | k | k-shot epochs | seeds | test n | AUC | UAUC | × like-rate AUC | × like-rate UAUC | "
            "tokens / test prompt | train s | test scoring s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (o, t, k, n, e), rs in sorted(groups.items(), key=str):
        rows.append(f"| {o} | {t} | {k} | {e} | {','.join(str(r['seed']) for r in rs)} | {n} | {ms([r['auc'] for r in rs])} | "
                    f"{ms([r['uauc'] for r in rs])} | {ms([r['like_product_auc'] for r in rs])} | "
                    f"{ms([r['like_product_uauc'] for r in rs])} | {np.mean([r['test_prompt_tokens'] for r in rs]):.1f} | "
                    f"{np.mean([r['train_seconds'] for r in rs]):.0f} | {np.mean([r['score_seconds'] for r in rs]):.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        from llmrec.metrics import auc, uauc
        from llmrec.recipe import like_rate_scores, load_tallrec

        runs = []
        for pat in args.table:
            for f in sorted(glob.glob(pat)):
                runs += json.loads(Path(f).read_text())["runs"]
        _, splits = load_tallrec()
        runs = [restrict(r, splits, args.test_stride) for r in runs]
        test = _test_subset(splits, args.test_stride)
        y, lr = np.array([s.label for s in test]), like_rate_scores(test)
        print(f"like-rate on the same {len(test)} test samples: AUC {auc(y, lr):.4f}, UAUC "
              f"{uauc([s.user_id for s in test], y, lr)['uauc']:.4f}")
        print(format_table(runs))
        if args.with_probe:
            print("\nThe LM added to the no-LM cosine probe x like-rate (z-sum, nothing fitted; collaborative model "
                  f"{args.collab}):")
            print(probe_table(runs, splits, args.collab))
        return 0
    import torch

    from llmrec._atomic import write_json_atomic
    from llmrec.collab.data import CollabModel
    from llmrec.metrics import auc, uauc
    from llmrec.recipe import like_rate_scores, load_tallrec

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or Path(f"results/collab/{args.order}-{Path(args.template).stem}-k{args.shots}.json")
    args.work_dir = args.work_dir or args.out.with_suffix(".work")
    rec, splits = load_tallrec()
    collab = CollabModel.load(args.collab) if args.order != "text" else None
    test = _test_subset(splits, args.test_stride, args.limit)
    y = np.array([s.label for s in test])
    lr = like_rate_scores(test)
    out = {"config": {k: str(v) for k, v in vars(args).items()}, "collab_sha256": collab.sha256 if collab else None,
           "like_rate_auc": auc(y, lr), "like_rate_uauc": uauc([s.user_id for s in test], y, lr)["uauc"], "runs": []}
    if args.out.is_file():  # resume: keep finished seeds
        out["runs"] = [r for r in json.loads(args.out.read_text()).get("runs", []) if r["n_test"] == len(test)
                       and r.get("test_stride", 1) == args.test_stride]
    done = {r["seed"] for r in out["runs"]}
    for seed in args.seeds:
        if seed in done:
            continue
        r = run_one(args, seed, rec, splits, collab)
        out["runs"].append(r)
        write_json_atomic(args.out, out)
        print(f"{r['order']} {r['template']} k={r['shots']} seed {seed}: AUC {r['auc']:.4f} UAUC {r['uauc']:.4f} "
              f"x like-rate {r['like_product_auc']:.4f} / {r['like_product_uauc']:.4f}; {r['test_prompt_tokens']:.1f} "
              f"tokens/prompt, train {r['train_seconds']:.0f} s, scoring {r['score_seconds']:.0f} s", flush=True)
    print(f"like-rate: AUC {out['like_rate_auc']:.4f}, UAUC {out['like_rate_uauc']:.4f}")
    print(format_table(out["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
