"""Give freed heap memory back to the operating system after each scoring batch.

glibc's allocator keeps the pages of freed large blocks in its arenas. A server whose batches change size
(1 to ``max_batch`` prompts of different lengths) leaves a high-water mark that steps up with the largest
batch seen, so the process's RSS climbs and then plateaus although nothing is leaked (measured: a 10-minute
soak at concurrency 16 on a bf16 CPU stepped from ~1.9 GiB to a flat 2.4 GiB). ``malloc_trim(0)`` (glibc,
``man 3 malloc_trim``) returns those free pages; it costs a few milliseconds against batches of 0.5-4 s on a
CPU, but the next batch must fault its pages in again: measured on a 2-core bf16 CPU, RSS after warm-up 1.16
instead of 2.13 GiB, and 3% (batched) to 10% (unbatched) fewer requests per second. So it is opt-in:
``llmrec serve --trim-memory``. On other C libraries (musl, macOS) it is a no-op.

:func:`heap_mib` reads glibc's heap in use and held free (``eval/bench_serve_memory.py`` reports it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["heap_mib", "release_freed_memory", "trimming"]


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library as a ctypes handle, or None where it cannot be found or loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    fn = getattr(_libc(), "malloc_trim", None)
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _mallinfo2():
    fn = getattr(_libc(), "mallinfo2", None)
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


def heap_mib() -> tuple[float | None, float | None]:
    """glibc's heap as (in use, held free) in MiB (``mallinfo2``, glibc >= 2.33: allocated blocks plus mmapped
    ones; free blocks kept in the arenas). (None, None) on other C libraries."""
    fn = _mallinfo2()
    if fn is None:
        return None, None
    m = fn()
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def release_freed_memory() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``). Returns True if glibc was there to ask."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def trimming(fn):
    """``fn`` followed by :func:`release_freed_memory` (also when it raises)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            release_freed_memory()

    return wrapped
