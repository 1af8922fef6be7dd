"""Batch scoring of the 1000 TALLRec movie test prompts: naive transformers vs llmrec's scoring paths.

    python eval/bench_scoring.py                         # all methods on the 1000 prompts
    python eval/bench_scoring.py --limit 200 --naive-limit 32 --threads 1
    python eval/bench_scoring.py --methods encoded-bf16,shared-bf16

Prompts: :func:`llmrec.recipe.load_tallrec` (embedded MovieLens-100K, TALLRec's test split) rendered
with the ``tallrec`` template and tokenised by :meth:`llmrec.scoring.pointwise.PointwiseScorer.encode_samples`.

Methods (zero-shot base model, default SmolLM2-135M-Instruct):

* ``naive-fp32``: transformers ``model(input_ids, attention_mask).logits`` (full vocabulary at every
  position), batch 16 in input order, right padding; timed on the first ``--naive-limit`` prompts and
  extrapolated linearly to all prompts (the time column says so);
* ``encoded-fp32`` / ``encoded-bf16``: :func:`llmrec.scoring.score_encoded` (length-sorted token-budget
  batches, verbalizer rows of the head only), fp32 or bf16 autocast;
* ``shared-fp32`` / ``shared-bf16``: :func:`llmrec.scoring.prefix.score_shared_head` (the prompts'
  common token head -- Alpaca header + instruction -- computed once, the rest as prefix-shared batches).

Columns: seconds (for all prompts; extrapolated for naive), prompt tokens/s, AUC, max |dP| against
``encoded-fp32`` (or, if that is not run, the first fp32 method run), on the prompts each method scored.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


from naive_reference import naive_scores

ALL = ["naive-fp32", "encoded-fp32", "encoded-bf16", "shared-fp32", "shared-bf16"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--limit", type=int, default=None, help="score only the first N test prompts")
    ap.add_argument("--naive-limit", type=int, default=64,
                    help="time the naive baseline on the first N prompts and extrapolate (0 = all)")
    ap.add_argument("--naive-batch", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from llmrec.metrics import auc
    from llmrec.model import load_base_model
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.recipe import load_tallrec
    from llmrec.scoring.prefix import common_prefix_length, score_shared_head
    from llmrec.prompts import load_template
    from llmrec.scoring import score_encoded

    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in ALL]
    if bad:
        ap.error(f"unknown methods {bad}; known {ALL}")
    model, tok = load_base_model(args.base_model, device="cpu")
    rec, splits = load_tallrec()
    scorer = PointwiseScorer(model, tok, load_template("tallrec"))
    samples = splits.test[: args.limit] if args.limit else splits.test
    P = scorer.encode_samples(samples, rec.catalog)
    ids, labels, N = scorer.verbalizer.token_ids, P.labels, len(P.input_ids)
    ntok = P.tokens
    pad = tok.pad_token_id or 0
    lcp = common_prefix_length(P.input_ids)
    print(f"{N} prompts, {ntok} tokens (mean {ntok / N:.0f}), common head {lcp} tokens, "
          f"{torch.get_num_threads()} threads, load avg {os.getloadavg()[0]:.1f}", flush=True)

    res: dict[str, dict] = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "naive-fp32":
            k = N if args.naive_limit in (0, None) else min(N, args.naive_limit)
            s = naive_scores(model, P.input_ids[:k], ids, args.naive_batch, pad)
            sec = (time.perf_counter() - t0) * N / k
            done = k
        else:
            kind, dt = m.split("-")
            dtype = {"fp32": "float32", "bf16": "bfloat16"}[dt]
            fn = score_encoded if kind == "encoded" else score_shared_head
            s = fn(model, P.input_ids, ids, pad_id=pad, batch_tokens=args.batch_tokens, dtype=dtype)
            sec, done = time.perf_counter() - t0, N
        p = s[:, 0]
        a = auc(labels[:done], p) if done == N else float("nan")
        res[m] = dict(sec=sec, p=p, auc=a, done=done)
        print(f"{m}: {sec:.1f} s{' (extrapolated from %d prompts)' % done if done < N else ''}, "
              f"AUC {a:.4f}", flush=True)

    ref_name = "encoded-fp32" if "encoded-fp32" in res else next((m for m in res if m.endswith("fp32")
                                                                   and res[m]["done"] == N), None)
    print()
    ref_label = f"vs {ref_name}" if ref_name else "(no fp32 reference run)"
    print(f"| method | seconds ({N} prompts) | tokens/s | AUC | max abs dP {ref_label} |")
    print("|---|---|---|---|---|")
    for m, r in res.items():
        dp = "" if ref_name is None else f"{np.abs(r['p'] - res[ref_name]['p'][: r['done']]).max():.1e}"
        sec = f"{r['sec']:.1f}" + (f" (extrap. from {r['done']})" if r["done"] < N else "")
        print(f"| {m} | {sec} | {ntok / r['sec']:.0f} | {r['auc']:.4f} | {dp} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
