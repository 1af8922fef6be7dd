"""Load test of `llmrec serve`: batching on vs off in the same run, at several concurrencies; and a soak mode.

Starts two servers on 127.0.0.1 (``--batching`` and ``--no-batching``; same index, model and flags otherwise),
then for each concurrency drives each server in turn (alternating, so both see the same background load) with
a bounded async client (httpx): a fixed number of requests or a time cap, whichever comes first. Requests
are real users of the index (a different user per request): their last ``--history`` items and
``--candidates`` random unseen items (``/v1/rerank``), or one random unseen target (``/v1/score``).
Prints a table: requests/s, candidates/s, p50/p95/p99 latency, errors, peak RSS of the server, mean batch size
(from its /metrics); and writes it as JSON with the machine (CPU, cores, load average, torch threads).

Soak mode (``--soak SECONDS``): one batching server, a warm-up phase, then ``--soak`` seconds at
``--soak-concurrency``: RSS after warm-up and at the end, its growth, the peak, requests and errors.

    python eval/bench_serve.py --index runs/index --out results/bench_serve.json
    python eval/bench_serve.py --index runs/index --soak 600 --soak-concurrency 16 --out results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from llmrec.precision import machine

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``llmrec serve`` in a subprocess."""

    def __init__(self, index: str, batching: bool, args) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "llmrec", "serve", "--index", index, "--port", str(self.port),
               "--timeout", str(args.server_timeout), "--max-queue", "4096", "--no-playground",
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--return-wait-ms", str(args.return_wait_ms),
               "--pad-multiple", str(args.pad_multiple),
               "--trim-memory" if args.trim_memory else "--no-trim-memory", "--log-level", "warning",
               "--batching" if batching else "--no-batching"]
        if args.adapter:
            cmd += ["--adapter", args.adapter]
        if args.base_model:
            cmd += ["--base-model", args.base_model]
        self.batching = batching
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("server not ready")

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_requests(index: str, n: int, args, seed: int = 0) -> list[dict]:
    """Real users (a different one per request, cycling): last --history items + random unseen candidates."""
    from safetensors.numpy import load_file

    man = json.loads((Path(index) / "manifest.json").read_text())
    items = [str(x) for x in man["item_ids"]]
    a = load_file(str(Path(index) / "histories.safetensors"))
    flat, off = a["flat"], a["offsets"]
    g = np.random.default_rng(seed)
    out = []
    for r in range(n):
        u = r % (len(off) - 1)
        h = [items[j] for j in flat[off[u]: off[u + 1]]][-args.history:]
        seen = set(h)
        pool = [items[j] for j in g.permutation(len(items)) if items[j] not in seen]
        if args.endpoint == "rerank":
            out.append({"history": h, "candidates": pool[: args.candidates]})
        else:
            out.append({"history": h, "target": pool[0]})
    return out


def batch_stats(metrics_text: str, queue: str) -> tuple[float, float]:
    s = c = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(f'llmrec_batch_size_sum{{queue="{queue}"}}'):
            s = float(line.split()[-1])
        elif line.startswith(f'llmrec_batch_size_count{{queue="{queue}"}}'):
            c = float(line.split()[-1])
    return s, c


async def drive(server: Server, requests: list[dict], concurrency: int, time_cap: float, path: str) -> dict:
    """Send ``requests`` with ``concurrency`` workers until done or ``time_cap`` seconds passed."""
    import httpx

    lat, codes = [], []
    peak = [server.rss()]
    nxt = [0]
    stop_at = time.perf_counter() + time_cap
    done = asyncio.Event()

    async def sample_rss():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss())
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=server.url, timeout=None,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        m0 = batch_stats((await c.get("/metrics")).text, path.rsplit("/", 1)[-1])

        async def worker():
            while nxt[0] < len(requests) and time.perf_counter() < stop_at:
                body = requests[nxt[0]]
                nxt[0] += 1
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=body)
                    codes.append(r.status_code)
                except httpx.HTTPError:
                    codes.append(-1)
                lat.append(time.perf_counter() - t0)

        sampler = asyncio.ensure_future(sample_rss())
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        done.set()
        await sampler
        m1 = batch_stats((await c.get("/metrics")).text, path.rsplit("/", 1)[-1])
    ok = sum(1 for x in codes if x == 200)
    n_cand = sum(len(requests[i].get("candidates", [1])) for i, x in enumerate(codes) if x == 200)
    q = np.percentile(lat, [50, 95, 99]) if lat else [float("nan")] * 3
    nb = m1[1] - m0[1]
    return {"mode": "batched" if server.batching else "unbatched", "concurrency": concurrency, "sent": len(codes),
            "ok": ok, "errors": len(codes) - ok, "wall_s": round(wall, 2), "req_per_s": round(ok / wall, 3),
            "cand_per_s": round(n_cand / wall, 2), "p50_s": round(float(q[0]), 3), "p95_s": round(float(q[1]), 3),
            "p99_s": round(float(q[2]), 3), "peak_rss_mib": round(peak[0] / 2**20, 1),
            "mean_batch": round((m1[0] - m0[0]) / nb, 2) if nb else None, "loadavg_1m": round(os.getloadavg()[0], 2)}


