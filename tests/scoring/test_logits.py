"""Verbalizer scoring against an independent reference: the full-vocabulary logits of a plain forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.model import verbalizer_for
from llmrec.prompts import load_template
from llmrec.scoring import encode_prompts, score_encoded, score_texts, verbalizer_logits


def _variables(i: int) -> dict:
    titles = ["Toy Story (1995)", "Heat (1995)", "Yes, Madam (1985)", "No Escape (1994)", "Casino (1995)"]
    return {"liked": titles[: i % 5], "disliked": titles[i % 5:][:2], "target": titles[(i * 3) % 5]}


def _reference(model, tok, prompts, token_ids):
    """P over verbalizer words from the full (V,) logits at the last prompt token, one prompt at a time."""
    out = []
    for s in prompts:
        ids = tok(s, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1].double()
        out.append(torch.softmax(logits[token_ids], -1).numpy())
    return np.array(out)


def test_verbalizer_ids_come_from_the_tokenizer(tiny_tokenizer):
    tpl = load_template("tallrec")
    prompt = tpl.render(_variables(1))
    verb = verbalizer_for(tpl, tiny_tokenizer, prompt)
    full = tiny_tokenizer(prompt + "Yes.", add_special_tokens=False).input_ids
    base = tiny_tokenizer(prompt, add_special_tokens=False).input_ids
    assert verb.token_ids[0] == full[len(base)]
    assert verb.token_ids[0] != verb.token_ids[1]
    assert verb.target_ids[0][-1] == tiny_tokenizer.eos_token_id


def test_verbalizer_logits_equal_full_head(tiny_model):
    h = torch.randn(7, tiny_model.config.hidden_size)
    W = tiny_model.get_output_embeddings().weight
    got = verbalizer_logits(h, W, [3, 11, 5])
    want = (h @ W.T)[:, [3, 11, 5]]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_score_matches_full_forward_reference(tiny_model, tiny_tokenizer):
    """Batched, length-sorted, verbalizer-only scoring == one-by-one full-vocab forward (fp32, atol 1e-6).

    Titles containing "Yes"/"No" are included: the answer position comes from the token count, not text."""
    tpl = load_template("tallrec")
    prompts = [tpl.render(_variables(i)) for i in range(11)]
    verb = verbalizer_for(tpl, tiny_tokenizer, prompts[0])
    got = score_texts(tiny_model, tiny_tokenizer, prompts, verb.token_ids, batch_tokens=400, max_batch=4)
    want = _reference(tiny_model, tiny_tokenizer, prompts, verb.token_ids)
    assert got.shape == (11, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-9)


def test_batching_does_not_change_scores(tiny_model, tiny_tokenizer):
    tpl = load_template("tallrec")
    prompts = [tpl.render(_variables(i)) for i in range(9)]
    verb = verbalizer_for(tpl, tiny_tokenizer, prompts[0])
    ids = encode_prompts(tiny_tokenizer, prompts)
    one = score_encoded(tiny_model, ids, verb.token_ids, max_batch=1)
    many = score_encoded(tiny_model, ids, verb.token_ids, max_batch=64, batch_tokens=10**6)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_bf16_autocast_close_to_fp32(tiny_model, tiny_tokenizer):
    tpl = load_template("tallrec")
    prompts = [tpl.render(_variables(i)) for i in range(6)]
    verb = verbalizer_for(tpl, tiny_tokenizer, prompts[0])
    a = score_texts(tiny_model, tiny_tokenizer, prompts, verb.token_ids)
    b = score_texts(tiny_model, tiny_tokenizer, prompts, verb.token_ids, dtype="bfloat16")
    np.testing.assert_allclose(a, b, atol=2e-2)  # bf16 has 8 mantissa bits


def test_chat_template_prompt_ends_at_answer(tiny_tokenizer):
    tpl = load_template("tallrec-chat")
    text = tpl.render(_variables(2), tiny_tokenizer)
    assert text.endswith("<|im_start|>assistant\n")
    verb = verbalizer_for(tpl, tiny_tokenizer, text)
    assert len(set(verb.token_ids)) == 2


def test_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        score_encoded(tiny_model, [[1, 2], []], [3, 4])
    with pytest.raises(ValueError, match="at least two"):
        score_encoded(tiny_model, [[1, 2]], [3])
    with pytest.raises(ValueError, match="^dtype .int8.: expected one of auto"):
        score_encoded(tiny_model, [[1, 2]], [3, 4], dtype="int8")
