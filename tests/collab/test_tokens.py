"""Collaborative tokens (llmrec.collab): injection at exactly the slot positions, prefix-shared scoring with
slots, projector save/load and hash refusal, template syntax. All on the tiny random Llama (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.collab.data import CollabModel
from llmrec.collab.projector import Projector, ProjectorConfig, load_projector, save_projector
from llmrec.collab.tokens import SlotTable, encode_with_tokens, find_collab_embedding, install, new_projector
from llmrec.prompts.collab_syntax import item_token, split_markers, user_token
from llmrec.retrieval.sasrec import SASRec, SASRecConfig
from llmrec.scoring import score_encoded
from llmrec.scoring.prefix import score_shared_head

from ..conftest import make_tiny_llama

ITEMS = ["a", "b", "c", "d", "e", "f", "cold"]


@pytest.fixture(scope="module")
def collab():
    g = np.random.default_rng(0)
    seqs = [g.integers(0, 6, size=int(g.integers(4, 9))) for _ in range(30)]
    sas = SASRec(SASRecConfig(hidden=8, max_len=10, epochs=2, threads=1, seed=0)).fit(seqs, 6, log=None)
    V = np.concatenate([sas.item_vectors(), g.normal(size=(1, 8)).astype(np.float32)])
    return CollabModel(sas, ITEMS[:6], ITEMS, V, np.array([True] * 6 + [False]))


@pytest.fixture()
def setup(tiny_tokenizer, collab):
    model = make_tiny_llama(len(tiny_tokenizer))
    ref_weight = model.get_input_embeddings().weight.detach().clone()
    proj = new_projector(model, collab, seed=3)
    emb = install(model, proj)
    return model, SlotTable(collab, emb), ref_weight


TEXTS = [
    f"Given the user's preference, answer Yes. or No.\nUser: {user_token()}\nUser Preference: \"Heat (1995)\" "
    f"{item_token('a')}, {item_token('b')}\nWhether the user will like {item_token('c')}?\n### Response:\n",
    f"Given the user's preference, answer Yes. or No.\nUser: {user_token()}\nUser Preference: {item_token('d')}"
    f"\nWhether the user will like the target movie {item_token('cold')}?\n### Response:\n",
    f"Given the user's preference, answer Yes. or No.\nUser: {user_token()}\nUser Preference: {item_token('e')}, "
    f"{item_token('f')}, {item_token('a')}\nWhether the user will like {item_token('b')}?\n### Response:\n",
]
HIST = [["a", "b"], ["d"], ["e", "f", "a"]]


def _verb(tok):
    return [tok("Yes", add_special_tokens=False).input_ids[0], tok("No", add_special_tokens=False).input_ids[0]]


def test_marker_syntax_round_trip():
    assert item_token(50) == "⟨item:50⟩" and user_token() == "⟨user⟩"
    assert split_markers(f"x {item_token('7')}, {user_token()}y") == ["x ", ("item", "7"), ", ", ("user", None), "y"]
    for bad in ("", "a b", "a⟩"):
        with pytest.raises(ValueError):
            item_token(bad)


def test_template_renders_markers(tmp_path):
    from llmrec.prompts.template import Template

    t = Template.from_string("---\nname: t\ntask: pointwise\nformat: plain\nverbalizer: [\"Yes\", \"No\"]\n"
                             "targets: [\"Yes.\", \"No.\"]\n---\n{% block prompt %}{{ user_token() }} "
                             "{% for h in history %}{{ item_token(h.item_id) }}{% endfor %}{% endblock %}")
    assert t.render({"history": [{"item_id": "50"}, {"item_id": "7"}]}).startswith("⟨user⟩ ⟨item:50⟩⟨item:7⟩")


def test_one_position_per_marker_and_text_unchanged(setup, tiny_tokenizer):
    model, slots, _ = setup
    ids = encode_with_tokens(tiny_tokenizer, TEXTS, HIST, slots, add_special_tokens=False)
    V = slots.vocab
    for text, row in zip(TEXTS, ids):
        n_markers = sum(isinstance(p, tuple) for p in split_markers(text))
        assert sum(i >= V for i in row) == n_markers
        plain = "".join(p for p in split_markers(text) if isinstance(p, str))
        assert len(row) - n_markers == sum(len(tiny_tokenizer(p, add_special_tokens=False).input_ids)
                                           for p in split_markers(text) if isinstance(p, str))
        assert plain  # the text pieces are still there
    # no markers: exactly the tokenizer's ids
    assert encode_with_tokens(tiny_tokenizer, ["Yes No (1995)"], None, slots, False) == [
        tiny_tokenizer("Yes No (1995)", add_special_tokens=False).input_ids]
    # the slot rows hold the collaborative vectors: items = catalogue rows, user = SASRec user vector
    a = [i for i in ids[0] if i >= V]
    np.testing.assert_array_equal(slots.vector(a[1]), slots.collab.item_vector("a"))
    np.testing.assert_allclose(slots.vector(a[0]), slots.collab.user_vectors([["a", "b"]])[0], atol=1e-6)
    with pytest.raises(KeyError, match="'zz'"):
        encode_with_tokens(tiny_tokenizer, [f"x {item_token('zz')}"], None, slots, False)
    with pytest.raises(ValueError, match="history"):
        encode_with_tokens(tiny_tokenizer, [f"x {user_token()}"], None, slots, False)


def test_injected_embedding_is_projector_of_vector_at_slots_only(setup, tiny_tokenizer):
    model, slots, ref_w = setup
    ids = encode_with_tokens(tiny_tokenizer, TEXTS[:1], HIST[:1], slots, add_special_tokens=False)[0]
    emb = find_collab_embedding(model)
    with torch.no_grad():
        out = emb(torch.tensor([ids]))[0]
        for pos, i in enumerate(ids):
            if i >= slots.vocab:
                want, tol = emb.projector(torch.from_numpy(slots.vector(i))[None])[0], 1e-6  # batched matmul rounding
            else:
                want, tol = ref_w[i], 0.0
            torch.testing.assert_close(out[pos], want, rtol=0, atol=tol)
    with pytest.raises(IndexError, match="slot table"):
        emb(torch.tensor([[slots.vocab + 10_000]]))


def _reference_p_yes(model, ids, slots, ref_w, verb):
    """Independent path: build inputs_embeds by hand (CoLLM/LLaRA style) and run the full model."""
    emb = find_collab_embedding(model)
    out = []
    with torch.no_grad():
        for row in ids:
            e = torch.stack([emb.projector(torch.from_numpy(slots.vector(i))[None])[0] if i >= slots.vocab
                             else ref_w[i] for i in row])[None]
            logits = model(inputs_embeds=e).logits[0, -1, verb]
            out.append(torch.softmax(logits.double(), -1)[0].item())
    return np.array(out)


def test_prefix_shared_equals_full_prompt_with_slots(setup, tiny_tokenizer):
    model, slots, ref_w = setup
    verb = _verb(tiny_tokenizer)
    ids = encode_with_tokens(tiny_tokenizer, TEXTS, HIST, slots, add_special_tokens=False)
    want = _reference_p_yes(model, ids, slots, ref_w, verb)
    full = score_encoded(model, ids, verb, dtype="float32")[:, 0]
    shared = score_shared_head(model, ids, verb, dtype="float32", min_prefix=4)[:, 0]
    np.testing.assert_allclose(full, want, atol=1e-5)
    np.testing.assert_allclose(shared, want, atol=1e-5)
    # the slot vectors matter: a different projector changes the scores
    install(model, Projector(find_collab_embedding(model).projector.config, seed=99))
    other = score_encoded(model, ids, verb, dtype="float32")[:, 0]
    assert np.abs(other - full).max() > 1e-4


def test_projector_save_load_round_trip_and_hash_refusal(tmp_path, collab):
    p = Projector(ProjectorConfig(in_dim=8, out_dim=48, in_scale=2.0, out_scale=0.1), seed=1)
    with torch.no_grad():
        p.norm.bias.add_(0.5)  # a trained-looking state, not the init
    f = save_projector(tmp_path / "p.safetensors", p, collab.sha256)
    q, sha = load_projector(f, expect_collab_sha256=collab.sha256)
    assert sha == collab.sha256 and q.config == p.config
    x = torch.randn(5, 8)
    torch.testing.assert_close(q(x), p(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="collab_sha256"):
        load_projector(f, expect_collab_sha256="0" * 64)
    with pytest.raises(ValueError, match="in_scale"):
        ProjectorConfig(in_dim=8, out_dim=48, in_scale=0.0)


def test_collab_model_save_load_and_hash(tmp_path, collab):
    d = collab.save(tmp_path / "cm")
    back = CollabModel.load(d)
    assert back.sha256 == collab.sha256
    np.testing.assert_array_equal(back.item_vectors, collab.item_vectors)
    np.testing.assert_allclose(back.user_vectors([["a", "c"]]), collab.user_vectors([["a", "c"]]), atol=1e-6)
    # a changed vector file is refused
    from safetensors.numpy import save_file

    V = collab.item_vectors.copy()
    V[0, 0] += 1
    save_file({"item_vectors": V, "warm": collab.warm.astype(np.uint8)}, str(d / "vectors.safetensors"))
    with pytest.raises(ValueError, match="content hash"):
        CollabModel.load(d)


@pytest.mark.parametrize("name,titles,shown", [("tallrec-last5-hybrid", True, (6, 7, 9, 5, 8)),
                                               ("tallrec-last5-tokens", False, (6, 7, 9, 5, 8)),
                                               ("tallrec-tokens", False, (0, 2, 4, 6, 7, 9, 1, 3, 5, 8))])
def test_shipped_token_templates_render_markers(name, titles, shown):
    """`llmrec prompts render` shows each collaborative token as a readable marker: one per shown item + user."""
    from llmrec.data.core import Catalog
    from llmrec.prompts import load_template
    from llmrec.prompts.render import render_one
    from llmrec.samples.tallrec import Sample

    cat = Catalog.from_records([{"item_id": str(i), "title": f"Film {i} (19{60 + i})", "year": 1960 + i,
                                 "genres": []} for i in range(12)])
    s = Sample("7", [str(i) for i in range(10)], [5, 1, 5, 1, 5, 1, 5, 5, 1, 4], "11", 4.0, 1)
    text = render_one(load_template(name), s, cat)
    marks = [p for p in split_markers(text) if isinstance(p, tuple)]
    assert marks == [("user", None)] + [("item", str(i)) for i in shown] + [("item", "11")]
    assert ("Film 9 (1969)" in text) == titles and "⟨item:11⟩" in text


def test_lint_token_lengths_count_one_position_per_marker(setup, tiny_tokenizer):
    from llmrec.prompt_lab.render import token_lengths
    from llmrec.prompts import load_template

    _, slots, _ = setup
    tpl = load_template("tallrec-last5-hybrid")  # alpaca format: the scorer adds special tokens
    want = [len(x) for x in encode_with_tokens(tiny_tokenizer, TEXTS, HIST, slots, add_special_tokens=True)]
    assert token_lengths(tpl, tiny_tokenizer, TEXTS) == want
    assert token_lengths(tpl, tiny_tokenizer, ["plain (1995)"]) == [len(tiny_tokenizer("plain (1995)").input_ids)]


def test_plain_scorer_refuses_token_prompts(tiny_tokenizer):
    from llmrec.prompts import load_template
    from llmrec.scoring.pointwise import PointwiseScorer

    sc = PointwiseScorer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, load_template("tallrec-last5-hybrid"))
    with pytest.raises(ValueError, match="collaborative tokens"):
        sc.encode(TEXTS)
    assert sc.encode(["plain prompt\n### Response:\n"]).input_ids  # text prompts still encode


def test_collab_from_retriever_wraps_sasrec_and_checks_ids(collab):
    from types import SimpleNamespace

    from llmrec.collab.data import collab_from_retriever

    sas = collab.sasrec
    ids = [10, 11, 12, 13, 14, 15]
    for retriever in (sas, SimpleNamespace(sasrec=sas)):  # SASRec itself, or a Fusion-like holder
        m = collab_from_retriever(retriever, ids)
        assert m.sasrec is sas and m.catalog_items == m.sasrec_items == [str(i) for i in ids]
        np.testing.assert_array_equal(m.item_vectors, sas.item_vectors().astype(np.float32))
        assert m.item_vectors.dtype == np.float32 and m.warm.all() and m.excluded == []
    with pytest.raises(ValueError, match="item_ids: 5 ids for a SASRec item table of 6 rows"):
        collab_from_retriever(sas, ids[:5])


def test_slot_table_appends_in_many_calls_keep_every_row(setup, collab):
    """Rows appended one call at a time (the table grows by doubling) equal the reference: the item vectors, then
    each new history's SASRec user vector (:meth:`CollabModel.user_vectors` on all histories at once), tolerance
    1e-6; repeated histories reuse their row; the embedding's table holds exactly the rows in use."""
    _, slots, _ = setup
    g = np.random.default_rng(5)
    hists = [[ITEMS[int(j)] for j in g.integers(0, 6, size=int(g.integers(1, 6)))] for _ in range(40)]
    unique = list(dict.fromkeys(tuple(h) for h in hists))
    ids = [slots.add_users([h])[0] for h in hists]
    assert slots.add_users(hists) == ids                                 # the same rows on a second pass
    ref = np.concatenate([collab.item_vectors, collab.user_vectors([list(h) for h in unique])])
    table = slots.embedding.table.numpy()
    assert table.shape == ref.shape
    np.testing.assert_allclose(table, ref, atol=1e-6)
    for h, i in zip(hists, ids):
        np.testing.assert_allclose(slots.vector(i), ref[len(ITEMS) + unique.index(tuple(h))], atol=1e-6)
    n = slots.embedding.table.shape[0]
    for rows, keys in ((np.zeros((2, 4)), [("x",)]), (np.zeros((1, 16)), [("x",), ("y",)]), (np.zeros((1, 3)), [("x",)])):
        with pytest.raises(ValueError, match=r"1?2? ?new keys need rows of shape"):
            slots._append({}, keys, rows)
    slots._append({}, [], np.zeros((0, collab.dim)))                    # nothing new: nothing changes
    assert slots.embedding.table.shape[0] == n
