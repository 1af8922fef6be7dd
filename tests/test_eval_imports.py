"""Eval scripts import the installed package; none puts the repository root on sys.path (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EVAL = Path(__file__).resolve().parents[1] / "eval"


@pytest.mark.parametrize("script", sorted(p.name for p in EVAL.glob("*.py")))
def test_eval_script_does_not_edit_sys_path(script):
    tree = ast.parse((EVAL / script).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            pytest.fail(f"eval/{script}:{node.lineno} touches sys.path; import the installed llmrec instead")
