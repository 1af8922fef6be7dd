"""Reranking with collaborative tokens (llmrec.collab.rerank): prompts hold one slot per marker, the user's
candidates share a token-id prefix, and prefix-shared scoring equals full-prompt scoring (tiny random Llama,
fp32, tolerance 1e-5 on the log-odds)."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.collab.rerank import CollabRerankScorer
from llmrec.collab.tokens import SlotTable, install, new_projector
from llmrec.prompts.collab_syntax import split_markers
from llmrec.scoring import score_encoded

from ..conftest import make_tiny_llama
from .test_tokens import collab  # noqa: F401  (module-scoped fixture)

TITLES = {i: f"Film {i.upper()} (1990)" for i in ["a", "b", "c", "d", "e", "f", "cold"]}


@pytest.fixture()
def scorer_for(tiny_tokenizer, collab):  # noqa: F811
    def make(template):
        model = make_tiny_llama(len(tiny_tokenizer))
        emb = install(model, new_projector(model, collab, seed=1))
        return CollabRerankScorer(model, tiny_tokenizer, SlotTable(collab, emb), TITLES.__getitem__, template,
                                  max_history=3)
    return make


@pytest.mark.parametrize("template,titles", [("rerank-pointwise-tokens", False), ("rerank-pointwise-hybrid", True)])
def test_prefix_shared_scores_equal_full_prompts(scorer_for, template, titles):
    sc = scorer_for(template)
    lists = [(["a", "b", "c", "d"], ["e", "f", "cold"]), (["d"], ["a", "b"]), (["f", "a"], ["c"])]
    got = sc.score_lists(lists)
    for (h, c), g in zip(lists, got):
        ids = sc.encode_many(h, c)
        p = np.clip(score_encoded(sc.model, ids, sc.verbalizer.token_ids[:2], dtype="float32"), 1e-12, 1)
        np.testing.assert_allclose(g, np.log(p[:, 0]) - np.log(p[:, 1]), rtol=0, atol=1e-5)
        text = sc.render(h, c[0])
        marks = [x for x in split_markers(text) if isinstance(x, tuple)]
        # user + the last max_history=3 history items + the target, one position each
        assert marks == [("user", None)] + [("item", i) for i in h[-3:]] + [("item", c[0])]
        assert (TITLES[c[0]] in text) == titles
        assert sum(i >= sc.slots.vocab for i in ids[0]) == len(marks)
    # one call per user gives the same as the packed call
    np.testing.assert_allclose(sc.score(*lists[1]), got[1], atol=1e-5)


def test_bad_input(scorer_for):
    sc = scorer_for("rerank-pointwise-tokens")
    with pytest.raises(ValueError, match="history is empty"):
        sc.score([], ["a"])
    with pytest.raises(ValueError, match="no candidates"):
        sc.score(["a"], [])
    with pytest.raises(KeyError, match="'zz'"):
        sc.score(["a"], ["zz"])
    with pytest.raises(ValueError, match="renders no collaborative token"):
        scorer_for("rerank-pointwise")
    with pytest.raises(ValueError, match="needs 'pointwise'"):
        scorer_for("rerank-listwise")
