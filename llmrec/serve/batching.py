"""Micro-batching of concurrent requests: a bounded asyncio queue in front of a batched function that runs
in a worker thread (off the event loop).

A worker task takes the first waiting request, then keeps collecting until ``max_batch`` requests or
``max_wait_ms`` have passed, and hands the whole batch to ``fn(payloads) -> results`` in the executor.
``max_batch=1`` is the unbatched server (same queue, same thread, one request per call).

**Return wait.** Clients of a recommender are mostly closed loops: a page view sends its next request when the
previous answer arrives. Turning an answer into a new request (HTTP round trip, parsing, validation) takes
longer than ``max_wait_ms``, so with a fixed window C concurrent clients split into two cohorts that alternate,
each batch holding about C/2 requests (measured: mean batch 8.0 at concurrency 16, max batch 16). So a batch
whose first request arrived while the worker was busy, or within ``return_wait_ms`` of the last batch's end,
waits until ``return_wait_ms`` after that end for the clients the last batch answered, and stops as soon as
it holds as many requests as that batch plus those that were queued when it ended (at most ``max_batch``).
A lone request to an idle server waits only ``max_wait_ms``; at concurrency 1 the expected count is 1, so
nothing waits. This is the dynamic batcher's queue delay (Triton's ``max_queue_delay``), counted from the
last batch's end instead of from the first arrival.

* A full queue raises :class:`QueueFull` at once (the app answers ``503`` with ``Retry-After``).
* A request that waits longer than its timeout raises :class:`asyncio.TimeoutError` (``504``); if it was
  still queued it is dropped from the batch that would have run it.
* If the batched call fails, every request of the batch is retried alone, so one bad request cannot fail
  the others; its own error goes back to it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Batcher", "QueueFull"]


class QueueFull(RuntimeError):
    """The batcher's queue is at its bound."""


@dataclass
class _Pending:
    payload: Any
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collect concurrent calls into batches for ``fn``.

    Args:
        fn: ``fn(list of payloads) -> list of results`` (same length and order); runs in ``executor``.
        executor: where ``fn`` runs (a one-thread pool: model forwards are serialised anyway).
        max_batch: most requests per call (1 = no batching).
        max_wait_ms: how long the first request of a batch waits for company (server idle).
        return_wait_ms: how long after a batch's end the next batch may wait for the clients that batch
            answered (see the module doc; 0 turns it off).
        max_queue: most requests waiting; beyond it :meth:`submit` raises :class:`QueueFull`.
        on_batch: optional ``on_batch(size, seconds)`` callback (metrics).
        on_depth: optional ``on_depth(queued)`` callback (metrics).
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], executor: Executor, *, max_batch: int = 16,
                 max_wait_ms: float = 5.0, return_wait_ms: float = 50.0, max_queue: int = 256,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or return_wait_ms < 0:
            raise ValueError(f"max_batch {max_batch} and max_queue {max_queue} must be >= 1, max_wait_ms "
                             f"{max_wait_ms} and return_wait_ms {return_wait_ms} >= 0")
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait, self.max_queue = int(max_batch), float(max_wait_ms) / 1000.0, int(max_queue)
        self.return_wait = float(return_wait_ms) / 1000.0
        # the last batch: when it ended, its size, how many were queued at its end
        self._last_end, self._last_size, self._queued_at_end = float("-inf"), 0, 0
        self.on_batch, self.on_depth = on_batch, on_depth
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(self.max_queue)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(RuntimeError("server shutting down"))

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # ------------------------------------------------------------------ calls
    async def submit(self, payload: Any, timeout: float | None = None) -> Any:
        """The result of ``payload`` (batched with whatever else is waiting).

        Raises:
            QueueFull: the queue is at ``max_queue``.
            asyncio.TimeoutError: no result within ``timeout`` seconds.
        """
        self.start()
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(payload, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests already waiting") from None
        self._depth()
        # the future is shielded: a timeout here must not cancel the batch others wait on
        return await asyncio.wait_for(asyncio.shield(fut), timeout) if timeout else await fut

    def _depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.depth)

    async def _collect(self) -> list[_Pending]:
        first = await self._queue.get()
        batch = [first]
        want, deadline = self.max_batch, time.perf_counter() + self.max_wait
        if first.queued_at <= self._last_end + self.return_wait:
            # busy just now: the clients the last batch answered are probably on their way back
            want = min(self.max_batch, self._last_size + self._queued_at_end)
            deadline = max(deadline, self._last_end + self.return_wait)
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if len(batch) >= want:
                break
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        self._depth()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]  # timed-out/cancelled: skip
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [p.payload for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batched call returned {len(results)} results for {len(batch)} requests")
                outcomes = [(r, None) for r in results]
            except Exception as e:  # retry alone: one bad request must not fail the batch
                if len(batch) == 1:
                    outcomes = [(None, e)]
                else:
                    outcomes = []
                    for p in batch:
                        try:
                            outcomes.append(((await loop.run_in_executor(self.executor, self.fn, [p.payload]))[0], None))
                        except Exception as e1:
                            outcomes.append((None, e1))
            self._last_end, self._last_size, self._queued_at_end = time.perf_counter(), len(batch), self._queue.qsize()
            if self.on_batch is not None:
                self.on_batch(len(batch), self._last_end - t0)
            for p, (r, e) in zip(batch, outcomes):
                if p.future.done():
                    continue
                if e is None:
                    p.future.set_result(r)
                else:
                    p.future.set_exception(e)
