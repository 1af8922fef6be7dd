#!/usr/bin/env python3
"""End-to-end scoring throughput: prefix-shared vs full prompts, with a random model of SmolLM2-135M's shape.

    python3 eval/bench_e2e_gpu.py                  # on one GPU: N in {256, 10000}, P=300, S=10, bf16
    python3 eval/bench_e2e_gpu.py --cpu-small      # tiny model and sizes on a CPU (tests keep the script alive)
    python3 eval/bench_e2e_gpu.py --json J --md M  # default $OUT/bench_e2e_gpu.{json,md} when $OUT is set

The model is built by transformers from SmolLM2-135M's config (written out below from the embedded model's
config.json: Llama, 30 layers, hidden 576, 9 query / 3 KV heads, head dim 64, MLP 1536, vocab 49152, tied
embeddings) with seeded random weights: nothing is downloaded, and the FLOPs per token are the real model's.
On a GPU its weights are bf16 (``llmrec.model.cast_for_scoring(model, "auto")``: the precision default there).

For each N it measures (each timing twice, after one warm-up call that also compiles the Triton kernel):

* ``prefix``  :func:`llmrec.scoring.prefix.score_candidates` (one user: prefix run once, N suffixes batched by the
  GPU token budget, the kernel through the custom op, shape buckets);
* ``prefix_bucketed`` the same with ``bucket=True`` (suffix length and rows padded to shape buckets): the cost
  of the padding that compiled variants / CUDA graphs of the forward would need;
* ``full``    :func:`llmrec.scoring.score_encoded` on the N full prompts ``prefix + suffix`` (no sharing; the
  same GPU token budget);
* ``packed``  (largest N only) :func:`llmrec.scoring.prefix.score_users` on the same candidates split over
  ``--users`` users with their own prefixes: several users per forward;

candidates/s, and peak GPU memory (``torch.cuda.max_memory_allocated``) of each. Parity: P(Yes) of the
prefix-shared path against the full-prompt path on the same bf16 model, and against the full-prompt path of the
float32 model; stated bf16 tolerance ``max |dP| <= 0.02`` (weights and activations rounded to 8 mantissa bits,
over 30 layers; the two paths sum attention in different orders). On ``--cpu-small`` everything is float32 and
the tolerance is ``1e-4`` (tests/scoring/test_prefix.py's). The spread of P(Yes) over candidates is reported
beside it, so a reader can see that the random model's scores are not all equal.

Goal (issue 17, H200): >= 100,000 candidates/s at P=300, S=10, N=10,000 with the parity within tolerance.
Reference points: SGLang multi-item scoring ~1,000 items/s per H100 (Qwen3-0.6B); FLOP ceiling of the H200
for this model ~300k-400k candidates/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


#: SmolLM2-135M(-Instruct)'s config.json (architecture fields), as the embedded model ships it
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
                    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    rope_parameters={"rope_theta": 100000.0, "rope_type": "default"}, initializer_range=0.02,
                    attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
#: --cpu-small: the same architecture, tiny (head ratio 3:1 kept)
TINY = dict(SMOLLM2_135M, vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048)
VERB = [5, 7]  # two distinct ids (the random model has no words)
TOL = {"bf16": 0.02, "fp32": 1e-4}


def build_model(cfg: dict, device: torch.device, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.config.use_cache = False
    return model.eval()


def timed(fn, cuda: bool):
    """(result, seconds, peak bytes) of one call."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else None
    return out, sec, peak


