"""Region writers that run while the stages still run (issue 18): the driver offers each
batch's records to the combined file's stream (``io.stream.CombinedStream``), and every region
whose places are all final is written by the executor's writer window (Ray tasks, or threads
in process), at most ``writer_workers`` in flight, overlapping the fetch and forward of later
batches. Each finished region is recorded in the run's log (kind ``region``, ``done_at``:
when it finished, on the writer's clock).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.io.stream import CombinedStream, Tables

log = logging.getLogger(__name__)
REGION = "region"  # the run log's kind of a region written while batches finished


def write_region(fn: Callable[[Any], Any], pos: int, job: Any) -> tuple[int, Any, str]:
    """One region: ``(pos, result, "")``, or ``(pos, None, error)``: a failed region is
    written again by the final step, so its error does not stop the run."""
    try:
        return pos, fn(job), ""
    except Exception as exc:
        return pos, None, f"{type(exc).__name__}: {exc}"


class RegionWriters:
    """A bounded window of region writes fed by a ``CombinedStream``; ``window`` is the
    executor's ``TaskWindow`` class."""

    def __init__(
        self, stream: CombinedStream, concurrency: int, state: RunState, window: Any
    ) -> None:
        self.stream = stream
        self.state = state
        fn = stream.sink.region_fn
        assert fn is not None
        self.fn = fn
        self.window = window(write_region, max(1, int(concurrency)), num_cpus=0.1)
        self.queue: deque[Any] = deque()
        self.running: dict[int, Any] = {}  # position -> job
        self.next_pos = 0
        self.done: set[Any] = set()

    def offer(
        self,
        patch_src: Tables,
        embed_src: Tables,
        kind: str | None = None,
        key: str | None = None,
        indices: list[int] | None = None,
    ) -> None:
        """New records: queue the regions they complete, start what the window allows."""
        self.queue.extend(self.stream.update(patch_src, embed_src, kind, key, indices))
        self._pump(block=False)

    def _collect(self, results: list[tuple[int, Any, str]]) -> None:
        recs = []
        for pos, res, error in results:
            job = self.running.pop(pos)
            if error:
                log.warning(
                    "combined: a region write failed (%s); it is rewritten at the end", error
                )
                continue
            self.done.add(job)
            recs.append(
                Record(REGION, str(res["marks"]), int(res["region"]), "ok", "", done_at=res["at"])
            )
        if recs:
            self.state.append(recs)

    def _pump(self, block: bool) -> None:
        self._collect(self.window.poll())
        while self.queue and (block or self.window.has_room()):
            job = self.queue.popleft()
            pos, self.next_pos = self.next_pos, self.next_pos + 1
            self.running[pos] = job
            self._collect(self.window.submit(self.fn, pos, job))  # waits while full
        if block:
            self._collect(self.window.drain())

    def finish(self) -> frozenset[Any]:
        """Wait for every queued and running region; the jobs that were written."""
        self._pump(block=True)
        log.info("combined: %d regions written while batches finished", len(self.done))
        return frozenset(self.done)

    def abandon(self) -> None:
        """The run stops: let running writes end (a resume adopts what they marked)."""
        self.queue.clear()
        self._collect(self.window.drain())
