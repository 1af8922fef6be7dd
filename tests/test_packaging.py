"""The wheel carries the templates (prompts/ -> llmrec.prompt_files) and kernels (kernels/ -> llmrec.kernels, through links)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_wheel_contains_templates_and_kernels(tmp_path):
    import shutil

    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "results", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp_path.glob("llmrec-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for tpl in (REPO / "prompts").glob("*.jinja"):
        assert f"llmrec/prompt_files/{tpl.name}" in names
    for k in (REPO / "kernels").glob("*.py"):
        assert f"llmrec/kernels/{k.name}" in names
    assert "llmrec/retrieval/index.py" in names and "llmrec/data/readers.py" in names
    assert not any(n.startswith("kernels/") or n.startswith("prompts/") for n in names)  # no top-level clash


def test_no_top_level_kernels_package():
    """kernels/ holds the Triton kernel and its reference, not a package: a regular package named `kernels` in
    the repository root would shadow Hugging Face's `kernels` (transformers' hub-kernel integration)."""
    assert not (REPO / "kernels" / "__init__.py").exists()
    assert not (REPO / "kernels.py").exists()
    # every kernel file is installed as llmrec.kernels.<name> through a link that resolves to it
    for k in (REPO / "kernels").glob("*.py"):
        link = REPO / "llmrec" / "kernels" / k.name
        assert link.is_symlink() and link.resolve() == k.resolve(), link


_SHADOW_PROBE = r"""
import importlib.metadata, importlib.util, json, sys
sys.path.insert(0, REPO)
spec = importlib.util.find_spec("kernels")
try:
    dist = str(importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py"))
except importlib.metadata.PackageNotFoundError:
    dist = None
from transformers.utils.import_utils import is_kernels_available
import transformers.integrations.hub_kernels  # imports `kernels` when transformers thinks it is there
import torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
model = LlamaForCausalLM(cfg).eval()
logits = model(torch.arange(8)[None]).logits
import llmrec.kernels.prefix_attention as pa
print(json.dumps({"origin": spec and spec.origin, "locations": spec and list(spec.submodule_search_locations or []),
                  "dist": dist, "available": bool(is_kernels_available()), "shape": list(logits.shape),
                  "ours": pa.__file__}))
"""


@pytest.mark.parametrize("cwd_first", [True, False])
def test_repo_root_first_on_sys_path_does_not_shadow_kernels(cwd_first, tmp_path):
    """From the repository root, with the root first on sys.path (python -m pytest, eval scripts, a REPL),
    `import kernels` never resolves to this repository as a regular package, transformers' kernel-hub
    detection agrees with what is installed, and a model builds (issue 13: transformers 5.25 failed here)."""
    import json

    code = _SHADOW_PROBE.replace("REPO", repr(str(REPO)))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO if cwd_first else tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["shape"] == [1, 8, 64]
    origin = got["origin"] or ""
    assert not origin.startswith(str(REPO / "kernels")), origin  # never our folder as a regular package
    if got["dist"]:
        # the real `kernels` distribution wins over our folder (a namespace portion at most)
        assert origin == got["dist"]
    else:
        # no distribution: at most a namespace package of our folder, which transformers must not take
        assert not got["available"]
    assert got["ours"].startswith(str(REPO / "llmrec" / "kernels"))
