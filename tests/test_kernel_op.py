"""The custom op ``torch.ops.llmrec.prefix_shared_attention`` and shape bucketing (llmrec.kernels.prefix_attention).

References: the float64 naive attention of tests/test_kernels.py (prefix expanded per candidate, one masked
softmax), independent of the LSE-merge code. Tolerances (stated): float32 ``1e-5`` against it; the compiled
function against eager ``1e-5`` (float32); bucketed (padded) against unpadded ``1e-6`` (float32: the real
rows see the same keys; only the zero padding of the key set differs, which is masked to exactly 0 weight).
CUDA cases (marked ``gpu``) are skipped without a GPU: they check the op's Triton dispatch in bf16 against the
naive reference with the bf16 tolerance of tests/test_kernels.py, and the op inside a CUDA graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_kernels import CASES, LOW_PRECISION, _err, _excess, make_inputs, naive_attention

from llmrec.kernels import prefix_attention as pa

ATOL = 1e-5
OP = torch.ops.llmrec.prefix_shared_attention.default


@pytest.mark.parametrize("name", ["b13_gqa9x3_lp37_ls5_d64_pad", "b2_mha4x4_lp32_ls16_d32",
                                  "b4_gqa9x3_lp29_ls6_d64_strided", "b4_gqa6x2_lp0_ls7_d32_pad"])
def test_op_matches_naive_and_layout(name):
    q, ks, vs, kp, vp, mask = make_inputs(CASES[name])
    want, _ = naive_attention(q, ks, vs, kp, vp, mask)
    got = pa.prefix_shared_attention_op(q, ks, vs, kp, vp, mask)
    B, Hq, Ls, D = q.shape
    assert got.shape == (B, Ls, Hq, D) and got.is_contiguous() and got.dtype == q.dtype
    assert _err(got.transpose(1, 2), want) <= ATOL
    fast = pa.prefix_shared_attention_op(q, ks, vs, kp.squeeze(0) if kp.dim() == 4 else kp,
                                         vp.squeeze(0) if vp.dim() == 4 else vp, mask, validate=False)
    assert torch.equal(fast, got)


def test_op_validates_unless_told_not_to():
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b13_gqa9x3_lp37_ls5_d64_pad"])
    with pytest.raises(ValueError, match="v_prefix dtype"):
        pa.prefix_shared_attention_op(q, ks, vs, kp, vp.double(), mask)
    with pytest.raises(ValueError, match="suffix_mask must have shape"):
        pa.prefix_shared_attention_op(q, ks, vs, kp, vp, mask[:3])


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(with_mask, dtype):
    """torch.library.opcheck: schema, fake (meta) implementation against the real one, autograd
    registration and AOT dispatch, on CPU tensors."""
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b3_gqa6x2_lp50_ls19_d32_pad"], dtype)
    torch.library.opcheck(OP, (q, ks, vs, kp, vp, mask if with_mask else None, 0.17))


def test_fake_tensor_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(5, 9, 7, 64)
        k = torch.empty(5, 3, 7, 64)
        p = torch.empty(3, 300, 64)
        out = OP(q, k, k, p, p, None, 0.125)
    assert tuple(out.shape) == (5, 7, 9, 64) and out.dtype == torch.float32


def test_compile_fullgraph_equals_eager():
    """A small scoring-like function (projection, the op, output projection) compiled with
    ``fullgraph=True`` (no graph break at the op) equals eager within 1e-5 (float32, CPU)."""
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b5_gqa9x3_lp23_ls7_d32_pad_blocks32"])
    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64).float()

    def f(q, ks, vs, kp, vp, mask):
        o = pa.prefix_shared_attention_op(torch.tanh(q), ks, vs, kp, vp, mask, 0.2, validate=False)
        return (o @ w).sum(-1)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    eager = f(q, ks, vs, kp, vp, mask)
    got = compiled(q, ks, vs, kp, vp, mask)
    assert got.shape == eager.shape
    assert _err(got, eager) <= ATOL
    # the op really ran inside (not constant-folded): other inputs, other output
    q2 = q.flip(0)
    assert _err(compiled(q2, ks, vs, kp, vp, mask), f(q2, ks, vs, kp, vp, mask)) <= ATOL
    assert _err(compiled(q2, ks, vs, kp, vp, mask), eager) > 1e-3


def test_bucket_size():
    assert [pa.bucket_size(n, pa.SUFFIX_BUCKETS) for n in (1, 4, 5, 10, 11, 12, 13, 33, 512)] == \
        [4, 4, 8, 10, 12, 12, 16, 40, 512]
    assert pa.bucket_size(513, pa.SUFFIX_BUCKETS) == 1024 and pa.bucket_size(1100, pa.SUFFIX_BUCKETS) == 1536
    assert [pa.bucket_size(n) for n in (1, 2, 3, 1000, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
    with pytest.raises(ValueError, match="n must be >= 1"):
        pa.bucket_size(0)
    # every suffix length up to 512 maps to one of 14 shapes
    assert len({pa.bucket_size(n, pa.SUFFIX_BUCKETS) for n in range(1, 513)}) == len(pa.SUFFIX_BUCKETS)


@pytest.mark.parametrize("name", ["b13_gqa9x3_lp37_ls5_d64_pad", "b3_gqa6x2_lp50_ls19_d32_pad",
                                  "b5_gqa9x3_lp23_ls7_d32_pad_blocks32"])
def test_padded_to_buckets_equals_unpadded(name):
    q, ks, vs, kp, vp, mask = make_inputs(CASES[name])
    want = pa.prefix_shared_attention_op(q, ks, vs, kp, vp, mask)
    qb, kb, vb, mb, (B, Ls) = pa.pad_to_buckets(q, ks, vs, mask)
    assert qb.shape[0] == pa.bucket_size(B) and qb.shape[2] == pa.bucket_size(Ls, pa.SUFFIX_BUCKETS)
    assert (qb.shape[0], qb.shape[2]) != (B, Ls), "the case should need padding"
    got = pa.prefix_shared_attention_op(qb, kb, vb, kp, vp, mb)[:B, :Ls]
    assert _err(got, want) <= 1e-6
    naive, _ = naive_attention(q, ks, vs, kp, vp, mask)
    assert _err(got.transpose(1, 2), naive) <= ATOL


INTERP_SCRIPT = r"""
import json, numpy as np, torch
from llmrec.kernels import prefix_attention as pa
from tests.test_kernels import CASES, _err, make_inputs, naive_attention
from tests.conftest import make_tiny_llama, make_tiny_tokenizer
from llmrec.scoring import prefix as P
from llmrec.scoring import score_encoded
res = {"interpreter": pa.triton_interpreter_active(), "op": {}}
for name in ("b13_gqa9x3_lp37_ls5_d64_pad", "b4_gqa9x3_lp29_ls6_d64_strided", "b2_mha4x4_lp32_ls16_d32"):
    q, ks, vs, kp, vp, mask = make_inputs(CASES[name])
    want, _ = naive_attention(q, ks, vs, kp, vp, mask)
    got = pa.prefix_shared_attention_op(q, ks, vs, kp, vp, None if mask is None else mask.bool())
    res["op"][name] = _err(got.transpose(1, 2), want)
