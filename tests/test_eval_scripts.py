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
