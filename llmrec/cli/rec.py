"""``llmrec index`` and ``llmrec recommend``: the retrieve-then-rerank commands.

Registered on the main app by :func:`register` (called from :mod:`llmrec.cli.main`). Errors are ``ValueError`` /
``FileNotFoundError`` (or ``CliError``, for a library error re-worded to name the flag) with one-line
messages; ``llmrec.cli.main.main`` prints them as ``llmrec: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from llmrec.cli.common import check_dtype, flag_error
from llmrec.precision import HELP as DTYPE_HELP

__all__ = ["register"]


def _progress_log(total: int):
    """A SASRec ``log`` callback driving a tqdm bar over epochs (SASRec logs every few epochs). When stderr is not
    a terminal (the bar switches itself off: a log file, a CI job, ``nohup``) every log line goes to stderr as
    ``llmrec index: SASRec epoch=10 loss=... valid_ndcg10=... (elapsed 42 s)``, so long fits show they live."""
    import sys
    import time

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="fitting SASRec", unit="epoch", disable=None)  # off when not a terminal
    plain = bar.disable
    t0 = time.monotonic()
    if plain:
        print(f"llmrec index: fitting SASRec (at most {total} epochs, early stopping on validation NDCG@10)",
              file=sys.stderr, flush=True)

    def log(line: str) -> None:
        if plain:
            print(f"llmrec index: SASRec {line} (elapsed {time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        m = re.search(r"epoch=(\d+)", line)
        if m:
            bar.update(int(m.group(1)) - bar.n)
        v = re.search(r"valid_ndcg10=([\d.]+)", line)
        if v:
            bar.set_postfix(valid_ndcg10=v.group(1))

    return bar, log


def index(
    out: Path = typer.Option(..., "--out", help="Folder to write (retriever/, index/, histories, manifest.json)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder (GroupLens raw, RecBole atomic or "
                                                             "MovieLens CSV); default: the embedded MovieLens-100K."),
    kcore: int = typer.Option(5, help="Drop users and items with fewer interactions (k-core)."),
    epochs: int = typer.Option(200, help="Maximum SASRec epochs (early stopping on validation NDCG@10)."),
    kind: str = typer.Option("auto", help="FAISS index: auto (flat up to 50k items, else IVF), flat, ivf, hnsw."),
    retriever: str = typer.Option("auto", help="fusion: SASRec x item transitions x EASE (weights tuned on "
                                               "validation; dense item x item matrices, up to 20k items); sasrec: "
                                               "SASRec alone; auto: fusion up to 20k items, else sasrec."),
    cold_start: bool = typer.Option(False, "--cold-start", help="Also index catalogue items without interactions, "
                                    "with vectors predicted from their text (title, year, genres) by the base LM."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="LM for --cold-start text embeddings "
                                             "(default: the embedded SmolLM2-135M-Instruct)."),
    seed: int = typer.Option(0, help="Seed of SASRec's initialisation and data order."),
):
    """Fit the retriever (SASRec x transitions x EASE by default) on the leave-one-out training part and save it
    with a FAISS item index."""
    from llmrec.recommender import Recommender

    if epochs < 1:
        raise ValueError(f"--epochs {epochs}: must be >= 1")
    if kind not in ("auto", "flat", "ivf", "hnsw"):
        raise ValueError(f"--kind {kind!r}: expected auto, flat, ivf or hnsw")
    if retriever not in ("auto", "fusion", "sasrec"):
        raise ValueError(f"--retriever {retriever!r}: expected auto, fusion or sasrec")
    if kcore < 1:
        raise ValueError(f"--kcore {kcore}: must be >= 1 (1 = no filter)")
    from llmrec._atomic import check_replaceable

    check_replaceable(out, "manifest.json", "recommender index")  # before minutes of fitting, not after
    bar, log = _progress_log(epochs)
    try:
        rec = Recommender.build(data, kcore=kcore, epochs=epochs, seed=seed, index_kind=kind, retriever=retriever,
                               cold_start=cold_start, base_model=base_model, log=log)
    finally:
        bar.close()
    rec.save(out)
    best = max((r.get("valid_ndcg10", -1) for r in rec.retriever.history), default=-1)
    curve = getattr(rec.retriever, "weight_curve", {})
    msg = f"; SASRec validation NDCG@10 {best:.4f}" if best >= 0 else ""
    if curve:
        r = rec.retriever
        msg += (f"; fused with transitions (weight {r.weight})"
                + (f" and EASE (weight {r.ease_weight})" if r.ease is not None else "")
                + f" {curve[(r.weight, r.ease_weight)]:.4f}")
    if rec.n_items > rec.n_warm:
        msg += f"; {rec.n_items - rec.n_warm} cold-start items from their text"
    typer.echo(f"indexed {rec.n_items} items ({rec.index.built_kind}, {rec.index.device}) for "
               f"{len(rec.user_histories)} users into {out}" + msg)


def recommend(
    index_dir: Path = typer.Option(..., "--index", help="Folder written by `llmrec index`."),
    user: Optional[str] = typer.Option(None, "--user", help="A user id of the indexed dataset (uses their history)."),
    history: Optional[str] = typer.Option(None, "--history", help="Item ids or exact titles, oldest first, separated "
                                                                  "by commas (or by | when titles hold commas)."),
    k: int = typer.Option(10, "--k", help="How many items to recommend."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Reranker adapter (eval/rerank_eval.py output); "
                                                                   "without it, retrieval only."),
    candidates: int = typer.Option(20, "--candidates", help="Retrieved items the reranker reorders."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LM weight in the blend with the retriever score "
                                                                "(default: the adapter's tuned value)."),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
):
    """Recommend K items for a user (--user) or a history (--history): retrieve, then rerank."""
    from tqdm.auto import tqdm

    from llmrec.recommender import Recommender

    if (user is None) == (history is None):
        raise ValueError("give exactly one of --user ID or --history ID,ID,...")
    hist = None
    if history is not None:
        sep = "|" if "|" in history else ","  # titles with commas ("Birdcage, The (1996)"): separate with |
        hist = [h.strip() for h in history.split(sep) if h.strip()]
        if not hist:
            raise ValueError("--history is empty: give at least one item id or title")
    if k < 1:
        raise ValueError(f"--k {k}: must be >= 1")
    if candidates < 1:
        raise ValueError(f"--candidates {candidates}: must be >= 1")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"--alpha {alpha}: must be in [0, 1]")
    check_dtype(dtype)
    steps = tqdm(total=3 if adapter else 2, desc="recommend", unit="step", leave=False, disable=None)
    try:
        rec = Recommender.load(index_dir, n_candidates=candidates, blend_alpha=alpha)
        steps.update()
        if adapter is not None:
            from llmrec.rerank.reranker import Reranker

            rr = Reranker.from_pretrained(adapter, catalog=rec.catalog, dtype=dtype)
            rec = Recommender(rec.retriever, rec.index, rec.item_ids, rec.catalog, rr, n_candidates=candidates,
                              blend_alpha=alpha, user_histories=rec.user_histories)
            steps.update()
        if user is not None:
            hist = rec.history_of(user)
        if k > rec.n_items:
            raise ValueError(f"--k {k} is larger than the catalogue ({rec.n_items} items)")
        try:
            items = rec.recommend(hist, k)
        except ValueError as e:  # "k=12 is larger than the 9 items this user has not seen"
            raise flag_error(e, {"k": "--k"}) from None
        steps.update()
    finally:
        steps.close()
    for it in items:
        if as_json:
            typer.echo(json.dumps({"rank": it.rank, "item_id": it.item_id, "title": it.title, "score": it.score}))
        else:
            typer.echo(f"{it.rank:3d}  {it.item_id:>8}  {it.score:+9.4f}  {it.title}")


def register(app: typer.Typer) -> None:
    """Add the ``index`` and ``recommend`` commands to the ``llmrec`` app."""
    app.command("index")(index)
    app.command("recommend")(recommend)
