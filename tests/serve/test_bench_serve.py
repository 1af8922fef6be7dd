"""eval/bench_serve.py end to end on the toy index and the tiny model: two real servers (batching on and off),
the table, the JSON, and the soak mode's RSS report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ratios_pool_repeats_by_summed_wall_time():
    sys.path.insert(0, str(REPO / "eval"))
    try:
        from bench_serve import ratios
    finally:
        sys.path.remove(str(REPO / "eval"))
    rows = [{"concurrency": 16, "mode": "batched", "repeat": 0, "ok": 64, "wall_s": 16.0},
            {"concurrency": 16, "mode": "unbatched", "repeat": 0, "ok": 64, "wall_s": 32.0},
            {"concurrency": 16, "mode": "unbatched", "repeat": 1, "ok": 60, "wall_s": 40.0},
            {"concurrency": 16, "mode": "batched", "repeat": 1, "ok": 64, "wall_s": 20.0}]
    res = ratios(rows, [16])
    # by hand: batched 128 requests / 36 s, unbatched 124 / 72 s; per repeat (64/16)/(64/32), (64/20)/(60/40)
    assert res["batched_over_unbatched"][16] == pytest.approx((128 / 36) / (124 / 72), abs=0.005)
    assert res["batched_over_unbatched_per_repeat"][16] == [2.0, pytest.approx(3.2 / 1.5, abs=0.005)]


def test_pooled_table_rows_by_hand():
    sys.path.insert(0, str(REPO / "eval"))
    try:
        from bench_serve import pooled, table
    finally:
        sys.path.remove(str(REPO / "eval"))

    def cell(mode, ok, wall, p50, rss, batch, rep):
        return {"mode": mode, "concurrency": 16, "sent": 64, "ok": ok, "errors": 64 - ok, "wall_s": wall,
                "req_per_s": ok / wall, "cand_per_s": 10 * ok / wall, "p50_s": p50, "p95_s": 2 * p50, "p99_s": 3 * p50,
                "peak_rss_mib": rss, "mean_batch": batch, "loadavg_1m": 1.0 + rep, "repeat": rep}

    rows = [cell("batched", 64, 16.0, 3.0, 1700.0, 12.0, 0), cell("unbatched", 64, 32.0, 8.0, 1400.0, 1.0, 0),
            cell("unbatched", 60, 40.0, 9.0, 1450.0, 1.0, 1), cell("batched", 64, 20.0, 4.0, 1650.0, 14.0, 1)]
    b, u = pooled(rows)  # first-seen order
    assert (b["mode"], u["mode"]) == ("batched", "unbatched") and b["cells"] == u["cells"] == 2
    # by hand: unbatched 124 answered of 128 in 72 s; candidates 10 per request; p50 (8 + 9) / 2
    assert (u["ok"], u["sent"], u["errors"]) == (124, 128, 4)
    assert u["req_per_s"] == pytest.approx(124 / 72) and u["cand_per_s"] == pytest.approx(1240 / 72)
    assert u["p50_s"] == 8.5 and u["p99_s"] == 25.5 and u["peak_rss_mib"] == 1450.0 and u["loadavg_1m"] == 1.5
    assert b["req_per_s"] == pytest.approx(128 / 36) and b["mean_batch"] == 13.0 and b["peak_rss_mib"] == 1700.0
    assert "| unbatched | 16 | 124 / 128 | 4 | 1.72 | 17.2 | 8.50 |" in table([b, u])


@pytest.mark.slow  # three server start-ups (torch import, index, model): ~1-2 min on 2 busy cores
def test_bench_serve_small(toy_index, tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "eval" / "bench_serve.py"), "--index", str(toy_index),
                        "--base-model", str(tiny_model_dir), "--levels", "1,4", "--requests", "8", "--history", "3",
                        "--candidates", "5", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| batched | 4 |" in r.stdout and "| unbatched | 4 |" in r.stdout and "machine:" in r.stdout
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 4 and all(row["errors"] == 0 and row["ok"] == 8 for row in res["rows"])
    assert all(row["mean_batch"] == 1 for row in res["rows"] if row["mode"] == "unbatched")
    assert set(res["batched_over_unbatched"]) == {"1", "4"} and res["machine_before"]["cores"] >= 1

    soak = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(REPO / "eval" / "bench_serve.py"), "--index", str(toy_index),
                        "--base-model", str(tiny_model_dir), "--endpoint", "score", "--soak", "3", "--warmup", "2",
                        "--soak-concurrency", "4", "--out", str(soak)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(soak.read_text())
    assert s["errors"] == 0 and s["ok"] > 0 and s["rss_end_mib"] > 0 and "rss_growth_pct" in s


@pytest.mark.slow  # two model loads in fresh processes: ~30-60 s on 2 busy cores
def test_bench_serve_memory_small(toy_index, tiny_model_dir, tmp_path):
    """eval/bench_serve_memory.py end to end: one fresh process per --pad-multiple, readings taken, the table
    printed, the JSON written; a bad multiple fails with the value named."""
    out = tmp_path / "mem.json"
    cmd = [sys.executable, str(REPO / "eval" / "bench_serve_memory.py"), "--index", str(toy_index),
           "--base-model", str(tiny_model_dir), "--seconds", "3", "--first", "1", "--max-batch", "4",
           "--history", "3", "--candidates", "5"]
    r = subprocess.run(cmd + ["--pads", "1,4", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| pad multiple |" in r.stdout and "machine:" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [x["pad_multiple"] for x in rows] == [1, 4]
    for x in rows:
        assert 0 < x["first"]["requests"] <= x["end"]["requests"] and x["end"]["rss_mib"] > 0
        assert x["req_per_s"] == pytest.approx(x["end"]["requests"] / x["end"]["s"], rel=1e-2)
    r = subprocess.run(cmd + ["--pads", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "pad_to_multiple_of 0" in r.stderr
