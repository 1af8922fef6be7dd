"""The batch evaluation script end to end on the tiny model (real ML-100K samples, small limits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flags, msg", [
    (["--zero-shot-template", "no-such-template"], "error: --zero-shot-template no-such-template: "),
    (["--zero-shot-template", "tallrec-last5-taste"], "error: --zero-shot-template tallrec-last5-taste: it places "
                                                      "collaborative tokens"),
    (["--template", "tallrec-last5", "--pair-form", "product"], "error: --pair-form product: template tallrec-last5 "
                                                                 "places no"),
    (["--template", "no-such-template"], "error: --template no-such-template: "),
    (["--template", "tallrec-last5", "--collab", "x"], "error: --collab x: template tallrec-last5 places no "),
])
def test_tallrec_auc_refuses_bad_templates_before_any_fit(flags, msg, tmp_path):
    """Template flags are checked before the data, the collaborative model (a 2-minute fit) or any LM loads."""
    r = subprocess.run([sys.executable, str(REPO / "eval" / "tallrec_auc.py"), "--shots", "64", *flags,
                        "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "LLMREC_CACHE": str(tmp_path / "cache")})
    assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "cache" / "collab").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.integration
def test_tallrec_auc_script(tiny_model_dir, tiny_collab_dir, tmp_path):
    """The default recipe (tallrec-last5-taste with a collaborative model; zero-shot with the text template) on 60
    real test samples: every metric recomputed independently (sklearn, and the probe from
    eval/collab_probe.py's own cosine formula)."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(REPO / "eval" / "tallrec_auc.py"), "--base-model", str(tiny_model_dir),
           "--shots", "8", "--seeds", "0", "1", "--epochs", "1", "--limit", "60", "--val-size", "24",
           "--precision", "fp32", "--dtype", "float32", "--save-scores", "--collab", str(tiny_collab_dir),
           "--out", str(out)]
    proc = r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "| llmrec × like-rate (logit sum, no fit) |" in r.stdout
    assert "| like-rate baseline (no model) |" in r.stdout and "TALLRec (LLaMA-7B) (published)" in r.stdout
    assert res["n_test"] == 60 and len(res["runs"]) == 2
    assert res["config"]["template"] == "tallrec-last5-taste" and res["zero_shot"]["template"] == "tallrec-last5"
    assert "(tallrec-last5) |" in r.stdout  # the zero-shot cell names the text template it was scored with
    from llmrec.collab.data import CollabModel

    cm = CollabModel.load(tiny_collab_dir)
    assert res["collab"]["sha256"] == cm.sha256 and res["collab"]["pair_form"] == "score"
    # the like-rate baseline recomputed independently from the samples
    from llmrec.recipe import load_tallrec
    from sklearn.metrics import roc_auc_score

    _, splits = load_tallrec()
    test = splits.test[:60]
    like = [np.mean([x > 3 for x in s.history_ratings]) for s in test]
    assert res["like_rate_auc"] == pytest.approx(roc_auc_score([s.label for s in test], like), abs=1e-12)
    # the no-LM row: eval/collab_probe.py's cosine probe, z-summed with logit((n_liked + 1) / 12)
    sys.path.insert(0, str(REPO / "eval"))
    try:
        from collab_probe import probe_features
    finally:
        sys.path.remove(str(REPO / "eval"))
    cos = probe_features(cm, test)["cos"]
    r = np.array([(sum(x > 3 for x in s.history_ratings) + 1) / 12 for s in test])
    lr = np.log(r / (1 - r))
    ref = lr + (cos - cos.mean()) / cos.std() * lr.std()
    assert res["collab"]["probe_like_rate_auc"] == pytest.approx(roc_auc_score([s.label for s in test], ref), abs=1e-12)
    assert "| collaborative probe × like-rate (no LM, nothing fitted) |" in proc.stdout
    for run in res["runs"]:
        assert run["test_auc"] == pytest.approx(roc_auc_score([s.label for s in test], run["test_scores"]), abs=1e-12)
        assert run["epochs_run"] == 1 and run["train_seconds"] > 0
        p = np.clip(np.array(run["test_scores"]), 1e-6, 1 - 1e-6)  # x like-rate: logit(p) + logit((n_liked+1)/12)
        r = np.array([(sum(x > 3 for x in s.history_ratings) + 1) / 12 for s in test])
        z = np.log(p / (1 - p)) + np.log(r / (1 - r))
        assert run["like_product_test_auc"] == pytest.approx(roc_auc_score([s.label for s in test], z), abs=1e-12)
    s = res["summary"]["8"]
    assert s["mean_auc"] == pytest.approx(np.mean([x["test_auc"] for x in res["runs"]]))
    # UAUC recomputed per user with sklearn (independent of llmrec.metrics.uauc); the like-rate is constant
    # within a user's windows only if the history is, so it is recomputed too, not assumed 0.5
    def ref_uauc(scores):
        by = {}
        for smp, sc in zip(test, scores):
            by.setdefault(smp.user_id, []).append((smp.label, sc))
        vals = [roc_auc_score([a for a, _ in v], [b for _, b in v]) for v in by.values()
                if len({a for a, _ in v}) == 2]
        return float(np.mean(vals))

    assert res["like_rate_uauc"] == pytest.approx(ref_uauc(like), abs=1e-12)
    for run in res["runs"]:
        assert run["test_uauc"] == pytest.approx(ref_uauc(run["test_scores"]), abs=1e-12)
    assert s["mean_uauc"] == pytest.approx(np.mean([x["test_uauc"] for x in res["runs"]]))
    assert "UAUC over" in proc.stdout


