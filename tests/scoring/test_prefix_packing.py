"""Prefix-shared scoring: several users per forward, shape buckets, validation once per call, no host syncs in
the layer loop, GPU batch defaults (llmrec.scoring.prefix.score_users / score_candidates).

Reference: full-prompt scoring (:func:`llmrec.scoring.score_encoded` on each ``prefix + suffix``), an independent
path (no prefix sharing, transformers' own attention). Tolerance (stated): float32 ``max |dP| <= 1e-4``, as in
test_prefix.py; bucketed vs unbucketed ``<= 1e-5`` (the same maths on padded, masked shapes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_llama
from llmrec.scoring import prefix as P
from llmrec.scoring import score_encoded

TOL = 1e-4
VERB = [5, 7]


@pytest.fixture()
def gqa_model(tiny_tokenizer):
    return make_tiny_llama(len(tiny_tokenizer), seed=1, heads=6, kv_heads=2)


def _requests(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    # users with different prefix lengths and candidate counts (one user without candidates)
    spec = [(37, 5), (12, 9), (50, 0), (23, 1), (31, 7)]
    return [(ids(lp), [ids(int(k)) for k in torch.randint(1, 12, (n,), generator=g)]) for lp, n in spec]


def _full(model, req):
    prefix, sufs = req
    return score_encoded(model, [prefix + s for s in sufs], VERB) if sufs else np.zeros((0, 2))


@pytest.mark.parametrize("backend", ["auto", "kernels", "torch"])
@pytest.mark.parametrize("max_batch", [None, 6])
def test_several_users_match_full_prompts(gqa_model, tiny_tokenizer, backend, max_batch):
    reqs = _requests(len(tiny_tokenizer))
    got = P.score_users(gqa_model, reqs, VERB, backend=backend, max_batch=max_batch)
    assert len(got) == len(reqs)
    for req, g in zip(reqs, got):
        want = _full(gqa_model, req)
        assert g.shape == (len(req[1]), 2) and g.dtype == np.float64
        assert np.abs(g - want).max(initial=0.0) <= TOL


def test_small_token_budget_splits_prefix_and_suffix_passes(gqa_model, tiny_tokenizer):
    """batch_tokens=64: the prefixes run in several capture passes (one or two users each) and the suffixes in
    many small batches; the results are unchanged."""
    reqs = _requests(len(tiny_tokenizer), seed=13)
    got = P.score_users(gqa_model, reqs, VERB, batch_tokens=64)
    for req, g in zip(reqs, got):
        assert np.abs(g - _full(gqa_model, req)).max(initial=0.0) <= TOL


def test_packed_users_share_forwards(gqa_model, tiny_tokenizer, monkeypatch):
    """All users' suffixes go through one forward when they fit the budget (rows of several users, one
    segment each), and every user's result equals scoring that user alone."""
    g = torch.Generator().manual_seed(3)
    V = len(tiny_tokenizer)
    reqs = [(torch.randint(3, V, (lp,), generator=g).tolist(), torch.randint(3, V, (n, 6), generator=g).tolist())
            for lp, n in ((37, 5), (12, 9), (50, 0), (23, 1), (31, 7))]  # equal suffix lengths: one batch
    seen = []
    real = P._prefix_attention

    def spy(module, *a, **k):
        st = P._STATE.get()
        if module.layer_idx == 0:
            seen.append(list(st.segments))
        return real(module, *a, **k)

    from transformers import AttentionInterface

    AttentionInterface.register(P.ATTN_PREFIX, spy)
    try:
        got = P.score_users(gqa_model, reqs, VERB)
    finally:
        AttentionInterface.register(P.ATTN_PREFIX, real)
    assert len(seen) == 1, "one suffix forward for all users"
    assert [u for u, _, _ in seen[0]] == [0, 1, 2, 3], "four users with candidates, one segment each"
    alone = [P.score_candidates(gqa_model, p, s, VERB) if s else np.zeros((0, 2)) for p, s in reqs]
    for g, a in zip(got, alone):
        assert np.abs(g - a).max(initial=0.0) <= 1e-5


