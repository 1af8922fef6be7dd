"""The wheel carries the templates (prompts/ -> llmrec.prompt_files) and kernels (kernels/ -> llmrec.kernels)."""

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
