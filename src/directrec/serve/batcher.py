"""Micro-batching: concurrent requests wait up to `max_wait` seconds to share one model
call, run on a single model thread (so the model is never used by two threads at once).
The queue is bounded: when it is full, `submit` raises `Overloaded` at once instead of
letting latency grow without limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Overloaded(Exception):
    """The queue is full: shed this request (the caller answers 503 + Retry-After)."""


class Batcher:
    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 256,
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue(max_queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def submit(self, job: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((job, fut))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
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
            live = [(j, f) for j, f in batch if not f.done()]  # skip cancelled clients
            if not live:
                continue
            self.batches += 1
            self.items += len(live)
            try:
                results = await loop.run_in_executor(self.pool, self.run, [j for j, _ in live])
            except Exception as e:
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(r)
