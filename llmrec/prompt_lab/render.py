"""Look at templates: describe one, count prompt tokens, diff two renderings of the same sample.

(Rendering a sample itself is :func:`llmrec.prompts.render.render_one`.)
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from llmrec.prompts.template import Template

__all__ = ["describe", "token_lengths", "diff_renderings"]


def describe(tpl: Template) -> dict:
    """Header fields, content hash and variables of a template, as a JSON-serialisable dict.

    Keys: ``name, path, task, format, verbalizer, targets, variables`` (declared), ``referenced``
    (read by the body; sorted list), ``description, sha256``.
    """
    return {"name": tpl.name, "path": str(tpl.path) if tpl.path else None, "task": tpl.task, "format": tpl.format,
            "verbalizer": list(tpl.verbalizer), "targets": list(tpl.targets), "variables": list(tpl.variables),
            "referenced": sorted(_referenced(tpl)), "description": tpl.description, "sha256": tpl.sha256}


def _referenced(tpl: Template) -> set[str]:
    """Variables the body reads, minus Jinja's globals (``range``, ``lipsum``, ``namespace``...)."""
    return set(tpl.referenced_variables()) - set(tpl._env.globals)


def token_lengths(tpl: Template, tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Prompt lengths in tokens as the scorer encodes them (no added special tokens for chat format); a
    collaborative-token marker (``⟨item:ID⟩``, ``⟨user⟩``) is one position (:mod:`llmrec.collab.tokens`)."""
    from llmrec.prompts.collab_syntax import MARKER_RE
    from llmrec.scoring.logits import encode_prompts

    if not texts:
        return []
    special = tpl.format != "chat"
    plain = [len(x) for x in encode_prompts(tokenizer, texts, add_special_tokens=special)]
    out = []
    for text, n in zip(texts, plain):
        marks = MARKER_RE.findall(text)
        if marks:  # text pieces tokenised separately, one position per marker
            pieces = [p for p in MARKER_RE.sub("\0", text).split("\0") if p]
            n = len(encode_prompts(tokenizer, ["x"], add_special_tokens=special)[0]) - len(
                encode_prompts(tokenizer, ["x"], add_special_tokens=False)[0])
            n += sum(len(x) for x in encode_prompts(tokenizer, pieces, add_special_tokens=False)) + len(marks)
        out.append(n)
    return out


def diff_renderings(a: str, b: str, name_a: str = "A", name_b: str = "B", *, side_by_side: bool = False,
                    width: int = 160, context: int = 3) -> str:
    """Compare two prompt texts line by line.

    Args:
        a, b: the prompt texts; name_a, name_b: labels for the headers.
        side_by_side: two columns of ``width // 2`` characters (long lines wrapped), with a marker column
            (``|`` changed, ``<`` only in A, ``>`` only in B); else a unified diff.
        context: unified diff context lines.

    Returns:
        The diff text; ``""`` (unified) when the texts are equal.
    """
    la, lb = a.splitlines(), b.splitlines()
    if not side_by_side:
        return "\n".join(difflib.unified_diff(la, lb, fromfile=name_a, tofile=name_b, lineterm="", n=context))
    col = max(20, (width - 3) // 2)

    def wrap(s: str) -> list[str]:
        return [s[i:i + col] for i in range(0, len(s), col)] or [""]

    out = [f"{name_a[:col]:<{col}}   {name_b[:col]}", f"{'-' * col}   {'-' * col}"]
    sm = difflib.SequenceMatcher(a=la, b=lb, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        left, right = la[i1:i2], lb[j1:j2]
        mark = {"equal": " ", "replace": "|", "delete": "<", "insert": ">"}[op]
        for k in range(max(len(left), len(right))):
            wl = wrap(left[k]) if k < len(left) else [""]
            wr = wrap(right[k]) if k < len(right) else [""]
            m = mark if op != "replace" else ("|" if k < len(left) and k < len(right) else ("<" if k < len(left) else ">"))
            for r in range(max(len(wl), len(wr))):
                out.append(f"{(wl[r] if r < len(wl) else ''):<{col}} {m if r == 0 else ' '} "
                           f"{wr[r] if r < len(wr) else ''}".rstrip())
    return "\n".join(out)