@pytest.mark.integration
def test_levers_run_and_table(tiny_model_dir, tmp_path):
    """One augmented lever row end to end on the tiny model; the table's mean is the runs' AUC."""
    cmd = [sys.executable, str(REPO / "eval" / "levers.py"), "--root", str(tmp_path), "run", "rotate",
           "--shots", "8", "--seeds", "0", "--base-model", str(tiny_model_dir), "--epochs", "1", "--limit", "40",
           "--val-size", "16", "--precision", "fp32", "--dtype", "float32"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "rotate" / "k8-s0.json").read_text())
    (run,) = res["runs"]
    assert run["augment"] == ["rotate"] and run["augment_copies"] == 2 and run["train_samples"] == 8 * 3
    assert res["scoring_dtype"] == "float32" and res["config"]["epochs"] == 1  # the extra flags won
    from sklearn.metrics import roc_auc_score

    from llmrec.recipe import load_tallrec

    _, splits = load_tallrec()
    assert run["test_auc"] == pytest.approx(roc_auc_score([s.label for s in splits.test[:40]], run["test_scores"]),
                                            abs=1e-12)
    assert f"| rotate | augment: rotate x2" in r.stdout and f"| 8 | {run['test_auc']:.4f} | 0 |" in r.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # resumable: done seeds are skipped
    assert again.returncode == 0 and "done, skipped" in again.stdout
    bad = subprocess.run([sys.executable, str(REPO / "eval" / "levers.py"), "run", "nope"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "'nope'" in bad.stderr


def _levers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("levers", REPO / "eval" / "levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rank_average_hand_worked():
    lv = _levers()
    np.testing.assert_allclose(lv.rank_average(np.array([1., 2., 3.]), np.array([3., 1., 2.])), [.5, .25, .75])
    np.testing.assert_allclose(lv.rank_average(np.array([1., 1., 2.])), [.25, .25, 1.])  # ties: average rank


def test_levers_ensemble_against_sklearn(tmp_path):
    from sklearn.metrics import roc_auc_score

    from llmrec.recipe import like_rate_scores, load_tallrec

    lv = _levers()
    rng = np.random.default_rng(0)
    scores = {}
    for row in ("short", "rate"):
        for seed in (0, 1):
            sc = rng.random(50)
            scores[row, seed] = sc
            (tmp_path / row).mkdir(exist_ok=True)
            (tmp_path / row / f"k64-s{seed}.json").write_text(json.dumps(
                {"like_rate_auc": 0.7, "runs": [{"shots": 64, "seed": seed, "test_auc": 0.5, "train_seconds": 1.0,
                                                 "test_scores": sc.tolist()}]}))
    _, splits = load_tallrec()
    test = splits.test[:50]
    y, like = [s.label for s in test], like_rate_scores(test)
    r = lv.ensemble(tmp_path, ["short", "rate"], 64, with_like_rate=True)
    assert r["seeds"] == [0, 1]
    for seed, got in zip(r["seeds"], r["auc"]):
        from scipy.stats import rankdata

        z = sum(rankdata(x) for x in (scores["short", seed], scores["rate", seed], like))
        assert got == pytest.approx(roc_auc_score(y, z), abs=1e-12)  # ranks shifted/scaled: same AUC
    with pytest.raises(ValueError, match="'gemma'"):
        lv.ensemble(tmp_path, ["short", "gemma"], 64)
    assert "| short | prompt: shorter template" in lv.table(tmp_path)


def test_ceilings_features_and_like_rate_row(capsys):
    import importlib.util

    from sklearn.metrics import roc_auc_score

    from llmrec.data.core import Catalog
    from llmrec.recipe import load_tallrec
    from llmrec.samples import Sample

    spec = importlib.util.spec_from_file_location("ceilings", REPO / "eval" / "ceilings.py")
    ce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ce)
    cat = Catalog.from_records([{"item_id": "t", "title": "T (1975)", "year": 1975, "genres": ["Drama"]}])
    s = Sample("u", list("abcdefghij"), [5, 5, 5, 5, 5, 5, 5, 1, 1, 1], "t", 4.0, 1)  # 7 of 10 liked
    f = ce.features([s], cat, ["Comedy", "Drama"])
    np.testing.assert_allclose(f, [[np.log(7.5 / 3.5), -1.5, 0.0, 1.0]], rtol=1e-12)
    assert ce.main(["--shots", "16", "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    _, sp = load_tallrec()
    like = roc_auc_score([x.label for x in sp.test], [np.mean([r > 3 for r in x.history_ratings]) for x in sp.test])
    assert f"| like-rate (no labels) | - | {like:.4f} |" in out and "| 16 |" in out and "oracle item prior" in out


def test_ceilings_probe_rows_combine_the_probe_with_the_like_rate(capsys, monkeypatch):
    """--probe rows: the probe's own AUC, probe x like-rate (the shipped product rule) and the z-scored
    log-odds sum, each recomputed here from the same fixed P(Yes) array with sklearn and the Laplace-smoothed
    like-rate written out (tolerance: the table's 4 decimals)."""
    import importlib.util

    import torch
    from sklearn.metrics import roc_auc_score

    import llmrec.model
    import llmrec.scoring.pointwise
    from llmrec.recipe import load_tallrec

    spec = importlib.util.spec_from_file_location("ceilings", REPO / "eval" / "ceilings.py")
    ce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ce)
    _, sp = load_tallrec()
    y = np.array([x.label for x in sp.test])
    p = np.random.default_rng(0).uniform(0.01, 0.99, len(sp.test))
    p = np.where(y == 1, np.sqrt(p), p)  # an informative fake probe

    class FakeScorer:
        def __init__(self, model, tok, template, dtype=None):
            assert template.name == "item-prior"

        def encode_samples(self, samples, catalog):
            return samples

        def evaluate(self, prompts, progress=False, desc="", keep_scores=False):
            assert keep_scores and len(prompts) == len(p)
            return {"auc": roc_auc_score(y, p), "scores": p, "seconds": 2.0, "tokens_per_s": 5.0}

    monkeypatch.setattr(llmrec.model, "load_base_model", lambda base: (torch.nn.Linear(3, 2), None))
    monkeypatch.setattr(llmrec.scoring.pointwise, "PointwiseScorer", FakeScorer)
    assert ce.main(["--shots", "16", "--seeds", "0", "--probe", "fake-lm"]) == 0
    out = capsys.readouterr().out
    n = np.array([len(x.history_ratings) for x in sp.test], dtype=float)
    liked = np.array([sum(r > 3 for r in x.history_ratings) for x in sp.test], dtype=float)
    r = (liked + 1) / (n + 2)
    lp, ll = np.log(p / (1 - p)), np.log(r / (1 - r))
    z = (lp - lp.mean()) / lp.std() + (ll - ll.mean()) / ll.std()
    assert f"| LM item-prior probe, zero-shot, fake-lm | 0 | {roc_auc_score(y, p):.4f} |" in out
    assert f"| LM item-prior probe x like-rate (logit sum, nothing fitted), fake-lm | 0 | " \
           f"{roc_auc_score(y, lp + ll):.4f} |" in out
    assert f"(z-scored log-odds sum, nothing fitted), fake-lm | 0 | {roc_auc_score(y, z):.4f} |" in out
    assert "| fake-lm | 0 | 2.0 | 5 |" in out  # 8 parameters = 0 M, the probe's seconds and tokens/s


def _toy_movielens(d):
    """30 users walking through 40 films in order (a MovieLens "latest" CSV folder)."""
    g = np.random.default_rng(1)
    d.mkdir()
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, 31):
        s, n = int(g.integers(40)), int(g.integers(8, 12))
        lines += [f"{u},{(s + t) % 40},4.0,{1000 + 10 * t}" for t in range(n)]
    (d / "ratings.csv").write_text("\n".join(lines) + "\n")
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},Film {i} ({1960 + i}),Drama\n"
                                                                     for i in range(40)))
    return d


