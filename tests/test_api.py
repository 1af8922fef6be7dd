"""Public API (llmrec.Reranker / Recommender / RankedItem) and the `llmrec index` / `recommend` commands,
on a tiny random Llama and a toy MovieLens-CSV log with a sequential pattern."""

from __future__ import annotations

import doctest
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import llmrec
from llmrec.data import Catalog

pytest.importorskip("faiss")

N_ITEMS = 30


def _catalog(n=N_ITEMS):
    return Catalog.from_records([{"item_id": str(i), "title": f"Film {i} ({1960 + i})", "year": 1960 + i, "genres": []}
                                 for i in range(n)])


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """MovieLens-latest CSV folder: 40 users, each watching a run of consecutive items (wrapping)."""
    from tests.conftest import write_toy_movielens

    return write_toy_movielens(tmp_path_factory.mktemp("toy-ml"), N_ITEMS)


@pytest.fixture()
def reranker(tiny_model, tiny_tokenizer):
    return llmrec.Reranker(tiny_model, tiny_tokenizer, _catalog(), max_history=5)


@pytest.fixture(scope="module")
def recommender(toy_dir):
    from llmrec.recommender import Recommender

    return Recommender.build(toy_dir, kcore=2, epochs=2, hidden=16, max_len=12, batch_size=32)


# ---------------------------------------------------------------- light import, doctest
def test_import_llmrec_is_light():
    code = "import sys, llmrec; assert 'torch' not in sys.modules, 'torch imported'; print(llmrec.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert llmrec.Reranker.__module__ == "llmrec.rerank.reranker" and "Recommender" in dir(llmrec)
    with pytest.raises(AttributeError):
        llmrec.NoSuchThing


def test_docstring_example_runs(monkeypatch, tiny_tokenizer):
    import llmrec.rerank.reranker
    import tests.conftest

    monkeypatch.setattr(tests.conftest, "make_tiny_tokenizer", lambda: tiny_tokenizer)  # skip re-training BPE
    res = doctest.testmod(llmrec.rerank.reranker, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 5 and res.failed == 0


# ---------------------------------------------------------------- Reranker
def test_rerank_order_consistent_with_scores(reranker):
    hist, cands = ["1", "2", "3"], [str(i) for i in range(5, 17)]
    s = reranker.scores(hist, cands)
    ranked = reranker.rerank(hist, cands)
    assert [r.rank for r in ranked] == list(range(1, 13))
    assert [r.item_id for r in ranked] == [cands[j] for j in np.argsort(-s, kind="stable")]
    assert all(a.score >= b.score for a, b in zip(ranked, ranked[1:]))
    assert ranked[0].title == f"Film {ranked[0].item_id} ({1960 + int(ranked[0].item_id)})"
    assert len(reranker.rerank(hist, cands, top_k=3)) == 3 and ranked[:3] == reranker.rerank(hist, cands, top_k=3)


def test_items_by_id_or_title(reranker):
    a = reranker.rerank(["1", 2], ["5", "6", "7"])
    b = reranker.rerank(["Film 1 (1961)", "film 2 (1962)"], ["Film 5 (1965)", 6, "7"])
    assert a == b


def test_rerank_batch_equals_single(reranker):
    hs = [["1"], ["2", "3"], ["4", "5", "6"]]
    cs = [["7", "8"], ["9", "10", "11"], ["12", "13", "14", "15"]]
    batch = reranker.rerank_batch(hs, cs, top_k=2)
    single = [reranker.rerank(h, c, top_k=2) for h, c in zip(hs, cs)]
    assert [[(r.item_id, r.rank) for r in x] for x in batch] == [[(r.item_id, r.rank) for r in x] for x in single]
    np.testing.assert_allclose([r.score for x in batch for r in x], [r.score for x in single for r in x], atol=1e-4)


def test_rerank_bad_input(reranker):
    with pytest.raises(ValueError, match="history is empty"):
        reranker.rerank([], ["1"])
    with pytest.raises(ValueError, match="candidates is empty"):
        reranker.rerank(["1"], [])
    with pytest.raises(ValueError, match="unknown candidate 'Nope'"):
        reranker.rerank(["1"], ["2", "Nope"])
    with pytest.raises(ValueError, match="unknown history item '99'"):
        reranker.rerank(["99"], ["2"])
    with pytest.raises(ValueError, match="at most 20"):
        reranker.rerank(["0"], [str(i) for i in range(1, 22)])
    with pytest.raises(ValueError, match="given twice"):
        reranker.rerank(["0"], ["1", "1"])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        reranker.rerank(["0"], ["1"], top_k=0)
    with pytest.raises(ValueError, match="single string"):
        reranker.rerank("0", ["1"])


def test_reranker_thread_safe(reranker):
    g = np.random.default_rng(1)
    jobs = [([str(x) for x in g.choice(N_ITEMS, 3, replace=False)], [str(x) for x in g.choice(N_ITEMS, 8, replace=False)])
            for _ in range(12)]
    seq = [reranker.rerank(h, c) for h, c in jobs]
    with ThreadPoolExecutor(4) as ex:
        par = list(ex.map(lambda hc: reranker.rerank(*hc), jobs))
    assert par == seq


def test_pointwise_reranker(tiny_model, tiny_tokenizer):
    rr = llmrec.Reranker(tiny_model, tiny_tokenizer, _catalog(), method="pointwise")
    ranked = rr.rerank(["1", "2"], [str(i) for i in range(3, 25)], top_k=5)  # > 20 is fine pointwise
    assert len(ranked) == 5 and all(a.score >= b.score for a, b in zip(ranked, ranked[1:]))


# ---------------------------------------------------------------- Recommender
def test_recommender_retrieval_only(recommender):
    h = recommender.history_of("1")
    out = recommender.recommend(h, k=5)
    assert [r.rank for r in out] == [1, 2, 3, 4, 5]
    assert not set(r.item_id for r in out) & set(h)                      # seen items excluded
    assert out == recommender.recommend_user("1", 5)
    assert recommender.recommend_batch([h, h[:2]], 3)[0] == out[:3]


def test_recommender_with_reranker_save_load_threads(recommender, reranker, tmp_path):
    from llmrec.recommender import Recommender

    recommender.save(tmp_path / "idx")
    rec = Recommender.load(tmp_path / "idx", reranker=reranker, n_candidates=8, blend_alpha=0.5)
    assert rec.n_items == recommender.n_items and rec.user_histories == recommender.user_histories
    hist = rec.history_of("2")
    out = rec.recommend(hist, k=12)                    # 8 reranked, then 4 more in retriever order
    assert len(out) == 12 and len({r.item_id for r in out}) == 12
    assert all(a.score >= b.score for a, b in zip(out[:8], out[1:8]))
    base = [r.item_id for r in recommender.recommend(hist, k=12)]
    assert {r.item_id for r in out[:8]} == set(base[:8]) and [r.item_id for r in out[8:]] == base[8:]
    users = list(rec.user_histories)[:8]
    seq = [rec.recommend_user(u, 5) for u in users]
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda u: rec.recommend_user(u, 5), users)) == seq


