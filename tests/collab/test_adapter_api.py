"""Adapters with collaborative tokens through the public API (issue 15): ``Reranker.from_pretrained``, ``llmrec
recommend --adapter``, the service backend and ``llmrec score`` load the projector and the collaborative model
from the adapter (llmrec.adapter.load_adapter) and score exactly like the in-memory model they were saved from.

Tiny random Llama, fp32. Tolerance: 1e-5 absolute on log-odds (1e-4 relative on P(Yes)) between the saved-and-
merged model and the in-memory unmerged peft model (float32 rounding of the merge); references are full prompts
(no shared prefix).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from llmrec.adapter import AdapterError
from llmrec.collab.data import CollabModel
from llmrec.collab.rerank import CollabRerankScorer
from llmrec.collab.train import CollabScorer, attach
from llmrec.data.core import Catalog
from llmrec.model import LoraSettings, load_base_model
from llmrec.prompts import load_template
from llmrec.retrieval.sasrec import SASRec, SASRecConfig
from llmrec.scoring import score_encoded

from ..conftest import make_tiny_llama, write_toy_movielens

N = 30
ITEMS = [str(i) for i in range(N)]
TOL = 1e-5
LISTS = [(["1", "2", "3", "4", "5", "6", "7"], ["8", "9", "12", "20"]), (["14"], ["15", "3"]), (["0", "29"], ["1"])]


def _title(i: str) -> str:
    return f"Film {i} ({1960 + int(i)})"  # write_toy_movielens's titles


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy_movielens(tmp_path_factory.mktemp("collab-toy-ml"), N)


@pytest.fixture(scope="module")
def cm():
    g = np.random.default_rng(0)
    seqs = [g.integers(0, N, size=int(g.integers(5, 12))) for _ in range(40)]
    sas = SASRec(SASRecConfig(hidden=8, max_len=16, epochs=2, threads=1, seed=0)).fit(seqs, N, log=None)
    return CollabModel(sas, ITEMS, ITEMS, sas.item_vectors(), np.ones(N, bool))


def _other(cm):
    return CollabModel(cm.sasrec, cm.sasrec_items, cm.catalog_items, cm.item_vectors * 2, cm.warm, cm.excluded)


def _trained(model_dir, cm):
    """attach() + a trained-looking state: LoRA B and the projector moved away from their init."""
    model, tok = load_base_model(str(model_dir), dtype="float32")
    peft, slots = attach(model, cm, LoraSettings(rank=4, alpha=8), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return peft, tok, slots


def _write_samples(f, seed: int, n: int = 4):
    """n structured TALLRec-style samples over the toy catalogue (6 rated history items, labels alternating)."""
    g = np.random.default_rng(seed)
    with f.open("w") as fh:
        for k in range(n):
            h = [str(int(x)) for x in g.choice(N, 6, replace=False)]
            fh.write(json.dumps({"user": f"u{k}", "like_threshold": 3,
                                 "history": [{"item": i, "rating": int(g.integers(1, 6)), "text": _title(i)} for i in h],
                                 "target": str(int(g.integers(N))), "target_text": "x", "label": k % 2}) + "\n")
    return f


def _full_prompt_probs(model, ids, verb):
    """float64 (C, 2) P(Yes), P(No) of full prompts (no shared prefix)."""
    return np.asarray(score_encoded(model, ids, verb.token_ids[:2], dtype="float32"), np.float64)


def _full_prompt_log_odds(model, ids, verb):
    p = np.clip(_full_prompt_probs(model, ids, verb), 1e-12, 1)
    return np.log(p[:, 0]) - np.log(p[:, 1])


@pytest.fixture(scope="module")
def rerank_adapter(tmp_path_factory, tiny_model_dir, cm, toy_dir):
    """A saved rerank-pointwise-tokens adapter; the reference log-odds of LISTS from the unmerged model, the same
    without LoRA, and P(Yes) of LISTS[0]."""
    from llmrec.collab.adapter import save_collab_adapter

    peft, tok, slots = _trained(tiny_model_dir, cm)
    tpl = load_template("rerank-pointwise-tokens")
    sc = CollabRerankScorer(peft, tok, slots, _title, tpl, max_history=5, dtype="float32")
    want = [_full_prompt_log_odds(peft, sc.encode_many(h, c), sc.verbalizer) for h, c in LISTS]
    p_yes = _full_prompt_probs(peft, sc.encode_many(*LISTS[0]), sc.verbalizer)[:, 0]
    out = tmp_path_factory.mktemp("collab-adapter") / "rerank"
    save_collab_adapter(peft, out, collab=cm, base_model=str(tiny_model_dir), template=tpl, verbalizer=sc.verbalizer,
                        kind="rerank-pointwise", protocol={"data": str(toy_dir), "max_history": 5})
    with peft.disable_adapter():  # the same prompts without the adapter (LoRA off, the untrained projector)
        no_lora = [_full_prompt_log_odds(peft, sc.encode_many(h, c), sc.verbalizer) for h, c in LISTS]
    return out, want, no_lora, p_yes


def test_from_pretrained_scores_equal_the_in_memory_model(rerank_adapter, toy_dir):
    from llmrec import Reranker
    from llmrec.collab.tokens import slot_table

    out, want, no_lora, _ = rerank_adapter
    rr = Reranker.from_pretrained(out, dtype="float32")
    assert isinstance(rr.scorer, CollabRerankScorer) and rr.method == "pointwise" and rr.scorer.max_history == 5
    assert rr.scorer.slots is slot_table(rr.scorer.model) and rr.metadata["loaded_collab"]["from"] == "llmrec.json"
    got = rr.scores_many([rr.check(h, c) for h, c in LISTS])
    for g, w, n in zip(got, want, no_lora):
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL)
        assert np.max(np.abs(w - n)) > 1e-3  # the adapter matters: a load that dropped LoRA would fail above
    # titles resolve to the same ids (the scorer gets ids, never titles)
    h, c = LISTS[0]
    np.testing.assert_allclose(rr.scores([_title(i) for i in h], [_title(i) for i in c]), want[0], rtol=0, atol=TOL)
    ranked = rr.rerank(h, c, top_k=2)
    assert [r.item_id for r in ranked] == [c[j] for j in np.argsort(-want[0], kind="stable")[:2]]
    assert ranked[0].title == _title(ranked[0].item_id)
    # exclude_history and top_k work as for a text reranker
    r2 = rr.rerank(["1", "2"], ["2", "3", "4"], top_k=5)
    assert r2.excluded == ["2"] and [r.item_id for r in r2] == [x.item_id for x in rr.rerank(["1", "2"], ["3", "4"])]


def test_items_outside_the_collaborative_model_are_refused(rerank_adapter, cm):
    from llmrec import Reranker

    out, _, _, _ = rerank_adapter
    cat = Catalog.from_records([{"item_id": i, "title": _title(i), "year": 1960 + int(i), "genres": []}
                                for i in ITEMS + ["30"]])
    rr = Reranker.from_pretrained(out, catalog=cat, dtype="float32")
    with pytest.raises(ValueError, match=r"^unknown candidate '30': item '30' is not in the collaborative model"):
        rr.check(["1"], ["2", "30"])
    with pytest.raises(ValueError, match=r"^unknown history item 'Film 30 \(1990\)'"):
        rr.check([_title("30")], ["2"])


def test_another_collaborative_model_is_refused(rerank_adapter, cm, tmp_path):
    from llmrec import Reranker

    out, _, _, _ = rerank_adapter
    other = _other(cm)
    with pytest.raises(AdapterError) as e:
        Reranker.from_pretrained(out, collab=other)
    msg = str(e.value)
    assert "collab.sha256" in msg and cm.sha256[:12] in msg and other.sha256[:12] in msg and "collab=" in msg
    # the stored collaborative model swapped for another one (its own hash consistent): refused too
    d = shutil.copytree(out, tmp_path / "swapped")
    shutil.rmtree(d / "collab")
    other.save(d / "collab")
    with pytest.raises(AdapterError, match=f"collab.sha256 {cm.sha256[:12]} is recorded.*has {other.sha256[:12]}"):
        Reranker.from_pretrained(d)


def test_another_base_model_is_refused(rerank_adapter, tmp_path, tiny_tokenizer):
    from llmrec import Reranker

    out, _, _, _ = rerank_adapter
    other = tmp_path / "other-base"
    make_tiny_llama(len(tiny_tokenizer), seed=1).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    with pytest.raises(AdapterError, match=r"was tuned on base model .* has weights sha256"):
        Reranker.from_pretrained(out, base_model=str(other))


def test_a_template_with_tokens_needs_a_collab_record(rerank_adapter, tmp_path):
    from llmrec.adapter import load_adapter

    out, _, _, _ = rerank_adapter
    d = shutil.copytree(out, tmp_path / "no-record")
    meta = json.loads((d / "llmrec.json").read_text())
    del meta["collab"]
    (d / "llmrec.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="places collaborative tokens .* no 'collab' record"):
        load_adapter(d)


def test_recommend_cli_with_a_collab_adapter(rerank_adapter, toy_dir, tmp_path, capsys):
    """`llmrec recommend --adapter`: the LM order of the retriever's head, scores = the in-memory model's."""
    from llmrec.cli import main
    from llmrec.recommender import Recommender

    pytest.importorskip("faiss")
    out, _, _, _ = rerank_adapter
    idx = tmp_path / "idx"
    main(["index", "--data", str(toy_dir), "--out", str(idx), "--kcore", "2", "--epochs", "2"])
    hist = ["1", "2", "3"]
    retrieved = [r.item_id for r in Recommender.load(idx).recommend(hist, 6)]  # retrieval only: the head
    peft, tok, slots = _trained_reference(out)
    sc = CollabRerankScorer(peft, tok, slots, _title, load_template("rerank-pointwise-tokens"), max_history=5,
                            dtype="float32")
    ref = _full_prompt_log_odds(peft, sc.encode_many(hist, retrieved), sc.verbalizer)
    order = np.argsort(-ref, kind="stable")[:3]
    capsys.readouterr()
    main(["recommend", "--index", str(idx), "--history", ",".join(hist), "--k", "3", "--adapter", str(out),
          "--candidates", "6", "--json"])
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["item_id"] for r in rows] == [retrieved[j] for j in order]
    np.testing.assert_allclose([r["score"] for r in rows], ref[order], rtol=0, atol=TOL)
    assert [r["title"] for r in rows] == [_title(retrieved[j]) for j in order]


def _trained_reference(adapter_dir):
    """An independent in-memory copy of the adapter's model: base + projector file + peft, NOT merged."""
    from peft import PeftModel

    from llmrec.collab.projector import load_projector
    from llmrec.collab.tokens import SlotTable, find_collab_embedding, install

    meta = json.loads((adapter_dir / "llmrec.json").read_text())
    cm = CollabModel.load(adapter_dir / "collab")
    model, tok = load_base_model(meta["base_model"], dtype="float32")
    install(model, load_projector(adapter_dir / "collab_projector.safetensors")[0])
    peft = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    return peft, tok, SlotTable(cm, find_collab_embedding(peft))


