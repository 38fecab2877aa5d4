"""Classifier worker: the one thread that owns the inference engine and turns windows into event records.

The analyser hands over spotted windows without waiting (a bounded queue; if it is full the window is
still published, unclassified, and counted), so classification never stalls per-frame analysis. Jobs
waiting together are classified as one batch. Every event is emitted by this worker's thread, overflowed
windows included, so whatever ``emit`` updates has one writer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from engines.backends.base import Predictor
from engines.card import NONE_LABEL
from mer_analysis.chain import WindowJob
from mer_core.events import EventRecord

log = logging.getLogger(__name__)

class _Stop:
    """The queue's last item: finish the batch in hand, then end."""


_STOP = _Stop()


@dataclass(frozen=True)
class ClassifierOptions:
    queue_size: int = 64
    max_batch: int = 8
    classify_macro: bool = False  # the bundled model is trained on micro-expressions only
    veto_none: bool = True  # a window a model labels "none" (not a micro-expression) is not published
    poll_s: float = 0.1


class ClassifierWorker:
    """Owns ``engine`` (None: windows are published unlabelled); emits :class:`EventRecord` s."""

    def __init__(
        self,
        engine: Predictor | None,
        emit: Callable[[EventRecord], None],
        *,
        source: str,
        options: ClassifierOptions | None = None,
        record_stage: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or ClassifierOptions()
        self.engine = engine
        self._emit = emit
        self._source = source
        self._record = record_stage or (lambda stage, ms: None)
        self._clock = clock
        self._queue: queue.Queue[WindowJob | _Stop] = queue.Queue(maxsize=self.options.queue_size)
        self._thread = threading.Thread(target=self._run, name="mer-classifier")
        # windows that found the queue full, published unclassified by the worker's thread (deque: thread-safe
        # append and popleft); their inputs are dropped, so each is a few small objects
        self._overflowed: deque[WindowJob] = deque()
        # windows published unlabelled because the queue was full (written by the submitting thread only)
        self.overflow = 0
        self.classified = 0  # windows the model labelled
        self.failed = 0  # windows published unlabelled as the model failed on them (an error, NaN/inf)
        self.vetoed = 0  # windows the model called "none", not published
        self.labels: tuple[str, ...] = tuple(engine.card.labels) if engine is not None else ()
        self.model_name: str | None = engine.card.name if engine is not None else None
        self.engine_name: str | None = engine.name if engine is not None else None

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: WindowJob) -> None:
        """Never blocks: a full queue means the window goes out unclassified, as soon as the worker's thread
        is free (the thread that publishes every event)."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.overflow += 1
            self._overflowed.append(replace(job, inputs=None))

    def stop(self, timeout: float = 5.0) -> bool:
        """Finish queued jobs (bounded by ``timeout``), then end the thread; True when it has ended."""
        if not self._thread.is_alive():
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("the classifier thread did not stop within %.1f s (the model still busy?)", timeout)
            return False
        return True

    def _run(self) -> None:
        while True:
            self._publish_overflowed()
            try:
                first = self._queue.get(timeout=self.options.poll_s)
            except queue.Empty:
                continue
            if isinstance(first, _Stop):
                self._publish_overflowed()
                return
            batch = [first]
            while len(batch) < self.options.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    self._classify(batch)
                    self._publish_overflowed()
                    return
                batch.append(item)
            self._classify(batch)

    def _publish_overflowed(self) -> None:
        while self._overflowed:
            self._publish(self._overflowed.popleft(), None)

    def _wants_label(self, job: WindowJob) -> bool:
        return job.inputs is not None and (job.window.kind == "micro" or self.options.classify_macro)

    def _classify(self, jobs: list[WindowJob]) -> None:
        engine = self.engine
        todo = [j for j in jobs if self._wants_label(j)] if engine is not None else []
        probs: dict[int, np.ndarray] = {}
        if engine is not None and todo:
            t0 = time.perf_counter()
            try:
                out = engine.predict(np.stack([j.inputs for j in todo if j.inputs is not None]))
                finite = np.isfinite(out).all(axis=1)  # NaN/inf (damaged weights) cannot go into a record
                probs = {id(j): out[i] for i, j in enumerate(todo) if finite[i]}
                self.classified += int(finite.sum())
                if not finite.all():
                    self.failed += int((~finite).sum())
                    log.error("the model returned NaN/inf probabilities (damaged model file?); publishing %d "
                              "window(s) unlabelled", int((~finite).sum()))
            except Exception as exc:  # an engine failure must not take the pipeline down
                self.failed += len(todo)
                log.error("classification failed (%s); publishing %d window(s) unlabelled", exc, len(todo))
            self._record("classify", (time.perf_counter() - t0) * 1e3)
        for job in jobs:
            self._publish(job, probs.get(id(job)))

    def _publish(self, job: WindowJob, probs: np.ndarray | None) -> None:
        w = job.window
        now = self._clock()
        closed_at, offset_at = job.closed_at, job.offset_at
        label = confidence = None
        prob_map: dict[str, float] = {}
        if probs is not None and self.labels:
            best = int(np.argmax(probs))
            label, confidence = self.labels[best], float(probs[best])
            if label == NONE_LABEL and self.options.veto_none:
                self.vetoed += 1
                log.info("window %d-%d vetoed: the model calls it no micro-expression (%.2f)",
                         w.onset.frame, w.offset.frame, confidence)
                return
            prob_map = {name: round(float(p), 6) for name, p in zip(self.labels, probs, strict=True)}
        record = EventRecord(
            source=self._source,
            onset=w.onset,
            apex=w.apex,
            offset=w.offset,
            duration_ms=round((w.offset.t - w.onset.t) * 1e3, 3),
            kind=w.kind,
            intensity=round(float(w.peak), 6),
            label=label,
            confidence=confidence,
            probs=prob_map,
            model=self.model_name,
            engine=self.engine_name,
            latency_ms=round((now - closed_at) * 1e3, 3) if closed_at is not None else 0.0,
            delay_ms=round((now - offset_at) * 1e3, 3) if offset_at is not None else 0.0,
        )
        self._emit(record)
