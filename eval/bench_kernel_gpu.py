#!/usr/bin/env python3
"""Benchmark + correctness check of the prefix-shared attention kernel on one GPU (meant for an H200).

One call does everything (run it once per lease):

    python3 eval/bench_kernel_gpu.py                # full table, bf16 and fp16, up to 4K prefix x 256 candidates
    python3 eval/bench_kernel_gpu.py --quick        # two small sizes only
    python3 eval/bench_kernel_gpu.py --json out.json   # also write the rows as JSON ($OUT/bench_kernel_gpu.json
                                                      # by default when $OUT is set)

Without CUDA it runs only its CPU-safe part (the torch reference against a float64 naive attention on a
small shape, plus the Triton interpreter on the same shape when TRITON_INTERPRET=1 is set) and exits 0
with a message.

For every (Lp prefix tokens, B candidates, Ls suffix tokens) and dtype it reports:

* correctness: max |triton - torch reference| (reference computes in fp32 from the same inputs), and
  max |triton - float64 naive| on sizes small enough for it; an fp32 ("ieee" dot) check at one size;
* time (median of ``triton.testing.do_bench``, CUDA events) of
    - ``triton``      the fused prefix-shared kernel (one shared (Hkv, Lp, D) prefix copy),
    - ``sdpa_exp``    SDPA over per-candidate copies of the prefix KV: building the copies
                      (expand + cat over candidates, repeat to the query heads as transformers' repeat_kv
                      does when a mask is given) plus the masked SDPA call,
    - ``sdpa_exp_attn`` the same SDPA call on prebuilt copies (attention only),
    - ``full``        full prompts (prefix + suffix, all Lp+Ls query positions per candidate) through causal
                      SDPA (flash), i.e. the attention cost of not sharing the prefix at all,
    - ``torch_ref``   the PyTorch reference implementation (prefix einsum + suffix + LSE merge);
* the kernel's achieved bandwidth over the minimum bytes it must move (q, suffix K/V, one prefix K/V,
  mask, out), as GB/s and as % of HBM peak (4.8 TB/s on H200, datasheet; set --hbm-tbps), and its
  TFLOP/s (4 * B * Hq * Ls * (Lp + Ls/2) * D flops).  At long prefixes the kernel is compute-bound
  (arithmetic intensity ~ G * Ls * B / 2 flop/byte on the prefix), so TFLOP/s is the telling number.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# SmolLM2-135M attention geometry: 9 query heads, 3 KV heads, head dim 64
HQ, HKV, D = 9, 3, 64
FULL_SIZES = [  # (Lp, B, Ls)
    (512, 16, 16),
    (1024, 64, 32),
    (2048, 128, 32),
    (4096, 64, 32),
    (4096, 256, 16),
    (4096, 256, 32),
    (4096, 256, 64),
]
QUICK_SIZES = [(512, 16, 16), (1024, 64, 32)]
DRY_SIZES = [(37, 4, 5)]
NAIVE_FP64_MAX = 1024 * 64  # Lp * B up to which the float64 naive check runs


def import_kernels():
    """(prefix_attention_ref, prefix_attention) modules of the installed llmrec.kernels."""
    return (importlib.import_module("llmrec.kernels.prefix_attention_ref"),
            importlib.import_module("llmrec.kernels.prefix_attention"))


def make_inputs(Lp, B, Ls, dtype, device, seed=0, pad=True):
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)

    q = rnd(B, HQ, Ls, D)
    ks, vs = rnd(B, HKV, Ls, D), rnd(B, HKV, Ls, D)
    kp, vp = rnd(HKV, Lp, D), rnd(HKV, Lp, D)
    mask = None
    if pad:
        lengths = torch.randint(max(1, Ls // 2), Ls + 1, (B,), generator=g, device=device)
        lengths[0] = Ls
        mask = torch.arange(Ls, device=device)[None, :] < lengths[:, None]
    return q, ks, vs, kp, vp, mask


def naive_fp64(q, ks, vs, kp, vp, mask):
    """Independent reference: expand + concatenate the prefix, one masked softmax in float64."""
    q, ks, vs, kp, vp = (t.double() for t in (q, ks, vs, kp, vp))
    B, Hq, Ls, Dh = q.shape
    Hkv, Lp = kp.shape[0], kp.shape[1]
    G = Hq // Hkv
    K = torch.cat([kp.expand(B, Hkv, Lp, Dh), ks], 2).repeat_interleave(G, 1)
    V = torch.cat([vp.expand(B, Hkv, Lp, Dh), vs], 2).repeat_interleave(G, 1)
    s = q @ K.transpose(-1, -2) / math.sqrt(Dh)
    allowed = torch.ones(Ls, Lp + Ls, dtype=torch.bool, device=q.device)
    allowed[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool, device=q.device).tril()
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & torch.cat([torch.ones(B, Lp, dtype=torch.bool, device=q.device), mask.bool()], 1)[:, None, None]
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ V


def no_math_sdpa():
    """Context that keeps SDPA off its math fallback (which would materialise full score matrices)."""
    import contextlib

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backs = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        if hasattr(SDPBackend, "CUDNN_ATTENTION"):
            backs.append(SDPBackend.CUDNN_ATTENTION)
        return sdpa_kernel(backs)
    except Exception:  # pragma: no cover - older torch
        return contextlib.nullcontext()


def build_expanded(q, ks, vs, kp, vp, mask):
    """Per-candidate copies of the prefix KV (repeat_kv to Hq heads) and the boolean SDPA mask."""
    B, Hq, Ls, Dh = q.shape
    Hkv, Lp, _ = kp.shape
    G = Hq // Hkv
    K = torch.cat([kp.expand(B, Hkv, Lp, Dh), ks], 2)
    V = torch.cat([vp.expand(B, Hkv, Lp, Dh), vs], 2)
    if G > 1:
        K = K[:, :, None].expand(B, Hkv, G, Lp + Ls, Dh).reshape(B, Hq, Lp + Ls, Dh)
        V = V[:, :, None].expand(B, Hkv, G, Lp + Ls, Dh).reshape(B, Hq, Lp + Ls, Dh)
    allowed = torch.ones(Ls, Lp + Ls, dtype=torch.bool, device=q.device)
    allowed[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool, device=q.device).tril()
    allowed = allowed[None, None].expand(B, 1, Ls, Lp + Ls)
    if mask is not None:
        allowed = allowed & torch.cat([torch.ones(B, Lp, dtype=torch.bool, device=q.device), mask.bool()], 1)[:, None, None]
    return K, V, allowed


def bench_wallclock(fn):
    """CPU dry run only: one call, wall clock, in ms."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench_gpu(fn):
    import triton.testing

    try:
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    except TypeError:  # older triton without return_mode
        return float(triton.testing.do_bench(fn, warmup=25, rep=100))


