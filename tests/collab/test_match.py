"""Interaction markers (llmrec.collab.match): ``⟨taste:ID⟩`` / ``⟨match:ID⟩`` rows hold the user-item comparison.

References are written here independently of the module: the liked-minus-disliked cosine as
``eval/collab_probe.py`` defines it, and SASRec's next-item score ``u . v`` from the SASRec user vector.
Tolerances: 1e-5 absolute on float32 vectors whose sums are O(1)-O(10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.collab.match import item_rms, match_vectors, taste_directions, taste_probe, taste_vectors
from llmrec.collab.tokens import SlotTable, encode_with_tokens, install, new_projector
from llmrec.prompts.collab_syntax import (match_token, source_places_tokens, split_markers, taste_token,
                                          user_token)
from llmrec.scoring import score_encoded
from llmrec.scoring.prefix import score_shared_head

from ..conftest import make_tiny_llama
from .test_tokens import collab  # noqa: F401  (module fixture: tiny SASRec + one cold item)

HIST = [["a", "b", "c"], ["d", "e"], ["a", "f", "b", "e"]]
LIKED = [[True, False, True], [True, True], [False, False, True, False]]
TARGETS = ["d", "cold", "c"]


def _ref_cos(collab, h, f, t):
    """cos(t, mean liked) - cos(t, mean disliked), 0 for an empty side (eval/collab_probe.py's probe)."""
    def cos(a, b):
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    v = collab.item_vector(t).astype(np.float64)
    L = [collab.item_vector(i).astype(np.float64) for i, x in zip(h, f) if x]
    D = [collab.item_vector(i).astype(np.float64) for i, x in zip(h, f) if not x]
    return (cos(v, np.mean(L, 0)) if L else 0.0) - (cos(v, np.mean(D, 0)) if D else 0.0)


def test_marker_syntax():
    assert taste_token(50) == "⟨taste:50⟩" and match_token("x1") == "⟨match:x1⟩"
    assert split_markers(f"a {taste_token('7')}{match_token('8')} {user_token()}") == [
        "a ", ("taste", "7"), ("match", "8"), " ", ("user", None)]
    assert source_places_tokens("{{ taste_token(target_id) }}") and source_places_tokens("{{ match_token(x) }}")
    for bad in ("", "a b", "⟨"):
        with pytest.raises(ValueError, match="taste_token"):
            taste_token(bad)


@pytest.mark.parametrize("form", ["score", "product"])
def test_taste_rows_sum_to_the_liked_minus_disliked_cosine(collab, form):
    D = taste_directions(collab, HIST, LIKED)
    T = taste_vectors(collab, TARGETS, D, form)
    assert T.shape == (3, collab.dim) and T.dtype == np.float32
    if form == "score":  # one degree of freedom: every entry the same
        np.testing.assert_allclose(T, np.repeat(T[:, :1], collab.dim, 1), atol=1e-7)
    else:  # the elementwise product of the unit target vector with the taste direction
        V = collab.item_matrix(TARGETS).astype(np.float64)
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        np.testing.assert_allclose(T, collab.dim * item_rms(collab) * V * D, rtol=1e-5, atol=1e-6)
    got = T.sum(1) / (collab.dim * item_rms(collab))
    want = [_ref_cos(collab, h, f, t) for h, f, t in zip(HIST, LIKED, TARGETS)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a side without items contributes zero (row 1 has no disliked item)
    assert want[1] == pytest.approx(_ref_cos(collab, HIST[1], LIKED[1], TARGETS[1]))
    # mirroring (likes and dislikes swapped) negates the row, so the mirrored sample's flipped label is consistent
    Dm = taste_directions(collab, HIST, [[not x for x in f] for f in LIKED])
    np.testing.assert_allclose(taste_vectors(collab, TARGETS, Dm, form), -T, atol=1e-6)
    with pytest.raises(ValueError, match="interaction row form 'sum'"):
        taste_vectors(collab, TARGETS, D, "sum")


def test_taste_probe_is_the_cosine_the_taste_row_holds(collab):
    """taste_probe (the default recipe's no-LM row) = the reference cosine per sample, liked = rating > the sample's
    own threshold; probe_x_like_rate = logit((n_liked + 1) / (n + 2)) + z(probe) * sd(that), written out here."""
    from llmrec.recipe import probe_x_like_rate
    from llmrec.samples.tallrec import Sample

    ratings = [[5.0 if x else 2.0 for x in f] for f in LIKED]
    samples = [Sample("u", h, r, t, 4.0, 1) for h, r, t in zip(HIST, ratings, TARGETS)]
    want = [_ref_cos(collab, h, f, t) for h, f, t in zip(HIST, LIKED, TARGETS)]
    np.testing.assert_allclose(taste_probe(collab, samples), want, atol=1e-6)
    # another threshold splits the history elsewhere: 2.0 is "liked" when liked = rating > 1
    loose = [Sample("u", h, r, t, 4.0, 1, like_threshold=1.0) for h, r, t in zip(HIST, ratings, TARGETS)]
    np.testing.assert_allclose(taste_probe(collab, loose),
                               [_ref_cos(collab, h, [True] * len(h), t) for h, t in zip(HIST, TARGETS)], atol=1e-6)
    probe = np.array([0.3, -0.1, 0.7])
    n = np.array([len(h) for h in HIST], float)
    r = (np.array([sum(f) for f in LIKED]) + 1) / (n + 2)
    lr = np.log(r / (1 - r))
    np.testing.assert_allclose(probe_x_like_rate(samples, probe), lr + (probe - probe.mean()) / probe.std() * lr.std(),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="probe has shape"):
        probe_x_like_rate(samples, probe[:2])
    with pytest.raises(ValueError, match="constant"):
        probe_x_like_rate(samples, np.ones(3))


@pytest.mark.parametrize("form", ["score", "product"])
def test_match_rows_sum_to_the_sasrec_score(collab, form):
    U = collab.user_vectors(HIST).astype(np.float64)
    M = match_vectors(collab, TARGETS, U, form)
    want = [U[n] @ collab.item_vector(t).astype(np.float64) for n, t in enumerate(TARGETS)]
    np.testing.assert_allclose(M.sum(1) * np.sqrt((U ** 2).mean(1)), want, atol=1e-5)
    if form == "score":
        np.testing.assert_allclose(M, np.repeat(M[:, :1], collab.dim, 1), atol=1e-7)
    else:
        V = collab.item_matrix(TARGETS).astype(np.float64)
        np.testing.assert_allclose(M, V * U / np.sqrt((U ** 2).mean(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    assert not match_vectors(collab, ["a"], np.zeros((1, collab.dim))).any()
    with pytest.raises(ValueError, match=r"users has shape \(2, "):
        match_vectors(collab, ["a"], U[:2])


def test_bad_inputs_name_the_field(collab):
    with pytest.raises(ValueError, match="history 0: 3 items but 2 liked flags"):
        taste_directions(collab, HIST[:1], [[True, False]])
    with pytest.raises(ValueError, match="liked has 1 rows for 3 histories"):
        taste_directions(collab, HIST, LIKED[:1])
    with pytest.raises(KeyError, match="'zz'"):
        taste_directions(collab, [["zz"]], [[True]])


@pytest.fixture()
def setup(tiny_tokenizer, collab):  # noqa: F811
    model = make_tiny_llama(len(tiny_tokenizer))
    emb = install(model, new_projector(model, collab, seed=3))
    return model, SlotTable(collab, emb)


def _texts():
    return [f"User: {user_token()} likes ...\nMatch: {taste_token(t)} {match_token(t)}\nWill the user like it?\n"
            for t in TARGETS]


def test_encoded_slots_hold_the_interaction_rows(setup, tiny_tokenizer, collab):  # noqa: F811
    model, slots = setup
    ids = encode_with_tokens(tiny_tokenizer, _texts(), HIST, slots, add_special_tokens=False, liked=LIKED)
    U = collab.user_vectors(HIST)
    T = taste_vectors(collab, TARGETS, taste_directions(collab, HIST, LIKED))  # the default form: "score"
    M = match_vectors(collab, TARGETS, U)
    assert slots.pair_form == "score"
    for n, row in enumerate(ids):
        s = [i for i in row if i >= slots.vocab]
        assert len(s) == 3  # user, taste, match: one position each
        np.testing.assert_allclose(slots.vector(s[0]), U[n], atol=1e-6)
        np.testing.assert_allclose(slots.vector(s[1]), T[n], atol=1e-6)
        np.testing.assert_allclose(slots.vector(s[2]), M[n], atol=1e-6)
    # the same (item, history, flags) reuses its row; other flags get a new one
    n_rows = slots.embedding.table.shape[0]
    again = encode_with_tokens(tiny_tokenizer, _texts(), HIST, slots, add_special_tokens=False, liked=LIKED)
    assert again == ids and slots.embedding.table.shape[0] == n_rows
    flipped = [[not x for x in f] for f in LIKED]
    other = encode_with_tokens(tiny_tokenizer, _texts()[:1], HIST[:1], slots, add_special_tokens=False, liked=flipped[:1])
    assert other[0] != ids[0] and slots.embedding.table.shape[0] == n_rows + 1
    np.testing.assert_allclose(slots.vector([i for i in other[0] if i >= slots.vocab][1]), -T[0], atol=1e-6)


def test_taste_needs_ratings_and_histories(setup, tiny_tokenizer):
    _, slots = setup
    with pytest.raises(ValueError, match="use match_token"):
        encode_with_tokens(tiny_tokenizer, [f"x {taste_token('a')}"], [["b"]], slots, False)
    with pytest.raises(ValueError, match="⟨match⟩ but no history"):
        encode_with_tokens(tiny_tokenizer, [f"x {match_token('a')}"], None, slots, False)
    with pytest.raises(KeyError, match=r"match_token\('zz'\): item not in"):
        encode_with_tokens(tiny_tokenizer, [f"x {match_token('zz')}"], [["b"]], slots, False)
    with pytest.raises(ValueError, match="liked has 1 entries for 2 texts"):
        encode_with_tokens(tiny_tokenizer, ["a", "b"], [["a"], ["b"]], slots, False, liked=[[True]])


def test_prefix_shared_scoring_with_interaction_tokens(setup, tiny_tokenizer):
    """The candidates' interaction tokens sit in the suffix; prefix-shared = full prompt = hand-built
    inputs_embeds (CoLLM/LLaRA style) within 1e-5 (fp32)."""
    model, slots = setup
    verb = [tiny_tokenizer("Yes", add_special_tokens=False).input_ids[0],
            tiny_tokenizer("No", add_special_tokens=False).input_ids[0]]
    texts = [f"User {user_token()} watched a b c\nMovie: {match_token(t)} {taste_token(t)}\n" for t in TARGETS]
    ids = encode_with_tokens(tiny_tokenizer, texts, [HIST[0]] * 3, slots, add_special_tokens=False,
                             liked=[LIKED[0]] * 3)
    emb = slots.embedding
    with torch.no_grad():
        want = []
        for row in ids:
            e = torch.stack([emb.projector(torch.from_numpy(slots.vector(i))[None])[0] if i >= slots.vocab
                             else emb.base.weight[i] for i in row])[None]
            want.append(torch.softmax(model(inputs_embeds=e).logits[0, -1, verb].double(), -1)[0].item())
    np.testing.assert_allclose(score_encoded(model, ids, verb, dtype="float32")[:, 0], want, atol=1e-5)
    np.testing.assert_allclose(score_shared_head(model, ids, verb, dtype="float32", min_prefix=4)[:, 0], want,
                               atol=1e-5)


def test_shipped_interaction_templates_render_their_markers():
    from llmrec.data.core import Catalog
    from llmrec.prompts import load_template
    from llmrec.prompts.render import render_one
    from llmrec.samples.tallrec import Sample

    cat = Catalog.from_records([{"item_id": str(i), "title": f"Film {i}", "year": 1960 + i, "genres": []}
                                for i in range(12)])
    s = Sample("7", [str(i) for i in range(10)], [5, 1, 5, 1, 5, 1, 5, 5, 1, 4], "11", 4.0, 1)
    marks = [p for p in split_markers(render_one(load_template("tallrec-last5-taste"), s, cat)) if isinstance(p, tuple)]
    assert marks == [("user", None)] + [("item", str(i)) for i in (6, 7, 9, 5, 8)] + [("taste", "11"), ("item", "11")]
    tpl = load_template("rerank-pointwise-match")
    text = tpl.render({"history_ids": ["1", "2"], "target_id": "3"})
    assert [p for p in split_markers(text) if isinstance(p, tuple)] == [
        ("user", None), ("item", "1"), ("item", "2"), ("item", "3"), ("match", "3")]


def test_collab_scorer_feeds_taste_from_the_samples_like_rule(setup, tiny_tokenizer, collab):  # noqa: F811
    """CollabScorer.encode_samples gives ⟨taste⟩ the liked flags of the sample's own like rule (rating >
    like_threshold), over its whole history, not only the five items the template shows."""
    from llmrec.collab.train import CollabScorer
    from llmrec.data.core import Catalog
    from llmrec.prompts import load_template
    from llmrec.samples.tallrec import Sample

    model, slots = setup
    cat = Catalog.from_records([{"item_id": i, "title": f"Film {i}", "year": 1990, "genres": []}
                                for i in collab.catalog_items])
    hist = ["a", "b", "c", "d", "e", "f"]
    samples = [Sample("1", hist, [5, 1, 4, 3, 2, 5], "cold", 4.0, 1),
               Sample("2", hist, [0.9, 0.1, 0.2, 0.8, 0.7, 0.6], "a", 1.0, 1, like_threshold=0.5)]
    sc = CollabScorer(model, tiny_tokenizer, load_template("tallrec-last5-taste"), slots, dtype="float32")
    P = sc.encode_samples(samples, cat)
    flags = [[r > 3 for r in samples[0].history_ratings], [r > 0.5 for r in samples[1].history_ratings]]
    want = taste_vectors(collab, ["cold", "a"], taste_directions(collab, [hist, hist], flags))
    for n, (row, text) in enumerate(zip(P.input_ids, P.texts)):
        pos = [k for k, p in enumerate(x for x in split_markers(text) if isinstance(x, tuple)) if p[0] == "taste"]
        assert pos == [6]  # after the user token and the five shown history items
        np.testing.assert_allclose(slots.vector([i for i in row if i >= slots.vocab][6]), want[n], atol=1e-6)
    assert P.labels.tolist() == [1, 1]
