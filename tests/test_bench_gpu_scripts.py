"""The GPU scripts stay alive on a CPU: eval/gpu_check.py --dry-run runs every step in its CPU mode (GPU tests
skip, eval/bench_kernel_gpu.py and eval/bench_e2e_gpu.py run their CPU smoke parts, the FAISS probe checks the
CPU fallback), and the values they write are checked here against their references:

* kernel smoke: the kernel (custom op CPU path) against a float64 naive attention ``<= 1e-5``; SDPA with the
  lower-right causal bias over expanded K/V and FlexAttention over the packed layout against the kernel
  ``<= 1e-5`` (float32);
* e2e --cpu-small: P(Yes) prefix-shared against full prompts ``<= 1e-4`` (float32), packed users against
  scoring alone ``<= 1e-4``;
* FAISS: the ``use_gpu="auto"`` index returns the ids of the CPU index (fraction 1.0) and scores within 1e-3.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "eval" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"]
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["env", "gpu_tests", "kernel", "e2e", "faiss"]
    assert all(s["status"] == "passed" for s in steps.values()), {k: s["status"] for k, s in steps.items()}
    assert "skipped" in steps["gpu_tests"]["tail"] and " failed" not in steps["gpu_tests"]["tail"]

    kernel = steps["kernel"]["result"]
    assert not kernel["failures"] and len(kernel["rows"]) == 2
    for row in kernel["rows"]:
        assert row["err_fp64"] <= 1e-5 and row["nan"] == 0
        assert row["diff_sdpa_lr"] <= 1e-5 and row["diff_flex"] <= 1e-5
        for key in ("triton", "sdpa_lr", "sdpa_lr_copy", "flex"):
            assert len(row[key]["runs"]) == 2 and row[key]["ms"] > 0  # each timing twice
        assert row["speedup_vs_best"] > 0 and "pct_matmul" in row
    e2e = steps["e2e"]["result"]
    assert not e2e["failures"] and [r["N"] for r in e2e["rows"]] == [16, 40]
    for row in e2e["rows"]:
        assert row["max_dp_vs_full_same_dtype"] <= 1e-4 and row["max_dp_vs_full_fp32"] <= 1e-4
        assert row["p_yes_std"] > 1e-3  # the random model's scores differ between candidates
        assert row["prefix"]["mean_cand_per_s"] > 0 and row["full"]["mean_cand_per_s"] > 0
    assert e2e["rows"][-1]["packed"]["users"] == 40 and e2e["rows"][-1]["packed"]["max_dp_vs_alone"] <= 1e-4
    faiss = steps["faiss"]["result"]
    if faiss.get("status") != "skipped":
        for kind in ("flat", "ivf"):
            assert faiss[kind]["same_ids"] == 1.0 and faiss[kind]["max_score_diff"] <= 1e-3
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| kernel | passed |" in md and "sdpa lower-right" in md and "prefix-shared cand/s" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["gpu_check.json", "gpu_check.md", "gpu_check.log", "bench_kernel_gpu.json", "bench_kernel_gpu.md",
         "bench_e2e_gpu.json", "bench_e2e_gpu.md"])  # <= 8 files: what the device tool brings back


def test_gpu_check_records_a_timed_out_step_and_goes_on(tmp_path):
    """Every step has its own timeout; one that runs past it is recorded and the next step still runs."""
    r = subprocess.run([sys.executable, str(REPO / "eval" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path),
                        "--steps", "env,nosuchstep,faiss", "--scale", "0.001"],
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert r.returncode == 1
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [
        ("env", "timeout"), ("nosuchstep", "failed"), ("faiss", "timeout")]
    assert not summary["ok"] and "SOME STEPS FAILED" in (tmp_path / "gpu_check.md").read_text()


def test_bench_kernel_gpu_cpu_smoke_exits_0(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "eval" / "bench_kernel_gpu.py"), "--no-flex", "--json",
                        str(tmp_path / "k.json"), "--md", str(tmp_path / "k.md")],
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "k.json").read_text())
    assert not res["cuda"] and all(row["err_fp64"] <= 1e-5 and "flex" not in row for row in res["rows"])
