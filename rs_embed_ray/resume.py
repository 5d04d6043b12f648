"""What an earlier run left, and the resume decision. Pure Python, no ray.

A resumed run adopts a step (a fetched patch, an embedding) only when the log recorded it ok
for the same fingerprint and its shard still holds it intact; it skips a whole output file
only when the file is intact and for this request (contract §2.7). Everything here reads the
output location and the run's state folder; nothing writes, so it is tested without a cluster.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from rs_embed_ray.io.assemble import sidecar_path
from rs_embed_ray.io.formats import get_format
from rs_embed_ray.io.manifest import array_sha1, jsonable, utc_ts
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.io.steptable import Src
from rs_embed_ray.io.storage import is_remote, local_copy
from rs_embed_ray.plan import ExportPlan

log = logging.getLogger(__name__)

# group or model key -> place index -> its step (``io.steptable.StepTable`` in a run)
Sources = dict[str, MutableMapping[int, Src]]
LogKey = tuple[str, str, int]  # (kind, key, index) of a log record

ITEM_KEY = "file"  # the key of the log's "item" records (one per written per-item file)


class EarlierRun:
    """The log and the files an earlier run left for one plan; ``device`` is the device this
    run resolved (a manifest rebuilt from the log records it)."""

    def __init__(self, plan: ExportPlan, state: RunState, device: str) -> None:
        self.plan = plan
        self.state = state
        self.device = device
        self.log: dict[LogKey, dict[str, Any]] = {}

    def adopt(self, patch_src: Sources, embed_src: Sources) -> None:
        """Fill the tables with the steps whose fingerprint matches and shard is intact."""
        self.log = self.state.latest()
        reader = ShardReader()
        try:
            for (kind, key, index), rec in self.log.items():
                if index >= self.plan.n_items or rec.get("status") != "ok":
                    continue
                if not rec.get("shard"):
                    continue
                shard = str(self.state.folder / rec["shard"])
                if kind == "patch" and key in patch_src:
                    if self._patch_intact(reader, key, index, rec, shard):
                        patch_src[key][index] = {**rec, "shard": shard}
                elif kind == "embed" and key in embed_src:
                    if self._embed_intact(reader, key, index, rec, shard):
                        embed_src[key][index] = {**rec, "shard": shard}
        finally:
            reader.close()

    def _patch_intact(
        self, reader: ShardReader, key: str, index: int, rec: dict[str, Any], shard: str
    ) -> bool:
        p = self.plan
        return rec.get("fp") == p.patch_fingerprint(index, p.group(key)) and reader.has(
            shard, index
        )

    def _embed_intact(
        self, reader: ShardReader, key: str, index: int, rec: dict[str, Any], shard: str
    ) -> bool:
        p = self.plan
        if rec.get("fp") != p.pair_fingerprint(index, p.model(key)):
            return False
        try:
            arr, _ = reader.read(shard, index)
        except Exception:
            return False
        if rec.get("sha1") and array_sha1(arr) != rec["sha1"]:
            log.warning("embedding shard of item %d is corrupt; redoing it", index)
            return False
        return True

    def complete_items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Per-item files that need no work: (place index, the manifest to report), one at a
        time (the caller spools them; a million manifests do not fit the driver)."""
        for i in range(self.plan.n_items):
            man = self.item_complete(i)
            if man is not None:
                yield i, man

    def item_complete(self, index: int) -> dict[str, Any] | None:
        """A per-item file from an earlier run that is ok, intact and for this request.

        With its sidecar, the sidecar says what the file holds; without one
        (``save_manifest=False``), the ``item`` record of the log does (contract §2.7: the
        file itself is verified, keys, shapes and digests, before it is skipped)."""
        p = self.plan
        path = p.item_path(index)
        side = sidecar_path(path)
        if not path.exists():
            return None
        if not side.exists():
            return self._item_complete_from_log(index, path)
        try:
            man = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(man, dict) or man.get("status") != "ok":
            return None
        if man.get("request_fingerprint") != p.item_fingerprint(index):
            return None
        if not _checked(get_format(p.format).intact, path, man):
            return None
        return {**man, "resume_skipped": True, "resume_output_path": str(path)}

    def _item_complete_from_log(self, index: int, path: Path) -> dict[str, Any] | None:
        p = self.plan
        rec = self.log.get(("item", ITEM_KEY, index))
        if (
            rec is None
            or rec.get("status") != "ok"
            or rec.get("fp") != p.item_fingerprint(index)
            or not isinstance(rec.get("arrays"), dict)
            or not _checked(get_format(p.format).matches, path, rec["arrays"])
        ):
            return None
        # contract §2.17.3 (no sidecar), with the status the log recorded for the file
        return {
            "created_at": utc_ts(),
            "point_index": index,
            "name": p.names[index],
            "status": "ok",
            "stage": "resume",
            "reason": "output_exists",
            **place_record(p, index, self.device),
            "request_fingerprint": rec["fp"],
            "resume_skipped": True,
            "resume_output_path": str(path),
        }

    def combined_complete(self) -> dict[str, Any] | None:
        """The combined file's manifest when the file is complete for this request."""
        p = self.plan
        side = sidecar_path(p.out_path)
        final = self.state.folder / "final.json"
        for cand in (side, final):
            if not p.out_path.exists() or not cand.exists():
                continue
            try:
                man = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (
                isinstance(man, dict)
                and not man.get("resume_incomplete", True)
                and man.get("status") == "ok"
                and man.get("request_fingerprint") == p.run_fingerprint()
                and _checked(get_format(p.format).intact, p.out_path, man)
            ):
                return {**man, "resume_skipped": True, "resume_output_path": str(p.out_path)}
        return None


def _checked(check: Any, path: Any, expected: dict[str, Any]) -> bool:
    """A format's integrity check of ``path``; a file on an object store is read from a
    local copy (the format readers open local files); a directory store (Zarr) opens the
    URL itself."""
    if not is_remote(path) or getattr(check.__self__, "directory_store", False):
        return bool(check(path, expected))
    with local_copy(path) as local:
        return bool(check(Path(local), expected))


def place_record(plan: ExportPlan, index: int, device: str) -> dict[str, Any]:
    """The run and place fields of a per-item manifest that holds no model result (a file
    skipped on resume, a file that could not be written), in the contract's key order."""
    return {
        "backend": plan.backend,
        "device": device,
        "models": [],
        "spatial": jsonable(plan.spatials[index]),
        "temporal": jsonable(plan.temporal_of(index)),
        "output": jsonable(plan.output),
    }


def item_records(
    plan: ExportPlan, indices: Any, statuses: Any, manifests: dict[int, dict[str, Any]]
) -> list[Record]:
    """Log records of written ok per-item files: what resume checks when there is no sidecar."""
    recs = []
    for idx, status in zip(indices, statuses, strict=True):
        i = int(idx)
        man = manifests[i]
        if status == "write_failed" or man.get("status") != "ok":
            continue  # only a complete, ok file may be skipped on resume
        arrays: dict[str, Any] = {}
        for e in man.get("models", []):
            for k in ("input", "embedding"):
                ref = e.get(k)
                if isinstance(ref, dict) and "sha1" in ref and not ref.get("dedup_reused"):
                    arrays[ref["npz_key"]] = {"shape": ref["shape"], "sha1": ref["sha1"]}
        recs.append(
            Record(
                kind="item",
                key=ITEM_KEY,
                index=i,
                status="ok",
                fp=plan.item_fingerprint(i),
                arrays=arrays,
            )
        )
    return recs


__all__ = ["ITEM_KEY", "EarlierRun", "Sources", "Src", "item_records"]
