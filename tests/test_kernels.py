"""Tests for llmrec.kernels prefix-shared attention (PyTorch reference and Triton kernel).

Every check compares against a float64 attention computed the naive way, independent of the LSE-merge
code: the prefix K/V are expanded per candidate, concatenated with the suffix K/V, repeated to the query
heads, and one masked softmax is taken over all ``Lp + Ls`` keys.

The Triton kernel is checked on CPU through Triton's interpreter.  ``TRITON_INTERPRET=1`` only takes
effect if it is set before the kernel module is first imported (``triton.jit`` decides at decoration
time), which this file cannot guarantee when the whole suite runs in one pytest process, and setting it
process-wide would turn later GPU tests into interpreter runs.  So the interpreter cases run once in a
subprocess (this file executed as a script with ``--interp-worker``), which reports per-case errors as
JSON; the parametrized tests below assert on them.

Tolerances (stated): float32 paths ``atol = 1e-5`` (outputs and natural-log LSEs are O(1)..O(10));
float64 reference ``1e-12``; float16 ``|err| <= 1e-3 + 2e-3 |ref|``, bfloat16 ``|err| <= 8e-3 + 1.6e-2 |ref|``
(one rounding of the output plus the 16-bit P operand of P@V, against float64 of the same rounded inputs).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ATOL_FP32 = 1e-5
ATOL_FP64 = 1e-12


def _import_kernels():
    """(prefix_attention_ref, prefix_attention) modules of the installed package (`pip install -e .`)."""
    return (importlib.import_module("llmrec.kernels.prefix_attention_ref"),
            importlib.import_module("llmrec.kernels.prefix_attention"))


# ----------------------------------------------------------------------------------------------------
# cases and the naive float64 reference (shared by the in-process tests and the interpreter worker)
# ----------------------------------------------------------------------------------------------------
# name: (B, Hq, Hkv, Lp, Ls, D, padding, extra)
CASES = {
    "b1_gqa6x2_lp37_ls5_d64": (1, 6, 2, 37, 5, 64, False, {}),
    "b13_gqa9x3_lp37_ls5_d64_pad": (13, 9, 3, 37, 5, 64, True, {}),
    "b3_gqa6x2_lp50_ls19_d32_pad": (3, 6, 2, 50, 19, 32, True, {}),
    "b2_mha4x4_lp32_ls16_d32": (2, 4, 4, 32, 16, 32, False, {}),
    "b5_gqa9x3_lp23_ls7_d32_pad_blocks32": (5, 9, 3, 23, 7, 32, True, {"block_m": 32, "block_n": 32}),
    "b4_gqa6x2_lp0_ls7_d32_pad": (4, 6, 2, 0, 7, 32, True, {}),
    "b3_gqa6x3_lp21_ls6_d24_allpad": (3, 6, 3, 21, 6, 24, True, {"allpad": 1}),
    "b4_gqa9x3_lp29_ls6_d64_strided": (4, 9, 3, 29, 6, 64, True, {"strided": True}),
}


def make_inputs(case, dtype=torch.float32, device="cpu", seed=0):
    B, Hq, Hkv, Lp, Ls, D, pad, extra = case
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if extra.get("strided"):
        # transformers layout: projections are (B, L, H, D) and transposed to (B, H, L, D) (non-contiguous);
        # the prefix comes from a (1, Hkv, Lcache, D) cache, sliced
        q = rnd(B, Ls, Hq, D).transpose(1, 2)
        ks = rnd(B, Ls, Hkv, D).transpose(1, 2)
        vs = rnd(B, Ls, Hkv, D).transpose(1, 2)
        kp = rnd(1, Hkv, Lp + 3, D)[:, :, 1 : Lp + 1]
        vp = rnd(1, Hkv, Lp + 3, D)[:, :, 1 : Lp + 1]
    else:
        q, ks, vs = rnd(B, Hq, Ls, D), rnd(B, Hkv, Ls, D), rnd(B, Hkv, Ls, D)
        kp, vp = rnd(Hkv, Lp, D), rnd(Hkv, Lp, D)
    mask = None
    if pad:
        lengths = torch.randint(1, Ls + 1, (B,), generator=g)
        lengths[0] = Ls  # at least one full suffix
        if B > 1:
            lengths[-1] = 1
        mask = torch.arange(Ls)[None, :] < lengths[:, None]
        if "allpad" in extra:
            mask[extra["allpad"]] = False
        if extra.get("strided"):
            mask = mask.to(torch.int64)  # integer masks are accepted too
    conv = lambda t: t.to(dtype=dtype, device=device)  # noqa: E731 - keeps strides
    out = [conv(t) for t in (q, ks, vs, kp, vp)]
    return (*out, None if mask is None else mask.to(device))


def naive_attention(q, ks, vs, kp, vp, mask=None, scale=None, keys="all"):
    """float64 masked softmax over [expanded prefix ; suffix] keys.  keys: "all" | "prefix" | "suffix".

    Returns (out (B, Hq, Ls, D), lse (B, Hq, Ls)); rows without any admissible key give out 0, lse -inf.
    """
    q, ks, vs, kp, vp = (t.detach().to("cpu", torch.float64) for t in (q, ks, vs, kp, vp))
    if kp.dim() == 4:
        kp, vp = kp[0], vp[0]
    B, Hq, Ls, D = q.shape
    Hkv, Lp = kp.shape[0], kp.shape[1]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    K = torch.cat([kp.unsqueeze(0).expand(B, Hkv, Lp, D), ks], dim=2).repeat_interleave(G, dim=1)
    V = torch.cat([vp.unsqueeze(0).expand(B, Hkv, Lp, D), vs], dim=2).repeat_interleave(G, dim=1)
    scores = torch.matmul(q, K.transpose(-1, -2)) * scale  # (B, Hq, Ls, Lp+Ls)
    causal = torch.ones(Ls, Ls, dtype=torch.bool).tril()
    allowed = torch.cat([torch.ones(Ls, Lp, dtype=torch.bool), causal], dim=1).expand(B, 1, Ls, Lp + Ls)
    real = torch.ones(B, Ls, dtype=torch.bool) if mask is None else mask.to("cpu").bool()
    key_real = torch.cat([torch.ones(B, Lp, dtype=torch.bool), real], dim=1)
    allowed = allowed & key_real[:, None, None, :]
    if keys == "prefix":
        allowed = allowed & (torch.arange(Lp + Ls) < Lp)
    elif keys == "suffix":
        allowed = allowed & (torch.arange(Lp + Ls) >= Lp)
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    any_key = allowed.any(-1)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = torch.matmul(probs, V) * any_key[..., None]
    return out, lse


def _nan_out(q, transformers_layout=False):
    """NaN-poisoned output; transformers_layout: a (B, Ls, Hq, D) buffer seen as (B, Hq, Ls, D), so the
    kernel writes the layout transformers' attention functions return without a transpose copy."""
    B, Hq, Ls, D = q.shape
    if transformers_layout:
        return torch.full((B, Ls, Hq, D), float("nan"), dtype=q.dtype, device=q.device).transpose(1, 2)
    return torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)


