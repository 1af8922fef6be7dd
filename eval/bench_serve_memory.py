"""Native memory of the service's scoring path under ragged traffic: ``--pad-multiple`` values side by side.

Each setting runs in its own fresh process (RSS is per process): it loads the index and the zero-shot model
as ``llmrec serve`` does (``llmrec.serve._backend.load_backend``, no HTTP, no playground), then for
``--seconds`` calls ``Backend.rerank_batch`` on batches of 1 to ``--max-batch`` real users (random sizes,
the same seeded sequence for every setting; each user's last ``--history`` items and ``--candidates`` random
unseen items, as in ``eval/bench_serve.py``). It reads, at ``--first`` seconds and at the end: RSS
(``/proc/self/status``) and glibc's heap in use and held free (``llmrec.serve.memory.heap_mib``; absent elsewhere). Memory that
grows with requests served is what a long-running server would keep adding; the table gives it per 100
requests, next to requests/s.

Why it exists: with bf16 on a CPU, oneDNN keeps a primitive and more native memory per new matrix shape, and
unpadded batches bring a new suffix length with almost every batch (README, Serving, soak).

    python eval/bench_serve_memory.py --index runs/index --pads 1,16 --seconds 240 --out results/serve/memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from llmrec.precision import machine
from llmrec.serve.memory import heap_mib

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status (this script reads Linux's /proc)")


def reading(t0: float, served: int) -> dict:
    used, free = heap_mib()
    return {"s": round(time.perf_counter() - t0, 1), "requests": served, "rss_mib": round(rss_mib(), 1),
            "heap_in_use_mib": None if used is None else round(used, 1),
            "heap_free_mib": None if free is None else round(free, 1)}


def worker(args) -> dict:
    """One setting, in this process: load, drive for --seconds, return the readings and the rate."""
    from bench_serve import make_requests  # the sibling script (eval/ is first on the path of a script run)

    from llmrec.serve._backend import load_backend

    be = load_backend(args.index, base_model=args.base_model, dtype=args.dtype, playground=False,
                      pad_to_multiple_of=args.pad)
    req_args = argparse.Namespace(history=args.history, candidates=args.candidates, endpoint="rerank")
    bodies = make_requests(args.index, 4096, req_args, seed=0)
    jobs = [be.check_rerank(b["history"], b["candidates"], None) for b in bodies]
    be.rerank_batch(jobs[:2])  # first forward: allocation, thread pools
    g = np.random.default_rng(args.seed)
    t0, served, i, first = time.perf_counter(), 0, 0, None
    while time.perf_counter() - t0 < args.seconds:
        n = int(g.integers(1, args.max_batch + 1))
        be.rerank_batch([jobs[(i + k) % len(jobs)] for k in range(n)])
        i, served = i + n, served + n
        if first is None and time.perf_counter() - t0 >= args.first:
            first = reading(t0, served)
    end = reading(t0, served)
    return {"pad_multiple": args.pad, "first": first, "end": end, "req_per_s": round(served / end["s"], 3)}


def row(r: dict) -> dict:
    a, b = r["first"], r["end"]
    per = 100.0 / max(b["requests"] - a["requests"], 1)
    grow = None if a["heap_in_use_mib"] is None else round((b["heap_in_use_mib"] - a["heap_in_use_mib"]) * per, 2)
    return {**r, "rss_growth_pct": round(100.0 * (b["rss_mib"] / a["rss_mib"] - 1.0), 1),
            "heap_in_use_mib_per_100_requests": grow}


def table(rows: list[dict]) -> str:
    lines = ["| pad multiple | requests | req/s | RSS MiB at first / end | RSS growth | heap in use MiB at first / end "
             "| heap in use growth MiB per 100 requests |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, b = r["first"], r["end"]
        lines.append(f"| {r['pad_multiple']} | {b['requests']} | {r['req_per_s']:.2f} | {a['rss_mib']:.0f} / "
                     f"{b['rss_mib']:.0f} | {r['rss_growth_pct']:+.1f}% | {a['heap_in_use_mib']} / "
                     f"{b['heap_in_use_mib']} | {r['heap_in_use_mib_per_100_requests']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="Folder written by `llmrec index`.")
    p.add_argument("--pads", default="1,16", help="--pad-multiple values, comma-separated, each in a fresh process.")
    p.add_argument("--seconds", type=float, default=240.0, help="Seconds of traffic per setting.")
    p.add_argument("--first", type=float, default=15.0, help="Seconds into the run of the first reading.")
    p.add_argument("--max-batch", type=int, default=16, help="Batches of 1 to this many users.")
    p.add_argument("--history", type=int, default=5)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--base-model", default=None, help="Base model (default: the embedded SmolLM2-135M-Instruct).")
    p.add_argument("--dtype", default="auto", help="Scoring precision (auto: bf16 where the CPU runs it natively).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pad", type=int, default=None, help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--out", default=None, help="Write the rows as JSON here.")
    args = p.parse_args(argv)
    for flag, v in (("--seconds", args.seconds), ("--max-batch", args.max_batch), ("--first", args.first)):
        if v <= 0:
            p.error(f"{flag} {v}: must be > 0")
    if args.first >= args.seconds:
        p.error(f"--first {args.first}: must be below --seconds {args.seconds}")
    if args.pad is not None:
        print(json.dumps(worker(args)), flush=True)
        return
    try:
        pads = [int(x) for x in args.pads.split(",")]
    except ValueError:
        p.error(f"--pads {args.pads!r}: expected integers, comma-separated")
    info, rows = {"machine_before": machine(), "args": vars(args)}, []
    base = [sys.executable, str(Path(__file__).resolve()), "--index", args.index, "--seconds", str(args.seconds),
            "--first", str(args.first), "--max-batch", str(args.max_batch), "--history", str(args.history),
            "--candidates", str(args.candidates), "--dtype", args.dtype, "--seed", str(args.seed)]
    if args.base_model:
        base += ["--base-model", args.base_model]
    for m in pads:
        r = subprocess.run(base + ["--pad", str(m)], cwd=REPO, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"bench_serve_memory: --pad-multiple {m} failed:\n{r.stderr.strip()[-2000:]}")
        rows.append(row(json.loads(r.stdout.strip().splitlines()[-1])))
        print(json.dumps(rows[-1]), flush=True)
    info.update(rows=rows, machine_after=machine())
    print(table(rows))
    mb = info["machine_before"]
    print(f"machine: {mb['cpu']}, {mb['cores']} cores, torch threads {mb['torch_threads']}, native bf16 "
          f"{mb.get('native_bf16')}, load average before {mb['loadavg']}, after {info['machine_after']['loadavg']}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(out)


if __name__ == "__main__":
    main()
