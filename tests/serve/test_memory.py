"""llmrec.serve.memory: freed heap pages go back to the OS after a batch (glibc malloc_trim)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmrec.serve.memory import release_freed_memory, trimming

_CHILD = """
from llmrec.serve.memory import release_freed_memory
def rss_mib():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
xs = [bytes(4000) for _ in range(50000)]  # ~200 MB in malloc'd blocks
keep = xs[-1]                             # pins the top of the heap, so free() cannot shrink it
del xs
before = rss_mib()
release_freed_memory()
print(before, rss_mib())
"""


@pytest.mark.skipif(not release_freed_memory() or not sys.platform.startswith("linux"), reason="needs glibc on Linux")
def test_freed_blocks_leave_rss_after_the_trim():
    # in a fresh interpreter, so the heap holds only this; RSS read from /proc (independent of the allocator)
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=True)
    before, after = map(float, out.stdout.split())
    assert before - after > 100, (before, after)  # of ~200 MB freed, glibc alone kept most


def test_trimming_wraps_and_trims_on_error(monkeypatch):
    calls = []
    monkeypatch.setattr("llmrec.serve.memory.release_freed_memory", lambda: calls.append(1) or True)
    assert trimming(lambda xs: [x * 2 for x in xs])([1, 2]) == [2, 4] and calls == [1]

    def bad(xs):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        trimming(bad)([1])
    assert calls == [1, 1]


_HEAP_CHILD = """
from llmrec.serve.memory import heap_mib
before = heap_mib()[0]
xs = [bytes(4000) for _ in range(50000)]  # ~200 MB in malloc'd blocks
print(before, heap_mib()[0])
"""


@pytest.mark.skipif(not release_freed_memory() or not sys.platform.startswith("linux"), reason="needs glibc on Linux")
def test_heap_in_use_counts_allocated_blocks():
    # reference: the bytes allocated (50,000 x 4,000 B = 190.7 MiB plus object headers); tolerance 10%
    out = subprocess.run([sys.executable, "-c", _HEAP_CHILD], capture_output=True, text=True, timeout=120, check=True)
    before, after = map(float, out.stdout.split())
    assert after - before == pytest.approx(50000 * 4000 / 2**20, rel=0.10), (before, after)
