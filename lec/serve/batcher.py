"""Dynamic batching: concurrent requests (HELM runs `-n` client threads) are grouped into one padded batch.

A worker thread takes the first waiting request, waits up to `wait_ms` for more (at most `max_batch_size`), runs
them as one batch through the Engine and hands each caller its own response. Requests are validated before they
queue, so one bad request gets its 422 and never fails a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import List

from lec.serve.api import ProcessRequest
from lec.serve.engine import Engine

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, engine: Engine, max_batch_size: int = 8, wait_ms: float = 5.0):
        self.engine, self.max_batch_size, self.wait_s = engine, max(1, max_batch_size), wait_ms / 1000
        self._queue: "queue.Queue[Tuple[tuple, Future]]" = queue.Queue()
        self.batches: List[int] = []  # sizes of the batches run so far (for tests and /health)
        threading.Thread(target=self._loop, name="lec-batcher", daemon=True).start()

    def submit(self, req: ProcessRequest) -> dict:
        item = (req, *self.engine.check(req))  # RequestError here, in the caller's thread
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.batches.append(len(batch))
            try:
                results = self.engine.run_checked([item for item, _ in batch])
            except Exception as err:  # a model failure fails this batch's callers, not the server
                log.exception("batch of %d failed", len(batch))
                for _, fut in batch:
                    fut.set_exception(err)
                continue
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)
