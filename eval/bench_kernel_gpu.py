#!/usr/bin/env python3
"""Prefix-shared attention kernel against the best PyTorch baselines, at the real scoring operating points.

    python3 eval/bench_kernel_gpu.py                 # full run on one GPU (~1-2 min on an H200)
    python3 eval/bench_kernel_gpu.py --quick         # two operating points, no launch sweep
    python3 eval/bench_kernel_gpu.py --json J --md M # where to write (default $OUT/bench_kernel_gpu.{json,md})

Without CUDA it runs its CPU-safe smoke part (the same code on tiny fp32 shapes, wall-clock timers, no CUDA
graphs; the kernel through the custom op's CPU path, or the Triton interpreter when TRITON_INTERPRET=1) and
exits 0 when every correctness check passes (tests/test_bench_gpu_scripts.py runs it).

Operating points (SmolLM2-135M attention: 9 query heads, 3 KV heads, head dim 64; bf16): prefix P in
{300, 1024, 4096}, suffix S in {10, 32}, N candidates up to 10,000 (2,048 at P=4096, where the expanded
baseline's per-candidate K/V copies take 19 GB), plus odd lengths (P=301, S=11, N=9,999; P=1031, S=33, N=4,097).
At each point, every timing is taken twice (median of ``triton.testing.do_bench``, CUDA events) and both are
reported with their spread ``|t1 - t2| / mean``:

* ``triton``        the fused kernel through its public wrapper (input checks included), eager;
* ``triton_graph``  the custom op ``llmrec::prefix_shared_attention`` (no checks) replayed from a CUDA graph;
* ``sdpa_lr``       SDPA over per-candidate K/V ``[prefix | suffix]`` already expanded and repeated to the query
                    heads, with the lower-right causal bias ``torch.nn.attention.bias.causal_lower_right(S, P+S)``,
                    which keeps it on the flash-attention kernel (the backend is forced to FLASH_ATTENTION and
                    recorded; a boolean mask would rule flash out); attention only, copies prebuilt;
* ``sdpa_lr_graph`` the same call replayed from a CUDA graph;
* ``sdpa_lr_copy``  building the copies (expand + cat + repeat_kv) plus the call: what a cache-less server pays;
* ``flex``          FlexAttention (compiled) over the packed layout ``[prefix | s1 | s2 | ...]``: one query row per
                    suffix token, one key sequence holding the prefix once, a block mask (prefix visible to all;
                    suffix block-diagonal and causal); packed tensors and block mask prebuilt, not timed;
* ``full``          (P <= 1024) full prompts ``P+S`` per candidate through causal flash SDPA: no sharing at all;
* ``matmul``        a bf16 8192^3 matmul in the same run: the kernel's TFLOP/s are reported as % of it (the
                    kernel is compute-bound at these shapes: arithmetic intensity ~ G*S*N/2 flop/byte on the
                    prefix), not as % of HBM bandwidth.

FLOPs of one call: ``4 * N * Hq * S * (P + (S + 1) / 2) * D`` (QK^T and PV over the prefix and the causal
suffix). Correctness at every point: the kernel against a float64 naive attention on the first 64 candidates
(bf16 tolerance ``|err| <= 8e-3 + 1.6e-2 |ref|``, as tests/test_kernels.py), and each baseline against the
kernel (max |diff| reported; must be within twice that tolerance). A launch-shape sweep (BLOCK_M, BLOCK_N,
warps, stages) at P=1024, S=10, N=10,000 shows how far the default launch is from the best one.

Goals (issue 17, H200): the kernel >= 1.5x the best baseline at P=300, S=10; >= 50% of the matmul's TFLOP/s
at P >= 1024. Sources: FlashAttention-2 (Dao 2023), Hydragen (Juravsky et al. 2024), FlashInfer cascade attention.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

HQ, HKV, D = 9, 3, 64  # SmolLM2-135M
OPS_FULL = [  # (P, S, N)
    (300, 10, 10000), (300, 32, 10000), (1024, 10, 10000), (1024, 32, 10000),
    (4096, 10, 2048), (4096, 32, 2048), (301, 11, 9999), (1031, 33, 4097),
]
OPS_QUICK = OPS_FULL[:1] + OPS_FULL[2:3]
OPS_CPU = [(37, 5, 13), (29, 6, 4)]  # smoke: (P, S, N)
FLEX_AT = {(300, 10, 10000), (1024, 32, 10000), (37, 5, 13), (29, 6, 4)}  # each GPU shape compiles (~30 s)
SWEEP_AT = (1024, 10, 10000)
SWEEP = [(64, 32, 4, 2), (64, 64, 4, 3), (128, 32, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2),
         (64, 128, 4, 2), (256, 64, 8, 2)]  # (BLOCK_M, BLOCK_N, num_warps, num_stages)
TOL = {torch.bfloat16: (8e-3, 1.6e-2), torch.float32: (1e-5, 0.0)}  # (atol, rtol) vs float64
NAIVE_ROWS = 64


def kernels():
    return (importlib.import_module("llmrec.kernels.prefix_attention_ref"),
            importlib.import_module("llmrec.kernels.prefix_attention"))


def flops(P, S, N):
    return 4.0 * N * HQ * S * (P + (S + 1) / 2) * D


def make_inputs(P, S, N, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)

    return rnd(N, HQ, S, D), rnd(N, HKV, S, D), rnd(N, HKV, S, D), rnd(HKV, P, D), rnd(HKV, P, D)


def naive_fp64(q, ks, vs, kp, vp):
    """Independent reference: prefix expanded per candidate, one causal softmax over [prefix | suffix], float64."""
    q, ks, vs, kp, vp = (t.double() for t in (q, ks, vs, kp, vp))
    N, Hq, S, Dh = q.shape
    Hkv, P = kp.shape[0], kp.shape[1]
    G = Hq // Hkv
    K = torch.cat([kp.expand(N, Hkv, P, Dh), ks], 2).repeat_interleave(G, 1)
    V = torch.cat([vp.expand(N, Hkv, P, Dh), vs], 2).repeat_interleave(G, 1)
    s = q @ K.transpose(-1, -2) / math.sqrt(Dh)
    allowed = torch.ones(S, P + S, dtype=torch.bool, device=q.device)
    allowed[:, P:] = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ V


def expanded(q, ks, vs, kp, vp):
    """Per-candidate K/V [prefix | suffix] repeated to the query heads (transformers' repeat_kv), (N, Hq, P+S, D)."""
    N, Hq, S, Dh = q.shape
    Hkv, P, _ = kp.shape
    G = Hq // Hkv
    K = torch.cat([kp.expand(N, Hkv, P, Dh), ks], 2)
    V = torch.cat([vp.expand(N, Hkv, P, Dh), vs], 2)
    return (K[:, :, None].expand(N, Hkv, G, P + S, Dh).reshape(N, Hq, P + S, Dh),
            V[:, :, None].expand(N, Hkv, G, P + S, Dh).reshape(N, Hq, P + S, Dh))


def sdpa_lower_right(q, K, V, backend):
    from torch.nn.attention.bias import causal_lower_right

    bias = causal_lower_right(q.shape[2], K.shape[2])
    if backend is None:
        return torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=bias)
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend]):
        return torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=bias)


