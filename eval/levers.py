#!/usr/bin/env python
"""Accuracy levers on the TALLRec movie test set: one named row per lever, one command per row.

    python eval/levers.py list                          # the rows and the flags each adds
    python eval/levers.py run rotate --seeds 0 1 2      # k-shot runs of one row (resumable per seed)
    python eval/levers.py table                         # markdown table of every row measured so far

Extra ``run`` arguments go to ``eval/tallrec_auc.py`` after the row's own (later flags win), e.g.
``--base-model PATH`` or ``--limit 200``.

Every row is ``eval/tallrec_auc.py`` with the baseline settings (SmolLM2-135M-Instruct, ``tallrec``
template, LoRA r=8/alpha=16 on q_proj,v_proj, lr 1e-3 cosine, up to 10 epochs, early stopping on 128
validation samples with patience 3, loss on the answer token, bf16 test scoring) plus the flags listed
for the row, so a row differs from the baseline in one lever (``rate+rotate`` combines two). Augmented
rows train on more samples, so they run fewer epochs to keep the optimizer steps (and seconds) about the
same as the baseline's 80-step budget. Each seed writes ``results/levers/<row>/k<k>-s<seed>.json``;
``table`` reads them all and prints mean +- std over seeds (sample std, ddof=1), the number of seeds,
the mean training wall seconds, and the like-rate blend, beside the like-rate baseline and TALLRec-7B.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _tallrec_auc():
    """eval/tallrec_auc.py as a module (a sibling script, loaded by path: nothing is added to sys.path)."""
    import importlib.util

    if "tallrec_auc" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tallrec_auc", HERE / "tallrec_auc.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["tallrec_auc"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["tallrec_auc"]

# the TALLRec-style baseline, spelled out so that rows stay comparable whatever the shipped defaults are
BASE = ["--dtype", "auto", "--no-zero-shot", "--save-scores", "--template", "tallrec", "--augment", "none",
        "--epochs", "10", "--lr", "1e-3", "--lora-rank", "8", "--lora-alpha", "16", "--target-modules",
        "q_proj,v_proj", "--loss-on", "answer", "--val-size", "128", "--patience", "3", "--batch-size", "8"]

ROWS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("TALLRec template, LoRA r8/a16 q,v, lr 1e-3", []),
    "short": ("prompt: shorter template (tallrec-short)", ["--template", "tallrec-short"]),
    "chat": ("prompt: SmolLM2 chat template (tallrec-chat)", ["--template", "tallrec-chat"]),
    "genres": ("prompt: item text with year and genres, history in order (tallrec-genres)",
               ["--template", "tallrec-genres"]),
    "last5": ("prompt: 5 most recent history items only (tallrec-last5)", ["--template", "tallrec-last5"]),
    "recent-first": ("prompt: history lists most recent first (tallrec-recent-first)",
                     ["--template", "tallrec-recent-first"]),
    "rate": ("prompt: + 'The user liked N of their last 10 movies.' (tallrec-rate)", ["--template", "tallrec-rate"]),
    "all-linear": ("LoRA on all linear layers", ["--target-modules", "all-linear"]),
    "rank16": ("LoRA rank 16, alpha 32", ["--lora-rank", "16", "--lora-alpha", "32"]),
    "alpha32": ("LoRA alpha 32 at rank 8 (update scale 4 instead of 2)", ["--lora-alpha", "32"]),
    "lr3e-4": ("learning rate 3e-4", ["--lr", "3e-4"]),
    "constant-lr": ("schedule: constant learning rate after warm-up (baseline: cosine decay)",
                    ["--lr-scheduler", "constant"]),
    "epochs5": ("epoch budget halved: at most 5 epochs (40 steps)", ["--epochs", "5"]),
    "loss-prompt": ("loss on the whole prompt, not just the answer", ["--loss-on", "prompt"]),
    "gemma": ("base model Gemma 3 270M (opt-in: Gemma terms of use)", ["--base-model", "gemma3-270m"]),
    "rotate": ("augment: rotate x2 (a history item becomes the target), 3 epochs",
               ["--augment", "rotate", "--augment-copies", "2", "--epochs", "3"]),
    "permute": ("augment: permute history x1, 5 epochs", ["--augment", "permute", "--epochs", "5"]),
    "drop": ("augment: drop 1-3 history items x1, 5 epochs", ["--augment", "drop", "--epochs", "5"]),
    "mirror": ("augment: mirror likes and label x1, 5 epochs", ["--augment", "mirror", "--epochs", "5"]),
    "last5+mirror": ("tallrec-last5 + mirror x1, 5 epochs",
                     ["--template", "tallrec-last5", "--augment", "mirror", "--epochs", "5"]),
    "last5+mirror-e20": ("tallrec-last5 + mirror x1, 20 epochs (at 16 shots: the 80 steps of 64 shots)",
                         ["--template", "tallrec-last5", "--augment", "mirror", "--epochs", "20"]),
    "rate+rotate": ("tallrec-rate + rotate x2, 3 epochs",
                    ["--template", "tallrec-rate", "--augment", "rotate", "--augment-copies", "2", "--epochs", "3"]),
}


def row_command(row: str, shots: int, seed: int, root: Path) -> list[str]:
    """tallrec_auc.py arguments of one (row, k, seed). Raises KeyError naming an unknown row."""
    if row not in ROWS:
        raise KeyError(f"row {row!r}: unknown; rows are {', '.join(ROWS)}")
    out = root / row / f"k{shots}-s{seed}.json"
    return BASE + ROWS[row][1] + ["--shots", str(shots), "--seeds", str(seed), "--out", str(out)]


def collect(root: Path) -> dict:
    """{row: {shots: [run records]}} from every JSON under ``root/<row>/``; also the like-rate AUC."""
    rows: dict = {}
    like = None
    for f in sorted(root.glob("*/*.json")):
        d = json.loads(f.read_text())
        like = d.get("like_rate_auc", like)
        for r in d.get("runs", []):
            rows.setdefault(f.parent.name, {}).setdefault(int(r["shots"]), {})[int(r["seed"])] = r
    return {"rows": rows, "like_rate_auc": like}


def _ms(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.4f} ± {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


@functools.lru_cache(maxsize=1)
def _test_samples() -> list:
    """The TALLRec test samples, read once per process (every table cell needs them)."""
    from llmrec.recipe import load_tallrec

    return load_tallrec()[1].test


def _test_reference(n: int):
    """(labels (n,) int, like-rate (n,) float64) of the first ``n`` TALLRec test samples."""
    from llmrec.recipe import like_rate_scores

    test = _test_samples()[:n]
    return np.array([s.label for s in test]), like_rate_scores(test)


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Mean of the normalised ranks (average ranks for ties, in [0, 1]) of several (N,) score arrays.

    Label-free ensembling: no weight is fitted, so it uses no labels beyond each member's own.
    """
    from scipy.stats import rankdata

    ranks = np.sum([rankdata(s) - 1 for s in scores], axis=0)  # sums of half-integers: ties stay exact
    return ranks / (len(scores) * max(len(scores[0]) - 1, 1))


