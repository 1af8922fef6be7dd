"""Rerank throughput: prefix-shared scoring vs naive full prompts, CPU.

    python eval/bench_rerank.py --quick          # 10/50 candidates, 10-item history, fp32 + bf16
    python eval/bench_rerank.py                  # 10/50/200 candidates x 10/50-item histories
    python eval/bench_rerank.py --base-model smollm2-135m-instruct --threads 1 --dtypes float32

For one user (a MovieLens-100K user's first H rated items as history, TALLRec prompt) and N candidate
movies, every prompt is ``shared prefix + candidate suffix``: the prefix is the Alpaca header,
instruction, liked/disliked history titles and the question up to ``... the target movie``; the suffix
is `` "<candidate title>"?`` plus the response header (split with :func:`llmrec.scoring.prefix.split_prompts`,
which checks the token boundary).

Methods, same batch size (``--batch``), same process, same thread count:

* ``naive``: transformers' ``model(input_ids, attention_mask).logits`` over the full vocabulary for the
  right-padded full prompts, P(Yes) from the two verbalizer logits at the last real token;
* ``prefix``: :func:`llmrec.scoring.prefix.score_candidates` (prefix once, suffixes as one batch).

Candidates/s are wall-clock over the whole call (prefix pass included), best of ``--repeats``.  For
large N the naive path is timed on the first ``--naive-limit`` candidates only and its rate
extrapolated (rows marked ``*``); per-candidate naive cost does not depend on N beyond batching.
Peak memory: peak resident set size above the RSS just before the call (after ``malloc_trim(0)``),
sampled every 2 ms by a thread reading ``/proc/self/statm`` (tracemalloc does not see torch's
allocations; ``ru_maxrss`` is a process-lifetime high-water mark). Memory the allocator still holds
from earlier calls is reused without raising RSS, so small numbers are lower bounds.  ``max|dP|`` is prefix vs naive under the same dtype.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import torch


from naive_reference import naive_scores


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak RSS (bytes) above the RSS at ``__enter__``, sampled by a thread every ``interval`` s."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(self.interval)

    def __enter__(self):
        _trim()  # hand freed heap back to the OS so the baseline RSS is not inflated by earlier calls
        self.base = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss() - self.base)


def shared_prefix_split(texts: list[str]) -> tuple[str, list[str]]:
    """Cut full prompt texts into (common prefix, suffixes) right before the last whitespace of the
    longest common character prefix (so byte-level BPE boundaries stay intact)."""
    n = len(os.path.commonprefix(texts))
    cut = max(texts[0].rfind(" ", 0, n), texts[0].rfind("\n", 0, n))
    if cut <= 0:
        raise ValueError("prompts share no prefix ending in whitespace")
    return texts[0][:cut], [t[cut:] for t in texts]


def build_case(tok, tpl, rec, hist_len: int, n_cand: int, seed: int = 0):
    """Prompt texts for one user and ``n_cand`` candidate movies; returns (prefix_ids, suffix_ids, texts)."""
    from llmrec.scoring.prefix import split_prompts
    from llmrec.samples.tallrec import build_windows, template_variables

    samples = build_windows(rec.interactions, history_len=hist_len)
    sample = samples[0]
    variables = template_variables(sample, rec.catalog)
    variables.pop("label", None)
    seen = set(sample.history)
    items = [i for i in rec.catalog.frame.index if i not in seen]
    rng = np.random.default_rng(seed)
    cands = rng.choice(items, size=n_cand, replace=False)
    texts = []
    for it in cands:
        v = dict(variables, target=rec.catalog._row(it)[0])
        texts.append(tpl.render(v, tok))
    prefix_text, suffix_texts = shared_prefix_split(texts)
    p, s = split_prompts(tok, prefix_text, suffix_texts, add_special_tokens=tpl.format != "chat")
    return p, s


def timed(fn, repeats: int):
    best, res, peak = float("inf"), None, 0
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            res = fn()
            dt = time.perf_counter() - t0
        best, peak = min(best, dt), max(peak, mem.peak)
    return best, res, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-model", default="smollm2-135m-instruct")
    ap.add_argument("--quick", action="store_true", help="10/50 candidates, 10-item history only")
    ap.add_argument("--candidates", default=None, help="comma list, default 10,50,200")
    ap.add_argument("--histories", default=None, help="comma list, default 10,50")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", type=int, default=50, help="prompts per forward pass (both methods)")
    ap.add_argument("--naive-limit", type=int, default=50,
                    help="time the naive path on at most this many candidates and extrapolate")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from llmrec.model import load_base_model, verbalizer_for
    from llmrec.recipe import load_tallrec
    from llmrec.scoring.prefix import score_candidates
    from llmrec.prompts import load_template

    cands = [int(x) for x in (args.candidates or ("10,50" if args.quick else "10,50,200")).split(",")]
    hists = [int(x) for x in (args.histories or ("10" if args.quick else "10,50")).split(",")]
    dtypes = args.dtypes.split(",")
    model, tok = load_base_model(args.base_model, device="cpu")
    rec, splits = load_tallrec()
    tpl = load_template("tallrec")
    pad = tok.pad_token_id or 0
    print(f"model {args.base_model}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"load avg {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for H in hists:
        p, sufs_all = build_case(tok, tpl, rec, H, max(cands))
        ids = verbalizer_for(tpl, tok, tok.decode(p + sufs_all[0])).token_ids
        # warm up both paths once (first-call allocations, lazy init)
        score_candidates(model, p, sufs_all[:2], ids)
        naive_scores(model, [p + s for s in sufs_all[:2]], ids, args.batch, pad, "float32")
        for dt in dtypes:
            for N in cands:
                sufs = sufs_all[:N]
                full = [p + s for s in sufs]
                n_naive = min(N, args.naive_limit)
                t_pre, s_pre, m_pre = timed(lambda: score_candidates(model, p, sufs, ids, dtype=dt,
                                                                     max_batch=args.batch), args.repeats)
                t_nv, s_nv, m_nv = timed(lambda: naive_scores(model, full[:n_naive], ids, args.batch, pad, dt),
                                         args.repeats)
                r_pre, r_nv = N / t_pre, n_naive / t_nv
                dp = float(np.abs(s_pre[:n_naive] - s_nv).max())
                row = dict(H=H, N=N, Lp=len(p), Ls=float(np.mean([len(s) for s in sufs])), dtype=dt,
                           naive=r_nv, prefix=r_pre, ratio=r_pre / r_nv, m_nv=m_nv / 2**20, m_pre=m_pre / 2**20,
                           dp=dp, extrap=n_naive < N)
                rows.append(row)
                print(f"H={H} N={N} {dt}: naive {r_nv:.2f}/s{'*' if row['extrap'] else ''}, prefix {r_pre:.2f}/s, "
                      f"x{row['ratio']:.1f}, peak MiB {row['m_nv']:.0f} vs {row['m_pre']:.0f}, max|dP| {dp:.2e}",
                      flush=True)
    print()
    print("| history | candidates | prefix tok | mean suffix tok | dtype | naive cand/s | prefix cand/s | speedup "
          "| naive peak MiB | prefix peak MiB | max abs dP |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['H']} | {r['N']} | {r['Lp']} | {r['Ls']:.1f} | {r['dtype']} | {r['naive']:.2f}{'*' if r['extrap'] else ''} "
              f"| {r['prefix']:.2f} | {r['ratio']:.1f}x | {r['m_nv']:.0f} | {r['m_pre']:.0f} | {r['dp']:.1e} |")
    print(f"\n`*` naive rate timed on the first {args.naive_limit} candidates and extrapolated. Peak = max RSS above "
          "the pre-call RSS, sampled every 2 ms. Same batch size, thread count and process for both methods.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
