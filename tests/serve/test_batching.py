"""Request batching: the batcher's mechanics (batch size, wait, bounded queue, timeout, error isolation),
batched results equal to one-by-one results (rerank, score, recommend), and over HTTP: concurrent requests
are scored together, a full queue answers 503 with Retry-After, a slow request 504."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from llmrec.serve._backend import RecommendJob, RerankJob, ScoreJob
from llmrec.serve.batching import Batcher, QueueFull


def _run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- the batcher
def test_batcher_collects_concurrent_calls():
    sizes = []

    def fn(xs):
        sizes.append(len(xs))
        time.sleep(0.01)
        return [x * 2 for x in xs]

    async def main():
        b = Batcher(fn, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=20, max_queue=64)
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return out

    assert _run(main()) == [2 * i for i in range(10)]
    assert max(sizes) == 4 and sum(sizes) == 10 and len(sizes) <= 4


def test_batcher_unbatched_and_wait():
    sizes = []

    async def main(max_batch, wait):
        b = Batcher(lambda xs: sizes.append(len(xs)) or list(xs), ThreadPoolExecutor(1), max_batch=max_batch,
                    max_wait_ms=wait)
        t0 = time.perf_counter()
        await b.submit(1)
        dt = time.perf_counter() - t0
        await asyncio.gather(*(b.submit(i) for i in range(5)))
        await b.stop()
        return dt

    _run(main(1, 0))
    assert sizes == [1] * 6
    assert _run(main(8, 50)) >= 0.045  # a lone request waits max_wait for company


def _closed_loop_sizes(return_wait_ms: float) -> list[int]:
    """Batch sizes seen by 8 closed-loop clients (each sends its next request 40 ms after its answer, longer
    than the 5 ms window) that start in two groups of 4, 30 ms apart, against a 100 ms scoring call."""
    sizes = []

    def fn(xs):
        sizes.append(len(xs))
        time.sleep(0.1)
        return list(xs)

    async def client(b, i):
        await asyncio.sleep(0.03 * (i >= 4))
        for _ in range(5):
            assert await b.submit(i) == i
            await asyncio.sleep(0.04)

    async def main():
        b = Batcher(fn, ThreadPoolExecutor(1), max_batch=8, max_wait_ms=5, return_wait_ms=return_wait_ms)
        await asyncio.gather(*(client(b, i) for i in range(8)))
        await b.stop()

    _run(main())
    assert sum(sizes) == 40
    return sizes


def test_batcher_return_wait_keeps_closed_loop_clients_in_one_batch():
    # a fixed 5 ms window: the two groups never merge (batches of 4 alternate)
    assert _closed_loop_sizes(0) == [4] * 10
    # with the return wait, the first group's clients join the second group's batch and stay together; the
    # second group's last request is alone (the first group has finished)
    assert _closed_loop_sizes(150) == [4, 8, 8, 8, 8, 4]


def test_batcher_return_wait_does_not_delay_a_lone_client():
    """Concurrency 1: the last batch answered one client and nothing was queued, so nothing waits for company."""
    waits = []

    async def main():
        b = Batcher(lambda xs: list(xs), ThreadPoolExecutor(1), max_batch=8, max_wait_ms=0, return_wait_ms=500)
        for i in range(4):
            t0 = time.perf_counter()
            await b.submit(i)
            waits.append(time.perf_counter() - t0)
        await b.stop()

    _run(main())
    assert max(waits) < 0.25, waits  # each would take >= 0.5 s if it waited the return window


def test_batcher_queue_full_and_timeout():
    gate = threading.Event()

    def slow(xs):
        gate.wait(5)
        return list(xs)

    async def main():
        b = Batcher(slow, ThreadPoolExecutor(1), max_batch=1, max_wait_ms=0, max_queue=2)
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)  # "a" is running; the queue holds at most 2 more
        waiting = [asyncio.ensure_future(b.submit(x)) for x in "bc"]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit("d")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting[0]), 0.05)
        gate.set()
        assert await first == "a" and await asyncio.gather(*waiting) == ["b", "c"]
        await b.stop()

    _run(main())


def test_batcher_isolates_a_failing_request():
    def fn(xs):
        if "bad" in xs:
            raise ValueError("bad payload")
        return [x.upper() for x in xs]

    async def main():
        b = Batcher(fn, ThreadPoolExecutor(1), max_batch=8, max_wait_ms=20)
        res = await asyncio.gather(*(b.submit(x) for x in ["a", "bad", "c"]), return_exceptions=True)
        await b.stop()
        return res

    a, bad, c = _run(main())
    assert a == "A" and c == "C" and isinstance(bad, ValueError)


# ---------------------------------------------------------------- parity: batched == one by one
def _rerank_jobs(backend, n=6, seed=0):
    g = np.random.default_rng(seed)
    jobs = []
    for i in range(n):
        h = [str(x) for x in g.choice(30, int(g.integers(1, 7)), replace=False)]
        c = [str(x) for x in g.choice([x for x in range(30) if str(x) not in h], int(g.integers(2, 12)), replace=False)]
        jobs.append(backend.check_rerank(h, c, None))
    return jobs


def _same(batched, single):
    for b, s in zip(batched, single):
        assert [(x.item_id, x.rank) for x in b] == [(x.item_id, x.rank) for x in s]
        np.testing.assert_allclose([x.score for x in b], [x.score for x in s], atol=1e-4)


def test_rerank_batched_equals_one_by_one(backend):
    jobs = _rerank_jobs(backend)
    _same(backend.rerank_batch(jobs), [backend.rerank_batch([j])[0] for j in jobs])


def test_pointwise_rerank_batched_equals_one_by_one(toy_index, tiny_tokenizer):
    from tests.serve.conftest import make_backend

    be = make_backend(toy_index, tiny_tokenizer, method="pointwise")
    jobs = _rerank_jobs(be, 4, seed=1)
    _same(be.rerank_batch(jobs), [be.rerank_batch([j])[0] for j in jobs])


def test_score_batched_equals_one_by_one(backend):
    same = [ScoreJob(["1", "2", "3"], str(t)) for t in (5, 6, 7, 8)]        # fan-out: one shared prefix
    other = [ScoreJob(["9", str(i)], str(20 + i)) for i in range(3)]       # different users: shared template head
    jobs = same + other + [ScoreJob(["1", "2", "3"], "9")]
    batched = np.array(backend.score_batch(jobs))
    single = np.array([backend.score_batch([j])[0] for j in jobs])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert np.all((batched[:, 0] > 0) & (batched[:, 0] < 1))


def test_recommend_batched_equals_one_by_one(backend):
    jobs = [backend.check_recommend(None, u, k) for u, k in (("1", 3), ("2", 3), ("3", 5), ("4", 3))]
    _same(backend.recommend_batch(jobs), [backend.recommend_batch([j])[0] for j in jobs])


def test_padded_backend_equals_unpadded(toy_index, tiny_tokenizer, backend):
    """``pad_to_multiple_of=16`` (the server's default) changes shapes, not results: rerank and score equal the
    unpadded backend's (atol 1e-4, as above)."""
    from tests.serve.conftest import make_backend

    padded = make_backend(toy_index, tiny_tokenizer, pad_to_multiple_of=16)
    assert padded.pad_multiple == 16 and backend.pad_multiple == 1
    jobs = _rerank_jobs(backend, 8, seed=4)
    _same(padded.rerank_batch(jobs), backend.rerank_batch(jobs))
    sj = [ScoreJob(["1", "2", "3"], str(t)) for t in (5, 6, 7)] + [ScoreJob(["9", "4"], "11")]
    np.testing.assert_allclose(padded.score_batch(sj), backend.score_batch(sj), atol=1e-4)
    for bad in (0, -3, True, 1.5):
        with pytest.raises(ValueError, match=f"pad_to_multiple_of {bad!r}"):
            make_backend(toy_index, tiny_tokenizer, pad_to_multiple_of=bad)


# ---------------------------------------------------------------- over HTTP
async def _concurrent(app, bodies, path="/v1/rerank"):
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rs = await asyncio.gather(*(c.post(path, json=b) for b in bodies))
            metrics = (await c.get("/metrics")).text
    return rs, metrics


def _bodies(n=12, seed=3):
    g = np.random.default_rng(seed)
    return [{"history": [str(x) for x in g.choice(15, 3, replace=False)],
             "candidates": [str(x) for x in g.choice(range(15, 30), 8, replace=False)]} for _ in range(n)]


def _count(metrics, name, label):
    line = next(l for l in metrics.splitlines() if l.startswith(f'{name}{{queue="{label}"}}'))
    return float(line.split()[-1])


def test_http_batching_on_and_off_agree(backend):
    from llmrec.serve.app import ServeConfig, create_app

    bodies = _bodies()
    on, m_on = _run(_concurrent(create_app(backend, ServeConfig(max_batch=16, max_wait_ms=20)), bodies))
    off, m_off = _run(_concurrent(create_app(backend, ServeConfig(batching=False)), bodies))
    trim, _ = _run(_concurrent(create_app(backend, ServeConfig(max_batch=16, trim_memory=True)), bodies))
    assert all(r.status_code == 200 for r in on + off + trim)
    for a, b in list(zip(on, off)) + list(zip(trim, off)):
        ia, ib = a.json()["items"], b.json()["items"]
        assert [x["item_id"] for x in ia] == [x["item_id"] for x in ib]
        np.testing.assert_allclose([x["score"] for x in ia], [x["score"] for x in ib], atol=1e-4)
    n_on = _count(m_on, "llmrec_batch_size_count", "rerank")
    n_off = _count(m_off, "llmrec_batch_size_count", "rerank")
    assert n_off == len(bodies) and n_on < len(bodies)  # batched: fewer, bigger forwards


class _Slow:
    """A backend whose scoring blocks until released (queue-full and timeout tests)."""

    def __init__(self, backend, gate):
        self.b, self.gate = backend, gate
        self.info, self.lookup = backend.info, backend.lookup

    def check_rerank(self, *a):
        return self.b.check_rerank(*a)

    def rerank_batch(self, jobs):
        self.gate.wait(10)
        return self.b.rerank_batch(jobs)

    score_batch = recommend_batch = rerank_batch


def test_http_queue_full_503_and_timeout_504(backend):
    from llmrec.serve.app import ServeConfig, create_app

    gate = threading.Event()
    app = create_app(_Slow(backend, gate), ServeConfig(batching=False, max_queue=2, timeout_s=0.5))

    async def main():
        import httpx

        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                rs = await asyncio.gather(*(c.post("/v1/rerank", json=b) for b in _bodies(6)))
                gate.set()
                ready = await c.get("/readyz")
                m = (await c.get("/metrics")).text
        return rs, ready, m

    rs, ready, m = _run(main())
    codes = sorted(r.status_code for r in rs)
    assert 503 in codes and 504 in codes and set(codes) <= {503, 504}, codes
    r503 = next(r for r in rs if r.status_code == 503)
    assert r503.headers["retry-after"] == "1" and "overloaded" in r503.json()["error"]
    assert "no result within" in next(r for r in rs if r.status_code == 504).json()["error"]
    assert ready.status_code == 200 and 'llmrec_rejected_total{queue="/v1/rerank"}' in m
