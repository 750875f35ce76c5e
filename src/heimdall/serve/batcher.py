"""Micro-batching: concurrent transmissions are stacked into one ONNX Runtime call.

Each transmission arrives with the model it was built for (its inputs fit that model's feature count and
receiver table), so a hot swap never mixes models: one worker takes up to `max_batch` waiting transmissions
(all that are waiting, plus those arriving within `max_wait_ms` when it is > 0), groups them by model, pads
each group to a common receiver count (absent receivers have present = 0), runs the group's model and then
`respond` on its outputs in the model thread, off the event loop, and resolves each transmission's future with
what `respond` made of it. Nothing here bounds the queue: admission (limits.Admission) does, before any work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.serve.runtime import ServedModel

# respond(model, mean [B, 2] m, cov [B, 2, 2] m², contexts) → one result per transmission
Respond = Callable[[ServedModel, np.ndarray, np.ndarray, list[Any]], list[Any]]


@dataclass
class _Item:
    model: ServedModel
    features: np.ndarray  # [R, F]
    rx_position_m: np.ndarray  # [R, 2]
    context: Any
    future: asyncio.Future


class MicroBatcher:
    """Groups concurrent requests into batches of at most max_batch transmissions for one ONNX Runtime call."""

    def __init__(
        self,
        respond: Respond,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.respond = respond
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        # one thread: the session and the PROJ transformers stay warm in it, and batches never overlap
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="heimdall-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the batching task and wait for it to end."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False)

    def submit(
        self, model: ServedModel, features: np.ndarray, rx_position_m: np.ndarray, context: Any
    ) -> asyncio.Future:
        """A future of respond's result for this transmission, computed by `model`."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Item(model, features, rx_position_m, context, future))
        return future

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
                except TimeoutError:
                    break
            groups: dict[int, list[_Item]] = {}
            for item in batch:
                groups.setdefault(id(item.model), []).append(item)
            for group in groups.values():
                try:
                    results = await loop.run_in_executor(self._executor, self._compute, group)
                except Exception as exc:  # a model failure fails this group's requests, not the worker
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                if self.on_batch:
                    self.on_batch(len(group))
                for item, result in zip(group, results, strict=False):
                    if not item.future.done():
                        item.future.set_result(result)

    def _compute(self, group: list[_Item]) -> list[Any]:
        model = group[0].model
        r = max(len(it.features) for it in group)
        b, f = len(group), model.n_features
        feats = np.zeros((b, r, f), np.float32)
        pos = np.zeros((b, r, 2), np.float32)
        present = np.zeros((b, r), np.float32)
        for i, it in enumerate(group):
            n = len(it.features)
            feats[i, :n], pos[i, :n], present[i, :n] = it.features, it.rx_position_m, 1.0
        mean, cov = model.predict(feats, pos, present)
        return self.respond(model, mean, cov, [it.context for it in group])