def test_recommender_auto_retriever_falls_back_to_sasrec_on_large_catalogues(toy_dir, monkeypatch):
    import llmrec.retrieval.fusion as fusion
    from llmrec.recommender import Recommender
    from llmrec.retrieval import SASRec

    monkeypatch.setattr(fusion, "MAX_ITEMS", N_ITEMS - 1)               # the toy catalogue is now "large"
    rec = Recommender.build(toy_dir, kcore=2, epochs=1, hidden=16, max_len=12, batch_size=32)
    assert type(rec.retriever) is SASRec


def test_recommender_retriever_choice(recommender, toy_dir, tmp_path):
    from llmrec.recommender import Recommender
    from llmrec.retrieval import Fusion, SASRec

    assert isinstance(recommender.retriever, Fusion)                      # the default
    recommender.save(tmp_path / "fused")
    assert isinstance(Recommender.load(tmp_path / "fused").retriever, Fusion)
    sas = Recommender.build(toy_dir, kcore=2, epochs=2, hidden=16, max_len=12, batch_size=32, retriever="sasrec")
    assert type(sas.retriever) is SASRec
    sas.save(tmp_path / "sas")
    h = sas.history_of("1")
    assert Recommender.load(tmp_path / "sas").recommend(h, 5) == sas.recommend(h, 5)
    with pytest.raises(ValueError, match="retriever must be 'auto', 'fusion' or 'sasrec', got 'ease'"):
        Recommender.build(toy_dir, kcore=2, retriever="ease")


