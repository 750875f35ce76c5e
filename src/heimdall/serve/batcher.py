"""Micro-batching: concurrent requests are stacked into one ONNX Runtime call.

Requests wait in a bounded queue (full → QueueFull, answered 429); one worker takes up to `max_batch`
of them (all that are waiting, plus those arriving within `max_wait_ms` when it is > 0), pads them to a
common receiver count (absent receivers have present = 0), runs the model off the event loop, and resolves
each request's future.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from heimdall.serve.runtime import ServedModel


class QueueFull(RuntimeError):
    """The batching queue is full."""


@dataclass
class _Item:
    features: np.ndarray  # [R, F]
    rx_position_m: np.ndarray  # [R, 2]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, get_model: Callable[[], ServedModel], max_batch: int = 64, max_wait_ms: float = 0.0,
                 max_queue: int = 1024, on_batch: Callable[[int], None] | None = None):
        self.get_model = get_model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(max_queue)
        self.on_batch = on_batch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, features: np.ndarray, rx_position_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, ServedModel]:
        """mean [2], covariance [2, 2] and the model that answered."""
        item = _Item(features, rx_position_m, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull(f"more than {self.queue.maxsize} requests waiting") from None
        return await item.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            # greedy: take what is already waiting (requests pile up while the model runs); wait up to
            # max_wait for more only when it is set (trading latency for larger batches)
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch and self.max_wait_s > 0:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            model = self.get_model()  # the model of this batch, even if a reload happens meanwhile
            try:
                mean, cov = await loop.run_in_executor(None, _predict, model, batch)
            except Exception as exc:  # a model failure fails this batch's requests, not the worker
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            for i, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result((mean[i], cov[i], model))


def _predict(model: ServedModel, batch: list[_Item]) -> tuple[np.ndarray, np.ndarray]:
    r = max(len(it.features) for it in batch)
    b, f = len(batch), batch[0].features.shape[1]
    feats = np.zeros((b, r, f), np.float32)
    pos = np.zeros((b, r, 2), np.float32)
    present = np.zeros((b, r), np.float32)
    for i, it in enumerate(batch):
        n = len(it.features)
        feats[i, :n], pos[i, :n], present[i, :n] = it.features, it.rx_position_m, 1.0
    return model.predict(feats, pos, present)
