"""`accelerate launch` on 2 CPU processes (gloo): training runs data-parallel, scoring shards and gathers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _accelerate(args, tmp_path, n=2):
    exe = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    # --multi_gpu selects the torchrun launcher; without CUDA the processes form a gloo group (MULTI_CPU).
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "llmrec", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_process_train_and_sharded_eval(tiny_model_dir, tiny_collab_dir, tmp_path):
    """The default recipe (collaborative tokens; the tiny collaborative model) under `accelerate launch`."""
    out = tmp_path / "adapter"
    _accelerate(["train", "--base-model", str(tiny_model_dir), "--shots", "16", "--epochs", "2", "--val-size", "16",
                 "--batch-size", "4", "--precision", "fp32", "--collab", str(tiny_collab_dir), "--out", str(out)],
                tmp_path)
    meta = json.loads((out / "llmrec.json").read_text())
    assert meta["template"]["name"] == "tallrec-last5-taste" and meta["collab"]["pair_form"] == "score"
    st = meta["train"]["settings"]
    assert st["world_size"] == 2
    # the default recipe mirrors every shot: (16 + 16) samples / (4 per process x 2 processes) x 2 epochs
    assert meta["train"]["augment"] == ["mirror"] and meta["train"]["train_samples"] == 32
    assert st["steps"] == 8
    # sharded scoring over 2 processes equals single-process scoring
    _accelerate(["eval", "--adapter", str(out), "--limit", "21", "--out", str(tmp_path / "two.json")], tmp_path)
    r = subprocess.run([sys.executable, "-m", "llmrec", "eval", "--adapter", str(out), "--limit", "21",
                        "--out", str(tmp_path / "one.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["n"] == two["n"] == 21
    assert abs(one["auc"] - two["auc"]) < 1e-9
