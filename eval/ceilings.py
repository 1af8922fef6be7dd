#!/usr/bin/env python
"""How much is there to learn? Non-LM reference points for the TALLRec movie test set (AUC).

    python eval/ceilings.py                       # seconds, no model
    python eval/ceilings.py --probe smollm2-135m-instruct gemma3-270m   # + the LMs' item-quality prior

A TALLRec label (target rating > 3) depends on the user (how often they like what they watch: the
like-rate of the history) and on the item (some movies are liked by almost everyone). This script
measures both sides with no language model, to put the LM's few-shot AUC in context:

* like-rate: fraction of liked history items (no labels, no fitting);
* k-shot logistic regression on like-rate logit + target year + target genres, fitted on the same k
  samples per seed that the LM is tuned on (scikit-learn, C=1): a few-shot learner with item metadata;
* the same features fitted on all 8,000 train labels (more labels than the protocol allows);
* oracle item prior: each target's smoothed like fraction over all 8,000 train samples (other labels;
  not allowed by the protocol), alone and added to the like-rate logit: roughly the best a model that
  knew every movie's reception could do with this history signal.
* ``--probe``: zero-shot P(Yes) of "Is this a good, highly rated movie?" about the target title alone
  (``item-prior`` template), i.e. how much the base LM knows about the movies' reception; also combined
  with the like-rate, nothing fitted: the shipped product rule (``llmrec.recipe.like_rate_product``) and a
  z-scored sum of the two log-odds (a zero-shot probe's log-odds are not calibrated, so equal weights in
  the product can let either side dominate).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from llmrec.precision import HELP as DTYPE_HELP, NAMES as PRECISIONS


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.05, 0.95)
    return np.log(p / (1 - p))


def features(samples, catalog, genres: list[str]) -> np.ndarray:
    """(N, 2 + len(genres)) float64: smoothed like-rate logit, (year - 1990) / 10, target genre indicators."""
    rows = []
    for s in samples:
        liked = sum(r > s.like_threshold for r in s.history_ratings)
        rate = (liked + 0.5) / (len(s.history_ratings) + 1)
        year = catalog.year(s.target) or 1990
        g = set(catalog.genres(s.target))
        rows.append([_logit(np.array(rate)), (year - 1990) / 10] + [x in g for x in genres])
    return np.asarray(rows, dtype=np.float64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--probe", nargs="*", default=[], metavar="BASE_MODEL",
                   help="also score the item-prior probe zero-shot with these base models")
    p.add_argument("--dtype", default="auto", choices=PRECISIONS, help=DTYPE_HELP)
    a = p.parse_args(argv)
    from collections import defaultdict

    from sklearn.linear_model import LogisticRegression

    from llmrec.metrics import auc
    from llmrec.recipe import like_rate_product, like_rate_scores, load_tallrec
    from llmrec.rerank.blend import zscore
    from llmrec.samples.kshot import sample_k_shot

    rec, sp = load_tallrec()
    cat = rec.catalog
    y = np.array([s.label for s in sp.test])
    genres = sorted({g for s in sp.train + sp.test for g in cat.genres(s.target)})
    x_test = features(sp.test, cat, genres)
    rows = [("like-rate (no labels)", "-", f"{auc(y, like_rate_scores(sp.test)):.4f}")]
    for k in a.shots:
        res = []
        for seed in a.seeds:
            ks = sample_k_shot(sp.train, k, seed)
            yk = np.array([s.label for s in ks])
            if len(set(yk)) < 2:
                continue
            m = LogisticRegression(C=1.0, max_iter=1000).fit(features(ks, cat, genres), yk)
            res.append(auc(y, m.predict_proba(x_test)[:, 1]))
        rows.append((f"logistic regression, like-rate + year + genres, k-shot (seeds {len(res)})", str(k),
                     f"{np.mean(res):.4f} ± {np.std(res, ddof=1):.4f}" if len(res) > 1 else f"{res[0]:.4f}"))
    y_tr = np.array([s.label for s in sp.train])
    m = LogisticRegression(C=1.0, max_iter=1000).fit(features(sp.train, cat, genres), y_tr)
    rows.append(("logistic regression, same features, all train labels", str(len(sp.train)),
                 f"{auc(y, m.predict_proba(x_test)[:, 1]):.4f}"))
    by_item = defaultdict(list)
    for s in sp.train:
        by_item[s.target].append(s.label)
    mean = y_tr.mean()
    prior = np.array([(sum(by_item[s.target]) + 5 * mean) / (len(by_item[s.target]) + 5) for s in sp.test])
    rows.append(("oracle item prior (train labels of the target, smoothed)", str(len(sp.train)), f"{auc(y, prior):.4f}"))
    rows.append(("oracle item prior + like-rate (logit sum)", str(len(sp.train)),
                 f"{auc(y, _logit(prior) + _logit(like_rate_scores(sp.test))):.4f}"))
    like_logit = like_rate_product(np.full(len(sp.test), 0.5), sp.test)  # logit(0.5) = 0: the like-rate's log-odds
    cost = []  # (base model, parameters in millions, probe wall seconds, prompt tokens per second)
    for base in a.probe:
        from llmrec.model import load_base_model
        from llmrec.scoring.pointwise import PointwiseScorer
        from llmrec.prompts import load_template

        model, tok = load_base_model(base)
        sc = PointwiseScorer(model, tok, load_template("item-prior"), dtype=a.dtype)
        r = sc.evaluate(sc.encode_samples(sp.test, cat), progress=True, desc=f"item-prior probe {base}",
                        keep_scores=True)
        rows.append((f"LM item-prior probe, zero-shot, {base}", "0", f"{r['auc']:.4f}"))
        cost.append((base, sum(p.numel() for p in model.parameters()) / 1e6, r["seconds"], r["tokens_per_s"]))
        lp = like_rate_product(r["scores"], sp.test)  # the shipped LM x like-rate rule, equal weights
        rows.append((f"LM item-prior probe x like-rate (logit sum, nothing fitted), {base}", "0", f"{auc(y, lp):.4f}"))
        rows.append((f"LM item-prior probe + like-rate (z-scored log-odds sum, nothing fitted), {base}", "0",
                     f"{auc(y, zscore(lp - like_logit) + zscore(like_logit)):.4f}"))
    print("| reference point | labels used | test AUC |\n|---|---|---|")
    for name, k, v in rows:
        print(f"| {name} | {k} | {v} |")
    if cost:
        import torch

        print(f"\nprobe cost ({len(sp.test)} prompts, torch threads {torch.get_num_threads()}, dtype {a.dtype}):\n"
              "| base model | parameters (M) | wall s | prompt tokens/s |\n|---|---|---|---|")
        for base, m, sec, tps in cost:
            print(f"| {base} | {m:.0f} | {sec:.1f} | {tps:.0f} |")
    return 0



if __name__ == "__main__":
    sys.exit(main())