@pytest.mark.parametrize("backend", ["auto", "kernels"])
def test_buckets_equal_unbucketed(gqa_model, tiny_tokenizer, backend):
    reqs = _requests(len(tiny_tokenizer), seed=5)
    a = P.score_users(gqa_model, reqs, VERB, bucket=False, backend=backend)
    b = P.score_users(gqa_model, reqs, VERB, bucket=True, backend=backend, max_batch=5)
    for x, y, req in zip(a, b, reqs):
        assert np.abs(x - y).max(initial=0.0) <= 1e-5
        assert np.abs(y - _full(gqa_model, req)).max(initial=0.0) <= TOL


def _suffix_lengths(model, fn):
    """Query lengths (L) of the suffix forwards ``fn()`` runs (layer 0 of each prefix-attention call)."""
    from transformers import AttentionInterface

    seen = []
    real = P._prefix_attention

    def spy(module, query, *a, **k):
        if module.layer_idx == 0:
            seen.append(int(query.shape[2]))
        return real(module, query, *a, **k)

    AttentionInterface.register(P.ATTN_PREFIX, spy)
    try:
        out = fn()
    finally:
        AttentionInterface.register(P.ATTN_PREFIX, real)
    return out, seen


@pytest.mark.parametrize("multiple", [4, 16])
def test_pad_to_multiple_equals_unpadded_and_bounds_shapes(gqa_model, tiny_tokenizer, multiple):
    """``pad_to_multiple_of``: every suffix forward's length is a multiple (masked padding), and the
    probabilities equal the unpadded call (<= 1e-5) and full-prompt scoring (<= TOL)."""
    reqs = _requests(len(tiny_tokenizer), seed=7)  # suffix lengths 1..11
    plain, l_plain = _suffix_lengths(gqa_model, lambda: P.score_users(gqa_model, reqs, VERB, max_batch=4))
    padded, l_pad = _suffix_lengths(gqa_model, lambda: P.score_users(gqa_model, reqs, VERB, max_batch=4,
                                                                      pad_to_multiple_of=multiple))
    assert any(n % multiple for n in l_plain), "the test needs ragged lengths to pad"
    assert l_pad and all(n % multiple == 0 for n in l_pad)
    assert [-(-n // multiple) * multiple for n in l_plain] == l_pad, "same batches, lengths rounded up"
    for x, y, req in zip(plain, padded, reqs):
        assert np.abs(x - y).max(initial=0.0) <= 1e-5
        assert np.abs(y - _full(gqa_model, req)).max(initial=0.0) <= TOL
    head = list(range(3, 15))  # a shared template head, then each user's own tokens
    prompts = [head + p[:5] + s for p, sufs in reqs for s in sufs]
    want = P.score_shared_head(gqa_model, prompts, VERB, min_prefix=1)
    got, l_head = _suffix_lengths(gqa_model, lambda: P.score_shared_head(gqa_model, prompts, VERB, min_prefix=1,
                                                                         pad_to_multiple_of=multiple))
    assert l_head and all(n % multiple == 0 for n in l_head)
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "16", None])
def test_pad_to_multiple_refuses_non_positive_integers(gqa_model, bad):
    req = [([3, 4, 5], [[6], [7, 8]])]
    with pytest.raises(ValueError, match=f"pad_to_multiple_of {bad!r}"):
        P.score_users(gqa_model, req, VERB, pad_to_multiple_of=bad)
    with pytest.raises(ValueError, match=f"pad_to_multiple_of {bad!r}"):
        P.score_candidates(gqa_model, *req[0], VERB, pad_to_multiple_of=bad)
    with pytest.raises(ValueError, match=f"pad_to_multiple_of {bad!r}"):
        P.score_shared_head(gqa_model, [[3, 4, 6], [3, 4, 7]], VERB, pad_to_multiple_of=bad)