def test_service_backend_with_a_collab_adapter(rerank_adapter, toy_dir, tmp_path):
    pytest.importorskip("faiss")
    from llmrec import Recommender, Reranker
    from llmrec.serve._backend import Backend, BadInput

    out, want, _, p_yes = rerank_adapter
    idx = tmp_path / "idx"
    Recommender.build(toy_dir, kcore=2, epochs=2, hidden=16, max_len=12, batch_size=32).save(idx)
    base = Recommender.load(idx)
    rr = Reranker.from_pretrained(out, catalog=base.catalog, dtype="float32")
    be = Backend(Recommender(base.retriever, base.index, base.item_ids, base.catalog, rr, n_candidates=6,
                             user_histories=base.user_histories))
    jobs = [be.check_rerank(h, c, None) for h, c in LISTS]
    for job, ranked, w in zip(jobs, be.rerank_batch(jobs), want):
        order = np.argsort(-w, kind="stable")
        assert [r.item_id for r in ranked] == [job.candidates[j] for j in order]
        np.testing.assert_allclose([r.score for r in ranked], w[order], rtol=0, atol=TOL)
    h, c = LISTS[0]
    sj = [be.check_score(h, t) for t in c] + [be.check_score(LISTS[1][0], LISTS[1][1][0])]
    got = be.score_batch(sj)
    np.testing.assert_allclose([x[1] for x in got], list(want[0]) + [want[1][0]], rtol=0, atol=TOL)
    np.testing.assert_allclose([x[0] for x in got[:len(c)]], p_yes, rtol=1e-4, atol=0)  # P(Yes) over the vocabulary
    rec = be.recommend_batch([be.check_recommend(["1", "2", "3"], None, 3)])[0]
    assert [r.item_id for r in rec] == [r.item_id for r in be.rec.recommend(["1", "2", "3"], 3)]


