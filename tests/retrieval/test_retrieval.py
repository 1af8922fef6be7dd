"""Retrieval-stage tests: split, baselines, FAISS wrapper, SASRec, text embeddings (all tiny, CPU)."""

import numpy as np
import pytest
import torch

from llmrec.retrieval import (
    EASE, Fusion, SASRec, load_retriever, Popularity, Transitions, VectorIndex, embed_texts, kcore_filter, leave_one_out,
    topk_excluding_seen,
)

faiss = pytest.importorskip("faiss")


# ---------------------------------------------------------------- split
def test_leave_one_out_toy_log():
    # user 0: items (ts) 5(30) 3(10) 4(20) 6(40) -> chronological 3 4 5 6: train [3,4] valid 5 test 6
    # user 1: 1(7) 2(7) 0(1) -> equal timestamps keep input order: 0 1 2 -> train [0] valid 1 test 2
    # user 2: two interactions only -> all in train, valid = test = -1
    users = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    items = np.array([5, 3, 4, 6, 1, 2, 0, 3, 4])
    ts = np.array([30, 10, 20, 40, 7, 7, 1, 5, 6])
    s = leave_one_out(users, items, ts)
    assert [t.tolist() for t in s.train] == [[3, 4], [0], [3, 4]]
    assert s.valid.tolist() == [5, 1, -1] and s.test.tolist() == [6, 2, -1]
    assert s.n_items == 7 and s.eval_users().tolist() == [0, 1]
    _, th, tt = s.test_inputs()
    assert [h.tolist() for h in th] == [[3, 4, 5], [0, 1]] and tt.tolist() == [6, 2]


def test_leave_one_out_errors():
    with pytest.raises(ValueError, match="users is empty"):
        leave_one_out(np.array([], int), np.array([], int), np.array([]))
    with pytest.raises(ValueError, match="items contains negative index -1"):
        leave_one_out(np.array([0]), np.array([-1]), np.array([0.0]))


def test_kcore_iterative():
    # k=2: item 9 has one interaction -> dropped; then user 1 has one left -> dropped; then item 2
    # (only user 1 had it twice? no: once by user 1, once by user 0) drops to 1 -> dropped; user 0 keeps 0,1
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 2, 9, 0, 1])
    keep = kcore_filter(users, items, 2)
    assert keep.tolist() == [True, True, False, False, False, True, True]


# ---------------------------------------------------------------- baselines
SEQS = [np.array([0, 1, 2, 3]), np.array([0, 1, 2]), np.array([1, 2, 4]), np.array([4, 0])]


def test_popularity():
    m = Popularity().fit(SEQS, 6)
    # counts: 0:3 1:3 2:3 3:1 4:2 5:0; ties broken by lower index
    ids, sc = m.query([np.array([0])], 3)
    assert ids.tolist() == [[1, 2, 4]] and sc.tolist() == [[3, 3, 2]]


def test_transitions_toy():
    m = Transitions(max_gap=2, gap_decay=0.5, n_last=2, hist_decay=0.25, row_norm=0.0).fit([np.array([0, 1, 2])], 3)
    # gap 1: 0->1, 1->2 weight 1; gap 2: 0->2 weight 0.5
    assert m.W.tolist() == [[0, 1, 0.5], [0, 0, 1], [0, 0, 0]]
    # history [0, 1]: score = W[1] + 0.25 * W[0] = [0, 0.25, 1.125] (+1e-6 * popularity, all equal)
    s = m.score([np.array([0, 1])])[0] - 1e-6
    np.testing.assert_allclose(s, [0, 0.25, 1.125], atol=1e-6)


def test_ease_closed_form_vs_direct_solve():
    rng = np.random.default_rng(0)
    X = (rng.random((30, 8)) < 0.4).astype(np.float64)
    seqs = [np.nonzero(r)[0] for r in X]
    lam = 3.0
    m = EASE(l2=lam).fit(seqs, 8)
    # direct: for each item j, B[:, j] minimises ||X[:, j] - X B[:, j]||^2 + lam ||B[:, j]||^2 with B[j, j] = 0
    B = np.zeros((8, 8))
    for j in range(8):
        o = [i for i in range(8) if i != j]
        A = X[:, o]
        B[o, j] = np.linalg.solve(A.T @ A + lam * np.eye(7), A.T @ X[:, j])
    np.testing.assert_allclose(m.B, B, atol=1e-5)