def packed(q, ks, vs, kp, vp):
    """FlexAttention's packed layout: Q (1, Hq, N*S, D); K/V (1, Hkv, P + N*S, D) = [prefix | s1 | s2 | ...]."""
    N, Hq, S, Dh = q.shape
    Hkv, P, _ = kp.shape
    Q = q.transpose(0, 1).reshape(1, Hq, N * S, Dh)
    K = torch.cat([kp, ks.transpose(0, 1).reshape(Hkv, N * S, Dh)], 1)[None]
    V = torch.cat([vp, vs.transpose(0, 1).reshape(Hkv, N * S, Dh)], 1)[None]
    return Q, K, V


def packed_block_mask(P, S, N, device):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, qi, ki):
        kd = ki - P
        return (ki < P) | ((kd // S == qi // S) & (kd <= qi))

    return create_block_mask(mask_mod, None, None, N * S, P + N * S, device=device)


def unpack(o, N, S):
    """(1, Hq, N*S, D) -> (N, Hq, S, D)."""
    return o[0].reshape(o.shape[1], N, S, o.shape[-1]).transpose(0, 1)


class Timer:
    """Median time of a call in ms: ``triton.testing.do_bench`` on CUDA, wall clock (median of 3) on CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn):
        if self.cuda:
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median"))
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return sorted(ts)[1]

    def twice(self, fn):
        """{"ms": mean, "runs": [t1, t2], "spread": |t1 - t2| / mean}."""
        a, b = self(fn), self(fn)
        m = (a + b) / 2
        return {"ms": m, "runs": [a, b], "spread": abs(a - b) / m if m > 0 else 0.0}


def cuda_graph(fn):
    """Capture ``fn`` (after two warm-up calls on a side stream) in a CUDA graph; returns its replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def excess(a, b, rtol):
    """max(|a - b| - rtol |b|) (compare with atol)."""
    a, b = a.double(), b.double()
    return float(((a - b).abs() - rtol * b.abs()).nan_to_num(float("inf")).max())


def matmul_tflops(timer, dev, dtype, n):
    a = torch.randn(n, n, device=dev, dtype=torch.float32).to(dtype)
    b = torch.randn(n, n, device=dev, dtype=torch.float32).to(dtype)
    t = timer.twice(lambda: a @ b)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), **t, "tflops": 2.0 * n ** 3 / t["ms"] / 1e9}