def _with_like(runs: list[dict], how: str) -> list[float | None]:
    """Per run, the test AUC of the LM combined with the like-rate without fitting anything:
    ``how="rank"``: :func:`rank_average`; ``how="poe"``: :func:`llmrec.recipe.like_rate_product`."""
    from llmrec.metrics import auc
    from llmrec.recipe import like_rate_product

    out = []
    for r in runs:
        sc = r.get("test_scores")
        if sc is None:
            out.append(None)
            continue
        y, like = _test_reference(len(sc))
        if how == "rank":
            out.append(auc(y, rank_average(np.asarray(sc), like)))
        else:
            out.append(auc(y, like_rate_product(np.asarray(sc), _test_samples()[:len(sc)])))
    return out


def ensemble(root: Path, rows: list[str], shots: int, with_like_rate: bool = False) -> dict:
    """Per seed, the AUC of the rank average of ``rows``' test scores (same k, same seed, so the same k
    labelled samples); only seeds every row has with saved scores. Returns ``{"seeds", "auc"}``.

    Raises:
        ValueError: a row has no runs with saved test scores at ``shots`` (names it).
    """
    from llmrec.metrics import auc

    c = collect(root)["rows"]
    for r in rows:
        if not any(x.get("test_scores") for x in c.get(r, {}).get(shots, {}).values()):
            raise ValueError(f"row {r!r}: no {shots}-shot runs with saved test scores under {root}")
    seeds = sorted(set.intersection(*[{s for s, x in c[r][shots].items() if x.get("test_scores")} for r in rows]))
    aucs = []
    for seed in seeds:
        members = [np.asarray(c[r][shots][seed]["test_scores"]) for r in rows]
        y, like = _test_reference(len(members[0]))
        aucs.append(auc(y, rank_average(*members, *([like] if with_like_rate else []))))
    return {"seeds": seeds, "auc": aucs}


