"""The import graph of ``llmrec/`` has no circles (issue 14), and the command modules import each other only
from ``llmrec.cli.main``.

Every ``import`` / ``from ... import`` in every module counts, at module level or inside a function (a lazy
import hides a circle from Python, not from a reader). ``from pkg import name`` is an edge to ``pkg.name``
when that is a module, else to ``pkg``; a submodule's implicit import of its parent package is not an edge.
Static (``ast``), so it needs no optional dependency and imports nothing. Run it alone with
``python tests/test_import_graph.py`` (prints the circles).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llmrec"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """``{module: {llmrec modules it imports}}`` over every module under ``llmrec/``."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, f in mods.items():
        is_pkg = f.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                while t and t not in mods:  # `import llmrec.x.y` of a non-module name: its nearest module
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("llmrec"):
                    graph[mod].add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_inside_llmrec():
    found = circles(import_graph())
    assert not found, "import circles inside llmrec/: " + "; ".join(" <-> ".join(c) for c in found)


def test_detector_sees_a_circle_and_a_lazy_one():
    g = {"llmrec.a": {"llmrec.b"}, "llmrec.b": {"llmrec.c"}, "llmrec.c": {"llmrec.a"}, "llmrec.d": {"llmrec.a"}}
    assert circles(g) == [["llmrec.a", "llmrec.b", "llmrec.c"]]
    assert circles({"llmrec.a": {"llmrec.b"}, "llmrec.b": set()}) == []


def test_graph_sees_lazy_and_relative_imports():
    g = import_graph()
    assert "llmrec.scoring.prefix" in g["llmrec.scoring.pointwise"]          # a lazy import inside a method
    assert "llmrec.retrieval.base" in g["llmrec.retrieval.sasrec"]           # `from .base import ...`
    assert "llmrec.cli.tallrec" in g["llmrec.cli.main"]                      # `from llmrec.cli import tallrec`


def test_only_cli_main_imports_the_command_modules():
    g = import_graph()
    commands = {"llmrec.cli.tallrec", "llmrec.cli.rec", "llmrec.cli.prompts", "llmrec.cli.serve"}
    for mod, deps in g.items():
        if mod not in ("llmrec.cli.main",):
            assert not deps & commands, f"{mod} imports {sorted(deps & commands)}"
        if not mod.startswith("llmrec.cli") and mod != "llmrec.__main__":
            assert not any(d.startswith("llmrec.cli") for d in deps), f"library module {mod} imports the CLI"


def test_library_below_the_public_api():
    """Data flows one way: the lower layers never import the layers above them."""
    g = import_graph()
    above = {
        "llmrec.data": ("llmrec.samples", "llmrec.prompts", "llmrec.scoring", "llmrec.retrieval", "llmrec.rerank",
                        "llmrec.recommender", "llmrec.recipe", "llmrec.train"),
        "llmrec.samples": ("llmrec.prompts", "llmrec.scoring", "llmrec.retrieval", "llmrec.rerank",
                           "llmrec.recommender", "llmrec.recipe"),
        "llmrec.prompts": ("llmrec.prompt_lab", "llmrec.scoring", "llmrec.retrieval", "llmrec.rerank",
                           "llmrec.recommender", "llmrec.recipe", "llmrec.train"),
        "llmrec.scoring": ("llmrec.prompt_lab", "llmrec.retrieval", "llmrec.rerank", "llmrec.recommender",
                           "llmrec.recipe", "llmrec.train"),
        "llmrec.retrieval": ("llmrec.rerank", "llmrec.recommender", "llmrec.recipe", "llmrec.prompt_lab"),
        "llmrec.rerank": ("llmrec.recommender", "llmrec.recipe", "llmrec.prompt_lab"),
    }
    # collaborative tokens (issue 15) sit above retrieval, scoring and train, below the recipe and the apps
    for layer in above:
        above[layer] += ("llmrec.collab",)
    above["llmrec.collab"] = ("llmrec.recommender", "llmrec.recipe", "llmrec.prompt_lab", "llmrec.rerank.reranker")
    # ... except the public Reranker (llmrec.rerank.reranker): like the Recommender, it sits above llmrec.collab, so
    # Reranker.from_pretrained on an adapter with collaborative tokens picks their scorer (issue 15)
    allowed = {"llmrec.rerank.reranker": ("llmrec.collab",)}
    # the service sits on top with the CLI: nothing in the library imports it
    for layer in above:
        above[layer] += ("llmrec.serve",)
    above.update({"llmrec.recommender": ("llmrec.serve",), "llmrec.recipe": ("llmrec.serve",),
                  "llmrec.prompt_lab": ("llmrec.serve",), "llmrec.train": ("llmrec.serve", "llmrec.collab")})
    for mod, deps in g.items():
        for layer, banned in above.items():
            if mod == layer or mod.startswith(layer + "."):
                ok = allowed.get(mod, ())
                bad = sorted(d for d in deps if any(d == b or d.startswith(b + ".") for b in banned)
                             and not any(d == a or d.startswith(a + ".") for a in ok))
                assert not bad, f"{mod} (layer {layer}) imports a layer above it: {bad}"


def test_no_hidden_imports():
    """``__import__("...")`` and string imports escape the graph above; only the lazy public face uses one."""
    for mod, f in _modules().items():
        text = f.read_text()
        assert "__import__(" not in text, mod
        assert "import_module(" not in text or mod == "llmrec", mod


if __name__ == "__main__":  # pragma: no cover
    found = circles(import_graph())
    print("\n".join(" <-> ".join(c) for c in found) or "no import circles")
    sys.exit(1 if found else 0)
