"""Benchmark FAISS index kinds on synthetic clustered item vectors: recall@k vs exact, queries/s.

    python eval/bench_retrieval.py                       # 1M items, dim 64 (about 1-2 min on 2 cores)
    python eval/bench_retrieval.py --n 100000 --hnsw     # quicker, adds HNSW rows
    python eval/bench_retrieval.py --json out.json

Data: ``n`` item vectors from ``n_clusters`` Gaussian clusters (centres ~ N(0, I), spread ``--sigma``),
queries drawn from the same mixture (not from the item set). Metric: inner product, as used by the
SASRec retriever. recall@k = |approx top-k ∩ exact top-k| / k, averaged over queries; queries/s is one
batched ``search`` call of all queries (faiss uses all OpenMP threads), best of ``--repeats``.
Target (issue 3): recall@100 >= 0.95 at >= 2000 queries/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


from llmrec.retrieval.index import VectorIndex


def clustered(n: int, dim: int, n_clusters: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    lab = rng.integers(0, n_clusters, n)
    return (centres[lab] + sigma * rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    n = exact.shape[0]
    base = int(max(approx.max(), exact.max())) + 2
    rows = np.arange(n, dtype=np.int64)[:, None] * base
    return float(np.isin(rows + approx + 1, rows + exact + 1).sum() / (n * k))


def timed_search(index: VectorIndex, q: np.ndarray, k: int, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = index.search(q, k)
        best = min(best, time.perf_counter() - t)
    return out, best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--hnsw", action="store_true", help="also build HNSW (M=32; slow to build at 1M)")
    p.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    import faiss

    rng = np.random.default_rng(a.seed)
    t = time.perf_counter()
    x = clustered(a.n, a.dim, a.clusters, a.sigma, rng)
    q = clustered(a.queries, a.dim, a.clusters, a.sigma, np.random.default_rng(a.seed + 1))
    print(f"data: n={a.n} dim={a.dim} clusters={a.clusters} sigma={a.sigma} queries={a.queries} k={a.k} "
          f"threads={faiss.omp_get_max_threads()} ({time.perf_counter() - t:.1f}s)", flush=True)
    rows = []

    t = time.perf_counter()
    flat = VectorIndex("flat", use_gpu=False).build(x)
    build = time.perf_counter() - t
    (exact, _), s = timed_search(flat, q, a.k, a.repeats)
    rows.append({"index": "flat (exact)", "params": "-", "build_s": build, "recall": 1.0, "qps": a.queries / s})
    print(rows[-1], flush=True)
    del flat

    t = time.perf_counter()
    ivf = VectorIndex("ivf", use_gpu=False, seed=a.seed).build(x)
    build = time.perf_counter() - t
    for npb in a.nprobe:
        ivf.set_nprobe(npb)
        (ids, _), s = timed_search(ivf, q, a.k, a.repeats)
        rows.append({"index": f"ivf (nlist={ivf.nlist})", "params": f"nprobe={npb}", "build_s": build,
                     "recall": recall(ids, exact), "qps": a.queries / s})
        print(rows[-1], flush=True)
    del ivf

    if a.hnsw:
        t = time.perf_counter()
        h = VectorIndex("hnsw", use_gpu=False).build(x)
        build = time.perf_counter() - t
        for ef in a.ef:
            h.set_nprobe(max(ef, a.k))
            (ids, _), s = timed_search(h, q, a.k, a.repeats)
            rows.append({"index": "hnsw (M=32)", "params": f"efSearch={max(ef, a.k)}", "build_s": build,
                         "recall": recall(ids, exact), "qps": a.queries / s})
            print(rows[-1], flush=True)

    print(f"\n| index | params | build s | recall@{a.k} | queries/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['params']} | {r['build_s']:.1f} | {r['recall']:.4f} | {r['qps']:.0f} |")
    ok = [r for r in rows if r["recall"] >= 0.95 and r["qps"] >= 2000]
    print(f"\ntarget recall@{a.k} >= 0.95 at >= 2000 q/s: "
          + (f"met by {ok[0]['index']} {ok[0]['params']}" if ok else "NOT met"))
    if a.json:
        a.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                                      "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