def test_load_loo_data_reads_folders_and_takes_loaded_data(tmp_path):
    from llmrec.data import load_dataset
    from llmrec.data.loo import load_loo_data, loo_from_recdata

    d = _toy_movielens(tmp_path / "toy")
    rec, got = load_loo_data(d, 2)
    ref = loo_from_recdata(load_dataset(d), 2)
    assert rec.format == load_dataset(d).format and got.split.n_items == ref.split.n_items == 40
    assert all(np.array_equal(x, y) for x, y in zip(got.full, ref.full))
    assert load_loo_data(rec, 2)[0] is rec                              # a loaded RecData is used as is


def test_retrieval_eval_script_seeds_on_toy_data(tmp_path):
    """eval/retrieval_eval.py with two SASRec seeds: the table's mean +- sd are those of the per-seed rows,
    and the popularity row matches a hand computation from the training counts."""
    from llmrec.data import load_dataset
    from llmrec.data.loo import loo_from_recdata

    d = _toy_movielens(tmp_path / "toy")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(REPO / "eval" / "retrieval_eval.py"), "--data", str(d), "--kcore", "2",
                        "--epochs", "2", "--seeds", "0,1", "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    name = "fusion (SASRec x transitions x EASE)"
    per = [s["results"][name]["test"]["NDCG@10"] for s in res["per_seed"]]
    assert res["results"][name]["test"]["NDCG@10"] == pytest.approx(np.mean(per), abs=1e-12)
    assert res["sd_over_seeds"][name]["test"]["NDCG@10"] == pytest.approx(np.std(per, ddof=1), abs=1e-12)
    assert f"{np.mean(per):.4f} +- {np.std(per, ddof=1):.4f}" in r.stdout
    # popularity, by hand: training counts, seen items excluded, ties -> lower item index
    split = loo_from_recdata(load_dataset(d), 2).split
    counts = np.bincount(np.concatenate(split.train), minlength=split.n_items)
    _, hist, tgt = split.test_inputs()
    ndcg = []
    for h, t in zip(hist, tgt):
        order = [j for j in sorted(range(split.n_items), key=lambda j: (-counts[j], j)) if j not in set(h)]
        k = order.index(t)
        ndcg.append(1 / np.log2(k + 2) if k < 10 else 0.0)
    assert res["results"]["popularity"]["test"]["NDCG@10"] == pytest.approx(np.mean(ndcg), abs=1e-9)
    r = subprocess.run([sys.executable, str(REPO / "eval" / "retrieval_eval.py"), "--seeds", "0,0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--seeds '0,0': expected distinct integers" in r.stderr


@pytest.mark.integration
def test_rerank_eval_script_on_toy_data(tiny_model_dir, tmp_path):
    """eval/rerank_eval.py end to end (retriever fit, listwise + pointwise tuning, blend) on a toy MovieLens
    CSV folder; the reported metrics are recomputed here from the saved scores."""
    d = _toy_movielens(tmp_path / "toy")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "eval" / "rerank_eval.py"), "--data", str(d), "--kcore", "2",
           "--candidates", "10", "--val-users", "10", "--train-users", "0", "--positions", "2",
           "--methods", "listwise,pointwise", "--no-zero-shot", "--sasrec-epochs", "2", "--epochs", "1",
           "--batch-size", "4", "--base-model", str(tiny_model_dir), "--dtype", "float32", "--out", str(out),
           "--retriever-dir", str(tmp_path / "retriever")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    assert res["info"]["retriever"] == "Fusion" and res["test_users"] == 30
    assert res["info"]["train_lists"] == 60                                  # 2 positions x 30 users
    for method in ("listwise", "pointwise"):
        z = np.load(out / f"scores-{method}.npz")
        ids, lm, ret = z["ids"], z["lm"], z["retriever"]
        tgt = z["targets"]
        hit = lambda order: [(list(row[o]).index(t) if t in row else None) for row, o, t in zip(ids, order, tgt)]  # noqa: E731
        for name, score in ((f"tuned {method}", lm), (res["info"]["retriever_row"], ret)):
            ranks = hit(np.argsort(-score, axis=1, kind="stable"))
            ndcg = np.mean([1 / np.log2(k + 2) if k is not None and k < 10 else 0.0 for k in ranks])
            rec5 = np.mean([k is not None and k < 5 for k in ranks])
            assert res["results"][name]["all"]["NDCG@10"] == pytest.approx(ndcg, abs=1e-9)
            assert res["results"][name]["all"]["Recall@5"] == pytest.approx(rec5, abs=1e-9)
        assert 0.0 <= res["blend"][method]["alpha"] <= 1.0
    assert "| retriever (SASRec x transitions x EASE + FAISS) |" in r.stdout
    # eval/rerank_blend.py re-tunes the blend weight of that run on all validation users
    r = subprocess.run([sys.executable, str(REPO / "eval" / "rerank_blend.py"), "--run", str(out), "--retriever-dir",
                        str(tmp_path / "retriever"), "--data", str(d), "--kcore", "2", "--dtype", "float32"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "blend.json").read_text())
    assert rep["validation_users"] == 30
    assert rep["one-se"]["alpha"] <= rep["max"]["alpha"]
    assert rep["max"]["valid_ndcg10"] == max(rep["max"]["valid_curve"].values())
    if rep["one-se"]["alpha"] == 0.0:
        assert rep["one-se"]["test"]["NDCG@10"] == pytest.approx(rep["test_retriever"]["NDCG@10"], abs=1e-12)


@pytest.mark.integration
def test_rerank_eval_collab_rows_on_toy_data(tiny_model_dir, tmp_path):
    """eval/rerank_eval.py --methods collab-tokens,collab-hybrid,collab-match (issue 15): the collaborative-token
    rerankers train, score and save an adapter carrying their collaborative SASRec (here the held-out one, on
    retrieved training lists only); reported metrics are recomputed from the saved scores (the no-LM rows and
    their retriever fusion too), and the random-order row equals the brute-force mean over every target position."""
    d = _toy_movielens(tmp_path / "toy")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "eval" / "rerank_eval.py"), "--data", str(d), "--kcore", "2",
           "--candidates", "10", "--val-users", "10", "--positions", "1", "--negatives", "1",
           "--methods", "collab-tokens,collab-hybrid,collab-match", "--sasrec-epochs", "2", "--epochs", "1",
           "--collab-fit", "held-out", "--collab-epochs", "2", "--train-lists", "retrieved", "--batch-size", "4", "--base-model", str(tiny_model_dir), "--dtype", "float32", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    for method in ("collab-tokens", "collab-hybrid", "collab-match"):
        z = np.load(out / f"scores-{method}.npz")
        ids, lm, tgt = z["ids"], z["lm"], z["targets"]
        ranks = [(list(row[o]).index(t) if t in row else None)
                 for row, o, t in zip(ids, np.argsort(-lm, axis=1, kind="stable"), tgt)]
        ndcg = np.mean([1 / np.log2(k + 2) if k is not None and k < 10 else 0.0 for k in ranks])
        assert res["results"][f"tuned {method}"]["all"]["NDCG@10"] == pytest.approx(ndcg, abs=1e-9)
        c = res["cost"][f"tuned {method}"]
        assert c["tokens_per_prompt"] > 0 and c["test_users"] == 30
        meta = json.loads((out / f"adapter-{method}" / "llmrec.json").read_text())
        assert meta["kind"] == "rerank-pointwise" and meta["collab"]["sha256"] == res["info"][f"train {method}"]["collab_sha256"]
        assert meta["protocol"]["blend_alpha"] == res["blend"][method]["alpha"]
        # the no-LM row: the adapter's own SASRec, user vector . item vector, ranked independently here
        from llmrec.collab.data import CollabModel
        from llmrec.data.loo import load_loo_data

        cm = CollabModel.load(out / f"adapter-{method}" / "collab")
        split = load_loo_data(d, 2)[1].split
        us = split.eval_users()
        assert np.array_equal(split.test[us], tgt)
        hist = [[cm.catalog_items[j] for j in np.append(split.train[u], split.valid[u])] for u in us]
        uv = cm.sasrec.user_vectors([np.array([cm.sasrec_items.index(i) for i in h]) for h in hist])
        sc = np.einsum("nd,ncd->nc", uv, cm.item_vectors[ids])
        ranks = [(list(row[o]).index(t) if t in row else None)
                 for row, o, t in zip(ids, np.argsort(-sc, axis=1, kind="stable"), tgt)]
        ndcg = np.mean([1 / np.log2(k + 2) if k is not None and k < 10 else 0.0 for k in ranks])
        got = res["results"][f"{method}: its collaborative model alone (no LM)"]["all"]["NDCG@10"]
        assert got == pytest.approx(ndcg, abs=1e-6)
        # ... fused with the retriever at the weight tuned on validation (the ceiling of an LM that read its tokens)
        from llmrec.rerank.blend import blend_scores

        c_alpha = res["blend"][f"{method}: collaborative model alone"]["alpha"]
        fused = blend_scores(z["retriever"], sc, c_alpha)
        ranks = [(list(row[o]).index(t) if t in row else None)
                 for row, o, t in zip(ids, np.argsort(-fused, axis=1, kind="stable"), tgt)]
        ndcg = np.mean([1 / np.log2(k + 2) if k is not None and k < 10 else 0.0 for k in ranks])
        got = res["results"][f"{method}: its collaborative model alone + retriever (alpha={c_alpha:.2f})"]["all"]
        assert got["NDCG@10"] == pytest.approx(ndcg, abs=1e-6)
    # titles cost tokens: the hybrid prompt is longer than the token-only one
    assert res["cost"]["tuned collab-hybrid"]["tokens_per_prompt"] > res["cost"]["tuned collab-tokens"]["tokens_per_prompt"]
    # the interaction token is one more position per prompt (plus its separating space)
    assert res["cost"]["tuned collab-match"]["tokens_per_prompt"] > res["cost"]["tuned collab-tokens"]["tokens_per_prompt"]
    # random order: brute force over the C positions a retrieved target can take
    z = np.load(out / "scores-collab-tokens.npz")
    ret = np.array([t in row for row, t in zip(z["ids"], z["targets"])])
    C = z["ids"].shape[1]
    per_pos = [1 / np.log2(p + 2) if p < 10 else 0.0 for p in range(C)]
    rnd = res["results"]["random order of the top-10"]
    assert rnd["all"]["NDCG@10"] == pytest.approx(ret.mean() * np.mean(per_pos), abs=1e-12)
    assert rnd["retrieved"]["Recall@5"] == pytest.approx(5 / C, abs=1e-12)
    assert "| random order of the top-10 |" in r.stdout and "tokens per prompt" in r.stdout
    assert res["info"]["train_lists_mode"] == "retrieved" and "collab fit (held-out)" in res["timing_s"]


