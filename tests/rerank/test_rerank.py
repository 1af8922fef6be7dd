"""Reranking stage (llmrec.rerank): letter scoring, hard-negative training lists, pointwise prefix
sharing, blending, listwise LoRA tuning. Tiny random Llama + in-memory tokenizer (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.data import Catalog, Interactions, RecData
from llmrec.rerank import (popularity_sampler, ListwiseScorer, PointwiseRerankScorer, answer_logits, blend_scores, listwise_training_example,
                           loo_from_recdata, pointwise_pairs, prefix_scoring_available, rank_by, training_lists,
                           one_se_choice, tune_alpha, zscore)
from llmrec.retrieval import LOOSplit

TITLES = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "GoldenEye (1995)", "Yes, Madam (1985)",
          "No Way Out (1987)", "Babe (1995)", "Se7en (1995)", "Fargo (1996)", "Emma (1996)", "Ran (1985)",
          "Alien (1979)"]


def _letters(tok):
    return [tok.convert_tokens_to_ids(c) for c in "ABCDEFGHIJKLMNOPQRST"]


# ---------------------------------------------------------------- listwise letters
def test_letter_ids_from_tokenizer_distinct_single(tiny_model, tiny_tokenizer):
    sc = ListwiseScorer(tiny_model, tiny_tokenizer)
    assert sc.letters == list("ABCDEFGHIJKLMNOPQRST")
    ids = sc.verbalizer.token_ids
    assert len(set(ids)) == 20
    assert ids == _letters(tiny_tokenizer)  # found by tokenising prompt+letter, equal to the vocab entries
    assert all(t[0] == i and t[1:] == [tiny_tokenizer.eos_token_id] for t, i in zip(sc.verbalizer.target_ids, ids))


def test_listwise_scores_equal_full_vocab_logits(tiny_model, tiny_tokenizer):
    sc = ListwiseScorer(tiny_model, tiny_tokenizer, max_history=5)
    lists = [(TITLES[:3], TITLES[3:10]), (TITLES[:1], TITLES[2:4]), (TITLES[5:11], TITLES[:12])]
    got = sc.score_lists(lists)
    for (h, c), g in zip(lists, got):
        ids = torch.tensor([sc.encode(h, c)])
        with torch.no_grad():
            full = tiny_model(input_ids=ids).logits[0, -1]
        assert g.shape == (len(c),) and g.dtype == np.float32
        np.testing.assert_allclose(g, full[sc.verbalizer.token_ids[: len(c)]].numpy(), atol=1e-4)


def test_answer_logits_batched_equals_single(tiny_model, tiny_tokenizer):
    prompts = [tiny_tokenizer(t).input_ids for t in ["Toy Story", "Heat (1995) Casino", "A B C D E F G"]]
    batched = answer_logits(tiny_model, prompts, [5, 7, 9], batch_tokens=64)
    for p, row in zip(prompts, batched):
        np.testing.assert_allclose(answer_logits(tiny_model, [p], [5, 7, 9])[0], row, atol=1e-4)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        answer_logits(tiny_model, [[]], [5])


def test_listwise_render_errors(tiny_model, tiny_tokenizer):
    sc = ListwiseScorer(tiny_model, tiny_tokenizer)
    with pytest.raises(ValueError, match="history is empty"):
        sc.render([], ["a"])
    with pytest.raises(ValueError, match="21 candidates"):
        sc.render(["a"], ["x"] * 21)
    with pytest.raises(ValueError, match="needs 'listwise'"):
        ListwiseScorer(tiny_model, tiny_tokenizer, "rerank-pointwise")
    with pytest.raises(ValueError, match="template rerank-listwise: task 'listwise', pointwise reranking needs"):
        PointwiseRerankScorer(tiny_model, tiny_tokenizer, "rerank-listwise")
    for cls in (ListwiseScorer, PointwiseRerankScorer):
        with pytest.raises(ValueError, match="max_history must be >= 1, got 0"):
            cls(tiny_model, tiny_tokenizer, max_history=0)


def test_listwise_training_example_targets_letter(tiny_model, tiny_tokenizer):
    sc = ListwiseScorer(tiny_model, tiny_tokenizer)
    ex = sc.training_example(TITLES[:2], TITLES[2:7], 3)
    n = len(sc.encode(TITLES[:2], TITLES[2:7]))
    assert ex["labels"][:n] == [-100] * n
    assert ex["input_ids"][n] == sc.verbalizer.token_ids[3] == ex["labels"][n]
    with pytest.raises(ValueError, match="target_pos 20"):
        listwise_training_example([1, 2], 20, sc.verbalizer.target_ids)


# ---------------------------------------------------------------- training data
def _toy_split(n_users=300, n_items=40, seed=0) -> LOOSplit:
    g = np.random.default_rng(seed)
    train = [g.choice(n_items, size=int(g.integers(6, 12)), replace=False).astype(np.int64) for _ in range(n_users)]
    return LOOSplit(train=train, valid=np.full(n_users, -1), test=np.full(n_users, -1), n_items=n_items)


def _fake_retrieve(n_items):
    """Deterministic 'retriever': items in index order, seen ones excluded (misses some targets)."""
    def retrieve(hists, k):
        out = []
        for h in hists:
            out.append([j for j in range(n_items) if j not in set(h.tolist())][:k])
        return np.asarray(out, np.int64)
    return retrieve


def test_training_lists_hard_negatives_shuffled():
    s = _toy_split()
    ex = training_lists(s, _fake_retrieve(s.n_items), 20, seed=0)
    assert len(ex) == s.n_users
    pos = np.array([e.target_pos for e in ex])
    for e in ex:
        tr = s.train[e.user]
        assert e.candidates[e.target_pos] == tr[-1]                 # the target is the last training item
        assert np.array_equal(e.history, tr[:-1])                    # history = everything before it
        assert len(set(e.candidates.tolist())) == 20 == len(e.candidates)
        assert not set(e.candidates.tolist()) & set(e.history.tolist())  # seen items are never candidates
    # shuffled: the true item lands in (nearly) every position, not always where the retriever put it
    assert len(np.unique(pos)) >= 15 and np.bincount(pos, minlength=20).max() < 0.2 * len(ex)
    again = training_lists(s, _fake_retrieve(s.n_items), 20, seed=0)
    assert [e.target_pos for e in again] == pos.tolist()           # seeded


def test_training_lists_positions_walk_back_through_training_part():
    s = _toy_split(30)
    ex = training_lists(s, _fake_retrieve(s.n_items), 10, seed=0, positions=3)
    # train lengths are 6..11 with min_history 3, so every user gives exactly 3 lists
    assert len(ex) == 3 * s.n_users
    for i, e in enumerate(ex):
        back = i % 3 + 1
        tr = s.train[e.user]
        assert e.user == i // 3
        assert e.candidates[e.target_pos] == tr[-back] and np.array_equal(e.history, tr[:-back])
    short = LOOSplit(train=[np.arange(5, dtype=np.int64)], valid=np.full(1, -1), test=np.full(1, -1), n_items=40)
    assert [len(e.history) for e in training_lists(short, _fake_retrieve(40), 10, positions=9)] == [4, 3]
    with pytest.raises(ValueError, match="positions must be an integer >= 1, got 0"):
        training_lists(s, _fake_retrieve(s.n_items), 10, positions=0)
    for kw, msg in ((dict(positions=2.5), "positions must be an integer >= 1, got 2.5"),
                    (dict(n_candidates=0), "n_candidates must be an integer >= 2, got 0"),
                    (dict(users=[-6]), "users contains index -6 outside 0..29")):
        with pytest.raises(ValueError, match=msg):
            training_lists(s, _fake_retrieve(s.n_items), **{"n_candidates": 10, **kw})
    with pytest.raises(ValueError, match=r"must return an int array of shape \(30, k\)"):
        training_lists(s, lambda h, k: _fake_retrieve(s.n_items)(h[:-1], k), 10)
    with pytest.raises(ValueError, match="negatives must be >= 0, got -1"):
        pointwise_pairs(training_lists(s, _fake_retrieve(s.n_items), 10), -1)


def test_training_lists_retrieved_only_keeps_exactly_the_found_targets():
    s = _toy_split(60)
    retrieve = _fake_retrieve(s.n_items)
    every = training_lists(s, retrieve, 10, seed=0, positions=2)
    kept = training_lists(s, retrieve, 10, seed=0, positions=2, retrieved_only=True)
    # independent reference: a list survives iff its target is in the fake retriever's top 10 for its history
    found = [(e.user, len(e.history)) for e in every
             if e.candidates[e.target_pos] in retrieve([e.history], 10)[0].tolist()]
    assert 0 < len(found) < len(every)                                  # the toy retriever misses some targets
    assert [(e.user, len(e.history)) for e in kept] == found
    for e in kept:                                                      # candidates = the retriever's own top 10
        assert sorted(e.candidates.tolist()) == sorted(retrieve([e.history], 10)[0].tolist())


def test_popularity_sampler_draws_by_popularity_outside_the_history():
    """Reference: the draw frequency of each item over many draws of one item from an empty history equals its
    share of the interactions (tolerance 4 binomial SEs); history items are never drawn; rows hold distinct items;
    too few items left pads with -1; bad input is refused naming the field."""
    train = [np.array([0, 0, 0, 1]), np.array([0, 2, 1, 0]), np.array([3])]   # counts 0:5, 1:2, 2:1, 3:1, 4:0
    share = np.array([5, 2, 1, 1, 0]) / 9
    n = 20000
    draws = popularity_sampler(train, 5, seed=0)([np.zeros(0, np.int64)] * n, 1)[:, 0]
    freq = np.bincount(draws, minlength=5) / n
    se = np.sqrt(share * (1 - share) / n)
    assert np.all(np.abs(freq - share) <= 4 * se + 1e-12), (freq, share)
    rows = popularity_sampler(train, 5, seed=1)([np.array([0, 3])] * 300, 2)
    assert not np.isin(rows, [0, 3]).any()                      # the history's items are excluded
    assert np.all(np.sort(rows, 1) == np.array([1, 2]))         # 2 distinct of the 2 drawable items {1, 2}
    padded = popularity_sampler(train, 5, seed=2)([np.array([0, 1])], 4)
    assert sorted(padded[0].tolist()) == [-1, -1, 2, 3]         # item 4 has no interaction: never drawn
    a = popularity_sampler(train, 5, seed=3)([np.zeros(0, np.int64)] * 5, 3)
    assert np.array_equal(a, popularity_sampler(train, 5, seed=3)([np.zeros(0, np.int64)] * 5, 3))  # seeded
    with pytest.raises(ValueError, match="item index 3 outside 0..2"):
        popularity_sampler(train, 3)
    with pytest.raises(ValueError, match="n_items"):
        popularity_sampler(train, 0)
    with pytest.raises(ValueError, match="no interaction"):
        popularity_sampler([np.zeros(0, np.int64)], 5)
    sample = popularity_sampler(train, 5)
    for hist, k, msg in (([np.array([-1])], 1, r"histories\[0\] contains item index -1 outside 0..4"),
                         ([np.array([0]), np.array([7])], 1, r"histories\[1\] contains item index 7"),
                         ([np.array([1.7])], 1, r"histories\[0\] must hold integer item indices"),
                         ([np.array([True])], 1, "must hold integer item indices"),
                         ([np.array([0])], -1, "k must be an integer >= 0, got -1"),
                         ([np.array([0])], 2.5, "k must be an integer >= 0, got 2.5")):
        with pytest.raises(ValueError, match=msg):
            sample(hist, k)
    for n_items in (np.bool_(True), None, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="n_items must be an integer >= 1"):
            popularity_sampler(train, n_items)
    with pytest.raises(ValueError, match=r"train\[0\] must hold integer item indices"):
        popularity_sampler([np.array([0.5, 1.2])], 5)
    with pytest.raises(ValueError, match=r"train\[0\] must be a 1-d sequence"):
        popularity_sampler([0, 1, 2], 5)


def test_training_lists_from_sampled_candidates_hold_their_target():
    """With the sampler as ``retrieve`` every list keeps its target (it replaces the last drawn candidate when not
    drawn) and the other candidates lie outside the history."""
    s = _toy_split(40)
    ex = training_lists(s, popularity_sampler(s.train, s.n_items, seed=0), 10, seed=0, positions=2)
    assert ex and all(e.target_pos >= 0 and len(set(e.candidates.tolist())) == 10 for e in ex)
    for e in ex:
        neg = np.delete(e.candidates, e.target_pos)
        assert not np.isin(neg, e.history).any()


def test_pointwise_pairs_from_lists():
    s = _toy_split(20)
    ex = training_lists(s, _fake_retrieve(s.n_items), 10, seed=1)
    pairs = pointwise_pairs(ex, negatives=3)
    assert len(pairs) == 4 * len(ex) and sum(y for *_, y in pairs) == len(ex)
    for (h, c, y), e in zip(pairs[::4], ex):
        assert y == 1 and c == e.candidates[e.target_pos]


def test_loo_from_recdata_toy():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u2", "b", 1), ("u2", "a", 2),
            ("u2", "d", 3)]
    f = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=4.0)
    cat = Catalog.from_records([{"item_id": i, "title": i.upper(), "year": None, "genres": []} for i in "abcd"])
    d = loo_from_recdata(RecData(Interactions(f), cat), kcore=1)
    assert d.item_ids.tolist() == ["a", "b", "c", "d"] and d.user_ids.tolist() == ["u1", "u2"]
    assert d.split.train[0].tolist() == [0, 1] and d.split.valid[0] == 2 and d.split.test[0] == 3
    assert d.full[1].tolist() == [1, 0, 3]


# ---------------------------------------------------------------- pointwise
def test_pointwise_prefix_equals_full_prompts(tiny_model, tiny_tokenizer):
    if not prefix_scoring_available():
        pytest.skip("llmrec.scoring.prefix not present")
    pre = PointwiseRerankScorer(tiny_model, tiny_tokenizer, use_prefix=True)
    full = PointwiseRerankScorer(tiny_model, tiny_tokenizer, use_prefix=False)
    a = pre.score(TITLES[:4], TITLES[4:11])
    b = full.score(TITLES[:4], TITLES[4:11])
    assert pre.prefix_used == 1 and full.prefix_used == 0
    np.testing.assert_allclose(a, b, atol=1e-3)  # log-odds; P(Yes) agree to ~1e-6 (prefix_scoring's tests)
    prefix, suffixes = pre.split(TITLES[:4], TITLES[4:6])
    assert prefix + suffixes[0] == pre.render(TITLES[:4], TITLES[4])


# ---------------------------------------------------------------- blending
def test_blend_extremes_and_tuning():
    cands = np.array([[10, 11, 12, 13], [20, 21, 22, 23]])
    ret = np.array([[4.0, 3, 2, 1], [4, 3, 2, 1]])
    lm = np.array([[0.0, 0, 1, 5], [5, 0, 0, 1]])
    assert rank_by(cands, blend_scores(ret, lm, 0.0)).tolist() == cands.tolist()
    assert rank_by(cands, blend_scores(ret, lm, 1.0))[:, 0].tolist() == [13, 20]
    best, curve = tune_alpha(cands, ret, lm, np.array([13, 20]), rule="max")
    assert best > 0.5 and curve[best] == pytest.approx(1.0)
    best0, _ = tune_alpha(cands, ret, lm, np.array([10, 20]), rule="max")
    assert best0 == 0.0  # ties -> the smallest alpha (the retriever's order)
    # two users are too few to trust the gain: one-SE keeps the retriever's order
    assert tune_alpha(cands, ret, lm, np.array([13, 20]))[0] == 0.0
    with pytest.raises(ValueError, match="rule must be 'one-se' or 'max', got 'best'"):
        tune_alpha(cands, ret, lm, np.array([13, 20]), rule="best")
    z = zscore(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, -np.inf]]))
    assert np.all(z[0] == 0) and z[1, 2] == -np.inf and z[1, 0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        blend_scores(ret, lm, 1.5)
    # a short list padded with -1 / -inf: the pad stays last at every alpha, even with a high LM score
    pc, pr, pl = np.array([[7, 8, -1]]), np.array([[2.0, 1.0, -np.inf]]), np.array([[0.0, 1.0, 9.0]])
    for alpha in (0.0, 0.5, 1.0):
        b = blend_scores(pr, pl, alpha)
        assert b[0, 2] == -np.inf and np.isfinite(b[0, :2]).all()
        assert rank_by(pc, b)[0, 2] == -1
    assert rank_by(pc, pl).tolist() == [[8, 7, -1]]  # rank_by puts pads last even on raw LM scores
    assert rank_by(np.array([-1, 7, 8]), np.array([5.0, -np.inf, 1.0])).tolist() == [8, 7, -1]  # 1-D too
    with pytest.raises(ValueError, match=r"candidates \(2, 4\) and scores \(4,\) differ in shape"):
        rank_by(cands, ret[0])


def test_one_se_choice_hand_worked():
    per = {0.0: [0.2, 0.2, 0.2, 0.2], 0.5: [1.0, 0.5, 0.5, 0.9], 1.0: [0.5, 1.0, 0.5, 1.0]}
    # best mean: alpha 1 (0.75). alpha 0.5 (0.725): paired differences (.5, -.5, 0, -.1), mean -0.025,
    # sample std 0.4113, SE 0.2056 -> within one SE. alpha 0: differences (-.3, -.8, -.3, -.8), mean -0.55,
    # SE 0.1443 -> not. So the rule picks 0.5 where the plain maximum picks 1.
    assert one_se_choice(per) == 0.5
    assert one_se_choice({0.0: [0.0, 1.0], 1.0: [0.0, 1.0]}) == 0.0          # equal -> the smaller alpha
    with pytest.raises(ValueError, match="differ in length"):
        one_se_choice({0.0: [1.0], 1.0: [1.0, 0.0]})
    with pytest.raises(ValueError, match="NaN or inf"):
        one_se_choice({0.0: [np.nan, 0.2], 0.5: [0.5, 0.9]})
    with pytest.raises(ValueError, match="no validation users"):
        one_se_choice({0.0: [], 0.5: []})
    # +inf stays the best after standardisation, -inf pads and NaN go to the bottom
    z = zscore(np.array([np.inf, 1.0, 2.0, -np.inf, np.nan]))
    assert z[0] == np.inf and z[3] == -np.inf and z[4] == -np.inf and z[1] == pytest.approx(-1.0)


# ---------------------------------------------------------------- tuning
def test_listwise_lora_training_moves_toward_true_letter(tiny_model, tiny_tokenizer, tmp_path):
    from llmrec.model import LoraSettings
    from llmrec.rerank.train import train_listwise
    from llmrec.train import TrainSettings

    sc = ListwiseScorer(tiny_model, tiny_tokenizer, max_history=2)
    g = np.random.default_rng(0)
    # the answer is always "Fargo (1996)", at a random position: learnable only from the candidates' content
    lists = []
    for _ in range(8):
        c = list(g.choice([t for t in TITLES if t != "Fargo (1996)"], 3, replace=False)) + ["Fargo (1996)"]
        g.shuffle(c)
        lists.append((TITLES[:2], c, c.index("Fargo (1996)")))

    def true_logprob():
        s = sc.score_lists([(h, c) for h, c, _ in lists])
        return np.mean([x[t] - np.log(np.exp(x).sum()) for x, (_, _, t) in zip(s, lists)])

    before = true_logprob()
    st = TrainSettings(output_dir=str(tmp_path / "w"), epochs=4, batch_size=8, learning_rate=3e-2, precision="fp32",
                       progress=False, patience=0, warmup_ratio=0.0, lr_scheduler="constant")
    res = train_listwise(sc, lists, st, LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules="all-linear"))
    assert hasattr(sc.model, "peft_config") and res.train_tokens > 0 and res.epochs_run == 4
    assert true_logprob() > before + 0.05, "tuning did not raise the true candidate's letter probability"


def test_listwise_training_refuses_stale_checkpoints_of_another_run(tiny_model, tiny_tokenizer, tmp_path):
    """A rerun into the same output folder with other data must not resume (and return) the old adapter."""
    from llmrec.model import LoraSettings
    from llmrec.rerank.train import train_listwise
    from llmrec.train import TrainSettings
    from tests.conftest import make_tiny_llama

    st = TrainSettings(output_dir=str(tmp_path / "w"), epochs=1, batch_size=4, precision="fp32", progress=False,
                       patience=0)
    lora = LoraSettings(rank=2, alpha=4, dropout=0.0)
    first = [(TITLES[:2], TITLES[2:6], 0)] * 4
    train_listwise(ListwiseScorer(tiny_model, tiny_tokenizer, max_history=2), first, st, lora)
    # the same run again resumes its finished checkpoint
    train_listwise(ListwiseScorer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, max_history=2), first, st, lora)
    with pytest.raises(ValueError, match="checkpoints of a different run"):
        train_listwise(ListwiseScorer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, max_history=2),
                       [(TITLES[:2], TITLES[2:6], 3)] * 4, st, lora)


def test_score_shuffled_maps_scores_back_to_retriever_order():
    from llmrec.rerank.lm import score_shuffled

    class EchoScorer:  # scores each shown candidate by its own title, so the mapping back is checkable
        def score_lists(self, lists, progress=False, desc=""):
            self.shown = [c for _, c in lists]
            return [np.array([float(t) for t in c]) for _, c in lists]

    cands = np.array([[5, 7, 9, 11], [2, 4, 6, 8]])
    sc = EchoScorer()
    out = score_shuffled(sc, [np.array([1]), np.array([3])], cands, seed=0, title=str)
    np.testing.assert_array_equal(out, cands.astype(float))
    assert any(shown != [str(x) for x in row] for shown, row in zip(sc.shown, cands))   # really shuffled
