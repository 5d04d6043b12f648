"""A combined file's regions, handed out while the stages still run (issue 18).

A format whose combined file is made of disjoint regions (Zarr: ``CombinedSink.region_fn``)
need not wait for the last batch: once every stack's row shape is known (the first ok row of
each), the store is created for the layout the final step will compute if every place ends
ok with that shape, and each region becomes a job as soon as all its places have their
rows. The final step (``io.assemble.write_combined``) plans the store again from the real
results: same layout, so the store is kept and the jobs already done are skipped
(``CombinedSink.done_jobs``); a place that failed or came out another shape changes the
layout, so the stream stops and the final step writes the store afresh, as before.

Pure Python, no ray: ``pipeline/regions.py`` runs the jobs as Ray tasks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from rs_embed_ray.io.assemble import file_attrs, model_columns, share_inputs
from rs_embed_ray.io.formats import Places, get_format
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.steptable import StepTable

log = logging.getLogger(__name__)
Tables = dict[str, dict[int, dict[str, Any]]]  # patch_src / embed_src: key -> place -> record
PATCH, EMBED = "patch", "embed"  # the run log's kinds of step


class CombinedStream:
    """Region jobs of one combined file, each handed out once its places are final."""

    def __init__(self, ctx: dict[str, Any], path: Path, places: Places) -> None:
        self.ctx = ctx
        self.places = places
        self.sink = get_format(ctx["format"]).combined_sink(path, file_attrs(ctx, len(places)))
        self.enabled = self.sink.region_fn is not None
        self.started = False
        self.shapes: dict[tuple[str, str], list[int] | None] = {}  # predicted record shapes
        self.regions: list[tuple[str, str, tuple[int, ...]]] = []  # (kind, table key, places)
        self.pending: list[set[int]] = []  # per region: places not final yet
        self.waiting: dict[tuple[str, str, int], list[int]] = defaultdict(list)

    def _needed(self) -> list[tuple[str, str]]:
        """The tables whose row shape the layout depends on."""
        c = self.ctx
        need = []
        for m in c["models"]:
            if c["save_inputs"] and m["fetch_key"]:
                need.append((PATCH, m["fetch_key"]))
            if c["save_embeddings"]:
                need.append((EMBED, m["key"]))
        return list(dict.fromkeys(need))

    @staticmethod
    def _first_shape(table: dict[int, dict[str, Any]]) -> list[int] | None:
        for rec in table.values():
            if rec.get("status") == "ok" and rec.get("shape"):
                return list(rec["shape"])
        return None

    def _start(self, patch_src: Tables, embed_src: Tables) -> bool:
        """Create the store for the all-ok layout, once each needed row shape is known."""
        tables = {PATCH: patch_src, EMBED: embed_src}
        for kind, key in self._needed():
            shape = self._first_shape(tables[kind].get(key, {}))
            if shape is None:
                return False
            self.shapes[(kind, key)] = shape
        n = len(self.places)
        keys = {m["fetch_key"] for m in self.ctx["models"] if m["fetch_key"]}

        def all_ok(shape: list[int] | None) -> StepTable:
            return StepTable.uniform(n, {"status": "ok", "shard": "", "shape": shape})

        pred_patch = {k: all_ok(self.shapes.get((PATCH, k))) for k in keys}
        pred_embed = {
            m["key"]: all_ok(self.shapes.get((EMBED, m["key"]))) for m in self.ctx["models"]
        }
        reader = ShardReader()  # not read: the layout needs shapes only
        try:
            models = [
                model_columns(m, self.ctx, n, pred_patch, pred_embed, reader)
                for m in self.ctx["models"]
            ]
            share_inputs(models)
            self.sink.on_write_start(self.places, models)
        finally:
            reader.close()
        where = {}
        for cols in models:
            if cols.inputs is not None:
                where[cols.inputs.key] = (PATCH, cols.spec["fetch_key"])
            if cols.embeddings is not None:
                where[cols.embeddings.key] = (EMBED, cols.spec["key"])
        for k, (stack, indices) in enumerate(self.sink.region_places()):
            kind, key = where[stack]
            self.regions.append((kind, key, indices))
            self.pending.append(set(indices))
            for i in indices:
                self.waiting[(kind, key, i)].append(k)
        self.started = True
        log.info("combined: %d regions to write while batches finish", len(self.regions))
        return True

    def _settle(self, kind: str, key: str, i: int, rec: dict[str, Any]) -> list[int]:
        """Place ``i``'s record arrived: the regions it completes (none if the layout broke)."""
        if (kind, key, i) not in self.waiting:
            return []
        if rec.get("status") != "ok" or list(rec.get("shape") or []) != self.shapes[(kind, key)]:
            log.info(
                "combined: place %d's %s %s is not an ok row of the predicted shape; the "
                "remaining regions are written after the last batch",
                i,
                kind,
                key,
            )
            self.enabled = False
            return []
        done = []
        for k in self.waiting.pop((kind, key, i)):
            self.pending[k].discard(i)
            if not self.pending[k]:
                done.append(k)
        return done

    def update(
        self,
        patch_src: Tables,
        embed_src: Tables,
        kind: str | None = None,
        key: str | None = None,
        indices: list[int] | None = None,
    ) -> list[Any]:
        """Jobs made ready by the records of ``indices`` in table ``kind``/``key`` (all
        records, when the store has just been created, or with no indices given)."""
        if not self.enabled:
            return []
        tables = {PATCH: patch_src, EMBED: embed_src}
        if not self.started:
            if not self._start(patch_src, embed_src):
                return []
            kind = None  # everything recorded so far (a resume's adopted steps, first batches)
        if kind is None or key is None or indices is None:
            todo = [(k, t, i) for k, tab in tables.items() for t in tab for i in tab[t]]
        else:
            todo = [(kind, key, int(i)) for i in indices]
        ready: list[int] = []
        for k, t, i in todo:
            rec = tables[k].get(t, {}).get(i)
            if rec is not None:
                ready += self._settle(k, t, i, rec)
            if not self.enabled:
                return []
        jobs = []
        for r in ready:
            kind_r, key_r, places = self.regions[r]
            shards = [tables[kind_r][key_r][i]["shard"] for i in places]
            jobs.append(self.sink.region_job(r, shards))
        return jobs
