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


@pytest.mark.real_cpu_flags
def test_machine_states_this_cpu_and_torch():
    """The machine record printed beside every timing: the CPU name read here with a regex over /proc/cpuinfo
    (independently of the module's line parser), cores from os, threads and version from torch."""
    import os
    import re

    text = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    m = re.search(r"^model name\s*:\s*(.*?)\s*$", text, flags=re.M)
    m_info = precision.machine()
    if m:
        assert m_info["cpu"] == m.group(1)
    assert m_info["cpu"]
    assert m_info["cores"] == os.cpu_count()
    assert m_info["torch_threads"] == torch.get_num_threads()
    assert m_info["torch"] == torch.__version__
    assert m_info["native_bf16"] == precision.cpu_has_native_bf16()
    assert len(m_info["loadavg"]) == 3 and all(x >= 0 for x in m_info["loadavg"])


# ---------------------------------------------------------------------------------------------------------
# weight dtype for scoring (issue 17): bf16 weights on a CUDA GPU with bf16, float32 weights on every CPU
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [NATIVE, AVX2])
def test_weight_dtype_auto_is_fp32_on_any_cpu(cpu, flags):
    cpu(flags)
    assert precision.weight_dtype("auto", "cpu") == torch.float32  # CPU behaviour unchanged: autocast does bf16
    assert precision.weight_dtype("auto") == torch.float32  # default device: CPU (CUDA mocked absent)
    assert precision.weight_dtype("float32", "cpu") == torch.float32
    assert precision.weight_dtype(torch.float16, "cpu") == torch.float16


def test_weight_dtype_auto_is_bf16_on_cuda_with_bf16(cpu, monkeypatch):
    cpu(AVX2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.weight_dtype("auto", "cuda") == torch.bfloat16
    assert precision.weight_dtype("auto") == torch.bfloat16  # default device is CUDA when it is there
    assert precision.weight_dtype("fp32", "cuda") == torch.float32  # explicit names are honoured
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.weight_dtype("auto", "cuda") == torch.float32
    with pytest.raises(ValueError, match=r"^dtype 'half'"):
        precision.weight_dtype("half", "cuda")


def test_load_base_model_follows_weight_dtype(cpu, tiny_model_dir, monkeypatch):
    """load_base_model('auto') loads the weights in precision.weight_dtype: float32 on this (mocked AVX2) CPU;
    with the CUDA answer (bf16) mocked in, bf16 and marked, so tuning puts them back in float32."""
    from llmrec import model as M

    cpu(AVX2)
    m, _ = M.load_base_model(str(tiny_model_dir), device="cpu")
    assert {p.dtype for p in m.parameters()} == {torch.float32} and not m._llmrec_auto_half
    real = precision.weight_dtype
    monkeypatch.setattr(precision, "weight_dtype",
                        lambda name="auto", device=None: torch.bfloat16 if name == "auto" else real(name, device))
    m, _ = M.load_base_model(str(tiny_model_dir), device="cpu")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16} and m._llmrec_auto_half
    m32, _ = M.load_base_model(str(tiny_model_dir), dtype="float32", device="cpu")
    assert {p.dtype for p in m32.parameters()} == {torch.float32} and not m32._llmrec_auto_half
    assert M.cast_for_scoring(m32, "auto") is m32 and next(m32.parameters()).dtype == torch.bfloat16


def test_run_trainer_restores_fp32_master_weights(cpu, monkeypatch, tmp_path):
    """A model put in bf16 by the 'auto' scoring default is back in float32 before LoRA is attached."""
    import llmrec.train as T

    cpu(AVX2)
    from tests.conftest import make_tiny_llama

    m = make_tiny_llama(64).to(torch.bfloat16)
    m._llmrec_auto_half = True
    seen = {}

    def stop(model, lora):
        seen["dtypes"] = {p.dtype for p in model.parameters()}
        raise RuntimeError("stop here")

    monkeypatch.setattr(T, "add_lora", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        T.run_trainer(m, None, [{"input_ids": [1, 2], "labels": [-100, 2]}], T.TrainSettings(output_dir=str(tmp_path)))
    assert seen["dtypes"] == {torch.float32}