def test_tallrec_collab_adapter_refused_by_reranker_and_used_by_llmrec_score_and_eval(tiny_model_dir, cm, tmp_path, capsys):
    from llmrec import Reranker
    from llmrec.cli import main
    from llmrec.collab.adapter import save_collab_adapter
    from llmrec.samples.records import read_samples_jsonl

    peft, tok, slots = _trained(tiny_model_dir, cm)
    tpl = load_template("tallrec-last5-tokens")
    f = _write_samples(tmp_path / "s.jsonl", seed=2)
    ss = read_samples_jsonl(f)
    sc = CollabScorer(peft, tok, tpl, slots, dtype="float32")
    P = sc.encode_samples(ss.samples, ss.catalog)
    assert all(sum(i >= slots.vocab for i in ids) >= 2 for ids in P.input_ids)  # user + target tokens at least
    p = score_encoded(peft, P.input_ids, sc.verbalizer.token_ids[:2], dtype="float32")[:, 0]
    ad = tmp_path / "tallrec-ad"
    save_collab_adapter(peft, ad, collab=cm, base_model=str(tiny_model_dir), template=tpl, verbalizer=sc.verbalizer,
                        kind="tallrec")
    with pytest.raises(AdapterError, match="is a pointwise TALLRec adapter .* needs a listwise reranker"):
        Reranker.from_pretrained(ad)
    main(["score", "--adapter", str(ad), "--input", str(f), "--out", str(tmp_path / "out.json")])
    rows = json.loads((tmp_path / "out.json").read_text())
    np.testing.assert_allclose([r["p_yes"] for r in rows], p, rtol=0, atol=TOL)
    assert [r["label"] for r in rows] == [k % 2 for k in range(4)]
    from llmrec.metrics import auc

    main(["eval", "--adapter", str(ad), "--input", str(f), "--out", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 4 and m["auc"] == pytest.approx(auc(np.arange(4) % 2, p), abs=1e-12)  # llmrec eval: the same scores
    # alpaca records are text: no item ids for the tokens; refused in one line before the model loads
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": "x", "input": "y", "output": "Yes."}]))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["score", "--adapter", str(ad), "--input", str(a)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmrec: error: --input ") and "places collaborative tokens" in err
    assert len(err.splitlines()) == 1


def test_taste_adapter_rebuilds_its_taste_rows_as_trained(tiny_model_dir, cm, tmp_path):
    """A tallrec-last5-taste adapter records how its ⟨taste⟩ rows were built (collab.pair_form); `llmrec score`
    rebuilds them the same way (scores equal the in-memory model's), and an unknown form is refused naming the field."""
    from llmrec.cli import main
    from llmrec.collab.adapter import save_collab_adapter
    from llmrec.samples.records import read_samples_jsonl

    peft, tok, slots = _trained(tiny_model_dir, cm)
    slots.pair_form = "product"  # not the default: loading must not fall back to "score"
    tpl = load_template("tallrec-last5-taste")
    f = _write_samples(tmp_path / "s.jsonl", seed=3)
    ss = read_samples_jsonl(f)
    sc = CollabScorer(peft, tok, tpl, slots, dtype="float32")
    P = sc.encode_samples(ss.samples, ss.catalog)
    p = score_encoded(peft, P.input_ids, sc.verbalizer.token_ids[:2], dtype="float32")[:, 0]
    slots.pair_form = "score"
    q = score_encoded(peft, sc.encode_samples(ss.samples, ss.catalog).input_ids, sc.verbalizer.token_ids[:2],
                      dtype="float32")[:, 0]
    assert np.abs(p - q).max() > 1e-5  # the form changes the scores (so the check below can fail)
    slots.pair_form = "product"
    ad = tmp_path / "taste-ad"
    save_collab_adapter(peft, ad, collab=cm, base_model=str(tiny_model_dir), template=tpl, verbalizer=sc.verbalizer,
                        kind="tallrec")
    meta = json.loads((ad / "llmrec.json").read_text())
    assert meta["collab"]["pair_form"] == "product"
    main(["score", "--adapter", str(ad), "--input", str(f), "--out", str(tmp_path / "out.json")])
    np.testing.assert_allclose([r["p_yes"] for r in json.loads((tmp_path / "out.json").read_text())], p, rtol=0, atol=TOL)
    meta["collab"]["pair_form"] = "sum"
    (ad / "llmrec.json").write_text(json.dumps(meta))
    from llmrec.adapter import load_adapter

    with pytest.raises(AdapterError, match="collab.pair_form 'sum'"):
        load_adapter(ad)
