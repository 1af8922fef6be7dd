"""Retrieve-then-rerank evaluation (LlamaRec protocol) on a leave-one-out split.

    python eval/rerank_eval.py --out runs/rerank                         # ML-100K, all 943 test users
    python eval/rerank_eval.py --users 100 --train-users 200 --positions 1 --out runs/rerank-quick   # quick run
    python eval/rerank_eval.py --data ~/ml-latest-small --methods listwise,pointwise

Protocol (LlamaRec, Yue et al. 2023): k-core filter (5), leave-one-out (last item = test, second-to-last
= validation, rest = training). A SASRec retriever (Kang & McAuley 2018; early-stopped on validation
NDCG@10, searched through a FAISS flat inner-product index, seen items excluded) gives each user its
top-``--candidates`` (20) candidates (``--retriever fusion``, the default: SASRec x item transitions x EASE,
:class:`llmrec.retrieval.Fusion`, weights tuned on validation); rerankers reorder them. Metrics (NDCG@5/10,
Recall@5/10, MRR@10, plus Recall@20 = the candidates' recall) over *all* evaluated users, a user whose
true item was not retrieved scoring 0, and over the subset where it was retrieved.

Rows, same run, same users: popularity (top-20 of the full catalogue), retriever only, zero-shot LM
rerank (listwise and/or pointwise), tuned rerank (LoRA), tuned rerank blended with the retriever score
(weight tuned on ``--val-users`` validation users, default all, by NDCG@10 with the one-standard-error
rule, :func:`llmrec.rerank.blend.tune_alpha`).

Training data (no validation/test leakage): for ``--train-users`` users (default all) and each of the
last ``--positions`` (2) training items: target = that item, history = the training items before it,
candidates = the retriever's own top-20 for that history (hard negatives; the target replaces the 20th
if missed, or with ``--train-lists retrieved`` the list is dropped), shuffled. Listwise: answer = the
target's letter. Pointwise: target = Yes, ``--negatives`` hard negatives of the same list = No. Candidates
are shown in a seeded random order at evaluation too (no position cue from the retriever).

Collaborative-token rows (issue 15; ``--methods collab-tokens,collab-hybrid``): a pointwise reranker whose
prompt holds a user token and one token per item (``rerank-pointwise-tokens``) or each title followed by its
token (``rerank-pointwise-hybrid``), or the token followed by an interaction token holding the candidate's item vector
times the SASRec user vector (``--methods collab-match``, ``rerank-pointwise-match``, :mod:`llmrec.collab.match`), SASRec
item vectors projected into the LM's input space (:mod:`llmrec.collab`; LLaRA/CoLLM). The collaborative model is a SASRec fitted on the training part without each user's last
``--positions`` items (``--collab-fit held-out``, the default: it never saw the reranker's training targets) or
the retriever's own SASRec (``--collab-fit retriever``, which retrieves 73% of those targets against 36% of the test
ones: memorised answers in the tokens); validation items for early stopping, never a test item. The projector and LoRA train together
on the same Yes/No pairs as the text pointwise row (one stage: next item vs hard negatives). A ``random order``
row gives the exact expectation of a uniformly random order of the same candidates (a retrieved target at
each position with probability 1/C). A ``<method>: its collaborative model alone (no LM)`` row orders the same
candidates by the collaborative model's user . item inner product (the vectors behind the tokens): what the
tokens carry before any language model. ``--train-lists retrieved`` keeps only training lists whose target the
retriever found. ``--train-candidates held-out`` takes the training lists' candidates from the held-out SASRec
instead of the retriever: the retriever was fitted on the training targets, so the ones it retrieves are partly
memorised, and on such lists the held-out SASRec ranks the target below the negatives (AUC 0.45 on ML-100K's
training pairs) while it ranks the retrieved test targets above them; a reranker learns that inversion.
``--train-candidates sampled`` draws them at random instead, each item in proportion to its training popularity
(:func:`llmrec.rerank.popularity_sampler`, history excluded; easy negatives that popularity cannot tell from the
target, which the collaborative model separates clearly); each collab row prints the share of its training pairs the
collaborative model alone orders right (``collab_pair_auc`` in ``metrics.json``). A cost table gives tokens per
prompt, training and scoring seconds.

Writes ``metrics.json``, ``metrics.md``, ``metric_vs_k.png`` (if matplotlib imports) and the tuned
adapters (with the tuned blend weight in their metadata) into ``--out``; prints the markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from llmrec.precision import HELP as DTYPE_HELP, NAMES as PRECISIONS, machine


from llmrec.metrics import ndcg_at_k, ranking_metrics, recall_at_k
from llmrec.model import DEFAULT_BASE_MODEL, LoraSettings
from llmrec.train import TrainSettings
from llmrec.data.loo import load_loo_data
from llmrec.rerank.lm import score_shuffled
from llmrec.rerank import (ListwiseScorer, PointwiseRerankScorer, pointwise_pairs, popularity_sampler,
                           rank_by, training_lists, tune_alpha, blend_scores)
from llmrec.collab.data import collab_from_retriever
from llmrec.retrieval import Fusion, Popularity, SASRec, VectorIndex, load_retriever

KEYS = ["NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@10", "Recall@20"]
TEXT_METHODS = ("listwise", "pointwise")
#: collaborative-token methods -> their template (llmrec.collab.rerank)
COLLAB_METHODS = {"collab-tokens": "rerank-pointwise-tokens", "collab-hybrid": "rerank-pointwise-hybrid",
                  "collab-match": "rerank-pointwise-match"}


def random_order_metrics(retrieved: np.ndarray, C: int) -> dict:
    """Exact expected metrics of a uniformly random order of ``C`` candidates: a retrieved target sits at
    each position 1..C with probability 1/C (NDCG@k = sum_{p<=k} 1/log2(p+1) / C, Recall@k = k/C,
    MRR@10 = sum_{p<=10} 1/p / C); a user whose target was not retrieved scores 0. Same layout as
    :func:`metrics`."""
    ret = np.asarray(retrieved, bool)
    disc = 1.0 / np.log2(np.arange(2, C + 2))

    def at(frac: float) -> dict:
        m = {f"NDCG@{k}": frac * disc[:k].sum() / C for k in (5, 10) if k <= C}
        m.update({f"Recall@{k}": frac * k / C for k in (5, 10, 20) if k <= C})
        if C >= 10:
            m["MRR@10"] = frac * (1.0 / np.arange(1, 11)).sum() / C
        return {k: float(v) for k, v in m.items()}

    f = float(ret.mean()) if ret.size else 0.0
    return {"all": at(f), "retrieved": at(1.0) if ret.any() else {}, "n_users": int(ret.size),
            "n_retrieved": int(ret.sum()),
            "curve": {"K": list(range(1, C + 1)), "NDCG": [f * float(disc[:k].sum()) / C for k in range(1, C + 1)],
                      "Recall": [f * k / C for k in range(1, C + 1)]}}


def metrics(ranked: np.ndarray, targets: np.ndarray, retrieved: np.ndarray) -> dict:
    C = ranked.shape[1]
    ks = dict(ndcg_ks=[k for k in (5, 10) if k <= C], recall_ks=[k for k in (5, 10, 20) if k <= C],
              mrr_ks=[10] if C >= 10 else [])
    out = {"all": ranking_metrics(ranked, targets, **ks), "n_users": int(len(targets)),
           "n_retrieved": int(retrieved.sum())}
    out["retrieved"] = ranking_metrics(ranked[retrieved], targets[retrieved], **ks) if retrieved.any() else {}
    out["curve"] = {"K": list(range(1, C + 1)),
                    "NDCG": [ndcg_at_k(ranked, targets, k) for k in range(1, C + 1)],
                    "Recall": [recall_at_k(ranked, targets, k) for k in range(1, C + 1)]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: embedded ML-100K)")
    p.add_argument("--out", type=Path, default=Path("runs/rerank"))
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--users", type=int, default=0, help="evaluate a random subset of N test users (0 = all)")
    p.add_argument("--val-users", type=int, default=0, help="validation users for the blend weight (0 = all)")
    p.add_argument("--train-users", type=int, default=0, help="users giving training lists (0 = all)")
    p.add_argument("--positions", type=int, default=2,
                   help="training lists per user: the last N training items are each a target once")
    p.add_argument("--methods", default="listwise",
                   help="comma list: listwise, pointwise, collab-tokens, collab-hybrid, collab-match")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot LM rows")
    p.add_argument("--history", type=int, default=10, help="history titles in the prompt")
    p.add_argument("--negatives", type=int, default=3, help="pointwise hard negatives per positive")
    p.add_argument("--train-lists", choices=("all", "retrieved"), default="all",
                   help="all: a target the retriever missed replaces its 20th candidate; retrieved: only lists whose "
                        "target the retriever found (the positives then look like the test subset's)")
    p.add_argument("--collab-fit", choices=("held-out", "retriever"), default="held-out",
                   help="collaborative model of the collab rows: a SASRec fitted on the training sequences without "
                        "their last --positions items (default: it never saw the reranker's training targets, so the "
                        "tokens carry no memorised answer), or the retriever's own SASRec")
    p.add_argument("--collab-epochs", type=int, default=80, help="epoch cap of the held-out SASRec (early-stopped)")
    p.add_argument("--train-candidates", choices=("retriever", "held-out", "sampled"), default="retriever",
                   help="who proposes the training lists' candidates: the retriever (default; it was fitted on the "
                        "training targets, so a retrieved training target is often a memorised one), the held-out "
                        "SASRec of --collab-fit held-out (never saw them: a training target is in its list only when "
                        "the history predicts it, as for the test targets; collab rows only), or sampled: items drawn "
                        "at random in proportion to their popularity, history excluded (easy negatives that popularity "
                        "cannot tell from the target; llmrec.rerank.popularity_sampler)")
    p.add_argument("--pair-form", choices=("score", "product"), default="score",
                   help="collab-match: form of the ⟨match⟩ token rows (llmrec.collab.match.PAIR_FORMS)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=TrainSettings.learning_rate)
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--lora-rank", type=int, default=LoraSettings.rank)
    p.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    p.add_argument("--dtype", default="auto", choices=PRECISIONS, help=DTYPE_HELP)
    p.add_argument("--retriever", choices=["fusion", "sasrec"], default="fusion",
                   help="candidate retriever: SASRec x transitions x EASE (default) or SASRec alone")
    p.add_argument("--retriever-dir", type=Path, default=None, help="load the retriever from here if saved, else fit+save")
    p.add_argument("--sasrec-epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads for the LM (0 = default)")
    a = p.parse_args(argv)

    import torch

    from llmrec.adapter import save_adapter
    from llmrec.model import load_base_model
    from llmrec.rerank.train import train_listwise, train_pointwise

    if a.threads:
        torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in TEXT_METHODS and m not in COLLAB_METHODS:
            p.error(f"--methods: unknown method {m!r} (expected one of "
                    f"{', '.join(TEXT_METHODS + tuple(COLLAB_METHODS))})")
    if a.train_candidates == "held-out" and (a.collab_fit != "held-out" or any(m not in COLLAB_METHODS for m in methods)):
        p.error("--train-candidates held-out needs --collab-fit held-out and only collab-* methods")
    if a.train_candidates == "sampled" and a.train_lists == "retrieved":
        p.error("--train-candidates sampled draws candidates at random, so almost no list holds its target: use "
                "--train-lists all (the target then joins the drawn candidates)")
    if a.negatives < 1 and any(m != "listwise" for m in methods):
        p.error(f"--negatives must be >= 1 for pointwise and collab-* methods (a Yes/No reranker needs No examples), "
                f"got {a.negatives}")
    for flag in ("positions", "collab_epochs", "epochs"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")
    t_all = time.time()
    info_machine = machine()
    try:
        rec, d = load_loo_data(a.data, a.kcore)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or an unreadable file: one line
        p.error(f"--data {a.data}: {e}")
    a.out.mkdir(parents=True, exist_ok=True)
    split, data_path = d.split, getattr(rec, "path", None) or a.data
    print(f"data: {data_path} ({rec.format}) {a.kcore}-core users={split.n_users} items={split.n_items}", flush=True)
    C = a.candidates
    if C > split.n_items:
        p.error(f"--candidates {C} is larger than the catalogue ({split.n_items} items)")
    title = lambda j: rec.catalog.title(d.item_ids[j]) if d.item_ids[j] in rec.catalog else f"item {d.item_ids[j]}"  # noqa: E731

    # --- retriever --------------------------------------------------------------------------------
    t = time.time()
    if a.retriever_dir is not None and (a.retriever_dir / "config.json").is_file():
        sas = load_retriever(a.retriever_dir)
        if sas.n_items != split.n_items:
            p.error(f"--retriever-dir {a.retriever_dir}: {sas.n_items} items, data has {split.n_items}")
        print(f"retriever: loaded {type(sas).__name__} from {a.retriever_dir}", flush=True)
    else:
        _, vh, vt = split.valid_inputs()
        sas = SASRec(epochs=a.sasrec_epochs, seed=a.seed)
        sas = Fusion(sas) if a.retriever == "fusion" else sas
        sas.fit(split.train, split.n_items, vh, vt, log=lambda s: print("  retriever", s, flush=True))
        if a.retriever_dir is not None:
            sas.save(a.retriever_dir)
    index = VectorIndex("flat").build(sas.item_vectors())
    retrieve = lambda h, k: sas.query_index(h, k, index)  # noqa: E731
    info = {"machine": info_machine, "retriever_s": round(time.time() - t, 1), "index_device": index.device, "retriever": type(sas).__name__}
    ret_desc = f"{sas.experts if isinstance(sas, Fusion) else 'SASRec'} + FAISS"
    ret_name = f"retriever ({ret_desc})"
    info["retriever_row"] = ret_name

    rng = np.random.default_rng(a.seed)
    eval_users = split.eval_users()
    test_users = np.sort(rng.choice(eval_users, a.users, replace=False)) if 0 < a.users < len(eval_users) \
        else eval_users
    val_users = np.sort(rng.choice(eval_users, a.val_users, replace=False)) if 0 < a.val_users < len(eval_users) \
        else eval_users
    t_hist = [np.append(split.train[u], split.valid[u]) for u in test_users]
    t_tgt = split.test[test_users]
    v_hist = [split.train[u] for u in val_users]
    v_tgt = split.valid[val_users]
    t_ids, t_sc = retrieve(t_hist, C)
    v_ids, v_sc = retrieve(v_hist, C)
    t_ret = (t_ids == t_tgt[:, None]).any(1)
    v_ret = (v_ids == v_tgt[:, None]).any(1)
    print(f"test users {len(test_users)}, true item retrieved for {t_ret.mean():.3f}; validation users "
          f"{len(val_users)} ({v_ret.mean():.3f})", flush=True)
    results, timing = {}, {}
    pop = Popularity().fit(split.train, split.n_items)
    results["popularity"] = metrics(pop.query(t_hist, C)[0], t_tgt, t_ret)
    results[f"random order of the top-{C}"] = random_order_metrics(t_ret, C)
    results[ret_name] = metrics(t_ids, t_tgt, t_ret)

    # presentation order: a seeded random permutation per user (same for every LM row)
    def lm_scores(scorer, hist, ids, seed, desc):
        t0 = time.time()
        return score_shuffled(scorer, hist, ids, seed, title, progress=True, desc=desc), time.time() - t0

    t_seed, v_seed = a.seed + 11, a.seed + 12

    def held_out_collab():
        """The collaborative model of ``--collab-fit held-out`` (fitted once, timed)."""
        t0 = time.time()
        try:
            held = held_out_sasrec(split, a.positions, a.collab_epochs, a.seed)
        except ValueError as e:
            p.error(f"--collab-fit held-out with --positions {a.positions}: {e} (lower --positions)")
        timing["collab fit (held-out)"] = round(time.time() - t0, 1)
        return collab_from_retriever(held, d.item_ids)

    model, tok = load_base_model(a.base_model)
    collab = None
    train_retrieve = retrieve
    if a.train_candidates == "held-out":
        collab = held_out_collab()
        held = collab.sasrec
        held_index = VectorIndex("flat").build(held.item_vectors())
        train_retrieve = lambda h, k: held.query_index(h, k, held_index)  # noqa: E731
    elif a.train_candidates == "sampled":
        sample = popularity_sampler(split.train, split.n_items, seed=a.seed + 5)
        train_retrieve = lambda h, k: (sample(h, k), None)  # noqa: E731
    train_ex = training_lists(split, lambda h, k: train_retrieve(h, k)[0], C,
                              users=np.random.default_rng(a.seed + 3).permutation(split.n_users)[: a.train_users or None],
                              seed=a.seed, positions=a.positions, retrieved_only=a.train_lists == "retrieved")
    pos = np.array([e.target_pos for e in train_ex])
    if not train_ex and any(m in TEXT_METHODS or m in COLLAB_METHODS for m in methods):
        p.error("no training list: no user has a training item after 3 history items"
                + (" whose target the retriever found (--train-lists retrieved)" if a.train_lists == "retrieved" else ""))
    info["train_lists"] = len(train_ex)
    info["train_lists_mode"] = a.train_lists
    info["train_candidates"] = a.train_candidates
    info["train_target_positions"] = np.bincount(pos, minlength=C).tolist()
    blends, cost = {}, {}
    for method in methods:
        base, _ = (model, tok) if method == methods[0] else load_base_model(a.base_model)
        if method in COLLAB_METHODS:
            if collab is None and a.collab_fit == "held-out":
                collab = held_out_collab()
            collab = collab or collab_from_retriever(sas, d.item_ids)
            _collab_method(a, method, base, tok, collab, sas, train_ex, (t_hist, t_ids, t_sc, t_tgt, t_ret, t_seed),
                           (v_hist, v_ids, v_sc, v_tgt, v_seed), rec, data_path, C, results, timing, info, blends, cost)
            continue
        Scorer = ListwiseScorer if method == "listwise" else PointwiseRerankScorer
        scorer = Scorer(base, tok, max_history=a.history, dtype=a.dtype)
        if not a.no_zero_shot:
            s, sec = lm_scores(scorer, t_hist, t_ids, t_seed, f"zero-shot {method}")
            results[f"zero-shot {method}"] = metrics(rank_by(t_ids, s), t_tgt, t_ret)
            timing[f"zero-shot {method}"] = round(sec, 1)
        st = TrainSettings(output_dir=str(a.out / f"train-{method}"), epochs=a.epochs, learning_rate=a.lr,
                           batch_size=a.batch_size, seed=a.seed, patience=0, logging_steps=10)
        lora = LoraSettings(rank=a.lora_rank, alpha=2.0 * a.lora_rank)
        titles_h = lambda e: [title(j) for j in e.history]  # noqa: E731
        if method == "listwise":
            res = train_listwise(scorer, [(titles_h(e), [title(j) for j in e.candidates], e.target_pos)
                                          for e in train_ex], st, lora)
        else:
            pairs = pointwise_pairs(train_ex, a.negatives, a.seed)
            res = train_pointwise(scorer, [([title(j) for j in h], title(c), y) for h, c, y in pairs], st, lora)
        timing[f"train {method}"] = round(res.train_seconds, 1)
        info[f"train {method}"] = {"examples": len(train_ex) if method == "listwise" else len(pairs),
                                   "tokens": res.train_tokens, "epochs": res.epochs_run,
                                   "loss_history": res.settings.get("loss_history")}
        vs, sec = lm_scores(scorer, v_hist, v_ids, v_seed, f"tuned {method} (valid)")
        timing[f"tuned {method} valid"] = round(sec, 1)
        alpha, curve = tune_alpha(v_ids, v_sc, vs, v_tgt)
        blends[method] = {"alpha": alpha, "valid_ndcg10_curve": curve}
        s, sec = lm_scores(scorer, t_hist, t_ids, t_seed, f"tuned {method}")
        timing[f"tuned {method}"] = round(sec, 1)
        cost[f"tuned {method}"] = _cost(_prompt_tokens(scorer, t_hist, t_ids, title), res.train_seconds,
                                        timing[f"tuned {method} valid"], sec, len(v_hist), len(t_hist))
        results[f"tuned {method}"] = metrics(rank_by(t_ids, s), t_tgt, t_ret)
        results[f"tuned {method} + retriever (alpha={alpha:.2f})"] = metrics(
            rank_by(t_ids, blend_scores(t_sc, s, alpha)), t_tgt, t_ret)
        np.savez(a.out / f"scores-{method}.npz", users=test_users, ids=t_ids, retriever=t_sc, lm=s, targets=t_tgt)
        save_adapter(scorer.model, a.out / f"adapter-{method}", base_model=a.base_model, template=scorer.template,
                     verbalizer=scorer.verbalizer, kind=f"rerank-{method}",
                     protocol={"task": f"rerank-{method}", "data": str(data_path), "kcore": a.kcore,
                               "n_candidates": C, "max_history": a.history, "blend_alpha": alpha,
                               "train_users": a.train_users, "positions": a.positions, "seed": a.seed},
                     metrics={"test_ndcg10": results[f"tuned {method}"]["all"]["NDCG@10"]},
                     train=info[f"train {method}"])

    # --- report -----------------------------------------------------------------------------------
    ref = results[ret_name]["all"]["NDCG@10"]
    lines = [f"{rec.format} {a.kcore}-core leave-one-out, test users {len(test_users)} of {len(eval_users)}, "
             f"{split.n_items} items, top-{C} {ret_desc} candidates (true item retrieved for "
             f"{t_ret.mean():.3f}), seed {a.seed}, history {a.history} titles, {a.train_users} training users, "
             f"base {a.base_model}", "",
             "| model | " + " | ".join(KEYS) + " | NDCG@10 vs retriever | NDCG@10 (retrieved subset) |",
             "|---|" + "---|" * (len(KEYS) + 2)]
    for name, r in results.items():
        m = r["all"]
        rel = (m["NDCG@10"] / ref - 1) * 100 if ref > 0 else float("nan")
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in KEYS) +
                     f" | {rel:+.1f}% | {r['retrieved'].get('NDCG@10', float('nan')):.4f} |")
    if cost:
        mi = info["machine"]
        lines += ["", f"Cost ({mi['cpu']}, {mi['cores']} cores, torch threads {mi['torch_threads']}, native bf16 "
                      f"{mi['native_bf16']}, load average at start {mi['loadavg']}):", "",
                  "| model | tokens per prompt | training s | validation scoring s | test scoring s | test ms per "
                  "user |", "|---|---|---|---|---|---|"]
        for name, c in cost.items():
            lines.append(f"| {name} | {c['tokens_per_prompt']:.1f} | {c['train_s']:.0f} | {c['valid_score_s']:.0f} | "
                         f"{c['test_score_s']:.0f} | {c['test_ms_per_user']:.0f} |")
    md = "\n".join(lines)
    (a.out / "metrics.md").write_text(md + "\n")
    info["total_s"] = round(time.time() - t_all, 1)
    (a.out / "metrics.json").write_text(json.dumps(
        {"data": str(data_path), "format": rec.format, "args": {k: str(v) for k, v in vars(a).items()},
         "n_users": split.n_users, "n_items": split.n_items, "test_users": len(test_users),
         "results": results, "blend": blends, "timing_s": timing, "cost": cost, "info": info}, indent=2, default=float))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, r in results.items():
            for ax, key in zip(axes, ("NDCG", "Recall")):
                ax.plot(r["curve"]["K"], r["curve"][key], marker=".", label=name)
        for ax, key in zip(axes, ("NDCG", "Recall")):
            ax.set_xlabel("K")
            ax.set_ylabel(f"{key}@K")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.out / "metric_vs_k.png", dpi=120)
        print(f"plot: {a.out / 'metric_vs_k.png'}")
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib); the curves are in metrics.json")
    print(json.dumps({"timing_s": timing, "blend": {k: v["alpha"] for k, v in blends.items()}, **info},
                     default=float))
    print(md)
    return 0


def _cost(tokens: float, train_s: float, valid_s: float, test_s: float, n_valid: int, n_test: int) -> dict:
    return {"tokens_per_prompt": float(tokens), "train_s": float(train_s), "valid_score_s": float(valid_s),
            "test_score_s": float(test_s), "test_ms_per_user": 1000.0 * test_s / max(n_test, 1),
            "valid_users": n_valid, "test_users": n_test}


def _prompt_tokens(scorer, hist, ids, item, n: int = 50) -> float:
    """Mean prompt length in tokens (one input position per collaborative token) over the first ``n`` users'
    candidate prompts."""
    lens = []
    for h, c in list(zip(hist, ids))[:n]:
        hh = [item(j) for j in h]
        for j in c:
            lens.append(len(scorer.encode(hh, item(j))))
    return float(np.mean(lens)) if lens else float("nan")


def held_out_sasrec(split, positions: int, epochs: int, seed: int) -> SASRec:
    """A SASRec (history 50) fitted on every user's training sequence *without* its last ``positions`` items,
    early-stopped on the validation items: the reranker's training targets (those last items) are never a
    next-item target of the collaborative model, so its user/item vectors cannot hand the reranker a memorised
    answer during training that they would not give at test time (the retriever's SASRec, fitted on the whole
    training part, retrieves 73% of those targets against 36% of the test ones on ML-100K).

    Raises:
        ValueError: from :meth:`SASRec.fit` when no user keeps two items."""
    _, vh, vt = split.valid_inputs()
    train = [tr[:-positions] if len(tr) > positions else tr[:0] for tr in split.train]
    sas = SASRec(max_len=50, epochs=epochs, seed=seed)
    return sas.fit(train, split.n_items, vh, vt, log=lambda s: print("  held-out collab SASRec", s, flush=True))


def collab_scores(collab, hists, ids, item) -> np.ndarray:
    """The no-LM reference of a collaborative-token row: float32 ``(n_users, C)`` inner products of the
    collaborative model's user vector (SASRec over the history) with each candidate's item vector, the very
    vectors the projector turns into tokens. An LM row at or below this order learned nothing beyond its tokens."""
    users = collab.user_vectors([[item(j) for j in h] for h in hists])
    return np.stack([collab.item_matrix([item(j) for j in row]) @ u for u, row in zip(users, ids)]).astype(np.float32)


def train_pair_auc(collab, pairs, item, max_history: int) -> float:
    """The share of (target, negative) training pairs of the same list whose target the collaborative model alone
    scores higher (ties count half): how clearly the vectors behind the tokens separate what the reranker is asked
    to separate (0.5 = not at all). ``pairs`` as from :func:`llmrec.rerank.pointwise_pairs` (each positive followed
    by its negatives); ``item`` maps an item index to the collaborative model's item id; the user vector is taken
    over the last ``max_history`` items, as the prompt's ⟨user⟩ and ⟨match⟩ tokens are (``--history``)."""
    users = collab.user_vectors([[item(j) for j in h[-max_history:]] for h, _, _ in pairs])
    scores = (collab.item_matrix([item(c) for _, c, _ in pairs]) * users).sum(1)
    wins, n, pos = 0.0, 0, None
    for (_, _, y), sc in zip(pairs, scores):
        if y:
            pos = sc
        elif pos is not None:
            wins += 1.0 if pos > sc else 0.5 if pos == sc else 0.0
            n += 1
    return wins / n if n else float("nan")


