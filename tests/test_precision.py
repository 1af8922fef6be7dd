"""The one precision default (llmrec.precision): bf16 only where it is native, fp32 otherwise.

The CPU flags and CUDA queries are mocked both ways; expected values are written out from the rule in the
issue (bf16 iff CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX-BF16), not from the code.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import llmrec.precision as precision
from llmrec.scoring import autocast_for

NATIVE = frozenset({"avx2", "avx512f", "avx512_bf16"})
AMX = frozenset({"avx2", "amx_tile", "amx_bf16"})
AVX2 = frozenset({"avx2", "fma", "f16c"})  # f16c / avx512_fp16 are not bf16


@pytest.fixture()
def cpu(monkeypatch):
    """Set the CPU flags; CUDA absent."""
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def set_flags(flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    return set_flags


@pytest.mark.parametrize("flags,want", [(NATIVE, "bf16"), (AMX, "bf16"), (AVX2, "fp32"), (frozenset(), "fp32"),
                                        (frozenset({"avx512_fp16"}), "fp32")])
def test_auto_follows_cpu_flags(cpu, flags, want):
    cpu(flags)
    assert precision.resolve("auto") == want
    assert precision.resolve("auto", "cpu") == want
    assert precision.training_precision() == want
    assert precision.scoring_dtype() == {"bf16": "bfloat16", "fp32": "float32"}[want]
    assert precision.torch_dtype("auto") == {"bf16": torch.bfloat16, "fp32": torch.float32}[want]


def test_autocast_for_auto_on_cpu(cpu):
    cpu(AVX2)
    with autocast_for(torch.device("cpu"), "auto"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    cpu(NATIVE)
    with autocast_for(torch.device("cpu"), "auto"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cuda_bf16_support_decides_on_cuda(cpu, monkeypatch):
    cpu(AVX2)  # the CPU has no bf16; the CUDA device decides for CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve("auto") == "bf16"  # default device: CUDA when available
    assert precision.resolve("auto", "cuda") == "bf16"
    assert precision.resolve("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve("auto", "cuda") == "fp32"


def test_explicit_bf16_on_emulating_cpu_warns_once(cpu):
    cpu(AVX2)
    with pytest.warns(RuntimeWarning, match=r"without native bf16 .*slower than fp32"):
        assert precision.resolve("bfloat16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("bf16", "cpu") == "bf16"  # once per process
        assert precision.resolve("fp32", "cpu") == "fp32"


def test_explicit_bf16_on_native_cpu_is_silent(cpu):
    cpu(NATIVE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("bf16", "cpu") == "bf16"
        assert precision.resolve("float32", "cpu") == "fp32"
        assert precision.resolve("fp16", "cpu") == "fp16"


@pytest.mark.parametrize("bad", ["fp8", "", "BF16", None, 16])
def test_unknown_name_is_refused_with_argument_and_value(cpu, bad):
    cpu(AVX2)
    with pytest.raises(ValueError, match=r"^dtype .*expected one of auto, float32"):
        precision.resolve(bad)
    with pytest.raises(ValueError, match=r"^precision "):
        precision.training_precision(bad)


@pytest.mark.real_cpu_flags
def test_cpu_flags_reads_this_machine():
    text = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    want = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    assert precision.cpu_flags() == frozenset(want)
    assert precision.cpu_has_native_bf16() == ("avx512_bf16" in want or "amx_bf16" in want)
