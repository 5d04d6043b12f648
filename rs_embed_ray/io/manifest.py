"""Manifest helpers: JSON-safe values, timestamps, array digests, fingerprints, status."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from datetime import UTC, datetime
from enum import Enum
from importlib import metadata
from typing import Any

import numpy as np

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.io.lazy import LazySequence


def jsonable(obj: Any) -> Any:
    """Turn specs, numpy values and containers into plain JSON values (contract §2.17.1)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Enum):
        return jsonable(obj.value)
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        finite = obj[np.isfinite(obj)] if obj.dtype.kind == "f" else obj
        return {
            "__ndarray__": True,
            "dtype": str(obj.dtype),
            "shape": list(obj.shape),
            "min": jsonable(finite.min()) if finite.size else None,
            "max": jsonable(finite.max()) if finite.size else None,
        }
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, LazySequence)):
        return [jsonable(v) for v in obj]
    return repr(obj)


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), ensure_ascii=False, indent=2)


def utc_ts() -> str:
    """UTC now, seconds precision, one 'Z' (the anchor wrote '+00:00Z')."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def array_sha1(arr: np.ndarray) -> str:
    """SHA-1 over dtype, shape and the whole C-ordered buffer (the anchor hashed 2 MB only)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha1()
    h.update(str(a.dtype).encode())
    h.update(str(tuple(a.shape)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def fingerprint(payload: Any) -> str:
    return fingerprint_plain(jsonable(payload))


def fingerprint_plain(payload: Any) -> str:
    """``fingerprint`` of a payload that is JSON-plain already (``jsonable``'s output, which
    ``jsonable`` leaves as it is): the driver's per-place fingerprints skip the walk."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def error_text(exc: BaseException) -> str:
    """How manifests record an error (contract §2.14, §2.17): ``repr(exc)``."""
    return repr(exc)


def prefetch_error(model: str, index: int, sensor: str | None, err: Any) -> str:
    """A model's error for a place whose fetch failed, in rs-embed's words (Appendix A)."""
    return error_text(
        ProviderError(
            f"Prefetch previously failed for model={model}, index={index}, sensor={sensor}: {err}"
        )
    )


def summarize_status(statuses: list[str]) -> str:
    """Contract §2.17.6: ok unless something failed or is partial."""
    if not statuses:
        return "ok"
    bad = [s for s in statuses if s in ("failed", "partial")]
    if not bad:
        return "ok"
    failed = sum(1 for s in statuses if s == "failed")
    return "failed" if failed == len(statuses) else "partial"


def package_version() -> str | None:
    try:
        return metadata.version("rs-embed-ray")
    except metadata.PackageNotFoundError:
        return None
