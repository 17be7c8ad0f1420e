"""Micro-batching: concurrent requests wait up to `max_wait` seconds to share one model
call, run on a single model thread. The queue is bounded: when it is full, `submit` raises
`Overloaded` at once instead of letting latency grow without limit.

The loop is supervised: a failing model call fails only that batch's requests
(`BatchFailed`), an unexpected error in the loop itself is logged and the loop restarts,
and a request that waits longer than `timeout` gets `TimeoutError` instead of hanging.
`alive` tells readiness probes whether the loop is running. `seconds_per_item` is the
recent wall time of a model call per request it served (an exponential moving average),
which the admission gate uses to estimate how long a new request would wait.

The model thread runs at a lower OS priority (`nice`) than the event loop: on a busy core
the scheduler then hands the CPU to the loop when a request arrives, so admitting,
shedding and answering do not queue behind a batch for the CPU (torch releases the GIL in
its kernels, and the GIL switch interval bounds the rest). Linux sets a nice value per
thread; the torch threads the model thread starts inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("directrec.serve")
EWMA = 0.2  # weight of the newest batch in `seconds_per_item`


class Overloaded(Exception):
    """The queue is full: shed this request (the caller answers 503 + Retry-After)."""


class BatchFailed(Exception):
    """The model call for this request's batch raised; other batches are unaffected."""


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by `nice` (Linux: this thread only; elsewhere a
    nice value is per process, so nothing is changed)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:  # a sandbox may forbid it: serve anyway, at equal priority
        log.warning("could not lower the model thread's priority: %s", e)


class Batcher:
    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 256,
        timeout: float = 10.0,
        nice: int = 0,
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.timeout = timeout
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue(max_queue)
        self.pool = ThreadPoolExecutor(
            1, thread_name_prefix="model", initializer=lower_priority, initargs=(nice,)
        )
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.batches = 0
        self.items = 0
        self.failures = 0
        self.seconds_per_item = 0.0  # EWMA over recent batches (0 until the first)

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
        """Fold one batch's wall time per request into the moving average (wall time, not
        CPU time: a model thread that waits for the core serves more slowly, and the
        estimate follows)."""
        per = seconds / max(n, 1)
        old = self.seconds_per_item
        self.seconds_per_item = per if old == 0.0 else old + EWMA * (per - old)

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