def test_recommender_cold_start_items(tmp_path, tiny_model_dir, capsys):
    """Catalogue items nobody rated get text-predicted vectors, can be recommended, are excluded once seen."""
    from llmrec.recommender import Recommender

    d = tmp_path / "toy-cold"
    d.mkdir()
    g = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, 41):                        # items 0..29 are rated; 30..34 are in movies.csv only
        s, n = int(g.integers(N_ITEMS)), int(g.integers(8, 13))
        lines += [f"{u},{(s + t) % N_ITEMS},4.0,{1000 + 10 * t}" for t in range(n)]
    (d / "ratings.csv").write_text("\n".join(lines) + "\n")
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i},Film {i} ({1960 + i}),{'Drama' if i % 2 else 'Comedy'}\n" for i in range(N_ITEMS + 5)))
    kw = dict(kcore=2, epochs=2, hidden=16, max_len=12, batch_size=32, base_model=str(tiny_model_dir))
    warm = Recommender.build(d, **kw)
    assert warm.n_items == warm.n_warm == N_ITEMS                       # off by default
    rec = Recommender.build(d, cold_start=True, cold_norm_scale=50.0, **kw)  # huge norm: cold items win
    cold = {str(i) for i in range(N_ITEMS, N_ITEMS + 5)}
    assert rec.n_warm == N_ITEMS and rec.n_items == N_ITEMS + 5 and set(rec.item_ids[N_ITEMS:]) == cold
    assert rec._source["n_cold"] == 5 and rec._source["cold_norm"] > 0
    h = rec.history_of("1")
    top = [r.item_id for r in rec.recommend(h, k=5)]
    assert set(top) == cold                                              # retrievable (and here dominant)
    top = [r.item_id for r in rec.recommend(h + ["31", "33"], k=5)]      # seen cold items are excluded
    assert not {"31", "33"} & set(top) and len(top) == 5 and {"30", "32", "34"} <= set(top)
    with pytest.raises(ValueError, match="only cold-start items"):
        rec.recommend(["31", "Film 32 (1992)"], 3)
    rec.save(tmp_path / "idx")
    back = Recommender.load(tmp_path / "idx")
    assert back.n_items == N_ITEMS + 5 and back.n_warm == N_ITEMS
    assert back.recommend(h + ["31"], 4) == rec.recommend(h + ["31"], 4)
    with pytest.raises(ValueError, match="cold_norm_scale must be finite and > 0, got 0"):
        Recommender.build(d, cold_start=True, cold_norm_scale=0, **kw)
    # rated items without a catalogue row keep their trained vectors; the text map learns from the others
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i},Film {i} ({1960 + i}),Drama\n" for i in range(5, N_ITEMS + 5)))
    gaps = Recommender.build(d, cold_start=True, **kw)
    assert gaps.n_warm == N_ITEMS and gaps.n_items == N_ITEMS + 5 and len(gaps.recommend(h, 5)) == 5
    code, out, err = _cli(capsys, "index", "--data", str(d), "--out", str(tmp_path / "cli"), "--kcore", "2",
                          "--epochs", "2", "--cold-start", "--base-model", str(tiny_model_dir))
    assert code == 0 and "indexed 35 items" in out and "5 cold-start items from their text" in out, err


def test_recommender_save_is_validated_and_atomic(recommender, tmp_path):
    from llmrec.recommender import Recommender

    recommender.save(tmp_path / "idx")
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())
    broken = Recommender(recommender.retriever, recommender.index, recommender.item_ids, recommender.catalog,
                         user_histories={"u": ["nope"]})
    with pytest.raises(ValueError, match="user_histories\\['u'\\] holds item 'nope'"):
        broken.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == before    # the old index is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.")]  # no temporary folder left
    h = recommender.history_of("1")
    assert Recommender.load(tmp_path / "idx").recommend(h, 3) == recommender.recommend(h, 3)
    assert recommender.recommend(h, 3.0) == recommender.recommend(h, 3)           # integral floats are fine
    assert all(type(r.item_id) is str for r in recommender.recommend(h, 3))
    # a user's own folder (non-empty, no manifest.json) or a file is never replaced by a save
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no manifest.json.*refusing to replace it"):
        recommender.save(mine)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        recommender.save(tmp_path / "afile")
    (tmp_path / "empty").mkdir()
    recommender.save(tmp_path / "empty")                                          # an empty folder is fine
    assert (tmp_path / "empty" / "manifest.json").is_file()
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "empty").stat().st_mode & 0o777 == 0o777 & ~umask          # not mkdtemp's 0700


def test_cli_index_refuses_a_user_folder_before_fitting(capsys, tmp_path):
    mine = tmp_path / "runs"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    # --data points nowhere: the folder check must come first (no data read, no minutes of fitting)
    code, out, err = _cli(capsys, "index", "--data", str(tmp_path / "nowhere"), "--out", str(mine))
    assert code == 2 and "holds no manifest.json" in err and (mine / "notes.txt").read_text() == "keep me"
    code, out, err = _cli(capsys, "index", "--out", str(tmp_path / "x"), "--kcore", "0")
    assert code == 2 and "--kcore 0: must be >= 1" in err