def table(root: Path) -> str:
    """Markdown table of every measured row (see the module docstring)."""
    TALLREC_PUBLISHED = _tallrec_auc().TALLREC_PUBLISHED

    c = collect(root)
    lines = ["| row | lever | k | test AUC (mean ± std) | seeds | like-rate blend (fit on val) "
             "| × like-rate (no fit) | rank-avg with like-rate (no fit) | train s (mean) |",
             "|---|---|---|---|---|---|---|---|---|"]
    if c["like_rate_auc"] is not None:
        lines.append(f"| like-rate | fraction of liked history items, no model | - | {c['like_rate_auc']:.4f} "
                     "| - | - | - | - | 0 |")
    for k, v in TALLREC_PUBLISHED["TALLRec (LLaMA-7B)"].items():
        lines.append(f"| TALLRec | LLaMA-7B, published | {k} | {v:.4f} | - | - | - | - | - |")
    order = list(ROWS) + sorted(set(c["rows"]) - set(ROWS))
    for name in order:
        for k, runs in sorted(c["rows"].get(name, {}).items()):
            rs = [runs[s] for s in sorted(runs)]
            desc = ROWS[name][0] if name in ROWS else "(not a listed row)"
            lines.append(f"| {name} | {desc} | {k} | {_ms([r['test_auc'] for r in rs])} | "
                         f"{','.join(str(s) for s in sorted(runs))} | {_ms([r.get('blend_test_auc') for r in rs])} | "
                         f"{_ms(_with_like(rs, 'poe'))} | {_ms(_with_like(rs, 'rank'))} | "
                         f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("results/levers"), help="where the per-seed JSONs live")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="rows and their flags")
    r = sub.add_parser("run", help="run one row")
    r.add_argument("row", choices=list(ROWS))
    r.add_argument("--shots", type=int, nargs="+", default=[64])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--rerun", action="store_true", help="run seeds whose JSON already holds a result")
    e = sub.add_parser("ensemble", help="rank-average ensemble of rows, per seed (same k samples)")
    e.add_argument("rows", nargs="+", choices=list(ROWS))
    e.add_argument("--shots", type=int, default=64)
    e.add_argument("--with-like-rate", action="store_true", help="add the like-rate as one more member")
    t = sub.add_parser("table", help="print the table")
    t.add_argument("--json", action="store_true", help="machine-readable summary instead")
    a, extra = p.parse_known_args(argv)
    if extra and a.cmd != "run":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if a.cmd == "list":
        for name, (desc, flags) in ROWS.items():
            print(f"{name:12s} {desc}\n{'':12s} flags: {' '.join(flags) or '(none)'}")
        return 0
    if a.cmd == "ensemble":
        try:
            r = ensemble(a.root, a.rows, a.shots, a.with_like_rate)
        except ValueError as err:
            p.error(str(err))
        name = " + ".join(a.rows) + (" + like-rate" if a.with_like_rate else "")
        print(f"| ensemble: {name} (rank average) | {a.shots} | {_ms(r['auc'])} | "
              f"{','.join(map(str, r['seeds']))} |")
        return 0
    if a.cmd == "table":
        if a.json:
            c = collect(a.root)
            print(json.dumps({n: {k: {"auc": [r["test_auc"] for r in runs.values()], "seeds": sorted(runs)}
                                  for k, runs in by_k.items()} for n, by_k in c["rows"].items()}, indent=2))
        else:
            print(table(a.root))
        return 0
    tallrec_auc = _tallrec_auc()

    for k in a.shots:
        for seed in a.seeds:
            cmd = row_command(a.row, k, seed, a.root) + extra  # later flags win (argparse)
            out = Path(cmd[cmd.index("--out") + 1])
            if out.exists() and not a.rerun and json.loads(out.read_text()).get("runs"):
                print(f"{out}: done, skipped (--rerun to redo)")
                continue
            print("python eval/tallrec_auc.py " + " ".join(cmd), flush=True)
            tallrec_auc.main(cmd)
    print(table(a.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
