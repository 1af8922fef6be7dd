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
