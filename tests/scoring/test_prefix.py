"""Prefix-shared scoring (llmrec.scoring.prefix) against full-prompt scoring (llmrec.scoring.score_encoded).

Tolerance (stated): float32, ``max |P_prefix - P_full| <= 1e-4`` on the verbalizer probabilities (the two
paths differ only in the order of float32 sums in attention; observed ~1e-7 on the tiny model, ~3e-6
on SmolLM2). bfloat16 autocast is only checked loosely (``<= 0.05``): the two paths round differently.

Unit tests use conftest's tiny random Llama with grouped-query attention (6 query / 2 KV heads); the
integration test uses the real SmolLM2-135M-Instruct (9 / 3 heads) on a few TALLRec prompts and is
skipped when the model or data cannot be obtained.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_llama
from llmrec.scoring.prefix import (ATTN_PREFIX, common_prefix_length, score_candidates, score_shared_head, split_prompts)
from llmrec.scoring import score_encoded

TOL = 1e-4
VERB = [5, 7]  # any two distinct ids of the tiny vocabulary


def _rand_ids(n: int, vocab: int, g: torch.Generator) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=g).tolist()


@pytest.fixture()
def gqa_model(tiny_tokenizer):
    m = make_tiny_llama(len(tiny_tokenizer), seed=1, heads=6, kv_heads=2)
    assert m.config.num_attention_heads == 6 and m.config.num_key_value_heads == 2
    return m


def _case(vocab: int, n: int, seed: int = 0, lp: int = 37):
    g = torch.Generator().manual_seed(seed)
    prefix = _rand_ids(lp, vocab, g)
    lens = torch.randint(1, 12, (n,), generator=g).tolist()
    if n > 1:
        lens[0], lens[1] = 1, 11  # ragged: the extremes are present
    return prefix, [_rand_ids(k, vocab, g) for k in lens]


def _lora(model, merged: str):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    torch.manual_seed(3)
    pm = get_peft_model(model, cfg).eval()
    if merged == "merge_adapter":
        pm.merge_adapter()
    elif merged == "merge_and_unload":
        pm = pm.merge_and_unload().eval()
    return pm


@pytest.mark.parametrize("n", [1, 13])
def test_matches_full_prompt_scoring(gqa_model, tiny_tokenizer, n):
    prefix, sufs = _case(len(tiny_tokenizer), n)
    got = score_candidates(gqa_model, prefix, sufs, VERB)
    want = score_encoded(gqa_model, [prefix + s for s in sufs], VERB)
    assert got.shape == (n, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-9)
    assert np.abs(got - want).max() <= TOL


def test_small_batches_and_torch_backend(gqa_model, tiny_tokenizer):
    prefix, sufs = _case(len(tiny_tokenizer), 13, seed=5)
    want = score_encoded(gqa_model, [prefix + s for s in sufs], VERB)
    got = score_candidates(gqa_model, prefix, sufs, VERB, max_batch=4, backend="torch")
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("merged", ["unmerged", "merge_adapter", "merge_and_unload"])
def test_lora_adapter(gqa_model, tiny_tokenizer, merged):
    prefix, sufs = _case(len(tiny_tokenizer), 13, seed=2)
    base = score_encoded(gqa_model, [prefix + s for s in sufs], VERB)
    pm = _lora(gqa_model, merged)
    want = score_encoded(pm, [prefix + s for s in sufs], VERB)
    assert np.abs(want - base).max() > 1e-3, "the adapter should change the scores (init_lora_weights=False)"
    got = score_candidates(pm, prefix, sufs, VERB)
    assert np.abs(got - want).max() <= TOL


def test_bf16_autocast_close(gqa_model, tiny_tokenizer):
    prefix, sufs = _case(len(tiny_tokenizer), 13, seed=4)
    want = score_encoded(gqa_model, [prefix + s for s in sufs], VERB)
    got = score_candidates(gqa_model, prefix, sufs, VERB, dtype="bfloat16")
    assert np.abs(got - want).max() <= 0.05


def test_shared_head_batch_path(gqa_model, tiny_tokenizer):
    g = torch.Generator().manual_seed(9)
    V = len(tiny_tokenizer)
    head = _rand_ids(21, V, g)
    prompts = [head + _rand_ids(k, V, g) for k in (1, 3, 17, 9, 9, 2, 30, 5)]
    prompts.append(head[:15])  # a prompt that ends inside the common part
    want = score_encoded(gqa_model, prompts, VERB)
    got = score_shared_head(gqa_model, prompts, VERB, max_batch=3)
    assert np.abs(got - want).max() <= TOL
    # no common head -> plain scoring, same result
    other = [_rand_ids(k, V, g) for k in (4, 6)]
    assert np.abs(score_shared_head(gqa_model, other, VERB) - score_encoded(gqa_model, other, VERB)).max() <= TOL


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1], [2]]) == 0
    assert common_prefix_length([[1, 2]]) == 2
    assert common_prefix_length([]) == 0


def test_attention_implementation_restored(gqa_model, tiny_tokenizer):
    before = gqa_model.config._attn_implementation
    prefix, sufs = _case(len(tiny_tokenizer), 3)
    score_candidates(gqa_model, prefix, sufs, VERB)
    assert gqa_model.config._attn_implementation == before
    assert all(getattr(m.config, "_attn_implementation", before) == before for m in gqa_model.modules()
               if hasattr(m, "config"))
    with pytest.raises(IndexError):  # fails inside the suffix pass (verbalizer id out of range)
        score_candidates(gqa_model, prefix, sufs, [0, 10 ** 7])
    assert gqa_model.config._attn_implementation == before != ATTN_PREFIX
    # ordinary scoring still works afterwards (no leaked side state)
    score_encoded(gqa_model, [prefix + s for s in sufs], VERB)


def test_errors(gqa_model, tiny_tokenizer):
    prefix, sufs = _case(len(tiny_tokenizer), 3)
    with pytest.raises(ValueError, match="suffix 1 is empty"):
        score_candidates(gqa_model, prefix, [sufs[0], []], VERB)
    with pytest.raises(ValueError, match="two verbalizer"):
        score_candidates(gqa_model, prefix, sufs, [5])
    with pytest.raises(ValueError, match="dtype"):
        score_candidates(gqa_model, prefix, sufs, VERB, dtype="int8")
    assert score_candidates(gqa_model, prefix, [], VERB).shape == (0, 2)
    # empty prefix: plain scoring
    np.testing.assert_allclose(score_candidates(gqa_model, [], sufs, VERB), score_encoded(gqa_model, sufs, VERB),
                               atol=TOL)


def test_split_prompts(tiny_tokenizer, gqa_model):
    pre = ("### Input: User Preference: \"Toy Story (1995)\", \"Heat (1995)\" User Unpreference: \"Casino (1995)\" "
           "Whether the user will like the target movie")
    sufs = [' "GoldenEye (1995)"? ### Response:', ' "Heat (1995)"? ### Response:']
    p, s = split_prompts(tiny_tokenizer, pre, sufs)
    for suf, ids in zip(sufs, s):
        assert p + ids == tiny_tokenizer(pre + suf).input_ids
    np.testing.assert_allclose(score_candidates(gqa_model, p, s, VERB),
                               score_encoded(gqa_model, [p + x for x in s], VERB), atol=TOL)
    # a split inside a word merges under BPE
    pre2, suf2 = "Whether the us", "er will like"
    assert tiny_tokenizer(pre2).input_ids != tiny_tokenizer(pre2 + suf2).input_ids[: len(tiny_tokenizer(pre2).input_ids)]
    with pytest.raises(ValueError, match="merges with the end of the prefix"):
        split_prompts(tiny_tokenizer, pre2, [suf2])
    with pytest.raises(ValueError, match="empty"):
        split_prompts(tiny_tokenizer, pre, [""])


@pytest.mark.integration
def test_real_smollm2_tallrec_prompts():
    """SmolLM2-135M-Instruct (9 query / 3 KV heads) on TALLRec's published test prompts (benchmark file)."""
    import json

    from tests.conftest import benchmark_dir

    bdir = benchmark_dir()
    if bdir is None:
        pytest.skip("TALLRec benchmark split not found")
    try:
        from llmrec.model import load_base_model

        model, tok = load_base_model(device="cpu")
    except Exception as e:  # no network / no cached asset
        pytest.skip(f"real model unavailable: {e}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine two OpenMP threads are often several times slower
    try:
        _check_real(model, tok, json.loads((bdir / "test.json").read_text())[:5])
    finally:
        torch.set_num_threads(threads)


def _check_real(model, tok, records):
    import re

    from llmrec.model import verbalizer_for
    from llmrec.prompts.render import render_alpaca
    from llmrec.prompts import load_template

    tpl = load_template("tallrec")
    texts = render_alpaca(tpl, records[:3], tok)
    ids = verbalizer_for(tpl, tok, texts[0]).token_ids
    enc = tok(texts).input_ids
    want = score_encoded(model, enc, ids)
    assert np.abs(score_shared_head(model, enc, ids) - want).max() <= TOL
    # one user's history as the prefix, other records' targets as candidates (split before ' "title"?')
    text = texts[0]
    cut = text.rindex(' "')
    tail = text[text.rindex('"') + 1:]
    cands = [re.search(r'target movie "(.*)"\?', r["input"]).group(1) for r in records]
    p, s = split_prompts(tok, text[:cut], [f' "{t}"' + tail for t in cands])
    got = score_candidates(model, p, s, ids)
    assert np.abs(got - score_encoded(model, [p + x for x in s], ids)).max() <= TOL
    assert model.config._attn_implementation != ATTN_PREFIX


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_cpu_attention_paths_match_reference(dtype, tol):
    """Both CPU attention paths against the kernels' PyTorch reference in float64 (GQA 6/2, ragged
    right padding; only real query rows are compared, as the scorer reads only those)."""
    from llmrec.kernels.prefix_attention_ref import prefix_shared_attention
    from llmrec.kernels.prefix_attention import attention
    from llmrec.kernels.prefix_attention_cpu import FLASH_CPU as _FLASH_CPU
    from llmrec.kernels.prefix_attention_cpu import flash_cpu_prefix_attention as _flash_cpu_prefix_attention
    from llmrec.kernels.prefix_attention_cpu import folded_prefix_attention as _cpu_prefix_attention

    g = torch.Generator().manual_seed(0)
    B, Hq, Hkv, Ls, Lp, D = 5, 6, 2, 7, 11, 16
    q, k, v = (torch.randn(B, h, Ls, D, generator=g) for h in (Hq, Hkv, Hkv))
    kp, vp = torch.randn(Hkv, Lp, D, generator=g), torch.randn(Hkv, Lp, D, generator=g)
    lens = torch.tensor([7, 1, 4, 7, 3])
    mask = torch.arange(Ls)[None] < lens[:, None]
    ref = prefix_shared_attention(*(t.double() for t in (q, k, v, kp, vp)), suffix_mask=mask, scale=0.3)
    ref = ref.transpose(1, 2)  # (B, Ls, Hq, D)
    cast = [t.to(dtype) for t in (q, k, v, kp, vp)]
    outs = [_cpu_prefix_attention(*cast, mask, 0.3)]
    if _FLASH_CPU is not None:
        outs.append(_flash_cpu_prefix_attention(*cast, 0.3))
    # the one dispatcher's "cpu" backend: a (B, Hq, Ls, D) view, or written into `out`
    outs.append(attention(*cast, suffix_mask=mask, scale=0.3, backend="cpu").transpose(1, 2))
    buf = torch.empty(B, Ls, Hq, D, dtype=dtype)
    attention(*cast, suffix_mask=mask, scale=0.3, backend="cpu", out=buf.transpose(1, 2))
    outs.append(buf)
    for out in outs:
        assert out.shape == (B, Ls, Hq, D) and out.dtype == dtype
        err = (out.double() - ref).abs()[mask]  # real query rows only
        assert err.max().item() <= tol


def test_pointwise_scorer_shared_head_equals_full_prompts(tiny_model, tiny_tokenizer):
    """PointwiseScorer's default (shared-head) path == plain full-prompt scoring, fp32 atol 1e-5."""
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.prompts import load_template

    tpl = load_template("tallrec")
    titles = ["Toy Story (1995)", "Heat (1995)", "Yes, Madam (1985)", "No Escape (1994)", "Casino (1995)"]
    texts = [tpl.render({"liked": titles[: i % 5], "disliked": titles[i % 3:][:2], "target": titles[i % 5]})
             for i in range(9)]
    fast = PointwiseScorer(tiny_model, tiny_tokenizer, tpl)
    P = fast.encode(texts)
    slow = PointwiseScorer(tiny_model, tiny_tokenizer, tpl, shared_head=False, verbalizer=fast.verbalizer)
    np.testing.assert_allclose(fast._score_ids(P.input_ids, False, "", chunk=4), slow.score(P), atol=1e-5)