@pytest.mark.parametrize("cls", [Popularity, Transitions, EASE])
def test_baseline_save_load(cls, tmp_path):
    m = cls().fit(SEQS, 6)
    m.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "model.safetensors").exists()
    m2 = cls.load(tmp_path)
    h = [np.array([0, 1]), np.array([4])]
    np.testing.assert_array_equal(m.score(h), m2.score(h))


def test_bad_inputs():
    m = Popularity().fit(SEQS, 6)
    with pytest.raises(ValueError, match="k=7 is larger than the catalogue"):
        m.query([np.array([0])], 7)
    with pytest.raises(ValueError, match=r"histories\[1\] is empty"):
        m.query([np.array([0]), np.array([], int)], 2)
    with pytest.raises(ValueError, match=r"histories\[0\] contains unknown item index 6"):
        m.query([np.array([6])], 2)
    with pytest.raises(ValueError, match="unknown item index 9"):
        Popularity().fit([np.array([9])], 6)


def test_seen_exclusion_and_padding():
    s = np.array([[5.0, 4, 3, 2]], np.float32)
    ids, sc = topk_excluding_seen(s, 3, [np.array([0, 2])])
    assert ids.tolist() == [[1, 3, -1]] and sc[0, 2] == -np.inf


# ---------------------------------------------------------------- FAISS
def _data(n=500, d=16, nq=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


def test_flat_matches_numpy():
    x, q = _data()
    ids, sc = VectorIndex("flat", use_gpu=False).build(x).search(q, 10)
    ref = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert ids.dtype == np.int64 and sc.dtype == np.float32 and ids.shape == (20, 10)
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(sc, np.take_along_axis(q @ x.T, ref, 1), rtol=1e-5)


def test_flat_exclusion_and_custom_ids():
    x, q = _data()
    full = np.argsort(-(q @ x.T), axis=1)
    ext = np.arange(500, dtype=np.int64) * 10 + 7
    ix = VectorIndex("flat", use_gpu=False).build(x, ids=ext)
    ex = [ext[full[i, [0, 2, 4]]] for i in range(20)]  # drop ranks 1, 3, 5
    ids, _ = ix.search(q, 5, exclude=ex)
    np.testing.assert_array_equal(ids, ext[full[:, [1, 3, 5, 6, 7]]])
    with pytest.raises(ValueError, match="k=501 is larger than the catalogue"):
        ix.search(q, 501)


def test_ivf_save_load_identical(tmp_path):
    x, q = _data(n=2000)
    ix = VectorIndex("ivf", nlist=16, nprobe=4, use_gpu=False).build(x)
    ex = [np.arange(i) for i in range(20)]
    a = ix.search(q, 10, exclude=ex)
    ix.save(tmp_path)
    b = VectorIndex.load(tmp_path, use_gpu=False).search(q, 10, exclude=ex)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.isin(a[0][5], np.arange(5)).any()


@pytest.mark.gpu
@pytest.mark.skipif(not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0, reason="no faiss GPU")
def test_gpu_equals_cpu():
    x, q = _data(n=5000)
    g = VectorIndex("flat", use_gpu="auto").build(x)
    c = VectorIndex("flat", use_gpu=False).build(x)
    np.testing.assert_array_equal(g.search(q, 10)[0], c.search(q, 10)[0])


# ---------------------------------------------------------------- SASRec
def test_sasrec_learns_cycle(tmp_path):
    # deterministic next item: (i + 1) mod 12; sequences start at random offsets
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(0, 12) + np.arange(rng.integers(5, 15))) % 12 for _ in range(60)]
    m = SASRec(hidden=32, n_blocks=1, max_len=10, dropout=0.0, lr=5e-3, epochs=25, batch_size=32, seed=0)
    m.fit(seqs, 12, log=None)
    assert m.history[-1]["loss"] < 0.5 * m.history[0]["loss"]
    hist = [np.array([3, 4, 5]), np.array([10, 11]), np.array([7])]
    ids, _ = m.query(hist, 1, exclude_seen=False)
    assert ids[:, 0].tolist() == [6, 0, 8]
    m.save(tmp_path)
    m2 = SASRec.load(tmp_path)
    np.testing.assert_allclose(m.score(hist), m2.score(hist), atol=1e-6)
    # FAISS path gives the same top-k as the dense path
    ix = VectorIndex("flat", use_gpu=False).build(m.item_vectors())
    np.testing.assert_array_equal(m.query_index(hist, 3, ix)[0], m.query(hist, 3)[0])


