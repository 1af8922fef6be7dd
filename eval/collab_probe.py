#!/usr/bin/env python
"""Do the collaborative vectors carry per-user signal? No-LM probes on the TALLRec movie test set.

    python eval/collab_probe.py --out results/collab_probe.json [--model-dir results/collab/model]

The collaborative model (:func:`llmrec.collab.data.load_or_fit_collab`: SASRec with the default recipe's settings) is fitted on
implicit interactions only (no rating value) of every user *without* a window in the TALLRec valid or test
split; cold items get the cold-start vector. Then each test sample is scored without any language model:

* like-rate: fraction of liked history items (UAUC 0.5 by construction: constant within a user's windows);
* liked-disliked cosine: ``cos(t, mean liked) - cos(t, mean disliked)`` of the item vectors (the history's
  ratings only split the prompt's history, as the prompt does);
* SASRec user . item: inner product of the SASRec user vector of the 10 history items (order only) and t;
* the cosine probe x like-rate: ``logit(r) + z(probe) * std(logit r)`` (a z-scored sum, nothing fitted);
* logistic regression on [logit r, probe, SASRec score] fitted on k labelled train samples per seed.

Prints one table with AUC and UAUC (``llmrec.metrics.uauc``); writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/collab_probe.json"))
    p.add_argument("--model-dir", type=Path, default=Path("results/collab/model"),
                   help="collaborative model folder: loaded if present, else fitted and saved there")
    p.add_argument("--data", default=None)
    p.add_argument("--shots", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--max-len", type=int, default=None, help="SASRec history length of a fit (default: the default "
                   "recipe's, llmrec.collab.data.DEFAULT_COLLAB_CONFIG: 50)")
    p.add_argument("--epochs", type=int, default=None, help="SASRec epoch cap of a fit (default: the default "
                   "recipe's, 30)")
    return p.parse_args(argv)


def _cos(a, b):
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def probe_features(cm, samples) -> dict[str, np.ndarray]:
    """``{"cos": (n,), "sasrec": (n,)}`` float64 no-LM collaborative scores for samples (see module doc)."""
    T = cm.item_matrix([s.target for s in samples])
    liked = np.zeros_like(T)
    disl = np.zeros_like(T)
    for n, s in enumerate(samples):
        L = [i for i, r in zip(s.history, s.history_ratings) if r > 3]
        D = [i for i, r in zip(s.history, s.history_ratings) if r <= 3]
        if L:
            liked[n] = cm.item_matrix(L).mean(0)
        if D:
            disl[n] = cm.item_matrix(D).mean(0)
    cos = _cos(T, liked) - _cos(T, disl)
    U = cm.user_vectors([s.history for s in samples])
    return {"cos": cos.astype(np.float64), "sasrec": (U * T).sum(-1).astype(np.float64)}


def main(argv=None) -> int:
    args = parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    from llmrec._atomic import write_json_atomic
    from dataclasses import replace

    from llmrec.collab.data import DEFAULT_COLLAB_CONFIG, excluded_users, load_or_fit_collab
    from llmrec.metrics import auc, uauc
    from llmrec.recipe import like_rate_scores, load_tallrec
    from llmrec.samples.kshot import sample_k_shot

    rec, splits = load_tallrec(args.data)
    t0 = time.perf_counter()
    over = {k: v for k, v in (("max_len", args.max_len), ("epochs", args.epochs)) if v is not None}
    cm, fitted = load_or_fit_collab(args.model_dir, rec, splits, replace(DEFAULT_COLLAB_CONFIG, **over),
                                    log=lambda m: print("sasrec", m, file=sys.stderr, flush=True))
    fit_s = time.perf_counter() - t0 if fitted else None
    ex = excluded_users(splits)
    assert set(cm.excluded) == ex
    test = splits.test
    y = np.array([s.label for s in test])
    users = [s.user_id for s in test]
    r = like_rate_scores(test)
    n = np.array([len(s.history) for s in test], float)
    rs = (r * n + 1) / (n + 2)
    lr = np.log(rs / (1 - rs))
    f = probe_features(cm, test)
    z = (f["cos"] - f["cos"].mean()) / f["cos"].std()
    rows = {"like-rate (no model)": r, "liked-disliked cosine of item vectors": f["cos"],
            "SASRec user . item (history order only)": f["sasrec"],
            "cosine probe x like-rate (z-sum, no fit)": lr + z * lr.std()}
    res = {name: {"auc": auc(y, s), "uauc": uauc(users, y, s)["uauc"]} for name, s in rows.items()}
    fits = []
    for seed in args.seeds:
        tr = sample_k_shot(splits.train, args.shots, seed)
        ftr = probe_features(cm, tr)
        rtr = like_rate_scores(tr)
        ntr = np.array([len(s.history) for s in tr], float)
        rstr = (rtr * ntr + 1) / (ntr + 2)
        Xtr = np.stack([np.log(rstr / (1 - rstr)), ftr["cos"], ftr["sasrec"]], 1)
        Xte = np.stack([lr, f["cos"], f["sasrec"]], 1)
        m = LogisticRegression(C=1.0).fit(Xtr, [s.label for s in tr])
        s = m.decision_function(Xte)
        fits.append({"seed": seed, "auc": auc(y, s), "uauc": uauc(users, y, s)["uauc"], "coef": m.coef_[0].tolist()})
    name = f"logistic [logit r, cosine, SASRec] on {args.shots} train samples"
    res[name] = {"auc": float(np.mean([x["auc"] for x in fits])), "auc_std": float(np.std([x["auc"] for x in fits], ddof=1)),
                 "uauc": float(np.mean([x["uauc"] for x in fits])),
                 "uauc_std": float(np.std([x["uauc"] for x in fits], ddof=1)), "seeds": args.seeds}
    out = {"n_test": len(test), "uauc_users": uauc(users, y, r)["n_users"], "excluded_users": len(ex),
           "sasrec_users": len({u for u in rec.interactions.frame["user_id"].astype(str)} - ex),
           "warm_items": int(cm.warm.sum()), "catalog_items": len(cm.catalog_items),
           "test_targets_cold": int(sum(not cm.warm[cm._row[s.target]] for s in test)),
           "collab_sha256": cm.sha256, "fit_seconds": fit_s, "rows": res, "logistic_runs": fits}
    write_json_atomic(args.out, out)
    print(f"collaborative model: SASRec on {out['sasrec_users']} users (excluded {len(ex)} TALLRec valid/test users), "
          f"{out['warm_items']} warm / {out['catalog_items']} items; {out['test_targets_cold']} of {len(test)} test "
          f"targets cold; UAUC over {out['uauc_users']} users with both labels")
    print("| score (no language model) | test AUC | test UAUC |\n|---|---|---|")
    for name, v in res.items():
        a = f"{v['auc']:.4f}" + (f" ± {v['auc_std']:.4f}" if "auc_std" in v else "")
        u = f"{v['uauc']:.4f}" + (f" ± {v['uauc_std']:.4f}" if "uauc_std" in v else "")
        print(f"| {name} | {a} | {u} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