def _excess(a, b, rtol):
    """max(|a - b| - rtol * |b|): compare with atol for an allclose-style check."""
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    return float(((a - b).abs() - rtol * b.abs()).nan_to_num(float("inf")).max())


def _err(a, b):
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    d = (a - b).abs().masked_fill(both_inf, 0.0)
    return float(d.nan_to_num(float("inf")).max()) if d.numel() else 0.0


# ----------------------------------------------------------------------------------------------------
# interpreter worker (runs in a subprocess with TRITON_INTERPRET=1)
# ----------------------------------------------------------------------------------------------------
def _interp_worker() -> dict:
    ref, tri = _import_kernels()
    res = {"interpreter_active": tri.triton_interpreter_active(), "cases": {}}
    if not res["interpreter_active"]:
        return res
    for name, case in CASES.items():
        t0 = time.perf_counter()
        q, ks, vs, kp, vp, mask = make_inputs(case, torch.float32)
        extra = case[7]
        blocks = {k: extra[k] for k in ("block_m", "block_n") if k in extra}
        want, want_lse = naive_attention(q, ks, vs, kp, vp, mask)
        out = _nan_out(q, transformers_layout=extra.get("strided", False))
        got = tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out, **blocks)
        r = {
            "same_out": got is out,
            "nan": int(torch.isnan(out).sum()),
            "err": _err(out, want),
        }
        po, pl = tri.prefix_attention_partial(q, kp, vp, **blocks)
        wpo, wpl = naive_attention(q, ks, vs, kp, vp, mask, keys="prefix")
        so, sl = tri.suffix_attention_partial(q, ks, vs, mask, **blocks)
        wso, wsl = naive_attention(q, ks, vs, kp, vp, mask, keys="suffix")
        r["prefix_err"] = max(_err(po, wpo), _err(pl, wpl))
        r["suffix_err"] = max(_err(so, wso), _err(sl, wsl))
        r["partial_nan"] = int(sum(torch.isnan(t).sum() for t in (po, pl, so, sl)))
        merged, mlse = ref.merge_attention_states(po, pl, so, sl)
        r["merge_err"] = max(_err(merged, want), _err(mlse, want_lse))
        r["dispatch_err"] = _err(tri.attention(q, ks, vs, kp, vp, mask, backend="triton"), want)
        r["seconds"] = round(time.perf_counter() - t0, 3)
        res["cases"][name] = r
    return res


