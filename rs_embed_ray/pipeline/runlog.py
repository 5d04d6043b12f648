"""The run's log as the driver keeps it: what each step of each place did (the tables the
writers read), the counts, the records appended to the state folder's log, and when a failed
step stops the run. No ray: the Ray stages hand it their result rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from rs_embed_ray.errors import ExportStopped
from rs_embed_ray.io.manifest import package_version, prefetch_error, utc_ts
from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.io.steptable import StepTable, step_src
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.plan import ExportPlan, ModelRequest
from rs_embed_ray.resume import Sources

PATCH, EMBED = "patch", "embed"  # the kinds of step the log records


class RunLog:
    """One run's tables (``patch_src`` per fetch group, ``embed_src`` per model), counts and
    appended records. ``device`` is the device the run resolved (recorded in run.json)."""

    def __init__(self, plan: ExportPlan, state: RunState, device: str) -> None:
        self.plan = plan
        self.state = state
        self.device = device
        # compact tables: the driver's memory must not grow by a record per place and step
        self.patch_src: Sources = {g.key: StepTable(plan.n_items) for g in plan.groups}
        self.embed_src: Sources = {m.key: StepTable(plan.n_items) for m in plan.models}
        self.counts = {"fetched": 0, "fetch_failed": 0, "embedded": 0, "embed_failed": 0}
        # places whose embedding step already ran in this run (chained fetch+infer)
        self.settled = {m.key: np.zeros(plan.n_items, dtype=bool) for m in plan.models}

    def record(
        self, kind: str, key: str, rows: dict[str, Any], fp: Callable[[int], str]
    ) -> list[Record]:
        """Append a stage's result rows (``schema.INDEX`` + ``schema.RESULT`` + NODE)."""
        recs = []
        nodes = rows.get(col.NODE)
        nodes = nodes if nodes is not None else [""] * len(rows[col.INDEX])
        done_at = rows.get(col.DONE_AT)
        done_at = done_at if done_at is not None else [None] * len(rows[col.INDEX])
        table = self.patch_src if kind == PATCH else self.embed_src
        cols = [rows[c] for c in (col.INDEX, *col.RESULT)]
        for idx, status, error, shard, shape, sha, node, at in zip(
            *cols, nodes, done_at, strict=True
        ):
            i = int(idx)
            src = step_src(status, shard, error, shape)
            rel = os.path.relpath(str(shard), str(self.state.folder)) if shard else None
            rec = Record(
                kind=kind,
                key=key,
                index=i,
                status=src["status"],
                fp=fp(i),
                shard=rel,
                error=src["error"],
                shape=src["shape"],
                sha1=str(sha) or None,
                node=str(node) or None,
                done_at=round(float(at), 3) if at is not None else None,
            )
            recs.append(rec)
            table[key][i] = src
        self.state.append(recs)
        return recs

    def count(self, kind: str, recs: list[Record]) -> None:
        ok = sum(r.status == col.STATUS_OK for r in recs)
        done, failed = (
            ("fetched", "fetch_failed") if kind == PATCH else ("embedded", "embed_failed")
        )
        self.counts[done] += ok
        self.counts[failed] += len(recs) - ok

    def record_prefetch_failures(self, model: ModelRequest, failed: list[int]) -> list[Record]:
        """Places whose patch failed: their embedding fails too, without any cluster work."""
        p = self.plan
        src = self.patch_src[model.fetch_key] if model.fetch_key else {}
        recs = [
            Record(
                EMBED,
                model.key,
                i,
                col.STATUS_FAILED,
                p.pair_fingerprint(i, model),
                error=prefetch_error(model.name, i, model.fetch_key, src.get(i, {}).get("error")),
            )
            for i in failed
        ]
        self.state.append(recs)
        for r in recs:
            self.embed_src[model.key][r.index] = {
                "status": col.STATUS_FAILED,
                "shard": "",
                "error": r.error,
                "shape": None,
            }
        self.counts["embed_failed"] += len(recs)
        return recs

    def fail_fast(self, recs: list[Record], what: str) -> None:
        """Stop the run at the first failed step unless ``continue_on_error``."""
        bad = [r for r in recs if r.status != col.STATUS_OK]
        if bad and not self.plan.run.continue_on_error:
            r = bad[0]
            raise self.stopped(r.index, what, str(r.error))

    def stopped(self, index: int, stage: str, reason: str) -> ExportStopped:
        name = self.plan.names[index]
        kept = (
            "places that had finished are written"
            if self.plan.layout == "per_item"
            else "finished steps are kept in the run's log"
        )
        return ExportStopped(
            f"{stage} failed for place {index} ({name}): {reason}. The run stopped "
            f"(continue_on_error=False); {kept}. Rerun with resume=True (CLI --resume) to "
            "continue where it stopped, or with continue_on_error=True (CLI "
            "--continue-on-error) to record failures and go on.",
            index=index,
            name=name,
            stage=stage,
            reason=reason,
        )

    def ok(self, kind: str, key: str, index: int) -> bool:
        table = self.patch_src if kind == PATCH else self.embed_src
        return table[key].status_is(index, col.STATUS_OK)

    def finished(
        self, todo: list[int], assume: frozenset[tuple[str, str]] = frozenset()
    ) -> list[int]:
        """Places whose every step (fetch for saved inputs, each model) is ok; the steps in
        ``assume`` ((kind, key), the ones a stage is about to run) are counted as ok."""
        p = self.plan
        needed = [(PATCH, m.fetch_key) for m in p.models if p.save_inputs and m.fetch_key]
        needed += [(EMBED, m.key) for m in p.models if p.save_embeddings]
        needed = [s for s in dict.fromkeys(needed) if s not in assume]
        return [i for i in todo if all(self.ok(kind, key, i) for kind, key in needed)]

    def run_info(self, status: str, skipped: int) -> dict[str, Any]:
        """run.json: the run's status, counts and what it was asked."""
        p = self.plan
        return {
            "status": status,
            "updated_at": utc_ts(),
            "layout": p.layout,
            "format": p.format,
            "out": str(p.out_path),
            "n_items": p.n_items,
            "resumed_complete_items": skipped,
            "models": [m.name for m in p.models],
            "backend": p.backend,
            "device": self.device,
            "counts": dict(self.counts),
            "spatial_batching": p.run.fetch.spatial_batching,
            "package_version": package_version(),
        }

    def write_run(self, status: str, skipped: int) -> None:
        self.state.write_run(self.run_info(status, skipped))