@pytest.mark.integration
def test_rerank_eval_train_candidates_from_the_held_out_sasrec(tiny_model_dir, tmp_path):
    """--train-candidates held-out: the training lists come from the held-out SASRec (which never saw the training
    targets). Their number is recomputed here from the adapter's own collaborative model: every user's last training
    item (after >= 3 history items) whose held-out top-C, seen items excluded, holds it. Mixing it with a text method
    is refused."""
    d = _toy_movielens(tmp_path / "toy")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "eval" / "rerank_eval.py"), "--data", str(d), "--kcore", "2",
           "--candidates", "10", "--val-users", "10", "--positions", "1", "--negatives", "1",
           "--sasrec-epochs", "2", "--epochs", "1", "--collab-epochs", "2", "--train-lists", "retrieved",
           "--batch-size", "4", "--base-model", str(tiny_model_dir), "--dtype", "float32", "--out", str(out),
           "--train-candidates", "held-out"]
    bad = subprocess.run(cmd + ["--methods", "collab-tokens,pointwise"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--train-candidates held-out needs" in bad.stderr
    r = subprocess.run(cmd + ["--methods", "collab-tokens"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    assert res["info"]["train_candidates"] == "held-out"
    from llmrec.collab.data import CollabModel
    from llmrec.data.loo import load_loo_data

    cm = CollabModel.load(out / "adapter-collab-tokens" / "collab")
    split = load_loo_data(d, 2)[1].split
    item = {i: j for j, i in enumerate(cm.sasrec_items)}
    found = 0
    for u in range(split.n_users):
        tr = list(split.train[u])
        if len(tr) < 4:
            continue
        hist, tgt = tr[:-1], tr[-1]
        hv = cm.sasrec.user_vectors([np.array([item[cm.catalog_items[j]] for j in hist])])[0]
        sc = cm.item_vectors @ hv
        sc[hist] = -np.inf
        found += int(tgt in np.argsort(-sc, kind="stable")[:10])
    assert res["info"]["train_lists"] == found


@pytest.mark.integration
def test_rerank_eval_train_candidates_sampled_by_popularity(tiny_model_dir, tmp_path):
    """--train-candidates sampled: every training list keeps its target (so their number is the count of training
    items with >= 3 items before them among each user's last --positions), and the reported share of training pairs
    the collaborative model orders right is a share. Combining it with --train-lists retrieved is refused."""
    d = _toy_movielens(tmp_path / "toy")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "eval" / "rerank_eval.py"), "--data", str(d), "--kcore", "2",
           "--candidates", "10", "--val-users", "10", "--positions", "2", "--negatives", "1",
           "--sasrec-epochs", "2", "--epochs", "1", "--collab-epochs", "2", "--batch-size", "4",
           "--base-model", str(tiny_model_dir), "--dtype", "float32", "--out", str(out),
           "--train-candidates", "sampled", "--methods", "collab-match"]
    bad = subprocess.run(cmd + ["--train-lists", "retrieved"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--train-candidates sampled" in bad.stderr and "--train-lists all" in bad.stderr
    bad = subprocess.run(cmd + ["--negatives", "0"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--negatives must be >= 1" in bad.stderr and "got 0" in bad.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    assert res["info"]["train_candidates"] == "sampled"
    from llmrec.data.loo import load_loo_data

    split = load_loo_data(d, 2)[1].split
    expected = sum(1 for tr in split.train for back in (1, 2) if len(tr) - back >= 3)
    assert res["info"]["train_lists"] == expected
    tr = res["info"]["train collab-match"]
    assert tr["examples"] == 2 * expected and 0.0 <= tr["collab_pair_auc"] <= 1.0
    meta = json.loads((out / "adapter-collab-match" / "llmrec.json").read_text())
    assert meta["protocol"]["train_candidates"] == "sampled"
    assert f"{tr['collab_pair_auc']:.3f} of the training pairs" in r.stdout


@pytest.mark.integration
def test_bench_collab_rerank_runs(tiny_model_dir, tmp_path):
    """eval/bench_collab_rerank.py stays alive on the tiny model: three prompt forms, token counts consistent
    (a token-only candidate suffix is shorter than a titled one), JSON written."""
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(REPO / "eval" / "bench_collab_rerank.py"), "--base-model",
                        str(tiny_model_dir), "--users", "3", "--candidates", "4", "--rounds", "1", "--dtype",
                        "float32", "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows["tokens"]["suffix_tokens"] < rows["hybrid"]["suffix_tokens"]
    assert rows["tokens"]["tokens_per_prompt"] < rows["hybrid"]["tokens_per_prompt"]
    for v in rows.values():
        assert v["prefix_tokens"] + v["suffix_tokens"] == pytest.approx(v["tokens_per_prompt"])
    assert "| tokens | rerank-pointwise-tokens |" in r.stdout


def test_train_pair_auc_counts_each_negative_against_its_own_positive():
    """Hand-worked reference: 1-d vectors, user vector = history length, item vector = its id; each negative is
    compared with the positive just before it (ties half)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rerank_eval", REPO / "eval" / "rerank_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Fake:
        def user_vectors(self, hists):
            return np.array([[float(len(h))] for h in hists])

        def item_matrix(self, ids):
            return np.array([[float(i)] for i in ids])

    h1, h2 = np.array([0]), np.array([0, 1])
    # list 1 (user 1.0): positive 5 vs negatives 3 (win), 5 (tie); list 2 (user 2.0): positive 1 vs 4 (loss)
    pairs = [(h1, 5, 1), (h1, 3, 0), (h1, 5, 0), (h2, 1, 1), (h2, 4, 0)]
    assert mod.train_pair_auc(Fake(), pairs, lambda j: j, 10) == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-12)
    assert np.isnan(mod.train_pair_auc(Fake(), [(h1, 5, 1)], lambda j: j, 10))
    # the user vector reads the last max_history items only (the prompt's): with 1, list 2's user is 1.0 too
    pairs2 = [(h2, 1, 1), (h2, 4, 0), (np.array([0, 1, 2]), 3, 1), (np.array([0, 1, 2]), -2, 0)]
    assert mod.train_pair_auc(Fake(), pairs2, lambda j: j, 1) == pytest.approx(0.5, abs=1e-12)


def test_rerank_eval_held_out_collab_never_sees_the_training_targets(monkeypatch):
    """``--collab-fit held-out``: the collaborative SASRec is fitted on each training sequence minus its last
    ``positions`` items (the reranker's training targets) and early-stopped on the validation items."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rerank_eval", REPO / "eval" / "rerank_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from llmrec.data.loo import LOOSplit

    g = np.random.default_rng(0)
    train = [g.choice(30, size=n, replace=False).astype(np.int64) for n in (2, 3, 6, 9)]
    split = LOOSplit(train=train, valid=np.array([29, 28, 27, 26]), test=np.array([25, 24, 23, 22]), n_items=30)
    seen = {}

    def fake_fit(self, seqs, n_items, vh, vt, log=None):
        seen.update(seqs=[np.asarray(s) for s in seqs], n_items=n_items, vh=vh, vt=vt)
        return self

    monkeypatch.setattr(mod.SASRec, "fit", fake_fit)
    sas = mod.held_out_sasrec(split, 2, 3, 0)
    assert sas.config.max_len == 50 and sas.config.epochs == 3
    assert [s.tolist() for s in seen["seqs"]] == [[], train[1][:1].tolist(), train[2][:4].tolist(), train[3][:7].tolist()]
    for tr, s in zip(train, seen["seqs"]):            # no training target (last 2 items) is in what the model fits
        assert not set(tr[-2:].tolist()) & set(s.tolist())
    assert seen["n_items"] == 30 and seen["vt"].tolist() == [29, 28, 27, 26]
    assert [h.tolist() for h in seen["vh"]] == [t.tolist() for t in train]


def test_rerank_eval_refuses_bad_training_settings(tiny_model_dir, tmp_path):
    """Flags that would train on nothing fail with one line naming the flag, no traceback, nothing written."""
    d = _toy_movielens(tmp_path / "toy")
    base = [sys.executable, str(REPO / "eval" / "rerank_eval.py"), "--data", str(d), "--kcore", "2",
            "--candidates", "10", "--sasrec-epochs", "1", "--methods", "collab-tokens", "--no-zero-shot",
            "--base-model", str(tiny_model_dir), "--dtype", "float32"]
    for extra, msg in ((["--collab-epochs", "0"], "--collab-epochs must be >= 1, got 0"),
                       (["--positions", "0"], "--positions must be >= 1, got 0"),
                       (["--positions", "500"], "--collab-fit held-out with --positions 500: ")):
        out = tmp_path / f"run{len(extra)}{extra[1]}"
        r = subprocess.run(base + extra + ["--out", str(out)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("script", ["rerank_eval.py", "retrieval_eval.py", "coldstart_eval.py"])
def test_eval_scripts_missing_data_folder_is_one_line(script, tmp_path):
    """A wrong --data is a usage error naming the flag and the path (exit 2), not a traceback."""
    missing = tmp_path / "no-such-dataset"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "eval" / script), "--data", str(missing), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"--data {missing}: " in r.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_collab_auc_probe_fusion_against_a_hand_computation():
    """eval/collab_auc.py --with-probe: LM added to the cosine probe x like-rate, checked against the formula
    written out here (Laplace like-rate from the ratings, z-scores by hand), to 1e-12."""
    import importlib.util

    from llmrec.samples.tallrec import Sample

    spec = importlib.util.spec_from_file_location("collab_auc", REPO / "eval" / "collab_auc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = np.random.default_rng(0)
    samples = [Sample(str(u), [str(i) for i in range(10)], list(g.integers(1, 6, 10)), "11", 4.0, int(g.integers(0, 2)))
               for u in range(40)]
    p = g.uniform(0.05, 0.95, 40)
    cos = g.normal(size=40)
    base, fused = mod.probe_fusion(p, samples, cos)
    liked = np.array([sum(r > 3 for r in s.history_ratings) for s in samples], float)
    r = (liked + 1) / 12
    lr = np.log(r / (1 - r))
    lp = np.log(p / (1 - p))
    want_base = lr + (cos - cos.mean()) / cos.std() * lr.std()
    np.testing.assert_allclose(base, want_base, atol=1e-12)
    np.testing.assert_allclose(fused, want_base + (lp - lp.mean()) / lp.std() * lr.std(), atol=1e-12)
    with pytest.raises(ValueError, match="must match"):
        mod.probe_fusion(p[:-1], samples, cos)
    with pytest.raises(ValueError, match="constant"):
        mod.probe_fusion(np.full(40, 0.3), samples, cos)