@pytest.fixture(scope="module")
def interp_results():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--interp-worker"],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT),
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreter worker failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    assert res["interpreter_active"], "TRITON_INTERPRET=1 did not activate the interpreter in the worker"
    return res["cases"]


@pytest.mark.parametrize("name", list(CASES))
def test_triton_interpreter_matches_naive_fp64(interp_results, name):
    r = interp_results[name]
    assert r["same_out"], "wrapper did not return the out= tensor"
    assert r["nan"] == 0, f"{r['nan']} output elements left unwritten (NaN poison survived)"
    assert r["err"] <= ATOL_FP32, r
    assert r["dispatch_err"] <= ATOL_FP32, r


@pytest.mark.parametrize("name", list(CASES))
def test_triton_interpreter_partials_and_merge(interp_results, name):
    r = interp_results[name]
    assert r["partial_nan"] == 0, r
    assert r["prefix_err"] <= ATOL_FP32, r
    assert r["suffix_err"] <= ATOL_FP32, r
    assert r["merge_err"] <= ATOL_FP32, r


# ----------------------------------------------------------------------------------------------------
# torch reference (in-process, no triton needed)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype,atol", [(torch.float32, ATOL_FP32), (torch.float64, ATOL_FP64)])
def test_reference_matches_naive(name, dtype, atol):
    ref, _ = _import_kernels()
    q, ks, vs, kp, vp, mask = make_inputs(CASES[name], dtype)
    want, want_lse = naive_attention(q, ks, vs, kp, vp, mask)
    out = _nan_out(q, transformers_layout=CASES[name][7].get("strided", False))
    got = ref.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out)
    assert got is out and got.dtype == dtype
    assert _err(got, want) <= atol
    po, pl = ref.prefix_attention_partial(q, kp, vp)
    so, sl = ref.suffix_attention_partial(q, ks, vs, mask)
    for (o, l), keys in (((po, pl), "prefix"), ((so, sl), "suffix")):
        wo, wl = naive_attention(q, ks, vs, kp, vp, mask, keys=keys)
        assert _err(o, wo) <= atol and _err(l, wl) <= atol, keys
    mo, ml = ref.merge_attention_states(po, pl, so, sl)
    assert _err(mo, want) <= atol and _err(ml, want_lse) <= atol


LOW_PRECISION = {torch.float16: (1e-3, 2e-3), torch.bfloat16: (8e-3, 1.6e-2)}  # (atol, rtol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_low_precision(dtype):
    ref, _ = _import_kernels()
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b13_gqa9x3_lp37_ls5_d64_pad"], dtype)
    want, _ = naive_attention(q, ks, vs, kp, vp, mask)  # float64 of the same rounded inputs
    got = ref.prefix_shared_attention(q, ks, vs, kp, vp, mask)
    assert got.dtype == dtype
    atol, rtol = LOW_PRECISION[dtype]
    assert _excess(got, want, rtol) <= atol