def fmt(x, spec):
    return "-" if x is None else (x if isinstance(x, str) else format(x, spec))


def cpu_smoke(ref, tri):
    q, ks, vs, kp, vp, mask = make_inputs(37, 13, 5, torch.float32, "cpu")
    want = naive_fp64(q, ks, vs, kp, vp, mask)
    err = (ref.prefix_shared_attention(q, ks, vs, kp, vp, mask).double() - want).abs().max().item()
    print(f"CPU smoke: torch reference vs float64 naive, Lp=37 B=13 Ls=5 (GQA 9/3, D=64): max err {err:.2e}")
    ok = err <= 1e-5
    if tri.HAS_TRITON and tri.triton_interpreter_active():
        out = torch.full_like(q, float("nan"))
        tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out)
        e2 = (out.double() - want).abs().max().item()
        print(f"CPU smoke: triton interpreter vs float64 naive: max err {e2:.2e}")
        ok = ok and e2 <= 1e-5
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two small sizes only")
    ap.add_argument("--dtypes", default="bf16,fp16", help="comma list of bf16,fp16")
    ap.add_argument("--hbm-tbps", type=float, default=None, help="HBM peak in TB/s (default: 4.8 for H200, 3.35 for H100)")
    ap.add_argument("--no-full", action="store_true", help="skip the full-prompt SDPA baseline")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="without CUDA, under TRITON_INTERPRET=1: run the whole table logic on one tiny fp32 size "
                         "with a wall-clock timer (checks the script, not the speed)")
    ap.add_argument("--json", default=None, help="write rows here (default $OUT/bench_kernel_gpu.json when $OUT is set)")
    args = ap.parse_args(argv)

    ref, tri = import_kernels()
    dry = False
    if not torch.cuda.is_available():
        if args.cpu_dry_run and tri.HAS_TRITON and tri.triton_interpreter_active():
            dry = True
            print("no CUDA device: CPU dry run through the Triton interpreter (timings meaningless)")
        else:
            print("no CUDA device: GPU benchmark skipped; running the CPU-safe checks only")
            ok = cpu_smoke(ref, tri)
            print("CPU smoke:", "OK" if ok else "FAILED")
            return 0 if ok else 1
    if not tri.HAS_TRITON:
        print("triton is not installed: nothing to benchmark")
        return 1
    if tri.triton_interpreter_active() and not dry:
        print("TRITON_INTERPRET=1 is set: unset it to benchmark on the GPU")
        return 1

    import triton

    if dry:
        dev, name, hbm = torch.device("cpu"), "cpu (interpreter dry run)", args.hbm_tbps or 4.8
        sync = lambda: None  # noqa: E731
        bench = bench_wallclock
        dtypes = {"fp32": torch.float32}
        tol = {"fp32": (1e-5, 0.0)}
        sizes = DRY_SIZES
        dtype_names = ["fp32"]
    else:
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(dev)
        hbm = args.hbm_tbps or (4.8 if "H200" in name else 3.35 if "H100" in name else 4.8)
        sync = torch.cuda.synchronize
        bench = bench_gpu
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        tol = {"bf16": (8e-3, 1.6e-2), "fp16": (1e-3, 2e-3)}  # (atol, rtol) as in tests/test_kernels.py
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        dtype_names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        torch.backends.cuda.matmul.allow_tf32 = False
    print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}; HBM peak {hbm} TB/s")

    failures = []
    t_start = time.time()

    # fp32 correctness with ieee dots (no TF32) at one size
    q, ks, vs, kp, vp, mask = make_inputs(*((30, 3, 12) if dry else (300, 37, 12)), torch.float32, dev)
    out = torch.full_like(q, float("nan"))
    tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out)
    e32 = (out.double() - naive_fp64(q, ks, vs, kp, vp, mask)).abs().max().item()
    print(f"fp32 check Lp={kp.shape[1]} B={q.shape[0]} Ls={q.shape[2]}: max |triton - fp64 naive| = {e32:.2e} (tol 1e-5)")
    if not (e32 <= 1e-5):
        failures.append(f"fp32 err {e32:.2e}")

    rows = []
    for dname in dtype_names:
        dtype = dtypes[dname]
        for (Lp, B, Ls) in sizes:
            row = {"dtype": dname, "Lp": Lp, "B": B, "Ls": Ls, "Hq": HQ, "Hkv": HKV, "D": D}
            try:
                q, ks, vs, kp, vp, mask = make_inputs(Lp, B, Ls, dtype, dev)
                out = torch.full_like(q, float("nan"))
                tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out)
                sync()
                row["nan"] = int(torch.isnan(out).sum())
                atol, rtol = tol[dname]
                r = ref.prefix_shared_attention(q, ks, vs, kp, vp, mask).float()
                row["err_ref"] = (out.float() - r).abs().max().item()
                # the reference output is itself rounded to dtype: allow one more rounding against it
                bad = ((out.float() - r).abs() - 2 * rtol * r.abs()).max().item() > 2 * atol
                del r
                if Lp * B <= NAIVE_FP64_MAX:
                    w = naive_fp64(q, ks, vs, kp, vp, mask)
                    row["err_fp64"] = (out.double() - w).abs().max().item()
                    bad = bad or ((out.double() - w).abs() - rtol * w.abs()).max().item() > atol
                    del w
                bad = bad or row["nan"] > 0
                if bad:
                    failures.append(f"{dname} Lp={Lp} B={B} Ls={Ls}: nan={row['nan']} err_ref={row['err_ref']:.2e} "
                                    f"err_fp64={row.get('err_fp64')}")

                row["t_triton_ms"] = bench(lambda: tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out))
                es = q.element_size()
                nbytes = es * (2 * q.numel() + ks.numel() + vs.numel() + kp.numel() + vp.numel()) + mask.numel()
                flops = 4.0 * B * HQ * Ls * (Lp + Ls / 2) * D
                row["GBps"] = nbytes / row["t_triton_ms"] / 1e6
                row["pct_hbm"] = 100.0 * row["GBps"] / (hbm * 1e3)
                row["TFLOPs"] = flops / row["t_triton_ms"] / 1e9

                try:
                    K, V, allowed = build_expanded(q, ks, vs, kp, vp, mask)
                    e_sdpa = (torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=allowed).float()
                              - out.float()).abs().max().item()
                    row["err_sdpa_exp"] = e_sdpa
                    row["t_sdpa_exp_attn_ms"] = bench(
                        lambda: torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=allowed))
                    del K, V, allowed

                    def sdpa_exp():
                        K_, V_, a_ = build_expanded(q, ks, vs, kp, vp, mask)
                        return torch.nn.functional.scaled_dot_product_attention(q, K_, V_, attn_mask=a_)

                    row["t_sdpa_exp_ms"] = bench(sdpa_exp)
                except torch.cuda.OutOfMemoryError:
                    row["t_sdpa_exp_ms"] = row["t_sdpa_exp_attn_ms"] = "oom"
                torch.cuda.empty_cache()

                if not args.no_full:
                    try:
                        L = Lp + Ls
                        # K/V already repeated to the query heads (repeat_kv), so flash attention applies;
                        # the repeat is not timed
                        qf = torch.randn(B, HQ, L, D, device=dev, dtype=dtype)
                        kf = torch.randn(B, HQ, L, D, device=dev, dtype=dtype)
                        vf = torch.randn(B, HQ, L, D, device=dev, dtype=dtype)
                        with no_math_sdpa():
                            row["t_full_ms"] = bench(
                                lambda: torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=True))
                        del qf, kf, vf
                    except torch.cuda.OutOfMemoryError:
                        row["t_full_ms"] = "oom"
                    torch.cuda.empty_cache()

                try:
                    row["t_torch_ref_ms"] = bench(lambda: ref.prefix_shared_attention(q, ks, vs, kp, vp, mask))
                except torch.cuda.OutOfMemoryError:
                    row["t_torch_ref_ms"] = "oom"
                torch.cuda.empty_cache()
            except Exception as exc:  # keep the table going; report at the end
                row["error"] = f"{type(exc).__name__}: {exc}"
                failures.append(f"{dname} Lp={Lp} B={B} Ls={Ls}: {row['error']}")
                traceback.print_exc()
            rows.append(row)
            print("  done", {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    hdr = ("dtype", "Lp", "B", "Ls", "triton ms", "GB/s", "%HBM", "TFLOP/s", "sdpa_exp ms", "exp_attn ms",
           "full ms", "ref ms", "x exp", "x full", "err_ref", "err_fp64", "err_sdpa")
    print()
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for r in rows:
        t = r.get("t_triton_ms")
        sx = r.get("t_sdpa_exp_ms")
        fx = r.get("t_full_ms")
        print(" | ".join([
            r["dtype"], str(r["Lp"]), str(r["B"]), str(r["Ls"]),
            fmt(t, ".4f"), fmt(r.get("GBps"), ".0f"), fmt(r.get("pct_hbm"), ".1f"), fmt(r.get("TFLOPs"), ".1f"),
            fmt(sx, ".4f"), fmt(r.get("t_sdpa_exp_attn_ms"), ".4f"), fmt(fx, ".4f"), fmt(r.get("t_torch_ref_ms"), ".4f"),
            fmt(sx / t if isinstance(sx, float) and t else None, ".1f"),
            fmt(fx / t if isinstance(fx, float) and t else None, ".1f"),
            fmt(r.get("err_ref"), ".1e"), fmt(r.get("err_fp64"), ".1e"), fmt(r.get("err_sdpa_exp"), ".1e"),
        ]))
    print(f"\nfp32 (ieee) check error {e32:.2e}; wall {time.time() - t_start:.1f} s")
    print("x exp / x full: speed-up of the kernel over SDPA with copied prefix KV (copy included) / full prompts")

    path = args.json or (os.path.join(os.environ["OUT"], "bench_kernel_gpu.json") if os.environ.get("OUT") else None)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "triton": triton.__version__, "hbm_tbps": hbm,
                       "fp32_err": e32, "rows": rows, "failures": failures}, f, indent=1)
        print("wrote", path)
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    print("all correctness checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
