"""Matrix-product throughput per precision on this machine, and what ``auto`` picks (llmrec.precision).

    python eval/bench_precision.py [--threads 2] [--sizes 576x1536,2048x576] [--rows 512] [--repeat 5]

For each weight shape (SmolLM2-135M's MLP and attention projections by default: hidden 576, MLP 1536) it
times ``x @ W.T`` with ``x`` of ``rows`` tokens, in fp32 and in bf16 (both operands bf16, as under
autocast), side by side in one run, and prints GFLOP/s and the bf16 / fp32 ratio. On a CPU with native bf16
(AVX512-BF16 / AMX) the ratio is above 1; on AVX2-only CPUs bf16 is emulated and the ratio is far below 1,
which is why ``auto`` scores in fp32 there. The CPU model, its bf16 flags and the choice of ``auto`` are
printed above the table. Best of ``--repeat`` timings (seconds of wall time, ``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llmrec import precision


def gflops(rows: int, out_f: int, in_f: int, dtype: torch.dtype, repeat: int) -> float:
    """Best-of-``repeat`` GFLOP/s of ``(rows, in_f) @ (in_f, out_f)`` in ``dtype`` on the CPU."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_f, generator=g).to(dtype)
    w = torch.randn(out_f, in_f, generator=g).to(dtype)
    torch.nn.functional.linear(x, w)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * rows * out_f * in_f / best / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--sizes", default="1536x576,576x1536,576x576", help="comma list of OUTxIN weight shapes")
    ap.add_argument("--rows", type=int, default=512, help="tokens per product")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    flags = sorted(f for f in precision.cpu_flags() if "bf16" in f or f.startswith("amx") or f == "avx2")
    print(f"CPU: {precision.cpu_model()}; threads {torch.get_num_threads()}; flags: {' '.join(flags) or '-'}")
    print(f"native bf16: {precision.cpu_has_native_bf16()}; auto picks: {precision.resolve('auto', 'cpu')}\n")
    rows = []
    for size in a.sizes.split(","):
        out_f, in_f = (int(v) for v in size.lower().split("x"))
        f32 = gflops(a.rows, out_f, in_f, torch.float32, a.repeat)
        b16 = gflops(a.rows, out_f, in_f, torch.bfloat16, a.repeat)
        rows.append({"shape": f"{a.rows}x{in_f} @ {in_f}x{out_f}", "fp32_gflops": f32, "bf16_gflops": b16,
                     "bf16_over_fp32": b16 / f32})
    print("| product | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['fp32_gflops']:.1f} | {r['bf16_gflops']:.1f} | {r['bf16_over_fp32']:.3f} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"cpu": precision.cpu_model(), "native_bf16": precision.cpu_has_native_bf16(),
                                     "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
