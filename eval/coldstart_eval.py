"""Cold-start items: can items that nobody interacted with still be retrieved?

    python eval/coldstart_eval.py --out results/coldstart           # ML-100K, 10% of items held out

Protocol: ML-100K 5-core, leave-one-out as in retrieval_eval.py. A seeded random ``--cold-fraction`` of
the items is made pseudo-cold: every training interaction with them is removed (SASRec never sees them;
validation/test targets are kept). SASRec is fitted on what remains (early stopping on validation
NDCG@10). Rows (test users, full catalogue, seen items excluded, FAISS flat inner-product index):

* SASRec, cold rows as trained - what an index of SASRec vectors gives (cold rows are never targets);
* SASRec + map - cold rows replaced by :class:`llmrec.retrieval.coldstart.TextToCF` predictions (ridge
  fitted on the warm items, Gantner et al. 2010) from (a) the base LM's text embedding of
  "title (year) | genres", (b) the same plus genre and year columns; rows either left at the ridge's
  norm or rescaled to ``s x`` the warm items' median norm, whichever is best on validation NDCG@10 (all
  validation users);
* text only - user vector = mean text embedding of the last 10 history items, cosine to every item.

Metrics over all test users and over those whose test item is pseudo-cold. Writes ``metrics.json`` and
``metrics.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


from llmrec.metrics import ranking_metrics
from llmrec.data.loo import load_loo_data
from llmrec.retrieval import SASRec, VectorIndex, embed_texts
from llmrec.retrieval.coldstart import TextToCF, item_features, item_text

KEYS = ["NDCG@10", "Recall@10", "Recall@20"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: embedded ML-100K)")
    p.add_argument("--out", type=Path, default=Path("results/coldstart"))
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--cold-fraction", type=float, default=0.1)
    p.add_argument("--base-model", default="smollm2-135m-instruct", help="LM for the item text embeddings")
    p.add_argument("--sasrec-epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not 0 < a.cold_fraction < 1:
        p.error(f"--cold-fraction must be in (0, 1), got {a.cold_fraction}")

    from llmrec.model import load_base_model

    t_all = time.time()
    try:
        rec, d = load_loo_data(a.data, a.kcore)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or an unreadable file: one line
        p.error(f"--data {a.data}: {e}")
    split, n = d.split, d.split.n_items
    rng = np.random.default_rng(a.seed)
    cold = np.sort(rng.choice(n, max(1, int(round(a.cold_fraction * n))), replace=False))
    is_cold = np.zeros(n, bool)
    is_cold[cold] = True
    train = [s[~is_cold[s]] for s in split.train]
    _, vh, vt = split.valid_inputs()
    users, th, tt = split.test_inputs()
    print(f"{split.n_users} users, {n} items, {len(cold)} pseudo-cold; test users with a cold test item: "
          f"{int(is_cold[tt].sum())}", flush=True)

    t = time.time()
    vkeep = np.array([len(h[~is_cold[h]]) > 0 for h in vh])
    v_warm = [h[~is_cold[h]] for h, k in zip(vh, vkeep) if k]  # what SASRec can read of each history
    v_tgt = vt[vkeep]
    sas = SASRec(epochs=a.sasrec_epochs, seed=a.seed).fit(train, n, v_warm, v_tgt,
                                                           log=lambda s: print("  sasrec", s, flush=True))
    sasrec_s = time.time() - t

    t = time.time()
    model, tok = load_base_model(a.base_model)
    texts = [item_text(rec.catalog, i) for i in d.item_ids]
    T = embed_texts(texts, model, tok)
    embed_s = time.time() - t
    V = sas.item_vectors()
    warm_norm = float(np.median(np.linalg.norm(V[~is_cold], axis=1)))
    v_uv = sas.user_vectors(v_warm)

    def valid_ndcg(W):
        index = VectorIndex("flat", use_gpu=False).build(W)
        ids, _ = index.search(v_uv, 10, exclude=[h for h, k in zip(vh, vkeep) if k])
        return ranking_metrics(ids, v_tgt, ndcg_ks=(10,), recall_ks=(), mrr_ks=())["NDCG@10"]

    feats = {"LM text embedding": T, "LM text embedding + genres + year": item_features(rec.catalog, d.item_ids, T)}
    mapped, map_info = {}, {}
    for fname, F in feats.items():
        mapper = TextToCF().fit(F[~is_cold], V[~is_cold])

        def with_scale(sc, mapper=mapper, F=F):
            W = V.copy()
            W[cold] = mapper.predict(F[cold], None if sc is None else sc * warm_norm)
            return W

        curve = {str(sc): valid_ndcg(with_scale(sc)) for sc in (None, 0.5, 0.75, 1.0, 1.25, 1.5)}
        best = max(curve, key=curve.get)
        mapped[fname] = with_scale(None if best == "None" else float(best))
        map_info[fname] = {"ridge_l2": mapper.l2, "norm_scale": best, "valid_ndcg10_by_scale": curve}

    # the test histories may hold pseudo-cold items (watched before): SASRec sees only the warm ones
    keep = np.array([len(h[~is_cold[h]]) > 0 for h in th])
    uv = sas.user_vectors([h[~is_cold[h]] for h, k in zip(th, keep) if k])
    hist = [h for h, k in zip(th, keep) if k]
    tgt = tt[keep]
    cold_tgt = is_cold[tgt]

    def run(item_vecs, queries):
        index = VectorIndex("flat", use_gpu=False).build(np.ascontiguousarray(item_vecs, np.float32))
        ids, _ = index.search(np.ascontiguousarray(queries, np.float32), 20, exclude=hist)
        return {"all": ranking_metrics(ids, tgt, ndcg_ks=(10,), recall_ks=(10, 20), mrr_ks=()),
                "cold targets": ranking_metrics(ids[cold_tgt], tgt[cold_tgt], ndcg_ks=(10,), recall_ks=(10, 20),
                                                mrr_ks=()),
                "share of cold items in top-20": float(np.isin(ids, cold).mean())}

    tq = np.stack([T[h[-10:]].mean(0) for h in hist])
    tq /= np.maximum(np.linalg.norm(tq, axis=1, keepdims=True), 1e-12)
    results = {"SASRec, cold rows as trained": run(V, uv),
               **{f"SASRec + map from {f} (TextToCF)": run(W, uv) for f, W in mapped.items()},
               "text only (mean of history text embeddings)": run(T, tq)}
    info = {"n_cold": int(len(cold)), "test_users": int(len(tgt)), "cold_test_targets": int(cold_tgt.sum()),
            "maps": map_info, "warm_median_norm": warm_norm, "sasrec_s": round(sasrec_s, 1), "embed_s": round(embed_s, 1),
            "text_dim": int(T.shape[1]), "total_s": round(time.time() - t_all, 1)}
    lines = [f"{rec.format} {a.kcore}-core leave-one-out, {n} items of which {len(cold)} pseudo-cold "
             f"(seed {a.seed}), test users {len(tgt)} ({int(cold_tgt.sum())} with a cold test item), base "
             f"{a.base_model}", "",
             "| model | " + " | ".join(f"{k} (all)" for k in KEYS) + " | " +
             " | ".join(f"{k} (cold targets)" for k in KEYS) + " | cold share of top-20 |",
             "|---|" + "---|" * (2 * len(KEYS) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['all'][k]:.4f}" for k in KEYS) + " | " +
                     " | ".join(f"{r['cold targets'][k]:.4f}" for k in KEYS) +
                     f" | {r['share of cold items in top-20']:.3f} |")
    md = "\n".join(lines)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "metrics.md").write_text(md + "\n")
    (a.out / "metrics.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                     "results": results, "info": info}, indent=2))
    print(json.dumps(info))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