def _collab_method(a, method, model, tok, collab, sas, train_ex, test, valid, rec, data_path, C, results, timing,
                   info, blends, cost) -> None:
    """Train and evaluate one collaborative-token reranker row (see the module docstring)."""
    from llmrec.collab.adapter import save_collab_adapter
    from llmrec.collab.rerank import CollabRerankScorer
    from llmrec.collab.tokens import SlotTable, find_collab_embedding
    from llmrec.collab.train import attach
    from llmrec.rerank.train import train_pointwise

    t_hist, t_ids, t_sc, t_tgt, t_ret, t_seed = test
    v_hist, v_ids, v_sc, v_tgt, v_seed = valid
    item_ids = collab.catalog_items
    item = lambda j: item_ids[j]  # noqa: E731
    title = lambda i: rec.catalog.title(i) if i in rec.catalog else f"item {i}"  # noqa: E731
    lora = LoraSettings(rank=a.lora_rank, alpha=2.0 * a.lora_rank)
    peft, slots = attach(model, collab, lora, seed=a.seed)
    slots.pair_form = a.pair_form
    scorer = CollabRerankScorer(peft, tok, slots, title, COLLAB_METHODS[method], max_history=a.history,
                                dtype=a.dtype)
    st = TrainSettings(output_dir=str(a.out / f"train-{method}"), epochs=a.epochs, learning_rate=a.lr,
                       batch_size=a.batch_size, seed=a.seed, patience=0, logging_steps=10)
    pairs = pointwise_pairs(train_ex, a.negatives, a.seed)
    res = train_pointwise(scorer, [([item(j) for j in h], item(c), y) for h, c, y in pairs], st, lora)
    info[f"train {method}"] = {"examples": len(pairs), "tokens": res.train_tokens, "epochs": res.epochs_run,
                               "loss_history": res.settings.get("loss_history"), "collab_sha256": collab.sha256,
                               "pair_form": a.pair_form, "train_candidates": a.train_candidates,
                               "collab_pair_auc": train_pair_auc(collab, pairs, item, a.history)}
    print(f"{method}: the collaborative model alone ranks the target above its negatives in "
          f"{info[f'train {method}']['collab_pair_auc']:.3f} of the training pairs", flush=True)
    timing[f"train {method}"] = round(res.train_seconds, 1)
    name = f"tuned {method}"
    peft = scorer.model
    scorer.model = copy.deepcopy(peft).merge_and_unload()  # LoRA merged for scoring; the projector stays in place
    scorer.model.eval()
    scorer.slots = SlotTable(collab, find_collab_embedding(scorer.model))  # slot rows live in the copy's embedding
    scorer.slots.pair_form = a.pair_form
    t0 = time.time()
    vs = score_shuffled(scorer, v_hist, v_ids, v_seed, item, progress=True, desc=f"{name} (valid)")
    v_sec = time.time() - t0
    alpha, curve = tune_alpha(v_ids, v_sc, vs, v_tgt)
    blends[method] = {"alpha": alpha, "valid_ndcg10_curve": curve}
    t0 = time.time()
    s = score_shuffled(scorer, t_hist, t_ids, t_seed, item, progress=True, desc=name)
    sec = time.time() - t0
    timing[f"{name} valid"], timing[name] = round(v_sec, 1), round(sec, 1)
    results[name] = metrics(rank_by(t_ids, s), t_tgt, t_ret)
    cs = collab_scores(collab, t_hist, t_ids, item)
    results[f"{method}: its collaborative model alone (no LM)"] = metrics(rank_by(t_ids, cs), t_tgt, t_ret)
    # the ceiling of an LM that learnt its tokens' comparison exactly: the same vectors' scores fused with the
    # retriever, the weight tuned on validation the same way
    c_alpha, c_curve = tune_alpha(v_ids, v_sc, collab_scores(collab, v_hist, v_ids, item), v_tgt)
    blends[f"{method}: collaborative model alone"] = {"alpha": c_alpha, "valid_ndcg10_curve": c_curve}
    results[f"{method}: its collaborative model alone + retriever (alpha={c_alpha:.2f})"] = metrics(
        rank_by(t_ids, blend_scores(t_sc, cs, c_alpha)), t_tgt, t_ret)
    results[f"{name} + retriever (alpha={alpha:.2f})"] = metrics(rank_by(t_ids, blend_scores(t_sc, s, alpha)),
                                                                 t_tgt, t_ret)
    cost[name] = _cost(_prompt_tokens(scorer, t_hist, t_ids, item), res.train_seconds, v_sec, sec, len(v_hist),
                       len(t_hist))
    np.savez(a.out / f"scores-{method}.npz", ids=t_ids, retriever=t_sc, lm=s, targets=t_tgt)
    save_collab_adapter(peft, a.out / f"adapter-{method}", collab=collab, base_model=a.base_model,
                        template=scorer.template, verbalizer=scorer.verbalizer, kind="rerank-pointwise",
                        protocol={"task": "rerank-pointwise", "data": str(data_path), "kcore": a.kcore,
                                  "n_candidates": C, "max_history": a.history, "blend_alpha": alpha,
                                  "train_users": a.train_users, "positions": a.positions, "negatives": a.negatives,
                                  "train_candidates": a.train_candidates, "seed": a.seed},
                        metrics={"test_ndcg10": results[name]["all"]["NDCG@10"]}, train=info[f"train {method}"])


if __name__ == "__main__":
    raise SystemExit(main())
