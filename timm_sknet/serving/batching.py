"""Batching across requests: the images of requests that wait for the model at the same time go through it as one
batch (``create_app(..., max_batch=N, max_wait_ms=M)``, ``timm-sknet serve --max-batch N --max-wait-ms M``).

One task per app and per function (``/predict``'s model, ``/embed``'s embedder) takes the first waiting image,
waits for a model slot (so images gather while the model is busy), then adds whatever else waits, up to
``max_batch``, waiting at most ``max_wait_ms`` after the first image for more; the batch runs in a worker thread
and each request gets its own row. The task is asyncio's own (an ``asyncio.Queue``), started with the app.
"""
import asyncio
import time
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import torch

__all__ = ['Batcher']

Waiting = Tuple[torch.Tensor, 'asyncio.Future[torch.Tensor]']
#: runs ``function(batch)`` on a model slot the caller holds: (function, batch, images) -> output
Run = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, int], Awaitable[torch.Tensor]]


class Batcher:
    """Gathers single images (``1 x C x H x W``) into batches of at most ``max_batch`` for ``function``."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], model_slots: Any, run: Run, max_batch: int,
                 max_wait_ms: float):
        self.function, self.model_slots, self.run = function, model_slots, run  # model_slots: anyio's limiter
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.waiting: 'asyncio.Queue[Waiting]' = asyncio.Queue()
        self.task: Optional['asyncio.Task[None]'] = None
        self.running: 'set[asyncio.Task[None]]' = set()

    async def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``function(x)``, computed in a batch with other requests' images."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.waiting = asyncio.Queue()  # started by the first request, in the server's event loop
            self.task = loop.create_task(self._gather())
        future: 'asyncio.Future[torch.Tensor]' = loop.create_future()
        self.waiting.put_nowait((x, future))
        return await future

    def close(self) -> None:
        """Stop gathering (at shutdown, once the requests in flight are answered)."""
        if self.task is not None:
            self.task.cancel()

    async def _gather(self) -> None:
        while True:
            first = await self.waiting.get()
            arrived = time.monotonic()
            token = object()
            await self.model_slots.acquire_on_behalf_of(token)  # images gather meanwhile
            batch = [first]
            while len(batch) < self.max_batch:
                left = self.max_wait - (time.monotonic() - arrived)
                try:
                    batch.append(self.waiting.get_nowait() if left <= 0 or not self.waiting.empty()
                                 else await asyncio.wait_for(self.waiting.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            task = asyncio.get_running_loop().create_task(self._run(batch, token))
            self.running.add(task)  # a reference, so that the task is not collected while it runs
            task.add_done_callback(self.running.discard)

    async def _run(self, batch: List[Waiting], token: Any) -> None:
        try:
            out = await self.run(self.function, torch.cat([x for x, _ in batch]), len(batch))
        except BaseException as e:  # every request of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else RuntimeError('the model call ended'))
            if not isinstance(e, Exception):
                raise
        else:
            for i, (_, future) in enumerate(batch):
                if not future.done():  # a client that left cancelled its future
                    future.set_result(out[i:i + 1])
        finally:
            self.model_slots.release_on_behalf_of(token)
