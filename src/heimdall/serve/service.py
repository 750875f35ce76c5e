"""The localization service behind the HTTP routes: the model (loaded from its source, swapped by reload), the
answer cache, admission, the micro-batcher, the map posteriors' threads, the metrics and the live view's ring.

A localization request goes: body read within its limit (limits.py) → JSON parsed, counts checked
(bodies.py) → its transmissions admitted whole or refused (429) → validated → each answered from the cache
or built into model inputs and micro-batched (batcher.py). One request is served by one model snapshot: a
hot swap in between changes neither its inputs, nor the model that runs them, nor the cache key it is
stored under. Answers are kept and sent as JSON bytes (few objects for the garbage collector to walk).

The live view sees only answers whose request asked for it, only those computed for that request (an answer from
the cache is not published again), and never an ad-hoc receiver's position: it is named AD_HOC there.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import json
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from heimdall.errors import HeimdallError, InputError, Unavailable
from heimdall.features import receiver_reports
from heimdall.radiomap.batch import worker_count
from heimdall.serve.batcher import MicroBatcher
from heimdall.serve.bodies import parse, transmissions, validate
from heimdall.serve.events import EventRing
from heimdall.serve.geometry import response_geometry
from heimdall.serve.hybrid_answers import NOT_USED, MapInput, hybrid_answers, map_input
from heimdall.serve.inputs import to_model_inputs
from heimdall.serve.limits import Admission
from heimdall.serve.runtime import ModelSource, ServedModel
from heimdall.serve.settings import ServeSettings
from heimdall.serve.slices import Turns

AD_HOC = "ad hoc"  # what the live view shows instead of an ad-hoc receiver's label (its position)
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class AnswerCache:
    """LRU of answers (JSON bytes) keyed by (model key, input hash)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, key: tuple[str, str]) -> bytes | None:
        """The answer kept under `key` (now the most recently used), None if none is."""
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: tuple[str, str], value: bytes) -> None:
        """Keep `value` under `key`, dropping the least recently used beyond `size`."""
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def clear(self) -> None:
        """Drop every answer (after a model swap)."""
        self.items.clear()


def model_key(model: ServedModel) -> str:
    """Cache key of a model's answers: name, version and sha256 of its bytes."""
    return f"{model.name}:{model.version}:{model.sha256}"


@dataclass(frozen=True)
class Transmission:
    """What an answer needs besides the network's outputs: the receivers' labels, their SNR float [R'] dB (NaN
    where only the power was sent) and, for a model that carries a map, what the map reads (or why it cannot)."""

    labels: list[str]
    snr_db: np.ndarray
    map_input: MapInput | str | None = None


def answers(
    model: ServedModel, mean: np.ndarray, cov: np.ndarray, items: list[Transmission], pool: Executor
) -> list[bytes | None]:
    """The answers (JSON bytes, without `cached` and `latency_ms`) of a model call; None where not finite. With a
    map, the hybrid posteriors (computed in `pool`, with the fields they add) replace the network's mean and
    covariance where the map reads the transmission, and add `map`, `modes` and `regions`."""
    extra = [b""] * len(items)
    if model.radio_map is not None:
        inputs = [it.map_input if it.map_input is not None else NOT_USED for it in items]
        mean, cov, extra, _ = hybrid_answers(model.radio_map, mean, cov, inputs, pool.map)
    finite = np.isfinite(mean).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    geometry = iter(response_geometry(mean[finite], cov[finite], model.frame) if finite.any() else ())
    about = {"name": model.name, "version": model.version, "sha256": model.sha256}
    return [
        with_members(
            pydantic_core.to_json(
                {
                    **next(geometry),
                    "receivers_used": it.labels,
                    "receivers": receiver_reports(it.labels, it.snr_db, model.params),
                    "model": about,
                }
            ),
            more,
        )
        if ok
        else None
        for ok, it, more in zip(finite, items, extra, strict=True)
    ]


def with_members(answer: bytes, members: bytes) -> bytes:
    """The JSON object `answer` with the object members `members` (`"key":value,…`; none when empty) added."""
    return answer[:-1] + b"," + members + b"}" if members else answer


