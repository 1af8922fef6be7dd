"""The one place that decides numeric precision for scoring and training.

A bf16 matrix product is fast only where the hardware runs it natively: CUDA devices that report bf16
support, and CPUs with AVX512-BF16 or AMX-BF16. On other CPUs (AVX2-only x86, for example) PyTorch emulates
it, several times slower than fp32 (``eval/bench_precision.py`` measures it side by side; the README's
"Precision" section has the numbers and the machine). So the default, ``"auto"``, is bf16 where it is
native and fp32 everywhere else; an explicit bf16 request on a CPU without native bf16 is honoured but
warned about once per process.

Names accepted everywhere (scoring ``dtype=`` and training ``precision=``): ``"auto"``, ``"float32"`` /
``"fp32"``, ``"bfloat16"`` / ``"bf16"``, ``"float16"`` / ``"fp16"``.

Errors: :class:`ValueError` naming the argument and the value for any other name.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path

import torch

__all__ = ["DTYPES", "NAMES", "cpu_flags", "cpu_has_native_bf16", "cpu_model", "machine", "native_bf16", "resolve",
           "torch_dtype", "scoring_dtype", "training_precision", "weight_dtype"]

#: precision name -> torch dtype (the one dtype table)
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
#: every accepted name, ``"auto"`` first
NAMES: tuple[str, ...] = ("auto", *DTYPES)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_warned: set[str] = set()
#: --dtype help text of the CLI and eval scripts
HELP = "Scoring precision: auto (bf16 autocast where the CPU/GPU runs it natively, else float32), float32, bfloat16."


@functools.lru_cache(maxsize=None)
def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo, stripped; None where there is none or the file
    cannot be read (e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field):
            return line.partition(":")[2].strip()
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read, e.g. not Linux)."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo, else ``platform.processor()``, else ``"unknown"``."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def machine() -> dict:
    """What every published timing states beside it: ``{"cpu": str, "cores": int, "torch_threads": int,
    "native_bf16": bool, "loadavg": [1 min, 5 min, 15 min], "python": str, "torch": str}`` (load average
    rounded to 0.01; ``[]`` where the OS has none)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": cpu_has_native_bf16(), "loadavg": load, "python": platform.python_version(),
            "torch": torch.__version__}


def cpu_has_native_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    return any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def native_bf16(device: torch.device | str | None = None) -> bool:
    """True if bf16 matrix products are native on ``device`` (default: CUDA if available, else CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return cpu_has_native_bf16()
    return False


def _check(name: str, arg: str) -> None:
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"{arg} {name!r}: expected one of {', '.join(NAMES)}")


def resolve(name: str = "auto", device: torch.device | str | None = None, *, arg: str = "dtype") -> str:
    """The precision to use on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"`` is bf16 where :func:`native_bf16` holds, else fp32. An explicit bf16 on a CPU without native
    bf16 stays bf16 and warns once (``RuntimeWarning``) with the expected slowdown. ``arg`` names the
    argument in the error message (``dtype``, ``precision``).

    Raises:
        ValueError: ``name`` is not one of :data:`NAMES`.
    """
    _check(name, arg)
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[DTYPES[name]]
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if short == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16() and "bf16-cpu" not in _warned:
        _warned.add("bf16-cpu")
        warnings.warn("bf16 requested on a CPU without native bf16 (no AVX512-BF16 / AMX-BF16): matrix products "
                      "are emulated, expect 3x to 50x slower than fp32; use 'auto' or 'fp32'",
                      RuntimeWarning, stacklevel=3)
    return short


def torch_dtype(name: str | torch.dtype = "auto", device: torch.device | str | None = None) -> torch.dtype:
    """``name`` (any of :data:`NAMES`, or a torch dtype, returned as is) as a torch dtype on ``device``."""
    if isinstance(name, torch.dtype):
        return name
    return DTYPES[resolve(name, device)]


def scoring_dtype(name: str = "auto", device: torch.device | str | None = None) -> str:
    """The scoring autocast name for ``name`` on ``device``: ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[resolve(name, device)]


def training_precision(name: str = "auto", device: torch.device | str | None = None) -> str:
    """The Trainer precision for ``name`` on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``
    (argument named ``precision`` in errors)."""
    return resolve(name, device, arg="precision")


def weight_dtype(name: str | torch.dtype = "auto", device: torch.device | str | None = None) -> torch.dtype:
    """The dtype to keep a model's weights in on ``device`` for scoring.

    ``"auto"`` on CUDA is bf16 where the GPU supports it (:func:`native_bf16`), so scoring runs on tensor cores
    with half the weight traffic and no per-forward autocast weight casts, and the prefix-shared Triton kernel
    takes its bf16 branch; ``"auto"`` on a CPU stays float32 (bf16 matrix products come from autocast where
    they are native, see :func:`llmrec.scoring.autocast_for`), so CPU behaviour is unchanged. An explicit name
    (or torch dtype) is honoured on every device.

    Raises:
        ValueError: ``name`` is not one of :data:`NAMES` (argument named ``dtype``).
    """
    if isinstance(name, torch.dtype):
        return name
    _check(name, "dtype")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "auto":
        return torch.bfloat16 if dev.type == "cuda" and native_bf16(dev) else torch.float32
    return DTYPES[resolve(name, dev)]