def test_validation_once_per_call_and_no_host_sync_in_layers(gqa_model, tiny_tokenizer, monkeypatch):
    """check_inputs runs only in the first suffix-pass layer of a call (once per user segment of that
    batch); the layers never call .item()/.cpu()/.tolist()/bool() on a tensor, and the call copies its
    probabilities to the host once."""
    import llmrec.kernels.prefix_attention as pa

    prefix, sufs = _requests(len(tiny_tokenizer), seed=7)[0]
    sufs = sufs * 5  # 25 suffixes, several batches at max_batch=8
    calls = {"check": 0, "sync": 0, "cpu": 0}
    real_check = pa.check_inputs

    def counting_check(*a, **k):
        calls["check"] += 1
        return real_check(*a, **k)

    monkeypatch.setattr(pa, "check_inputs", counting_check)
    in_layer = {"on": False}
    real = P._prefix_attention

    def spy(*a, **k):
        in_layer["on"] = True
        try:
            return real(*a, **k)
        finally:
            in_layer["on"] = False

    for name in ("item", "tolist", "__bool__", "numpy"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            if in_layer["on"]:
                calls["sync"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    orig_cpu = torch.Tensor.cpu

    def cpu(self, *a, **k):
        calls["cpu"] += 1
        if in_layer["on"]:
            calls["sync"] += 1
        return orig_cpu(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    from transformers import AttentionInterface

    AttentionInterface.register(P.ATTN_PREFIX, spy)
    try:
        got = P.score_candidates(gqa_model, prefix, sufs, VERB, max_batch=8, backend="kernels")
    finally:
        AttentionInterface.register(P.ATTN_PREFIX, real)
    assert calls["check"] == 1, calls  # one user segment in the first layer of the first batch; 2 layers x 4 batches
    assert calls["sync"] == 0, calls
    assert calls["cpu"] == 1, calls
    want = score_encoded(gqa_model, [prefix + s for s in sufs], VERB)
    assert np.abs(got - want).max() <= TOL


def test_batch_defaults_follow_the_device():
    assert P.default_batch("cpu") == P.CPU_BATCH == (64, 4096)
    assert P.default_batch("cuda") == P.GPU_BATCH and P.GPU_BATCH[1] >= 32768


def test_score_users_errors(gqa_model):
    with pytest.raises(ValueError, match="prefix of request 1 is empty"):
        P.score_users(gqa_model, [([3, 4], [[5]]), ([], [[6]])], VERB)
    with pytest.raises(ValueError, match="suffix 0 of request 0 is empty"):
        P.score_users(gqa_model, [([3, 4], [[]]), ([5], [[6]])], VERB)
    with pytest.raises(ValueError, match="backend"):
        P.score_users(gqa_model, [([3, 4], [[5]])], VERB, backend="cuda")
    assert [r.shape for r in P.score_users(gqa_model, [([3, 4], []), ([5], [])], VERB)] == [(0, 2), (0, 2)]


def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (bf16 weights + the Triton kernel through the custom op)")
    from llmrec.kernels import prefix_attention as pa

    if not pa.HAS_TRITON or pa.triton_interpreter_active():
        pytest.skip("needs triton compiled for the GPU")


@pytest.mark.gpu
def test_cuda_bf16_scoring_matches_full_prompts(tiny_tokenizer):
    """On CUDA: bf16 weights (precision.weight_dtype 'auto'), the custom op (Triton), bucketing and packing;
    P(Yes) within 0.02 of fp32 full-prompt scoring of the same model (bf16 tolerance: weights and activations
    rounded to 8 mantissa bits over 2 layers)."""
    _need_cuda()
    from llmrec.model import cast_for_scoring

    ref_model = make_tiny_llama(len(tiny_tokenizer), seed=1, heads=6, kv_heads=2).cuda()
    reqs = _requests(len(tiny_tokenizer), seed=11)
    want = [score_encoded(ref_model, [p + s for s in sufs], VERB, dtype="float32") if sufs else np.zeros((0, 2))
            for p, sufs in reqs]
    m = cast_for_scoring(make_tiny_llama(len(tiny_tokenizer), seed=1, heads=6, kv_heads=2).cuda(), "auto")
    assert next(m.parameters()).dtype == torch.bfloat16
    got = P.score_users(m, reqs, VERB)
    got_b = P.score_users(m, reqs, VERB, bucket=True, max_batch=4)
    for g, gb, w in zip(got, got_b, want):
        assert np.abs(g - w).max(initial=0.0) <= 0.02
        assert np.abs(gb - g).max(initial=0.0) <= 0.01  # same maths on padded shapes (bf16 batch-shape noise)
