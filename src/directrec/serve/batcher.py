"""Micro-batching: concurrent requests wait up to `max_wait` seconds to share one model
call, run on a single model thread. The queue is bounded: when it is full, `submit` raises
`Overloaded` at once instead of letting latency grow without limit.

The loop is supervised: a failing model call fails only that batch's requests
(`BatchFailed`), an unexpected error in the loop itself is logged and the loop restarts,
and a request that waits longer than `timeout` gets `TimeoutError` instead of hanging.
`alive` tells readiness probes whether the loop is running. `cost` models the recent wall
time of a model call as a fixed part plus a part per request (least squares over recent
batches, older ones forgotten), and `expected_wait(n)` is what `n` requests ahead of a new
one would take to serve in batches: the admission gate sheds on it. A per-request average
alone would price a burst at the cost of the small batches that served the quiet time
before it, though the burst is served in one larger, cheaper-per-request batch.

The model thread runs at a lower OS priority (`nice`, or SCHED_IDLE with `idle`) than the
event loop: on a busy core the scheduler then hands the CPU to the loop when a request
arrives, so admitting,
shedding and answering do not queue behind a batch for the CPU (torch releases the GIL in
its kernels, and the GIL switch interval bounds the rest). Linux sets a nice value per
thread; the torch threads the model thread starts inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("directrec.serve")


class Overloaded(Exception):
    """The queue is full: shed this request (the caller answers 503 + Retry-After)."""


class BatchFailed(Exception):
    """The model call for this request's batch raised; other batches are unaffected."""


def lower_priority(nice: int, idle: bool = False) -> None:
    """Raise the calling thread's nice value by `nice`, or with `idle` put it under
    SCHED_IDLE: it then runs only when no normal thread wants its core, and a waking event
    loop takes the core from it at once, where a high nice value still leaves it a time
    slice; where SCHED_IDLE is refused, `nice` applies (Linux: this thread only; elsewhere a
    nice value is per process, so nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    if idle:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError as e:  # a sandbox may forbid it: fall back to the nice value
            log.warning("could not put the model thread under SCHED_IDLE: %s", e)
    if nice <= 0:
        return
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
    except OSError as e:  # a sandbox may forbid it: serve anyway, at equal priority
        log.warning("could not lower the model thread's priority: %s", e)


class BatchCost:
    """Seconds per model call ≈ `fixed` + `per_item` × batch size, fitted by exponentially
    weighted least squares: each batch weighs `1 - forget` times the one after it."""

    def __init__(self, forget: float = 0.05) -> None:
        self.forget = forget
        self._w = self._n = self._t = self._nn = self._nt = 0.0
        self.fixed = self.per_item = 0.0

    def add(self, n: int, seconds: float) -> None:
        keep = 1.0 - self.forget
        self._w = keep * self._w + 1.0
        self._n = keep * self._n + n
        self._t = keep * self._t + seconds
        self._nn = keep * self._nn + n * n
        self._nt = keep * self._nt + n * seconds
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n**2
        slope = (self._nt / self._w - mean_n * mean_t) / var if var > 0.25 else 0.0
        fixed = mean_t - slope * mean_n
        if slope <= 0 or fixed < 0:
            # Too little spread in batch sizes to separate the parts, or a fit with a
            # negative part: the average per request, nothing fixed.
            fixed, slope = 0.0, mean_t / max(mean_n, 1e-9)
        self.fixed, self.per_item = fixed, slope

    def seconds(self, n: int, max_batch: int) -> float:
        """Wall time to serve `n` requests in batches of at most `max_batch`."""
        if n <= 0:
            return 0.0
        return self.fixed * math.ceil(n / max_batch) + self.per_item * n


class Batcher:
    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 256,
        timeout: float = 10.0,
        nice: int = 0,
        idle: bool = False,
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.timeout = timeout
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue(max_queue)
        self.pool = ThreadPoolExecutor(
            1, thread_name_prefix="model", initializer=lower_priority, initargs=(nice, idle)
        )
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.batches = 0
        self.items = 0
        self.failures = 0
        self.cost = BatchCost()  # recent batches' wall time (nothing until the first)

    def expected_wait(self, n: int) -> float:
        """Seconds the model needs for `n` requests at its recent pace (0 before any batch)."""
        return self.cost.seconds(n, self.max_batch)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def submit(self, job: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((job, fut))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await asyncio.wait_for(fut, self.timeout)

    def _timed(self, seconds: float, n: int) -> None:
        """Fold one batch's wall time into the cost fit (wall time, not CPU time: a model
        thread that waits for the core serves more slowly, and the estimate follows)."""
        self.cost.add(n, seconds)

    async def _supervise(self) -> None:
        while not self.stopping:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the loop: log it, keep serving
                self.failures += 1
                log.exception("batching loop failed; restarting it")
                await asyncio.sleep(0.01)

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(j, f) for j, f in batch if not f.done()]  # skip cancelled/timed-out clients
            if not live:
                continue
            self.batches += 1
            self.items += len(live)
            start = loop.time()
            try:
                results = await loop.run_in_executor(self.pool, self.run, [j for j, _ in live])
                self._timed(loop.time() - start, len(live))
            except Exception as e:
                log.exception("model call failed for a batch of %d", len(live))
                for _, f in live:
                    if not f.done():
                        f.set_exception(BatchFailed(f"{type(e).__name__}: {e}"))
                continue
            for (_, f), r in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(r)