def for_live_view(answer: bytes, labels: list[str], table: frozenset[str]) -> bytes:
    """The answer as the live view shows it: receivers not in the model's table (ad hoc, labelled by their
    position) named AD_HOC in `receivers_used` and `receivers`."""
    if all(label in table for label in labels):
        return answer
    d = json.loads(answer)
    d["receivers_used"] = [r if r in table else AD_HOC for r in d["receivers_used"]]
    for report in d["receivers"]:
        if report["id"] not in table:
            report["id"] = AD_HOC
    return pydantic_core.to_json(d)


def with_timing(answer: bytes, cached: bool, t0: float) -> bytes:
    """The answer with `cached` and `latency_ms` (since `t0`, time.perf_counter()) added."""
    latency_ms = (time.perf_counter() - t0) * 1e3
    return answer[:-1] + b',"cached":%s,"latency_ms":%.3f}' % (b"true" if cached else b"false", latency_ms)


def settle_heap() -> None:
    """Collect, then move every object alive now (the model, its map, the libraries: about 200,000) out of the
    garbage collector's sight (gc.freeze): its full collections, triggered by the lists and dicts each answer makes,
    otherwise walk them all, under the GIL, again and again."""
    gc.collect()
    gc.freeze()


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of their own: requests and latency per route (counted by
    heimdall.serve.limits.LimitsAndMetrics), batch sizes, cache lookups, model swaps, transmissions in flight."""

    def __init__(self, in_flight: Admission) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("heimdall_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "heimdall_request_seconds", "request latency", ["endpoint"], registry=r, buckets=LATENCY_BUCKETS_S
        )
        self.batch_sizes = Histogram(
            "heimdall_batch_size", "transmissions per model call", registry=r, buckets=BATCH_BUCKETS
        )
        self.cache = Counter("heimdall_cache", "answer cache lookups", ["result"], registry=r)
        self.reloads = Counter("heimdall_reloads", "model swaps", registry=r)
        Gauge(
            "heimdall_inflight_transmissions", "transmissions admitted and not yet answered", registry=r
        ).set_function(lambda: in_flight.in_flight)

    def text(self) -> str:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry).decode()


class LocalizationService:
    """The model from `source` answering localization requests within `settings`' limits. `start()` loads the
    model and starts the batcher, `stop()` ends them; `reload()` swaps to the model the source names now."""

    def __init__(self, source: ModelSource, settings: ServeSettings) -> None:
        self.source, self.settings = source, settings
        self.model: ServedModel | None = None  # None until start() has loaded it
        self.cache = AnswerCache(settings.cache_size)
        self.admission = Admission(settings.max_inflight)
        self.metrics = ServiceMetrics(self.admission)
        # the map posteriors of a batch: off the event loop, in threads of their own (the kernels release the GIL),
        # at most one per CPU
        self.map_pool = ThreadPoolExecutor(worker_count(settings.map_threads), thread_name_prefix="heimdall-map")
        self.batcher = MicroBatcher(
            functools.partial(answers, pool=self.map_pool),
            settings.max_batch,
            settings.max_wait_ms,
            on_batch=self.metrics.batch_sizes.observe,
        )
        self.turns = Turns()
        self.events = EventRing(
            settings.events_size,
            settings.max_event_streams,
            settings.max_event_streams_per_client,
            settings.event_idle_s,
        )
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the model (off the event loop) and start the batcher."""
        self.model = await asyncio.get_running_loop().run_in_executor(None, self.source.load)
        settle_heap()
        self.batcher.start()

    async def stop(self) -> None:
        """Stop the batcher and the map threads."""
        await self.batcher.stop()
        self.map_pool.shutdown(wait=False)

    def served(self) -> ServedModel:
        """The model being served (Unavailable while it loads)."""
        if self.model is None:
            raise Unavailable("model", "loading")
        return self.model

    async def localize(self, body: bytes, batch: bool, publish: bool, t0: float) -> list[bytes]:
        """The answers (JSON bytes with `cached` and `latency_ms` since `t0`) to a request body of one transmission
        or, with `batch`, of many; those computed now are published to the live view when `publish`. ServeError
        (4xx) on bad input, 429 when the service has no room for the request's transmissions."""
        self.admission.check_room()
        async with self.turns.hold():
            raw = transmissions(parse(body), batch)
        with self.admission.admit(len(raw)):
            results, fresh = await self._localize_all(raw, batch, t0, publish)
        self.events.publish(fresh)
        return results

    async def _localize_all(self, raw: list, batch: bool, t0: float, publish: bool) -> tuple[list[bytes], list[bytes]]:
        """Answers of admitted transmissions, all by the model current now; and, to publish, those computed for
        this request (not from the cache) as the live view shows them."""
        model = self.served()
        settings = self.settings

        def field(i: int, name: str) -> str:
            return f"transmissions[{i}].{name}" if batch else name

        def build(i: int) -> tuple[np.ndarray, np.ndarray, Transmission]:
            try:
                feats, positions, labels = to_model_inputs(
                    reqs[i], model, settings.max_samples, settings.match_tolerance_m
                )
            except InputError as exc:
                raise InputError(field(i, exc.field), exc.message) from None
            snr_db = feats[:, model.params.snr_index].astype(np.float64)
            if model.radio_map is None:
                return feats, positions, Transmission(labels, snr_db)
            read = map_input(model.params, model.receiver_ids, feats, labels, reqs[i].features)
            return feats, positions, Transmission(labels, snr_db, read)

        async with self.turns.hold() as slices:
            reqs = await validate(raw, batch, slices)
            key, keys, answered = model_key(model), [], []
            for req in reqs:
                keys.append((key, hashlib.sha256(req.model_dump_json().encode()).hexdigest()))
                answered.append(self.cache.get(keys[-1]))
                await slices.pause()
            todo = [i for i, hit in enumerate(answered) if hit is None]
            built = {}
            for i in todo:
                if reqs[i].iq is None:
                    built[i] = build(i)
                    await slices.pause()
        self.metrics.cache.labels("hit").inc(len(reqs) - len(todo))
        self.metrics.cache.labels("miss").inc(len(todo))
        iq = [i for i in todo if i not in built]
        loop = asyncio.get_running_loop()  # FFTs: off the event loop
        built.update(zip(iq, await asyncio.gather(*(loop.run_in_executor(None, build, i) for i in iq)), strict=False))
        computed = await asyncio.gather(*(self.batcher.submit(model, *built[i]) for i in todo))
        async with self.turns.hold() as slices:
            fresh, table = [], frozenset(model.receiver_ids)
            for i, answer in zip(todo, computed, strict=False):
                if answer is None:
                    raise InputError(
                        field(i, "iq" if reqs[i].iq is not None else "features"),
                        "the model gives no finite answer for these inputs",
                    )
                if self.model is model:  # after a swap the cache holds the new model's answers only
                    self.cache.put(keys[i], answer)
                answered[i] = answer
                if publish:
                    fresh.append(for_live_view(answer, built[i][2].labels, table))
            out = []
            for i, answer in enumerate(answered):
                assert answer is not None  # every miss was computed above
                out.append(with_timing(answer, i not in built, t0))
                await slices.pause()
            return out, fresh

    async def reload(self) -> dict[str, Any]:
        """Swap to the model the source names now (e.g. the new champion) and empty the cache; in-flight requests
        finish with the model they started with. If the new model cannot be loaded, the current one stays
        (Unavailable, with why). Returns the previous and current versions and the new sha256."""
        async with self._reload_lock:
            old = self.served()
            previous, described = old.version, f"{old.name} {old.version} (sha256 {old.sha256[:12]}…)"
            del old  # the previous model's objects may be collected once it is swapped out: no reference kept here
            gc.unfreeze()
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, self.source.load)
            except Exception as exc:  # whatever the source raised, the service goes on with the old model
                why = str(exc) if isinstance(exc, HeimdallError) else f"{type(exc).__name__}: {exc}"
                raise Unavailable("model", f"reload failed, still serving {described}: {why}") from None
            else:
                self.model = new
                self.cache.clear()
                self.metrics.reloads.inc()
            finally:  # also when the reload is cancelled
                settle_heap()
        return {"previous": previous, "current": new.version, "sha256": new.sha256}
