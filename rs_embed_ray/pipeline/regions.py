"""Region writer tasks that run while the stages still run (issue 18): the driver offers each
batch's records to the combined file's stream (``io.stream.CombinedStream``), and every region
whose places are all final is written by a Ray task, at most ``writer_workers`` in flight,
overlapping the fetch and forward of later batches. Each finished region is recorded in the
run's log (kind ``region``, ``done_at``: when its task finished, on the task's clock).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import ray

from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.io.stream import CombinedStream, Tables

log = logging.getLogger(__name__)
REGION = "region"  # the run log's kind of a region written while batches finished


class RegionWriters:
    """A bounded pool of region tasks fed by a ``CombinedStream``."""

    def __init__(self, stream: CombinedStream, concurrency: int, state: RunState) -> None:
        self.stream = stream
        self.concurrency = max(1, int(concurrency))
        self.state = state
        fn = stream.sink.region_fn
        assert fn is not None
        self.task = ray.remote(num_cpus=0.1, max_retries=0)(fn)
        self.queue: deque[Any] = deque()
        self.running: dict[Any, Any] = {}  # object ref -> job
        self.done: set[Any] = set()

    def offer(
        self,
        patch_src: Tables,
        embed_src: Tables,
        kind: str | None = None,
        key: str | None = None,
        indices: list[int] | None = None,
    ) -> None:
        """New records: queue the regions they complete, start what the pool allows."""
        self.queue.extend(self.stream.update(patch_src, embed_src, kind, key, indices))
        self._pump(block=False)

    def _collect(self, refs: list[Any]) -> None:
        recs = []
        for ref in refs:
            job = self.running.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as exc:  # the final step writes it again
                log.warning("combined: a region task failed (%s); it is rewritten at the end", exc)
                continue
            self.done.add(job)
            recs.append(
                Record(REGION, str(res["marks"]), int(res["region"]), "ok", "", done_at=res["at"])
            )
        self.state.append(recs)

    def _pump(self, block: bool) -> None:
        while True:
            if self.running:
                ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
                self._collect(ready)
            while self.queue and len(self.running) < self.concurrency:
                job = self.queue.popleft()
                self.running[self.task.remote(job)] = job
            if not block or not self.running:
                return
            ready, _ = ray.wait(list(self.running), num_returns=1)
            self._collect(ready)

    def finish(self) -> frozenset[Any]:
        """Wait for every queued and running region; the jobs that were written."""
        self._pump(block=True)
        log.info("combined: %d regions written while batches finished", len(self.done))
        return frozenset(self.done)

    def abandon(self) -> None:
        """The run stops: let running tasks end (a resume adopts what they marked)."""
        self.queue.clear()
        if self.running:
            ray.wait(list(self.running), num_returns=len(self.running))
            self._collect(list(self.running))