def table(rows: list[dict]) -> str:
    head = ("| mode | conc. | ok / sent | errors | req/s | cand/s | p50 s | p95 s | p99 s | peak RSS MiB | mean batch "
            "| load 1m |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['ok']} / {r['sent']} | {r['errors']} | {r['req_per_s']:.2f}"
                     f" | {r['cand_per_s']:.1f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['p99_s']:.2f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['mean_batch']} | {r['loadavg_1m']} |")
    return "\n".join(lines)


def pooled(rows: list[dict]) -> list[dict]:
    """One row per (mode, concurrency) over all repeats, in first-seen order: counts summed, requests/s and
    candidates/s = totals / summed wall seconds, latency percentiles and mean batch averaged over the cells,
    peak RSS the largest, load the mean (the README's table)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["concurrency"]), []).append(r)
    out = []
    for (mode, c), rs in groups.items():
        wall = sum(r["wall_s"] for r in rs)

        def mean(k):
            return round(sum(r[k] for r in rs) / len(rs), 3)

        out.append({"mode": mode, "concurrency": c, "sent": sum(r["sent"] for r in rs), "ok": sum(r["ok"] for r in rs),
                    "errors": sum(r["errors"] for r in rs), "wall_s": round(wall, 2),
                    "req_per_s": sum(r["ok"] for r in rs) / wall if wall else 0.0,
                    "cand_per_s": sum(r["cand_per_s"] * r["wall_s"] for r in rs) / wall if wall else 0.0,
                    "p50_s": mean("p50_s"), "p95_s": mean("p95_s"), "p99_s": mean("p99_s"),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in rs), "mean_batch": round(mean("mean_batch"), 1),
                    "loadavg_1m": round(mean("loadavg_1m"), 2), "cells": len(rs)})
    return out


def ratios(rows: list[dict], levels: list[int]) -> dict:
    """Batched / unbatched requests per second per concurrency: over all repeats (answered requests / summed
    wall seconds of each mode), and per repeat (``{c: [r0, r1, ...]}``)."""
    pooled, per = {}, {}
    for c in levels:
        def rate(mode, rep=None):
            rs = [r for r in rows if r["concurrency"] == c and r["mode"] == mode and rep in (None, r["repeat"])]
            wall = sum(r["wall_s"] for r in rs)
            return sum(r["ok"] for r in rs) / wall if wall else 0.0

        def ratio(rep=None):
            u = rate("unbatched", rep)
            return round(rate("batched", rep) / u, 2) if u else None

        pooled[c] = ratio()
        per[c] = [ratio(k) for k in sorted({r["repeat"] for r in rows if r["concurrency"] == c})]
    return {"batched_over_unbatched": pooled, "batched_over_unbatched_per_repeat": per}


def run_bench(args) -> dict:
    path = f"/v1/{args.endpoint}"
    levels = [int(x) for x in args.levels.split(",")]
    servers = [Server(args.index, True, args), Server(args.index, False, args)]
    try:
        for s in servers:
            s.wait_ready()
        warm = make_requests(args.index, 4, args, seed=99)
        rows = []
        for s in servers:  # warm-up: first forwards allocate and compile
            asyncio.run(drive(s, warm, 2, 120, path))
        for c in levels:
            n = max(args.requests, c) if args.requests else 2 * c
            reqs = make_requests(args.index, n, args, seed=c)
            for rep in range(args.repeats):  # the order alternates, so drift in the machine's speed cancels
                for s in (servers if (c + rep) % 2 == 0 else servers[::-1]):
                    r = dict(asyncio.run(drive(s, reqs, c, args.time_cap, path)), repeat=rep)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        return {"rows": rows, **ratios(rows, levels)}
    finally:
        for s in servers:
            s.stop()


def run_soak(args) -> dict:
    path = f"/v1/{args.endpoint}"
    s = Server(args.index, True, args)
    try:
        s.wait_ready()
        c = args.soak_concurrency
        warm = asyncio.run(drive(s, make_requests(args.index, 2000, args, seed=7), c, args.warmup, path))
        rss0 = s.rss()
        t0 = time.time()
        samples = []

        async def soak():
            reqs = make_requests(args.index, 2000, args, seed=8)
            res = {"sent": 0, "ok": 0, "errors": 0}
            end = time.time() + args.soak
            while time.time() < end:  # chunks of ~30 s, RSS sampled between them
                r = await drive(s, reqs, c, min(30.0, end - time.time()), path)
                for k in res:
                    res[k] += r[k]
                samples.append((round(time.time() - t0, 1), round(s.rss() / 2**20, 1), r["peak_rss_mib"]))
            return res

        res = asyncio.run(soak())
        rss1 = s.rss()
        peak = max(x[2] for x in samples)
        return {"warmup_s": args.warmup, "warmup": warm, "soak_s": args.soak, "concurrency": c, **res,
                "rss_after_warmup_mib": round(rss0 / 2**20, 1), "rss_end_mib": round(rss1 / 2**20, 1),
                "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2), "peak_rss_mib": peak,
                "rss_samples": samples}
    finally:
        s.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="Folder written by `llmrec index`.")
    p.add_argument("--adapter", default=None)
    p.add_argument("--base-model", default=None, help="The servers' --base-model (default: the adapter's, else the "
                                                    "embedded SmolLM2-135M-Instruct).")
    p.add_argument("--endpoint", choices=["rerank", "score"], default="rerank")
    p.add_argument("--levels", default="1,4,16,64", help="Concurrencies, comma-separated.")
    p.add_argument("--requests", type=int, default=0, help="Requests per cell: max(this, concurrency) (default 2 x concurrency).")
    p.add_argument("--time-cap", type=float, default=60.0, help="Seconds per cell at most (stops sending).")
    p.add_argument("--history", type=int, default=5, help="History items per request.")
    p.add_argument("--candidates", type=int, default=10, help="Candidates per rerank request.")
    p.add_argument("--repeats", type=int, default=1, help="Run each cell this many times (alternating which server "
                   "goes first); the ratio pools all repeats and each repeat's ratio is printed too.")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--return-wait-ms", type=float, default=50.0, help="The batching server's --return-wait-ms "
                   "(0: the fixed 5 ms window alone, as before).")
    p.add_argument("--trim-memory", action="store_true", help="Both servers with --trim-memory.")
    p.add_argument("--pad-multiple", type=int, default=16, help="Both servers' --pad-multiple (1: no padding).")
    p.add_argument("--server-timeout", type=float, default=900.0, help="The servers' --timeout.")
    p.add_argument("--soak", type=float, default=0.0, help="Soak for this many seconds instead of the bench.")
    p.add_argument("--soak-concurrency", type=int, default=16)
    p.add_argument("--warmup", type=float, default=60.0, help="Soak: seconds of load before the first RSS reading.")
    p.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be >= 1")
    info = {"machine_before": machine(), "args": vars(args)}
    res = run_soak(args) if args.soak else run_bench(args)
    info.update(res, machine_after=machine())
    if not args.soak:
        print(table(res["rows"]))
        if args.repeats > 1:
            print(f"pooled over {args.repeats} repeats:")
            print(table(pooled(res["rows"])))
        print("batched / unbatched req/s:", res["batched_over_unbatched"])
        if args.repeats > 1:
            print("per repeat:", res["batched_over_unbatched_per_repeat"])
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "rss_samples"}, indent=1))
    print(f"machine: {info['machine_before']['cpu']}, {info['machine_before']['cores']} cores, torch threads "
          f"{info['machine_before']['torch_threads']}, load average before {info['machine_before']['loadavg']}, "
          f"after {info['machine_after']['loadavg']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
