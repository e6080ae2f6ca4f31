"""The API's batching scheduler: concurrent requests share one generation (static batching).

One worker thread owns the model. Requests that arrive while a batch is generating wait in a bounded
queue and leave it together, up to ``batch_size`` at a time, as the next batch; each keeps its own
grammar (its own citable ids, ``Decoder.generate`` gives every row its own) and gets its own result.

Life of a request (``Slot``), each step under one lock:

- ``reserve()``: a place in the queue is taken *before* retrieval, so the bound counts every request
  the server has accepted but not started; with ``queue_size`` taken, ``QueueFull`` (the API answers
  503 + ``Retry-After``, estimated from the measured batch time) - never an unbounded pile-up.
- ``enqueue(slot, item)``: retrieval done (in the request's own thread), the request waits for a batch.
- the worker takes up to ``batch_size`` waiting slots in arrival order; they are *running* now and their
  queue places are free. When the batch is not full and other requests are still in retrieval, it
  waits for them up to ``gather_s`` (counted from the oldest waiting request): otherwise clients that
  all resubmit when a batch ends would be split into a batch of the first one back and a batch of the
  rest, alternately. A lone request (nothing in retrieval) starts at once.
- ``cancel(slot)``: the client went away (or its request was cancelled). Reserved or waiting: the slot
  leaves the queue at once, its place is free and it is never generated. Running: static batching
  cannot take a row out of a batch that is generating (its rows share every forward pass), so the
  row runs on and its result is dropped; when *every* row of the running batch has been cancelled,
  the generation stops at the next token and the worker moves on to the next batch.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

# run_batch(items, stop) -> one result per item; stop() turns True when every row's client has gone.
BatchRunner = Callable[[list, Callable[[], bool]], Sequence]

RESERVED, WAITING, RUNNING, DONE, CANCELLED = "reserved", "waiting", "running", "done", "cancelled"
DEFAULT_BATCH_S = 10.0  # the Retry-After estimate before any batch was measured
GATHER_S = 0.25  # at most this long a short batch waits for requests still in retrieval (~20-100 ms each)


class QueueFull(Exception):
    """Every queue place is taken; ``retry_after_s`` is when one is expected to be free."""

    def __init__(self, limit: int, retry_after_s: int):
        super().__init__(f"the answer queue is full ({limit} requests waiting); retry in {retry_after_s} s")
        self.limit = limit
        self.retry_after_s = retry_after_s


class SchedulerStopped(RuntimeError):
    """The server is shutting down: the request was not generated."""


@dataclass(eq=False)
class Slot:
    number: int
    state: str = RESERVED
    item: object = None
    future: Future = field(default_factory=Future)
    enqueued_at: float = 0.0
    started_at: float = 0.0


@dataclass(frozen=True)
class BatchRecord:
    """One generation the worker ran: for the logs, ``/healthz`` and the tests."""
    rows: int
    seconds: float
    stopped: bool  # every client had gone, and the generation was stopped early
    slots: tuple[int, ...]


class BatchScheduler:
    def __init__(self, run_batch: BatchRunner, batch_size: int = 8, queue_size: int = 64, history: int = 64,
                 gather_s: float = GATHER_S):
        if batch_size < 1 or queue_size < 1:
            raise ValueError(f"batch_size and queue_size must be >= 1, got {batch_size} and {queue_size}")
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.gather_s = gather_s
        self._lock = threading.Condition()
        self._reserved: set[Slot] = set()
        self._waiting: deque[Slot] = deque()
        self._running: list[Slot] = []
        self._numbers = itertools.count(1)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batch_s: float | None = None  # moving average of the measured batch time
        self.batches: deque[BatchRecord] = deque(maxlen=history)

    # -- the worker ---------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="answer-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse what waits (``SchedulerStopped``), stop the running batch at its next token, join."""
        with self._lock:
            self._stopping = True
            left = [*self._reserved, *self._waiting]
            self._reserved.clear()
            self._waiting.clear()
            for slot in left:
                slot.state = CANCELLED
            self._lock.notify_all()
            thread, self._thread = self._thread, None
        for slot in left:
            if slot.future.set_running_or_notify_cancel():
                slot.future.set_exception(SchedulerStopped("the server is shutting down; retry"))
        if thread is not None:
            thread.join(timeout)

    def _take_batch(self) -> list[Slot] | None:
        with self._lock:
            while not self._stopping:
                if not self._waiting:
                    self._lock.wait()
                    continue
                waited = time.monotonic() - self._waiting[0].enqueued_at
                if len(self._waiting) >= self.batch_size or not self._reserved or waited >= self.gather_s:
                    break
                self._lock.wait(self.gather_s - waited)  # enqueue() and cancel() wake it earlier
            if self._stopping:
                return None
            batch = []
            while self._waiting and len(batch) < self.batch_size:
                slot = self._waiting.popleft()
                slot.state, slot.started_at = RUNNING, time.monotonic()
                batch.append(slot)
            self._running = batch
            return batch

    def _all_gone(self) -> bool:
        # Read without the lock: a stale False costs one token, a True is final (cancel never undoes it).
        return self._stopping or all(slot.state == CANCELLED for slot in self._running)

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = [slot for slot in batch if slot.future.set_running_or_notify_cancel()]
            started = time.monotonic()
            try:
                results = list(self.run_batch([slot.item for slot in live], self._all_gone)) if live else []
                if len(results) != len(live):
                    raise RuntimeError(f"the batch runner returned {len(results)} results for {len(live)} requests")
            except BaseException as exc:  # noqa: BLE001 - every waiting client must get an answer
                for slot in live:
                    slot.future.set_exception(exc)
                results = None
            seconds = time.monotonic() - started
            stopped = self._all_gone()
            if results is not None:
                for slot, result in zip(live, results):
                    slot.future.set_result(result)
            with self._lock:
                for slot in batch:
                    if slot.state == RUNNING:
                        slot.state = DONE
                self._running = []
                if live and not stopped:  # a stopped batch's time says nothing about the next one
                    self._batch_s = seconds if self._batch_s is None else 0.7 * self._batch_s + 0.3 * seconds
                self.batches.append(BatchRecord(len(live), seconds, stopped, tuple(s.number for s in batch)))

    # -- requests -----------------------------------------------------------------------------------
    def reserve(self) -> Slot:
        """A queue place for a new request, or ``QueueFull``."""
        with self._lock:
            if self._stopping:  # (before start() requests are accepted: they wait for the worker)
                raise SchedulerStopped("the answer scheduler has stopped")
            if len(self._reserved) + len(self._waiting) >= self.queue_size:
                raise QueueFull(self.queue_size, self._retry_after_s())
            slot = Slot(next(self._numbers))
            self._reserved.add(slot)
            return slot

    def enqueue(self, slot: Slot, item) -> Future:
        """The prepared request joins the next batch; the future gets its result (or its error)."""
        with self._lock:
            if slot.state != RESERVED:  # cancelled meanwhile (client gone, shutdown)
                if not slot.future.done():
                    slot.future.cancel()
                return slot.future
            self._reserved.discard(slot)
            slot.item, slot.state, slot.enqueued_at = item, WAITING, time.monotonic()
            self._waiting.append(slot)
            self._lock.notify()
        return slot.future

    def cancel(self, slot: Slot) -> bool:
        """The request's client is gone. True when the slot had not started: its place is free and it is
        never generated; False when it was running (its result is dropped) or finished."""
        with self._lock:
            if slot.state == RESERVED:
                self._reserved.discard(slot)
                self._lock.notify()  # a short batch may have been waiting for this one
            elif slot.state == WAITING:
                self._waiting.remove(slot)
            elif slot.state == RUNNING:
                slot.state = CANCELLED  # read by _all_gone: the batch may stop early
                return False
            else:
                return False
            slot.state = CANCELLED
        slot.future.cancel()
        return True

    def _retry_after_s(self) -> int:
        """Seconds until a queue place is likely free. Places free when the next batch starts, i.e.
        when the running one ends: its measured average time minus what it has run already."""
        per_batch = self._batch_s if self._batch_s is not None else DEFAULT_BATCH_S
        running_for = time.monotonic() - self._running[0].started_at if self._running else 0.0
        return max(1, min(600, math.ceil(per_batch - running_for)))

    def snapshot(self) -> dict:
        with self._lock:
            return {"waiting": len(self._reserved) + len(self._waiting), "running": len(self._running),
                    "running_gone": sum(slot.state == CANCELLED for slot in self._running),
                    "queue_size": self.queue_size, "batch_size": self.batch_size,
                    "batch_s": round(self._batch_s, 2) if self._batch_s is not None else None}