def measure(fn, n: int, cuda: bool) -> dict:
    """Warm-up call, then two timed calls: candidates/s of each, their spread, peak memory."""
    fn()
    runs = []
    peak = None
    out = None
    for _ in range(2):
        out, sec, peak = timed(fn, cuda)
        runs.append(sec)
    m = sum(runs) / 2
    return {"seconds": runs, "cand_per_s": [n / s for s in runs], "mean_cand_per_s": n / m,
            "spread": abs(runs[0] - runs[1]) / m, "peak_mib": None if peak is None else peak / 2 ** 20,
            "_out": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-small", action="store_true", help="tiny model and sizes, float32, on the CPU")
    ap.add_argument("--n", default=None, help="comma list of candidate counts (default 256,10000; cpu-small 16,40)")
    ap.add_argument("--prefix", type=int, default=None, help="prefix tokens P (default 300; cpu-small 30)")
    ap.add_argument("--suffix", type=int, default=10, help="suffix tokens S (default 10)")
    ap.add_argument("--users", type=int, default=40, help="users for the packed run (default 40)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)

    from llmrec.model import cast_for_scoring
    from llmrec.scoring import score_encoded
    from llmrec.scoring.prefix import default_batch, score_candidates, score_users

    cuda = torch.cuda.is_available() and not args.cpu_small
    if not cuda and not args.cpu_small:
        print("no CUDA device: running --cpu-small instead")
        args.cpu_small = True
    dev = torch.device("cuda" if cuda else "cpu")
    cfg = TINY if args.cpu_small else SMOLLM2_135M
    P = args.prefix or (30 if args.cpu_small else 300)
    S = args.suffix
    ns = [int(x) for x in (args.n or ("16,40" if args.cpu_small else "256,10000")).split(",")]
    prec = "bf16" if cuda else "fp32"
    tol = TOL[prec]
    # the scoring precision of every call: the single default on a GPU (bf16 weights), float32 on --cpu-small
    # whatever the CPU (``"auto"`` would pick bf16 autocast on a CPU with native bf16, and the 1e-4 parity
    # tolerance is float32's)
    sdtype = "auto" if cuda else "float32"

    model32 = build_model(cfg, dev)
    model = build_model(cfg, dev)
    cast_for_scoring(model, "auto")  # bf16 on a GPU with bf16, unchanged on a CPU
    wdtype = str(next(model.parameters()).dtype).replace("torch.", "")
    max_batch, batch_tokens = default_batch(dev)
    full_batch = min(max_batch, max(1, batch_tokens // (P + S)))
    name = torch.cuda.get_device_name(dev) if cuda else "cpu (small)"
    print(f"device {name}; weights {wdtype}; P={P} S={S} N={ns}; budget {batch_tokens} tokens/forward", flush=True)

    g = np.random.default_rng(0)
    V = cfg["vocab_size"]
    res = {"device": name, "torch": torch.__version__, "weights": wdtype, "P": P, "S": S,
           "config": {k: v for k, v in cfg.items() if k != "rope_parameters"}, "tolerance": tol,
           "batch_tokens": batch_tokens, "max_batch": max_batch, "rows": [], "failures": []}
    for n in ns:
        prefix = g.integers(3, V, P).tolist()
        sufs = g.integers(3, V, (n, S)).tolist()
        row = {"N": n}
        pre = measure(lambda: score_candidates(model, prefix, sufs, VERB, dtype=sdtype), n, cuda)
        preb = measure(lambda: score_candidates(model, prefix, sufs, VERB, bucket=True, dtype=sdtype), n, cuda)
        p_b = preb.pop("_out")[:, 0]
        row["prefix_bucketed"] = preb
        full = measure(lambda: score_encoded(model, [prefix + s for s in sufs], VERB, dtype=sdtype, batch_tokens=batch_tokens,
                                             max_batch=full_batch), n, cuda)
        p_pre, p_full = pre.pop("_out")[:, 0], full.pop("_out")[:, 0]
        row["prefix"], row["full"] = pre, full
        row["speedup"] = pre["mean_cand_per_s"] / full["mean_cand_per_s"]
        row["max_dp_vs_full_same_dtype"] = float(np.abs(p_pre - p_full).max())
        row["max_dp_bucketed_vs_not"] = float(np.abs(p_b - p_pre).max())
        m = min(n, 512)  # the float32 reference on a subset (it is the slowest path)
        p32 = score_encoded(model32, [prefix + s for s in sufs[:m]], VERB, dtype="float32",
                            batch_tokens=batch_tokens, max_batch=full_batch)[:, 0]
        row["max_dp_vs_full_fp32"] = float(np.abs(p_pre[:m] - p32).max())
        row["p_yes_std"] = float(p_pre.std())
        for k in ("max_dp_vs_full_same_dtype", "max_dp_vs_full_fp32", "max_dp_bucketed_vs_not"):
            if not row[k] <= tol:
                res["failures"].append(f"N={n}: {k} = {row[k]:.3g} > {tol}")
        if n == max(ns) and args.users > 1:
            per = max(1, n // args.users)
            reqs = [(g.integers(3, V, P + int(g.integers(-P // 10, P // 10 + 1))).tolist(), sufs[u * per:(u + 1) * per])
                    for u in range(min(args.users, n))]
            nn = sum(len(s) for _, s in reqs)
            pk = measure(lambda: score_users(model, reqs, VERB, dtype=sdtype), nn, cuda)
            outs = pk.pop("_out")
            row["packed"] = {**pk, "users": len(reqs), "candidates": nn}
            alone = score_candidates(model, reqs[0][0], reqs[0][1], VERB, dtype=sdtype)
            row["packed"]["max_dp_vs_alone"] = float(np.abs(outs[0] - alone).max())
            if not row["packed"]["max_dp_vs_alone"] <= tol:
                res["failures"].append(f"packed: user 0 differs from scoring it alone by "
                                       f"{row['packed']['max_dp_vs_alone']:.3g}")
        res["rows"].append(row)
        print("  ", json.dumps(row, default=float)[:600], flush=True)
        if cuda:
            torch.cuda.empty_cache()
    big = [r for r in res["rows"] if r["N"] >= 10000]
    if cuda and big and P == 300 and S == 10:
        res["goal_100k_cand_per_s"] = bool(big[0]["prefix"]["mean_cand_per_s"] >= 1e5)
    md = markdown(res)
    print()
    print(md)
    out_dir = os.environ.get("OUT")
    for path, text in ((args.json or (out_dir and os.path.join(out_dir, "bench_e2e_gpu.json")),
                        json.dumps(res, indent=1, default=float)),
                       (args.md or (out_dir and os.path.join(out_dir, "bench_e2e_gpu.md")), md)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            Path(path).write_text(text)
            print("wrote", path)
    if res["failures"]:
        print("FAILURES:\n  " + "\n  ".join(res["failures"]))
        return 1
    print("parity within tolerance")
    return 0


def markdown(res: dict) -> str:
    lines = [f"End-to-end scoring on {res['device']} (torch {res['torch']}), random model of SmolLM2-135M's shape, "
             f"weights {res['weights']}, P={res['P']}, S={res['S']}, {res['batch_tokens']} tokens per forward; "
             f"candidates/s: mean of two runs (spread); P(Yes) tolerance {res['tolerance']}.", "",
             "| N | prefix-shared cand/s | peak MiB | bucketed cand/s | full prompts cand/s | peak MiB | speed-up | "
             "max dP vs full (same dtype) | max dP vs full fp32 | P(Yes) std | packed users cand/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def mib(v):
        return "-" if v is None else f"{v:.0f}"

    for r in res["rows"]:
        pk = r.get("packed")
        lines.append(
            f"| {r['N']} | {r['prefix']['mean_cand_per_s']:.0f} ({100 * r['prefix']['spread']:.0f}%) | "
            f"{mib(r['prefix']['peak_mib'])} | {r['prefix_bucketed']['mean_cand_per_s']:.0f} | "
            f"{r['full']['mean_cand_per_s']:.0f} ({100 * r['full']['spread']:.0f}%) | "
            f"{mib(r['full']['peak_mib'])} | {r['speedup']:.1f}x | {r['max_dp_vs_full_same_dtype']:.1e} | "
            f"{r['max_dp_vs_full_fp32']:.1e} | {r['p_yes_std']:.3f} | "
            + (f"{pk['mean_cand_per_s']:.0f} ({pk['users']} users)" if pk else "-") + " |")
    if "goal_100k_cand_per_s" in res:
        lines.append(f"\nGoal >= 100,000 candidates/s at N=10,000: {'met' if res['goal_100k_cand_per_s'] else 'NOT met'}")
    if res["failures"]:
        lines.append("\nFAILURES: " + "; ".join(res["failures"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
