"""Re-tune the LM/retriever blend weight of a finished ``rerank_eval.py`` run on all validation users.

    python eval/rerank_blend.py --run results/rerank --retriever-dir results/rerank-retriever

``rerank_eval.py`` saves the tuned adapter (``adapter-listwise``), the test scores (``scores-listwise.npz``)
and, with ``--retriever-dir``, the retriever. This script scores every validation user's candidate list
with that adapter (shuffled presentation order, seeded), picks the blend weight with
:func:`llmrec.rerank.blend.tune_alpha` under both rules (``max``: the plain maximum; ``one-se``: the
one-standard-error rule, the default) and applies each to the saved test scores. Prints a JSON report
and writes ``blend.json`` into ``--run``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmrec.precision import HELP as DTYPE_HELP, NAMES as PRECISIONS


from llmrec.adapter import load_adapter
from llmrec.metrics import ranking_metrics
from llmrec.rerank import ListwiseScorer, blend_scores, rank_by, tune_alpha
from llmrec.data.loo import load_loo_data
from llmrec.rerank.lm import score_shuffled
from llmrec.retrieval import VectorIndex, load_retriever


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="output folder of rerank_eval.py (listwise method)")
    p.add_argument("--retriever-dir", type=Path, required=True, help="the retriever that run used")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: embedded ML-100K)")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--history", type=int, default=10, help="history titles in the prompt (as in the run)")
    p.add_argument("--dtype", default="auto", choices=PRECISIONS, help=DTYPE_HELP)
    p.add_argument("--seed", type=int, default=12, help="seeds the presentation order of the validation lists")
    a = p.parse_args(argv)
    for f in (a.run / "adapter-listwise", a.run / "scores-listwise.npz", a.retriever_dir / "config.json"):
        if not f.exists():
            p.error(f"{f} not found (run eval/rerank_eval.py --methods listwise --retriever-dir ... first)")

    try:
        rec, d = load_loo_data(a.data, a.kcore)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or an unreadable file: one line
        p.error(f"--data {a.data}: {e}")
    split = d.split
    ret = load_retriever(a.retriever_dir)
    index = VectorIndex("flat").build(ret.item_vectors())
    title = lambda j: rec.catalog.title(d.item_ids[j])  # noqa: E731
    model, tok, tpl, _, _ = load_adapter(a.run / "adapter-listwise")
    scorer = ListwiseScorer(model, tok, tpl, max_history=a.history, dtype=a.dtype)

    users = split.eval_users()
    v_hist, v_tgt = [split.train[u] for u in users], split.valid[users]
    v_ids, v_sc = ret.query_index(v_hist, 20, index)
    v_lm = score_shuffled(scorer, v_hist, v_ids, a.seed, title, progress=True, desc="validation lists")

    z = np.load(a.run / "scores-listwise.npz")
    t_tgt = z["targets"] if "targets" in z else split.test[z["users"]]
    report = {"validation_users": int(len(users)),
              "valid_lm_only": ranking_metrics(rank_by(v_ids, v_lm), v_tgt, recall_ks=(10,)),
              "test_retriever": ranking_metrics(z["ids"], t_tgt, recall_ks=(10,))}
    for rule in ("max", "one-se"):
        alpha, curve = tune_alpha(v_ids, v_sc, v_lm, v_tgt, rule=rule)
        report[rule] = {"alpha": alpha, "valid_ndcg10": curve[alpha], "valid_curve": curve,
                        "test": ranking_metrics(rank_by(z["ids"], blend_scores(z["retriever"], z["lm"], alpha)), t_tgt,
                                                recall_ks=(10,))}
    (a.run / "blend.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