calls = {"n": 0}
real = pa._launch
def counting(*a, **k):
    calls["n"] += 1
    return real(*a, **k)
pa._launch = counting
tok = make_tiny_tokenizer()
m = make_tiny_llama(len(tok), seed=1, heads=6, kv_heads=2)
g = torch.Generator().manual_seed(0)
ids = lambda n: torch.randint(3, len(tok), (n,), generator=g).tolist()
reqs = [(ids(37), [ids(int(k)) for k in (1, 11, 4, 7, 9)]), (ids(20), [ids(3), ids(8)])]
got = P.score_users(m, reqs, [5, 7], backend="kernels", bucket=True)
res["scoring_err"] = max(float(np.abs(gu - score_encoded(m, [p + s for s in sufs], [5, 7])).max())
                         for (p, sufs), gu in zip(reqs, got))
res["triton_launches"] = calls["n"]
print("RESULT " + json.dumps(res))
"""


def test_op_and_scoring_through_the_triton_interpreter():
    """The op's Triton branch (the one CUDA takes: transformers-layout output, bool mask viewed as uint8) and
    prefix scoring through it (backend="kernels", two users in one forward, buckets), run by Triton's CPU
    interpreter in a subprocess (TRITON_INTERPRET=1 must be set before triton is imported): the op against
    the float64 naive attention (1e-5), P(Yes) against full-prompt scoring (1e-4, float32)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", INTERP_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(root))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert res["interpreter"]
    assert all(e <= ATOL for e in res["op"].values()), res["op"]
    assert res["scoring_err"] <= 1e-4, res
    assert res["triton_launches"] == 2 * 2, res  # 2 layers x 2 users, one forward (all rows fit one batch)


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (the op's Triton dispatch and CUDA graphs)")
    if not pa.HAS_TRITON or pa.triton_interpreter_active():
        pytest.skip("needs triton compiled for the GPU (TRITON_INTERPRET unset)")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_op_cuda_matches_naive(dtype):
    _cuda()
    case = (37, 9, 3, 300, 11, 64, True, {})  # SmolLM2 geometry, odd lengths
    q, ks, vs, kp, vp, mask = make_inputs(case, dtype, device="cuda")
    want, _ = naive_attention(q, ks, vs, kp, vp, mask)
    got = pa.prefix_shared_attention_op(q, ks, vs, kp, vp, mask)
    torch.cuda.synchronize()
    atol, rtol = LOW_PRECISION.get(dtype, (ATOL, 0.0))
    assert _excess(got.transpose(1, 2), want, rtol) <= atol
    qb, kb, vb, mb, (B, Ls) = pa.pad_to_buckets(q, ks, vs, mask)
    gotb = pa.prefix_shared_attention_op(qb, kb, vb, kp, vp, mb)[:B, :Ls]
    assert _excess(gotb.transpose(1, 2), want, rtol) <= atol


@pytest.mark.gpu
def test_op_cuda_graph_and_compile():
    """The op captured in a CUDA graph (replayed on new inputs) and under torch.compile equals eager."""
    _cuda()
    case = (64, 9, 3, 300, 12, 64, True, {})
    q, ks, vs, kp, vp, mask = make_inputs(case, torch.bfloat16, device="cuda")
    eager = pa.prefix_shared_attention_op(q, ks, vs, kp, vp, mask)
    sq = q.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            pa.prefix_shared_attention_op(sq, ks, vs, kp, vp, mask, validate=False)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        gout = pa.prefix_shared_attention_op(sq, ks, vs, kp, vp, mask, 0.125, validate=False)
    q2 = torch.randn_like(q)
    sq.copy_(q2)
    g.replay()
    torch.cuda.synchronize()
    assert _err(gout, pa.prefix_shared_attention_op(q2, ks, vs, kp, vp, mask)) <= 1e-6
    f = torch.compile(lambda *a: pa.prefix_shared_attention_op(*a, 0.125, validate=False), fullgraph=True)
    assert _err(f(q, ks, vs, kp, vp, mask), eager) <= 1e-6