def bench_point(P, S, N, *, dev, dtype, timer, ref, tri, use_triton, flex_fn, matmul, failures, full_ok):
    """One operating point: correctness checks and timings; returns the row (dict)."""
    cuda = dev.type == "cuda"
    row = {"P": P, "S": S, "N": N, "dtype": str(dtype).replace("torch.", ""), "flops": flops(P, S, N)}
    atol, rtol = TOL[dtype]
    q, ks, vs, kp, vp = make_inputs(P, S, N, dtype, dev)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if use_triton:
        out = torch.empty_like(q)
        run_kernel = lambda: tri.prefix_shared_attention(q, ks, vs, kp, vp, out=out)  # noqa: E731
    else:  # CPU smoke without the interpreter: the custom op's CPU path (the PyTorch reference)
        run_kernel = lambda: tri.prefix_shared_attention_op(q, ks, vs, kp, vp).transpose(1, 2)  # noqa: E731
    got = run_kernel()
    sync()
    n = min(N, NAIVE_ROWS)
    want = naive_fp64(q[:n], ks[:n], vs[:n], kp, vp)
    row["err_fp64"] = float((got[:n].double() - want).abs().max())
    row["excess_fp64"] = excess(got[:n], want, rtol)
    row["nan"] = int(torch.isnan(got).sum())
    if row["excess_fp64"] > atol or row["nan"]:
        failures.append(f"P={P} S={S} N={N}: kernel vs float64 err {row['err_fp64']:.2e} (nan {row['nan']})")
    del want

    row["triton"] = timer.twice(run_kernel)
    if cuda:
        g_out = {}
        rep = cuda_graph(lambda: g_out.__setitem__("o", tri.prefix_shared_attention_op(
            q, ks, vs, kp, vp, None, 1.0 / math.sqrt(D), validate=False)))
        rep()
        sync()
        row["err_graph_vs_eager"] = float((g_out["o"].transpose(1, 2).float() - got.float()).abs().max())
        row["triton_graph"] = timer.twice(rep)
    row["tflops"] = row["flops"] / row["triton"]["ms"] / 1e9
    if cuda and "triton_graph" in row:
        row["tflops_graph"] = row["flops"] / row["triton_graph"]["ms"] / 1e9
    if matmul:
        row["pct_matmul"] = 100.0 * max(row["tflops"], row.get("tflops_graph", 0.0)) / matmul["tflops"]

    # SDPA over expanded K/V with the lower-right causal bias (flash-eligible)
    try:
        K, V = expanded(q, ks, vs, kp, vp)
        backend = None
        if cuda:
            from torch.nn.attention import SDPBackend

            for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
                try:
                    o = sdpa_lower_right(q, K, V, b)
                    backend = b
                    break
                except RuntimeError:
                    continue
            row["sdpa_backend"] = getattr(backend, "name", str(backend))
        o = sdpa_lower_right(q, K, V, backend)
        sync()
        row["diff_sdpa_lr"] = float((o.float() - got.float()).abs().max())
        if excess(o, got, 2 * rtol) > 2 * atol:
            failures.append(f"P={P} S={S} N={N}: sdpa_lr differs from the kernel by {row['diff_sdpa_lr']:.2e}")
        del o
        row["sdpa_lr"] = timer.twice(lambda: sdpa_lower_right(q, K, V, backend))
        if cuda:
            row["sdpa_lr_graph"] = timer.twice(cuda_graph(lambda: sdpa_lower_right(q, K, V, backend)))
        del K, V

        def with_copy():
            K_, V_ = expanded(q, ks, vs, kp, vp)
            return sdpa_lower_right(q, K_, V_, backend)

        row["sdpa_lr_copy"] = timer.twice(with_copy)
    except Exception as exc:  # OOM or a missing backend: recorded, the row goes on
        row["sdpa_lr_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if cuda:
        torch.cuda.empty_cache()

    if flex_fn is not None and (P, S, N) in FLEX_AT:
        try:
            Q, Kp, Vp = packed(q, ks, vs, kp, vp)
            bm = packed_block_mask(P, S, N, dev)
            o = unpack(flex_fn(Q, Kp, Vp, block_mask=bm, enable_gqa=True), N, S)
            sync()
            row["diff_flex"] = float((o.float() - got.float()).abs().max())
            if excess(o, got, 2 * rtol) > 2 * atol:
                failures.append(f"P={P} S={S} N={N}: flex differs from the kernel by {row['diff_flex']:.2e}")
            del o
            row["flex"] = timer.twice(lambda: flex_fn(Q, Kp, Vp, block_mask=bm, enable_gqa=True))
            del Q, Kp, Vp, bm
        except Exception as exc:
            row["flex_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if cuda:
            torch.cuda.empty_cache()

    if full_ok and P <= 1024:
        try:
            L = P + S
            qf, kf, vf = (torch.randn(N, HQ, L, D, device=dev, dtype=dtype) for _ in range(3))
            row["full"] = timer.twice(lambda: torch.nn.functional.scaled_dot_product_attention(qf, kf, vf,
                                                                                              is_causal=True))
            del qf, kf, vf
        except Exception as exc:
            row["full_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if cuda:
            torch.cuda.empty_cache()

    base = {k: row[k]["ms"] for k in ("sdpa_lr", "sdpa_lr_graph", "flex") if k in row}
    if base:
        best = min(base, key=base.get)
        mine = min(row["triton"]["ms"], row.get("triton_graph", {"ms": float("inf")})["ms"])
        row["best_baseline"] = best
        row["speedup_vs_best"] = base[best] / mine
    return row


def sweep(P, S, N, *, dev, dtype, timer, tri, failures):
    q, ks, vs, kp, vp = make_inputs(P, S, N, dtype, dev)
    out = torch.empty_like(q)
    rows = []
    ref_out = tri.prefix_shared_attention(q, ks, vs, kp, vp)
    for bm, bn, w, st in SWEEP:
        r = {"block_m": bm, "block_n": bn, "num_warps": w, "num_stages": st}
        try:
            tri.prefix_shared_attention(q, ks, vs, kp, vp, out=out, block_m=bm, block_n=bn, num_warps=w,
                                        num_stages=st)
            torch.cuda.synchronize()
            r["diff_vs_default"] = float((out.float() - ref_out.float()).abs().max())
            r.update(timer.twice(lambda: tri.prefix_shared_attention(q, ks, vs, kp, vp, out=out, block_m=bm,
                                                                     block_n=bn, num_warps=w, num_stages=st)))
            r["tflops"] = flops(P, S, N) / r["ms"] / 1e9
        except Exception as exc:
            r["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        rows.append(r)
    return {"P": P, "S": S, "N": N, "rows": rows}


def _ms(row, key):
    v = row.get(key)
    return "-" if not v else f"{v['ms']:.3f} ±{100 * v['spread']:.0f}%"


def markdown(res) -> str:
    lines = [f"Kernel benchmark on {res['device']} (torch {res['torch']}, triton {res.get('triton')}); "
             f"timings in ms, mean of two medians ± their spread.", ""]
    mm = res.get("matmul")
    if mm:
        lines.append(f"{mm.get('dtype', 'bf16')} matmul {mm['n']}^3 in the same run: {mm['tflops']:.0f} TFLOP/s (spread "
                     f"{100 * mm['spread']:.0f}%)\n")
    hdr = ["P", "S", "N", "triton", "triton graph", "TFLOP/s", "% matmul", "sdpa lower-right", "sdpa lr graph",
           "sdpa + copies", "flex packed", "full prompts", "x best baseline", "err fp64"]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['P']} | {r['S']} | {r['N']} | error: {r['error'][:80]} |")
            continue
        lines.append("| " + " | ".join([
            str(r["P"]), str(r["S"]), str(r["N"]), _ms(r, "triton"), _ms(r, "triton_graph"),
            f"{max(r['tflops'], r.get('tflops_graph', 0)):.1f}",
            f"{r['pct_matmul']:.0f}%" if "pct_matmul" in r else "-",
            _ms(r, "sdpa_lr") + (f" ({r['sdpa_backend']})" if r.get("sdpa_backend") else ""),
            _ms(r, "sdpa_lr_graph"), _ms(r, "sdpa_lr_copy"), _ms(r, "flex"), _ms(r, "full"),
            f"{r['speedup_vs_best']:.2f} ({r['best_baseline']})" if "speedup_vs_best" in r else "-",
            f"{r['err_fp64']:.1e}",
        ]) + " |")
    sw = res.get("sweep")
    if sw:
        lines += ["", f"Launch-shape sweep at P={sw['P']}, S={sw['S']}, N={sw['N']}:", "",
                  "| BLOCK_M | BLOCK_N | warps | stages | ms | TFLOP/s |", "|---|---|---|---|---|---|"]
        for r in sw["rows"]:
            lines.append(f"| {r['block_m']} | {r['block_n']} | {r['num_warps']} | {r['num_stages']} | "
                         + (f"{r['ms']:.3f} ±{100 * r['spread']:.0f}% | {r['tflops']:.1f} |" if "ms" in r
                            else f"error: {r.get('error', '')[:60]} | - |"))
    if res.get("failures"):
        lines += ["", "FAILURES: " + "; ".join(res["failures"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two operating points, no launch sweep")
    ap.add_argument("--no-flex", action="store_true", help="skip the FlexAttention baseline (its compile takes ~30 s)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the launch-shape sweep")
    ap.add_argument("--json", default=None, help="default $OUT/bench_kernel_gpu.json when $OUT is set")
    ap.add_argument("--md", default=None, help="default $OUT/bench_kernel_gpu.md when $OUT is set")
    args = ap.parse_args(argv)

    ref, tri = kernels()
    cuda = torch.cuda.is_available() and not tri.triton_interpreter_active()
    timer = Timer(cuda)
    failures: list[str] = []
    t0 = time.time()
    if cuda:
        if not tri.HAS_TRITON:
            print("triton is not installed: nothing to benchmark")
            return 1
        import triton

        dev, dtype = torch.device("cuda"), torch.bfloat16
        name = torch.cuda.get_device_name(dev)
        ops = OPS_QUICK if args.quick else OPS_FULL
        torch.backends.cuda.matmul.allow_tf32 = False
        use_triton = True
        flex_fn = None
        if not args.no_flex:
            from torch.nn.attention.flex_attention import flex_attention

            flex_fn = torch.compile(flex_attention, dynamic=False)
        mm_n = 8192
        tver = triton.__version__
    else:
        print("no CUDA device: CPU smoke run (tiny fp32 shapes, wall-clock timers, no CUDA graphs; checks the "
              "script and the baselines' maths, not the speed)")
        dev, dtype = torch.device("cpu"), torch.float32
        name = "cpu (smoke)"
        ops = OPS_CPU
        use_triton = tri.HAS_TRITON and tri.triton_interpreter_active()
        flex_fn = None
        if not args.no_flex:
            from torch.nn.attention.flex_attention import flex_attention

            flex_fn = flex_attention  # eager (unfused reference) on CPU
        mm_n = 256
        tver = getattr(sys.modules.get("triton"), "__version__", None)
    print(f"device: {name}; torch {torch.__version__}; triton {tver}; dtype {dtype}")
    res = {"device": name, "torch": torch.__version__, "triton": tver, "cuda": cuda,
           "kernel_path": "triton" if use_triton else "custom op CPU path (PyTorch reference)",
           "hq": HQ, "hkv": HKV, "d": D, "rows": [], "failures": failures}
    import warnings

    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    res["matmul"] = matmul_tflops(timer, dev, torch.bfloat16 if cuda else torch.float32, mm_n)
    print(f"matmul {mm_n}^3: {res['matmul']['tflops']:.1f} TFLOP/s", flush=True)
    for P, S, N in ops:
        try:
            row = bench_point(P, S, N, dev=dev, dtype=dtype, timer=timer, ref=ref, tri=tri, use_triton=use_triton,
                              flex_fn=flex_fn, matmul=res["matmul"], failures=failures, full_ok=True)
        except Exception as exc:
            traceback.print_exc()
            row = {"P": P, "S": S, "N": N, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            failures.append(f"P={P} S={S} N={N}: {row['error']}")
        res["rows"].append(row)
        print("  ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                     if not isinstance(v, dict)}, flush=True)
        if cuda:
            torch.cuda.empty_cache()
    if cuda and not (args.quick or args.no_sweep):
        try:
            res["sweep"] = sweep(*SWEEP_AT, dev=dev, dtype=dtype, timer=timer, tri=tri, failures=failures)
        except Exception as exc:
            res["sweep_error"] = f"{type(exc).__name__}: {exc}"
    res["wall_s"] = round(time.time() - t0, 1)
    md = markdown(res)
    print()
    print(md)
    out_dir = os.environ.get("OUT")
    for path, text in ((args.json or (out_dir and os.path.join(out_dir, "bench_kernel_gpu.json")),
                        json.dumps(res, indent=1)),
                       (args.md or (out_dir and os.path.join(out_dir, "bench_kernel_gpu.md")), md)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            Path(path).write_text(text)
            print("wrote", path)
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    print("all correctness checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