def test_merge_of_arbitrary_key_split():
    """Split the keys of a plain softmax into two random disjoint sets; merging their states is exact."""
    ref, _ = _import_kernels()
    g = torch.Generator().manual_seed(1)
    R, N, D = 11, 40, 16
    s = torch.randn(R, N, generator=g, dtype=torch.float64) * 3
    v = torch.randn(N, D, generator=g, dtype=torch.float64)
    in1 = torch.rand(R, N, generator=g) < 0.3

    def partial(sel):
        sc = s.masked_fill(~sel, float("-inf"))
        return torch.softmax(sc, -1) @ v, torch.logsumexp(sc, -1)

    o1, l1 = partial(in1)
    o2, l2 = partial(~in1)
    want = torch.softmax(s, -1) @ v
    o, lse = ref.merge_attention_states(o1, l1, o2, l2)
    assert _err(o, want) <= ATOL_FP64 and _err(lse, torch.logsumexp(s, -1)) <= ATOL_FP64
    ob, _ = ref.merge_attention_states(o2, l2, o1, l1)  # symmetric
    assert _err(ob, want) <= ATOL_FP64
    # float32 states merge in float32 within ATOL_FP32
    o32, _ = ref.merge_attention_states(o1.float(), l1.float(), o2.float(), l2.float())
    assert o32.dtype == torch.float32 and _err(o32, want) <= ATOL_FP32


def test_merge_with_empty_sides():
    ref, _ = _import_kernels()
    o1 = torch.randn(3, 4, 8)
    l1 = torch.randn(3, 4)
    empty_o = torch.zeros_like(o1)
    empty_l = torch.full_like(l1, float("-inf"))
    o, lse = ref.merge_attention_states(o1, l1, empty_o, empty_l)
    assert torch.equal(o, o1) and torch.equal(lse, l1)
    o, lse = ref.merge_attention_states(empty_o, empty_l, empty_o, empty_l)
    assert torch.equal(o, empty_o) and torch.isneginf(lse).all()
    # large LSE gaps do not overflow
    o, lse = ref.merge_attention_states(o1, l1 + 1000.0, -o1, l1)
    assert torch.isfinite(o).all() and _err(o, o1) <= 1e-6


def test_reference_does_not_copy_prefix_per_candidate():
    """An expanded (stride-0) prefix view is computed without materialising B copies: compare to the
    shared (Hkv, Lp, D) call, and check the prefix partial is independent of B."""
    ref, _ = _import_kernels()
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b13_gqa9x3_lp37_ls5_d64_pad"])
    a = ref.prefix_shared_attention(q, ks, vs, kp, vp, mask)
    b = ref.prefix_shared_attention(q, ks, vs, kp.unsqueeze(0), vp.unsqueeze(0), mask)  # (1, Hkv, Lp, D)
    assert torch.equal(a, b)
    o_all, _ = ref.prefix_attention_partial(q, kp, vp)
    o_one, _ = ref.prefix_attention_partial(q[3:4], kp, vp)
    assert _err(o_all[3:4], o_one) <= 1e-6


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(q=a["q"][0]), "q must have 4 dims"),
        (lambda a: a.update(k_suffix=a["k_suffix"][:, :, :3], v_suffix=a["v_suffix"][:, :, :3]), "k_suffix must have shape"),
        (lambda a: a.update(v_suffix=a["v_suffix"][:1]), "v_suffix shape"),
        (lambda a: a.update(q=a["q"][:, :5]), "multiple of"),
        (lambda a: a.update(k_prefix=a["k_prefix"][:, :, :8], v_prefix=a["v_prefix"][:, :, :8]), "k_prefix must have shape"),
        (lambda a: a.update(k_prefix=a["k_prefix"][None, None]), "k_prefix must have shape"),
        (lambda a: a.update(v_prefix=a["v_prefix"].double()), "v_prefix dtype"),
        (lambda a: a.update(q=a["q"].int(), k_suffix=a["k_suffix"].int(), v_suffix=a["v_suffix"].int(),
                            k_prefix=a["k_prefix"].int(), v_prefix=a["v_prefix"].int()), "q dtype"),
        (lambda a: a.update(suffix_mask=torch.ones(2, 5, dtype=torch.bool)), "suffix_mask must have shape"),
        (lambda a: a.update(suffix_mask=torch.ones(3, 5)), "suffix_mask must be bool or integer"),
        (lambda a: a.update(scale=-1.0), "scale must be"),
        (lambda a: a.update(out=torch.empty(3, 6, 5, 7)), "out must have"),
    ],
)
def test_validation_errors(mutate, match):
    ref, tri = _import_kernels()
    q, ks, vs, kp, vp, _ = make_inputs((3, 6, 2, 9, 5, 32, False, {}))
    args = dict(q=q, k_suffix=ks, v_suffix=vs, k_prefix=kp, v_prefix=vp, suffix_mask=None, scale=None)
    mutate(args)
    with pytest.raises(ValueError, match=match):
        ref.prefix_shared_attention(**args)
    with pytest.raises(ValueError, match=match):
        tri.attention(**args, backend="torch")


