"""Retrieval stage evaluation on MovieLens-100K (5-core, leave-one-out, full catalogue, seen excluded).

    python eval/retrieval_eval.py --out runs/retrieval --seeds 0,1,2      # embedded ML-100K
    python eval/retrieval_eval.py --data ~/ml-latest-small --out runs/retrieval-latest

Models: popularity, transitions (small grid tuned on validation NDCG@10), EASE (lambda tuned on
validation NDCG@10), SASRec (early-stopped on validation NDCG@10; retrieval through a FAISS flat
inner-product index), the previous default SASRec x transitions, and the default retriever Fusion =
SASRec x the tuned transitions x the tuned EASE (product of experts, both weights tuned on validation
NDCG@10; FAISS proposes 200 SASRec candidates, the fused score orders them). All are fitted on the training part only; validation input = training history,
test input = training history + validation item. Metrics over all evaluation users: NDCG@5/10,
Recall@5/10/20, MRR@10. With several ``--seeds`` the SASRec-based rows are fitted once per seed and the
table gives mean +- standard deviation over seeds (seed-to-seed spread is of the order of the
differences between fusions; per-seed values are in ``metrics.json``). Writes ``metrics.json`` and
``metrics.md`` into ``--out`` (and the fitted models of the first seed with ``--save-models``), prints
the markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np



from llmrec.metrics import ranking_metrics
from llmrec.retrieval import EASE, Fusion, SASRec, SASRecConfig, Popularity, Transitions, VectorIndex

KEYS = ["NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "Recall@20", "MRR@10"]


def evaluate(query, split) -> dict[str, dict[str, float]]:
    out = {}
    for part, (_, hist, tgt) in (("valid", split.valid_inputs()), ("test", split.test_inputs())):
        ids, _ = query(hist, 20)
        out[part] = ranking_metrics(ids, tgt)
    return out


def valid_ndcg10(model, split) -> float:
    _, hist, tgt = split.valid_inputs()
    ids, _ = model.query(hist, 10)
    return float(ranking_metrics(ids, tgt, ndcg_ks=(10,), recall_ks=(), mrr_ks=())["NDCG@10"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="dataset folder: GroupLens raw, RecBole atomic or MovieLens CSV (default: embedded ML-100K)")
    p.add_argument("--out", type=Path, default=Path("runs/retrieval"))
    p.add_argument("--seeds", default="0", help="comma list of SASRec seeds, e.g. 0,1,2")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=SASRecConfig.lr)
    p.add_argument("--dropout", type=float, default=SASRecConfig.dropout)
    p.add_argument("--blocks", type=int, default=SASRecConfig.n_blocks)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-models", action="store_true")
    a = p.parse_args(argv)
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: expected a comma list of integers, e.g. 0,1,2")
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= s < 2 ** 63 for s in seeds):
        p.error(f"--seeds {a.seeds!r}: expected distinct integers in [0, 2**63), e.g. 0,1,2")

    if a.kcore < 1:
        p.error(f"--kcore {a.kcore}: must be >= 1 (1 = no filter)")
    from llmrec.data.loo import load_loo_data

    if a.data is not None and not a.data.exists():
        p.error(f"--data {a.data}: no such file or folder")
    try:
        rec, d = load_loo_data(a.data, a.kcore)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or an unreadable file: one line
        p.error(f"--data {a.data}: {e}")
    split = d.split
    a.data = getattr(rec, "path", None) or a.data
    n_inter = sum(len(t) for t in split.train) + 2 * len(split.eval_users())
    print(f"data: {a.data} {a.kcore}-core users={split.n_users} items={split.n_items} interactions={n_inter}")
    results, info = {}, {}

    t = time.time()
    pop = Popularity().fit(split.train, split.n_items)
    results["popularity"] = evaluate(pop.query, split)
    info["popularity"] = {"fit_s": round(time.time() - t, 2)}

    t = time.time()
    grid = list(itertools.product([1, 3, 5], [0.5, 0.8], [3, 5], [0.5, 0.8], [0.0, 0.5]))
    best = max(((valid_ndcg10(Transitions(*g).fit(split.train, split.n_items), split), g) for g in grid))
    tr = Transitions(*best[1]).fit(split.train, split.n_items)
    results["transitions"] = evaluate(tr.query, split)
    info["transitions"] = {"params": dict(zip(["max_gap", "gap_decay", "n_last", "hist_decay", "row_norm"], best[1])),
                           "grid_size": len(grid), "fit_s": round(time.time() - t, 2)}

    t = time.time()
    lams = [25, 50, 100, 200, 500, 1000]
    best = max((valid_ndcg10(EASE(l).fit(split.train, split.n_items), split), l) for l in lams)
    ease = EASE(best[1]).fit(split.train, split.n_items)
    results["ease"] = evaluate(ease.query, split)
    info["ease"] = {"l2": best[1], "grid": lams, "fit_s": round(time.time() - t, 2)}

    _, vh, vt = split.valid_inputs()
    per_seed, saved = [], None
    for seed in seeds:
        t = time.time()
        sas = SASRec(epochs=a.epochs, lr=a.lr, dropout=a.dropout, n_blocks=a.blocks, seed=seed, threads=a.threads)
        sas.fit(split.train, split.n_items, vh, vt, log=lambda s: print(f"  sasrec[{seed}]", s, flush=True))
        index = VectorIndex("flat").build(sas.item_vectors())
        res, inf = {}, {}
        res["sasrec"] = evaluate(lambda h, k: sas.query_index(h, k, index), split)
        best_ep = max((r for r in sas.history if "valid_ndcg10" in r), key=lambda r: r["valid_ndcg10"])["epoch"]
        inf["sasrec"] = {"config": vars(sas.config) if hasattr(sas.config, "__dict__") else {}, "best_epoch": best_ep,
                         "epochs_run": sas.history[-1]["epoch"], "fit_s": round(time.time() - t, 1),
                         "index_device": index.device}
        t = time.time()
        fusion2 = Fusion.from_fitted(sas, tr)  # the two-expert fusion of earlier releases, for the record
        fusion2.tune_weight(vh, vt, log=lambda s: print(f"  fusion without EASE[{seed}]", s, flush=True))
        res["fusion (SASRec x transitions)"] = evaluate(lambda h, k: fusion2.query_index(h, k, index), split)
        fusion = Fusion.from_fitted(sas, tr, ease)
        fusion.tune_weight(vh, vt, log=lambda s: print(f"  fusion[{seed}]", s, flush=True))
        res["fusion (SASRec x transitions x EASE)"] = evaluate(lambda h, k: fusion.query_index(h, k, index), split)
        curve = lambda f: [[w, we, v] for (w, we), v in f.weight_curve.items()]  # noqa: E731
        inf["fusion"] = {"weight": fusion.weight, "ease_weight": fusion.ease_weight, "weight_curve": curve(fusion),
                         "pool": fusion.pool,
                         "without_ease": {"weight": fusion2.weight, "weight_curve": curve(fusion2)},
                         "tune_s": round(time.time() - t, 1)}
        per_seed.append({"seed": seed, "results": res, "info": inf})
        if saved is None:
            saved = (sas, fusion, index)
    spread = {}
    for name in per_seed[0]["results"]:
        results[name], spread[name] = {}, {}
        for part in ("valid", "test"):
            vals = {k: [r["results"][name][part][k] for r in per_seed] for k in KEYS}
            results[name][part] = {k: float(np.mean(v)) for k, v in vals.items()}
            spread[name][part] = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()}
    info.update(per_seed[0]["info"])

    a.out.mkdir(parents=True, exist_ok=True)
    if a.save_models:
        for name, m in (("popularity", pop), ("transitions", tr), ("ease", ease), ("sasrec", saved[0]),
                        ("fusion", saved[1])):
            m.save(a.out / "models" / name)
        saved[2].save(a.out / "models" / "sasrec_index")
    lines = [f"ML-100K {a.kcore}-core leave-one-out, {len(split.eval_users())} users, {split.n_items} items, "
             f"full catalogue, seen items excluded, SASRec seeds {seeds}"
             + (" (SASRec-based rows: mean +- sd over seeds)" if len(seeds) > 1 else ""), "",
             "| model | split | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for name, r in results.items():
        for part in ("valid", "test"):
            cell = lambda k: f"{r[part][k]:.4f}" + (f" +- {spread[name][part][k]:.4f}"  # noqa: E731
                                                     if len(seeds) > 1 and name in spread else "")
            lines.append(f"| {name} | {part} | " + " | ".join(cell(k) for k in KEYS) + " |")
    md = "\n".join(lines)
    (a.out / "metrics.md").write_text(md + "\n")
    (a.out / "metrics.json").write_text(json.dumps({"data": str(a.data), "seeds": seeds, "kcore": a.kcore,
                                                     "n_users": split.n_users, "n_items": split.n_items,
                                                     "results": results, "sd_over_seeds": spread,
                                                     "per_seed": per_seed, "info": info}, indent=2, default=str))
    print(json.dumps(info, indent=1, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
