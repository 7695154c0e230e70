"""Continuous batching for the server: concurrent requests (HELM runs `-n` client threads) share decoding steps.

One worker thread owns the running batch. Between two steps it admits waiting requests into free slots (at most
`max_batch_size` rows run at once), and a request leaves the batch at the step it finishes, so its caller is answered
while the others go on. When idle, it waits `wait_ms` after the first request for others to start together.
Requests are validated (and tokenized) in the caller's thread before they queue, so one bad request gets its 422
and never fails its neighbours, and a long prompt being tokenized holds up nobody. A cancelled request (its client
went away) leaves the batch at the next step, or is never admitted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Awaitable, Callable, List, Optional, Tuple

import torch

from lec.serve.api import ProcessRequest
from lec.serve.engine import Batch, Engine, Row

log = logging.getLogger(__name__)
POLL_S = 0.05  # how often a waiting request checks whether its client is still there


class Batcher:
    def __init__(self, engine: Engine, max_batch_size: int = 8, wait_ms: float = 5.0):
        self.engine, self.max_batch_size, self.wait_s = engine, max(1, max_batch_size), wait_ms / 1000
        self._queue: "queue.Queue[Tuple[Row, Future]]" = queue.Queue()
        self.steps = 0  # forward steps run, and the rows they carried (mean batch size for /health and tests)
        self.row_steps = 0
        self.cancelled = 0  # requests whose client went away
        self._running = 0  # rows in the running batch
        threading.Thread(target=self._loop, name="lec-batcher", daemon=True).start()

    @property
    def running(self) -> int:
        return self._running

    def submit(self, req: ProcessRequest) -> dict:
        """Decode one request and return its response (blocks the calling thread)."""
        row = self.engine.row(req)  # RequestError here, in the caller's thread
        self.enqueue(row).result()
        return self.engine.respond(row)  # built in the caller's thread: the worker goes on decoding

    def enqueue(self, row: Row) -> Future:
        """Queue a validated row; the future completes when the row is done (or fails with its step)."""
        fut: Future = Future()
        self._queue.put((row, fut))
        return fut

    async def wait(self, rows: List[Row], disconnected: Callable[[], Awaitable[bool]]) -> bool:
        """Queue rows and wait for all of them (from the event loop); False if the client went away first, which
        takes its rows out of the batch at the next step. A failed decoding step raises here."""
        done = [asyncio.wrap_future(self.enqueue(row)) for row in rows]
        pending = set(done)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=POLL_S)
            if pending and await disconnected():
                for row in rows:
                    self.cancel(row)
                return False
        for fut in done:
            fut.result()
        return True

    def cancel(self, row: Row) -> None:
        """Nobody waits for this row any more: it stops at the next step (the worker drops it)."""
        row.cancelled = True
        self.cancelled += 1

    def _admit(self, running: int) -> List[Tuple[Row, Future]]:
        """Waiting requests for the free slots: block for the first one only when nothing is running."""
        joining: List[Tuple[Row, Future]] = []
        if running == 0:
            joining.append(self._queue.get())
            deadline = time.monotonic() + self.wait_s
            while len(joining) < self.max_batch_size:
                try:
                    joining.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            return joining
        while running + len(joining) < self.max_batch_size:
            try:
                joining.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return joining

    def _loop(self) -> None:
        batch: Optional[Batch] = None
        waiting: List[Tuple[Row, Future]] = []  # admitted rows whose callers have not been answered yet
        while True:
            joining = [(row, fut) for row, fut in self._admit(len(batch.rows) if batch else 0) if not row.cancelled]
            waiting += joining
            try:
                with self.engine.lock:
                    batch = self.engine.step(batch, [row for row, _ in joining])
            except Exception as err:  # a model failure (e.g. OOM on a long prompt) fails the requests in flight,
                log.exception("decoding step failed for %d requests", len(waiting))  # not the server
                for row, fut in waiting:  # rows this step had finished are complete: answer them
                    if row.done:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)
                batch, waiting = None, []
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            self.steps += 1
            self.row_steps += len(waiting)
            for row, fut in waiting:
                if row.done:
                    fut.set_result(None)
            waiting = [(row, fut) for row, fut in waiting if not row.done]
            self._running = len(waiting)