def test_dispatcher_backends_on_cpu():
    ref, tri = _import_kernels()
    q, ks, vs, kp, vp, mask = make_inputs(CASES["b3_gqa6x2_lp50_ls19_d32_pad"])
    want = ref.prefix_shared_attention(q, ks, vs, kp, vp, mask)
    assert torch.equal(tri.attention(q, ks, vs, kp, vp, mask), want)  # auto -> torch on CPU
    assert torch.equal(tri.attention(q, ks, vs, kp, vp, mask, backend="torch"), want)
    with pytest.raises(ValueError, match="backend"):
        tri.attention(q, ks, vs, kp, vp, mask, backend="cuda")
    if tri.HAS_TRITON and not tri.triton_interpreter_active():
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            tri.attention(q, ks, vs, kp, vp, mask, backend="triton")
    if tri.HAS_TRITON:
        with pytest.raises(ValueError, match="q dtype torch.float64 not supported"):
            tri.prefix_shared_attention(q.double(), ks.double(), vs.double(), kp.double(), vp.double(), mask)


# ----------------------------------------------------------------------------------------------------
# GPU (CUDA) tests
# ----------------------------------------------------------------------------------------------------
def _skip_unless_cuda_triton():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _, tri = _import_kernels()
    if not tri.HAS_TRITON:
        pytest.skip("needs triton")
    if tri.triton_interpreter_active():
        pytest.skip("TRITON_INTERPRET=1 is active in this process; GPU kernels would be interpreted")
    return tri


GPU_CASES = dict(CASES)
GPU_CASES["smollm2_b37_gqa9x3_lp300_ls12_d64_pad"] = (37, 9, 3, 300, 12, 64, True, {})
GPU_CASES["smollm2_b64_gqa9x3_lp1031_ls33_d64_pad"] = (64, 9, 3, 1031, 33, 64, True, {})


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_gpu_matches_naive(name, dtype):
    tri = _skip_unless_cuda_triton()
    case = GPU_CASES[name]
    q, ks, vs, kp, vp, mask = make_inputs(case, dtype, device="cuda")
    extra = case[7]
    blocks = {k: extra[k] for k in ("block_m", "block_n") if k in extra}
    want, want_lse = naive_attention(q, ks, vs, kp, vp, mask)
    atol, rtol = LOW_PRECISION.get(dtype, (ATOL_FP32, 0.0))
    out = _nan_out(q, transformers_layout=extra.get("strided", False))
    got = tri.prefix_shared_attention(q, ks, vs, kp, vp, mask, out=out, **blocks)
    torch.cuda.synchronize()
    assert got is out and not torch.isnan(out).any()
    assert _excess(out, want, rtol) <= atol
    assert _excess(tri.attention(q, ks, vs, kp, vp, mask), want, rtol) <= atol  # auto -> triton on CUDA
    if dtype == torch.float32:
        po, pl = tri.prefix_attention_partial(q, kp, vp)
        so, sl = tri.suffix_attention_partial(q, ks, vs, mask)
        ref, _ = _import_kernels()
        mo, ml = ref.merge_attention_states(po, pl, so, sl)
        assert _err(mo, want) <= atol and _err(ml, want_lse) <= atol


if __name__ == "__main__":
    if "--interp-worker" in sys.argv:
        print("RESULT " + json.dumps(_interp_worker()), flush=True)
    else:
        sys.exit(pytest.main([__file__, *sys.argv[1:]]))
