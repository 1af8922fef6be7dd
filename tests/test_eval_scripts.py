"""The batch evaluation script end to end on the tiny model (real ML-100K samples, small limits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_tallrec_auc_script(tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(REPO / "eval" / "tallrec_auc.py"), "--base-model", str(tiny_model_dir),
           "--shots", "8", "--seeds", "0", "1", "--epochs", "1", "--limit", "60", "--val-size", "24",
           "--precision", "fp32", "--dtype", "float32", "--save-scores", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "| like-rate baseline (no model) |" in r.stdout and "TALLRec (LLaMA-7B) (published)" in r.stdout
    assert res["n_test"] == 60 and len(res["runs"]) == 2
    # the like-rate baseline recomputed independently from the samples
    from llmrec.pipeline import load_tallrec
    from sklearn.metrics import roc_auc_score

    _, splits = load_tallrec()
    test = splits.test[:60]
    like = [np.mean([x > 3 for x in s.history_ratings]) for s in test]
    assert res["like_rate_auc"] == pytest.approx(roc_auc_score([s.label for s in test], like), abs=1e-12)
    for run in res["runs"]:
        assert run["test_auc"] == pytest.approx(roc_auc_score([s.label for s in test], run["test_scores"]), abs=1e-12)
        assert run["epochs_run"] == 1 and run["train_seconds"] > 0
    s = res["summary"]["8"]
    assert s["mean_auc"] == pytest.approx(np.mean([x["test_auc"] for x in res["runs"]]))


@pytest.mark.integration
def test_levers_run_and_table(tiny_model_dir, tmp_path):
    """One augmented lever row end to end on the tiny model; the table's mean is the runs' AUC."""
    cmd = [sys.executable, str(REPO / "eval" / "levers.py"), "--root", str(tmp_path), "run", "rotate",
           "--shots", "8", "--seeds", "0", "--base-model", str(tiny_model_dir), "--epochs", "1", "--limit", "40",
           "--val-size", "16", "--precision", "fp32", "--dtype", "float32"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "rotate" / "k8-s0.json").read_text())
    (run,) = res["runs"]
    assert run["augment"] == ["rotate"] and run["augment_copies"] == 2 and run["train_samples"] == 8 * 3
    assert res["scoring_dtype"] == "float32" and res["config"]["epochs"] == 1  # the extra flags won
    from sklearn.metrics import roc_auc_score

    from llmrec.pipeline import load_tallrec

    _, splits = load_tallrec()
    assert run["test_auc"] == pytest.approx(roc_auc_score([s.label for s in splits.test[:40]], run["test_scores"]),
                                            abs=1e-12)
    assert f"| rotate | augment: rotate x2" in r.stdout and f"| 8 | {run['test_auc']:.4f} | 0 |" in r.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # resumable: done seeds are skipped
    assert again.returncode == 0 and "done, skipped" in again.stdout
    bad = subprocess.run([sys.executable, str(REPO / "eval" / "levers.py"), "run", "nope"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "'nope'" in bad.stderr