def test_recommender_bad_input(recommender):
    h = recommender.history_of("3")
    with pytest.raises(ValueError, match="larger than the catalogue"):
        recommender.recommend(h, k=recommender.n_items + 1)
    with pytest.raises(ValueError, match="has not seen"):
        recommender.recommend(h, k=recommender.n_items - 1)
    with pytest.raises(ValueError, match="history is empty"):
        recommender.recommend([], 3)
    with pytest.raises(ValueError, match="unknown history item 'Nope'"):
        recommender.recommend(["Nope"], 3)
    with pytest.raises(ValueError, match="unknown user 'ghost'"):
        recommender.recommend_user("ghost")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recommender.recommend(h, 0)


# ---------------------------------------------------------------- adapter round trip + CLI
@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, tiny_model_dir, tiny_tokenizer, toy_dir):
    from transformers import AutoModelForCausalLM

    from llmrec.adapter import save_adapter
    from llmrec.model import LoraSettings
    from llmrec.rerank import ListwiseScorer
    from llmrec.rerank.train import train_listwise
    from llmrec.train import TrainSettings

    out = tmp_path_factory.mktemp("adapter") / "listwise"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sc = ListwiseScorer(model, tiny_tokenizer, max_history=5)
    lists = [(["Film 1 (1961)"], ["Film 2 (1962)", "Film 3 (1963)"], 0)] * 2
    st = TrainSettings(output_dir=str(out.parent / "work"), epochs=1, batch_size=2, precision="fp32", progress=False,
                       patience=0)
    train_listwise(sc, lists, st, LoraSettings(rank=2, alpha=4))
    save_adapter(sc.model, out, base_model=str(tiny_model_dir), template=sc.template, verbalizer=sc.verbalizer,
                 protocol={"data": str(toy_dir), "max_history": 5, "blend_alpha": 0.25, "n_candidates": 20})
    return out


def test_from_pretrained(tiny_adapter, toy_dir):
    rr = llmrec.Reranker.from_pretrained(tiny_adapter)
    assert rr.blend_alpha == 0.25 and rr.scorer.max_history == 5 and rr.method == "listwise"
    out = rr.rerank(["1", "2"], ["3", "4", "5"])
    assert [r.rank for r in out] == [1, 2, 3] and out[0].title.startswith("Film ")


def _cli(capsys, *args) -> tuple[int, str, str]:
    """Run the llmrec CLI in-process (as `python -m llmrec ...`); returns (exit code, stdout, stderr)."""
    from llmrec.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_index_and_recommend(toy_dir, tiny_adapter, tmp_path, capsys):
    idx = tmp_path / "idx"
    code, out, err = _cli(capsys, "index", "--data", str(toy_dir), "--out", str(idx), "--kcore", "2", "--epochs", "2")
    assert code == 0, err
    assert "indexed 30 items" in out and (idx / "manifest.json").is_file()
    code, out, err = _cli(capsys, "recommend", "--index", str(idx), "--user", "5", "--k", "4", "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 4
    code, out, err = _cli(capsys, "recommend", "--index", str(idx), "--history", "1,Film 2 (1962)", "--k", "3",
                          "--adapter", str(tiny_adapter), "--candidates", "6")
    assert code == 0, err
    assert [ln.split()[0] for ln in out.strip().splitlines()] == ["1", "2", "3"]
    code, out2, err = _cli(capsys, "recommend", "--index", str(idx), "--history", "1|Film 2 (1962)", "--k", "3")
    assert code == 0 and len(out2.strip().splitlines()) == 3, err
    for args, msg in [(("--user", "ghost"), "unknown user 'ghost'"), (("--history", "Nope"), "unknown history item"),
                      (("--history", " , "), "--history is empty"),
                      (("--user", "5", "--k", "999"), "larger than the catalogue"),
                      ((), "exactly one of --user")]:
        code, out, err = _cli(capsys, "recommend", "--index", str(idx), *args)
        assert code == 2 and err.startswith("llmrec: error: ") and msg in err, err
        assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "recommend", "--index", str(tmp_path / "missing"), "--user", "1")
    assert code == 2 and "manifest.json not found" in err


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "llmrec", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "index" in r.stdout and "recommend" in r.stdout
