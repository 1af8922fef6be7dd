"""Reranking cost of the prompt forms, side by side: text titles vs collaborative tokens vs title + token.

    python eval/bench_collab_rerank.py                      # 50 ML-100K users x 20 candidates, 2 rounds
    python eval/bench_collab_rerank.py --users 20 --threads 1

Same users, same candidates, same model weights and process; the three scorers alternate each round (so they
see the same background load) and the best round is reported:

* ``text``: :class:`llmrec.rerank.pointwise.PointwiseRerankScorer` with ``rerank-pointwise`` (titles, prefix
  shared across a user's candidates), the text-only reranker;
* ``tokens``: :class:`llmrec.collab.rerank.CollabRerankScorer` with ``rerank-pointwise-tokens``;
* ``hybrid``: the same with ``rerank-pointwise-hybrid`` (title + token).

Users are leave-one-out ML-100K users (5-core), history = their last ``--history`` training items, candidates =
``--candidates`` random unseen items (speed does not depend on which). The collaborative model is a SASRec fitted
for ``--sasrec-epochs`` (1) on the training part and the projector is untrained: only cost is measured here,
accuracy is ``eval/rerank_eval.py --methods collab-tokens``. Prints a table: tokens per prompt (full prompt;
one position per collaborative token), shared-prefix and per-candidate suffix tokens, candidates/s, and the
speed-up over ``text``; with the machine (CPU, cores, threads, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from llmrec import precision


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-model", default="smollm2-135m-instruct")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sasrec-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    for name in ("users", "candidates", "history", "rounds", "sasrec_epochs"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.threads:
        torch.set_num_threads(a.threads)

    from llmrec.collab.data import collab_from_retriever
    from llmrec.collab.rerank import CollabRerankScorer
    from llmrec.collab.tokens import SlotTable, install, new_projector
    from llmrec.data.loo import load_loo_data
    from llmrec.model import load_base_model
    from llmrec.rerank.pointwise import PointwiseRerankScorer
    from llmrec.retrieval import SASRec


    rec, d = load_loo_data(None, 5)
    split = d.split
    sas = SASRec(epochs=a.sasrec_epochs, seed=0).fit(split.train, split.n_items, log=None)
    collab = collab_from_retriever(sas, d.item_ids)
    g = np.random.default_rng(0)
    users = g.choice(split.n_users, size=min(a.users, split.n_users), replace=False)
    ids = collab.catalog_items
    lists = []
    for u in users:
        h = [ids[j] for j in split.train[u][-a.history:]]
        unseen = np.setdiff1d(np.arange(split.n_items), split.train[u])
        lists.append((h, [ids[j] for j in g.choice(unseen, size=a.candidates, replace=False)]))
    title = lambda i: rec.catalog.title(i) if i in rec.catalog else f"item {i}"  # noqa: E731

    model, tok = load_base_model(a.base_model)
    install(model, new_projector(model, collab, seed=0))
    from llmrec.collab.tokens import find_collab_embedding

    slots = SlotTable(collab, find_collab_embedding(model))
    text = PointwiseRerankScorer(model, tok, "rerank-pointwise", max_history=a.history, dtype=a.dtype)
    scorers = {"text": (text, lambda l: [([title(i) for i in h], [title(i) for i in c]) for h, c in l]),
               "tokens": (CollabRerankScorer(model, tok, slots, title, "rerank-pointwise-tokens",
                                             max_history=a.history, dtype=a.dtype), lambda l: l),
               "hybrid": (CollabRerankScorer(model, tok, slots, title, "rerank-pointwise-hybrid",
                                             max_history=a.history, dtype=a.dtype), lambda l: l)}
    from llmrec.scoring.prefix import common_prefix_length

    rows = {}
    for name, (sc, conv) in scorers.items():
        h, c = conv(lists[:1])[0]
        enc = sc.encode_many(h, c) if hasattr(sc, "encode_many") else [sc.encode(h, x) for x in c]
        cut = common_prefix_length(enc)
        rows[name] = {"tokens_per_prompt": float(np.mean([len(x) for x in enc])), "prefix_tokens": cut,
                      "suffix_tokens": float(np.mean([len(x) - cut for x in enc])), "seconds": []}
        sc.score_lists(conv(lists[:2]))  # warm-up
    machine = precision.machine()
    machine["loadavg_start"] = machine.pop("loadavg")
    for r in range(a.rounds):
        for name, (sc, conv) in scorers.items():
            t0 = time.perf_counter()
            sc.score_lists(conv(lists))
            rows[name]["seconds"].append(time.perf_counter() - t0)
            print(f"round {r}: {name} {rows[name]['seconds'][-1]:.1f} s", flush=True)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    n = len(lists) * a.candidates
    best = {k: min(v["seconds"]) for k, v in rows.items()}
    print(f"\n{len(lists)} users x {a.candidates} candidates, history {a.history}, {a.base_model}, dtype {a.dtype}; "
          f"{machine['cpu']}, {machine['cores']} cores, torch threads {machine['torch_threads']}, load average "
          f"{machine['loadavg_start'][0]} -> {machine['loadavg_end'][0]}; best of {a.rounds} alternating rounds\n")
    print("| prompt | template | tokens per prompt | shared prefix | per-candidate suffix | candidates/s | speed-up vs text |")
    print("|---|---|---|---|---|---|---|")
    for name, (sc, _) in scorers.items():
        r = rows[name]
        r["candidates_per_s"] = n / best[name]
        r["speedup_vs_text"] = best["text"] / best[name]
        print(f"| {name} | {sc.template.name} | {r['tokens_per_prompt']:.1f} | {r['prefix_tokens']} | "
              f"{r['suffix_tokens']:.1f} | {r['candidates_per_s']:.1f} | {r['speedup_vs_text']:.2f}x |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "machine": machine, "rows": rows},
                                    indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