def test_sasrec_seeded_reproducible():
    seqs = [np.arange(i, i + 6) % 8 for i in range(8)]
    a = SASRec(hidden=16, n_blocks=1, max_len=8, epochs=3, seed=1).fit(seqs, 8, log=None)
    b = SASRec(hidden=16, n_blocks=1, max_len=8, epochs=3, seed=1).fit(seqs, 8, log=None)
    np.testing.assert_array_equal(a.item_vectors(), b.item_vectors())


# ---------------------------------------------------------------- Fusion (SASRec x transitions)
def _two_step_sequences(n=80, n_items=15, seed=0):
    """Mostly i -> i+1, sometimes i -> i+2: both experts have something to learn."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = [int(rng.integers(0, n_items))]
        for _ in range(int(rng.integers(5, 12))):
            s.append((s[-1] + (1 if rng.random() < 0.8 else 2)) % n_items)
        out.append(np.asarray(s, np.int64))
    return out


def _tiny_fusion(weight=0.5, ease=True, ease_weight=0.7):
    return Fusion(SASRec(hidden=16, n_blocks=1, max_len=8, dropout=0.0, lr=5e-3, epochs=4, batch_size=32, seed=0),
                  Transitions(max_gap=2, gap_decay=0.5, n_last=2, hist_decay=0.5, row_norm=1.0),
                  weight=weight, eps=1e-3, pool=6, ease=EASE(20.0) if ease else False, ease_weight=ease_weight)


def test_fusion_score_matches_hand_computed_product_of_experts():
    seqs = _two_step_sequences()
    f = _tiny_fusion().fit(seqs, 15, log=None)
    hist = [np.array([3, 4, 5]), np.array([14]), np.array([0, 2, 3, 4])]
    # reference in float64 from the three experts' own scores; EASE's row is x_h B, x_h the 0/1 history
    s = f.sasrec.score(hist).astype(np.float64)
    logp_sas = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    t = f.transitions.score(hist).astype(np.float64)
    x = np.zeros((3, 15))
    for u, h in enumerate(hist):
        x[u, h] = 1.0
    ease = x @ f.ease.B.astype(np.float64)
    ref = logp_sas + 0.5 * np.log(t / t.sum(1, keepdims=True) + 1e-3) + 0.7 * ease
    np.testing.assert_allclose(f.score(hist), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(0.7 * ease).max() > 0.01  # the EASE term is not negligible here
    # without EASE: the two-expert product
    g = Fusion.from_fitted(f.sasrec, f.transitions, weight=0.5, eps=1e-3)
    assert g.ease is None and g.ease_weight == 0.0
    np.testing.assert_allclose(g.score(hist), ref - 0.7 * ease, rtol=1e-5, atol=1e-5)
    # the FAISS path (pool of SASRec candidates re-scored) gives the dense top-k when the pool is the catalogue
    ix = VectorIndex("flat", use_gpu=False).build(f.item_vectors())
    f.pool = 15
    ids, sc = f.query_index(hist, 4, ix)
    np.testing.assert_array_equal(ids, f.query(hist, 4)[0])
    assert not set(ids[0].tolist()) & {3, 4, 5}
    # its scores differ from score() only by SASRec's per-user softmax constant
    diff = sc - np.take_along_axis(f.score(hist), ids, 1)
    np.testing.assert_allclose(diff - diff[:, :1], 0, atol=1e-4)
    # cold-start rows after the trained items: SASRec inner product + weight * log(eps), EASE term 0
    u = f.user_vectors(hist).astype(np.float64)
    direction = u.sum(0) / np.linalg.norm(u.sum(0))  # cold rows the users like: they make every top-k
    cold = np.stack([10 * direction, 8 * direction]).astype(np.float32)
    ixc = VectorIndex("flat", use_gpu=False).build(np.concatenate([f.item_vectors(), cold]))
    f.pool = 17
    ids, sc = f.query_index(hist, 5, ixc)
    for r in range(len(hist)):
        for c in (15, 16):
            (pos,) = np.flatnonzero(ids[r] == c)
            assert sc[r, pos] == pytest.approx(u[r] @ cold[c - 15] + 0.5 * np.log(1e-3), abs=1e-4)


def test_fusion_weight_tuned_on_validation_and_saved(tmp_path):
    seqs = _two_step_sequences()
    vh = [s[:-1] for s in _two_step_sequences(40, seed=1)]
    vt = np.array([s[-1] for s in _two_step_sequences(40, seed=1)])
    f = _tiny_fusion().fit(seqs, 15, vh, vt, log=None, grid=(0.0, 0.5, 2.0), ease_grid=(0.0, 1.0))
    assert set(f.weight_curve) == {(w, we) for w in (0.0, 0.5, 2.0) for we in (0.0, 1.0)}
    assert f.weight_curve[(f.weight, f.ease_weight)] == max(f.weight_curve.values())
    from llmrec.metrics import ndcg_at_k
    f0 = Fusion(f.sasrec, f.transitions, 0.0, 1e-3, ease=False)  # positional as before EASE
    f0.n_items = 15
    assert f.weight_curve[(0.0, 0.0)] == pytest.approx(ndcg_at_k(f0.query(vh, 10)[0], vt, 10))  # SASRec alone
    f1 = Fusion(f.sasrec, f.transitions, weight=0.5, eps=1e-3, ease=f.ease, ease_weight=1.0)
    f1.n_items = 15
    assert f.weight_curve[(0.5, 1.0)] == pytest.approx(ndcg_at_k(f1.query(vh, 10)[0], vt, 10))
    f1.TUNE_CHUNK = 7  # scored in chunks of 7 users (40 = 5 x 7 + 5): the same curve
    f1.tune_weight(vh, vt, grid=(0.0, 0.5, 2.0), ease_grid=(0.0, 1.0), log=None)
    assert f1.weight_curve == pytest.approx(f.weight_curve, abs=1e-12)
    # repeated grid values (also 0 vs -0.0) are searched once: the same curve, not doubled sums
    f1.tune_weight(vh, vt, grid=(0.0, 0.5, 2.0, 2.0, -0.0), ease_grid=(0.0, 1.0, 1.0), log=None)
    assert f1.weight_curve == pytest.approx(f.weight_curve, abs=1e-12)
    f.save(tmp_path / "fusion")
    g = Fusion.load(tmp_path / "fusion")
    assert (g.weight, g.ease_weight, g.eps, g.pool, g.weight_curve) == (
        f.weight, f.ease_weight, f.eps, f.pool, f.weight_curve)
    np.testing.assert_array_equal(g.ease.B, f.ease.B)
    np.testing.assert_allclose(g.score(vh[:5]), f.score(vh[:5]), atol=1e-6)
    with pytest.raises(ValueError, match="not 'SASRec'"):
        SASRec.load(tmp_path / "fusion")


def test_fusion_saved_without_ease_still_loads(tmp_path):
    """A folder written before the EASE expert existed (no ease keys, weight_curve {weight: ndcg})."""
    import json

    seqs = _two_step_sequences()
    f = _tiny_fusion(ease=False).fit(seqs, 15, log=None)
    f.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("ease", "ease_weight"):
        cfg.pop(key)
    cfg["weight_curve"] = {"0.0": 0.1, "0.5": 0.2}
    cfg_path.write_text(json.dumps(cfg))
    g = load_retriever(tmp_path / "old")
    assert g.ease is None and g.ease_weight == 0.0 and g.weight_curve == {(0.0, 0.0): 0.1, (0.5, 0.0): 0.2}
    np.testing.assert_allclose(g.score(seqs[:3]), f.score(seqs[:3]), atol=1e-6)
    # EASE arrays without their config entry, or an EASE config without its weight: refused, not dropped
    h = _tiny_fusion().fit(seqs, 15, log=None)
    h.save(tmp_path / "new")
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    for edit in ({"ease": None}, {"ease_weight": None}):
        bad = {k: v for k, v in {**cfg, **edit}.items() if v is not None}
        (tmp_path / "new" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="inconsistent"):
            load_retriever(tmp_path / "new")


def test_load_retriever_dispatches_on_saved_class(tmp_path):
    seqs = _two_step_sequences()
    tr = Transitions().fit(seqs, 15)
    tr.save(tmp_path / "tr")
    got = load_retriever(tmp_path / "tr")
    assert type(got) is Transitions and np.array_equal(got.W, tr.W)
    from safetensors.numpy import save_file
    save_file({"W": np.zeros((5, 5), np.float32), "pop": tr.pop}, str(tmp_path / "tr" / "model.safetensors"))
    with pytest.raises(ValueError, match="the saved Transitions is inconsistent .*do not match n_items=15"):
        load_retriever(tmp_path / "tr")
    (tmp_path / "tr" / "config.json").write_text('["not", "an", "object"]')
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_retriever(tmp_path / "tr")
    (tmp_path / "tr" / "config.json").write_text('{"class": "Pickled"}')
    with pytest.raises(ValueError, match="unknown class 'Pickled'"):
        load_retriever(tmp_path / "tr")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_retriever(tmp_path / "nothing")


def test_fusion_bad_arguments():
    for kw, msg in ((dict(weight=-1), "weight must be a finite number >= 0, got -1"),
                    (dict(weight=float("nan")), "weight must be a finite number >= 0, got nan"),
                    (dict(eps=0), "eps must be finite and > 0, got 0"), (dict(eps=float("inf")), "got inf"),
                    (dict(pool=0), "pool must be >= 1, got 0"),
                    (dict(ease_weight=-2), "ease_weight must be a finite number >= 0, got -2"),
                    (dict(weight="1"), "weight must be a finite number >= 0, got '1'"),
                    (dict(ease="yes"), "ease must be an EASE, True or False, got str")):
        with pytest.raises(ValueError, match=msg):
            Fusion(**kw)
    with pytest.raises(RuntimeError, match="not fitted"):
        Fusion().score([np.array([1])])
    with pytest.raises(ValueError, match="n_items=20001: Fusion keeps dense items x items"):
        Fusion().fit([np.array([0, 1])], 20_001)
    seqs = _two_step_sequences()
    with pytest.raises(ValueError, match="grid values must be finite and >= 0, got \\[nan\\]"):
        _tiny_fusion().fit(seqs, 15, [seqs[0]], [1], log=None, grid=[float("nan")])
    f = _tiny_fusion().fit(seqs, 15, log=None)
    with pytest.raises(ValueError, match="valid_targets contains unknown item index 22"):
        f.tune_weight([seqs[0]], [22], log=None)
    with pytest.raises(ValueError, match="takes a SASRec, a Transitions and an EASE \\(or None\\), got Transitions, "
                                         "SASRec and NoneType"):
        Fusion.from_fitted(f.transitions, f.sasrec)
    with pytest.raises(ValueError, match="same catalogue: SASRec n_items=15, Transitions n_items=15, EASE n_items=9"):
        Fusion.from_fitted(f.sasrec, f.transitions, EASE(5.0).fit([s % 9 for s in seqs], 9))
    for bad in (20.5, float("nan"), float("inf"), "15"):
        with pytest.raises(ValueError, match="n_items must be an integer, got"):
            Fusion().fit(seqs, bad)
    with pytest.raises(ValueError, match="ease_grid must be non-empty"):
        _tiny_fusion().fit(seqs, 15, seqs[:3], [1, 2, 3], log=None, ease_grid=())
    assert _tiny_fusion(ease=False).fit(seqs, 15, [s[:-1] for s in seqs[:3]], [s[-1] for s in seqs[:3]], log=None,
                                        ease_grid=()).ease_weight == 0.0  # no EASE: ease_grid unused
    assert _tiny_fusion().fit(seqs, 15.0, log=None).n_items == 15  # an integral float is fine
    with pytest.raises(ValueError, match="the index holds 5 vectors but this retriever has 15 items"):
        f.query_index([seqs[0]], 3, VectorIndex("flat", use_gpu=False).build(f.item_vectors()[:5]))
    custom = VectorIndex("flat", use_gpu=False).build(f.item_vectors(), ids=np.arange(15) + 100)
    with pytest.raises(ValueError, match="not custom ids"):
        f.query_index([seqs[0]], 3, custom)


# ---------------------------------------------------------------- text embeddings
def _tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "toy story 1995 animation children comedy golden eye action adventure four rooms".split()
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg), tok


def test_embed_texts_batch_invariant_and_normalised():
    model, tok = _tiny_lm()
    texts = ["toy story 1995 animation children comedy", "four rooms", "golden eye action adventure"]
    a = embed_texts(texts, model, tok, batch_size=3)
    b = embed_texts(texts, model, tok, batch_size=1)
    assert a.shape == (3, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # reference: mean of the last hidden states of a single unpadded text
    with torch.no_grad():
        enc = tok(texts[1], return_tensors="pt")
        h = model(**enc, output_hidden_states=True).hidden_states[-1][0].mean(0)
    np.testing.assert_allclose(a[1], (h / h.norm()).numpy(), atol=1e-5)
    assert tok.pad_token is None  # tokenizer state restored
    with pytest.raises(ValueError, match=r"texts\[1\] must be a non-empty string"):
        embed_texts(["toy", ""], model, tok)
