"""Input checks for ``fail_on_bad_input`` (contract §2.12): cheap, numpy only.

Flags arrays a model should not see: wrong shape, NaN/Inf, empty bands, mostly fill.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rs_embed_ray.specs import SensorSpec


def inspect_input(x: np.ndarray, sensor: SensorSpec) -> dict[str, Any]:
    """Return ``{"ok": bool, "issues": [...], "report": {...}}`` for a (C,H,W)/(T,C,H,W) array."""
    issues: list[str] = []
    arr = np.asarray(x)
    if arr.ndim == 4:
        finite_frames = [i for i in range(arr.shape[0]) if np.isfinite(arr[i]).any()]
        arr = arr[finite_frames[0]] if finite_frames else arr[0]
    if arr.ndim != 3:
        return {"ok": False, "issues": [f"expected 3 dims (C,H,W), got {arr.ndim}"], "report": {}}
    c, h, w = arr.shape
    if c != len(sensor.bands):
        issues.append(f"channel count {c} != {len(sensor.bands)} bands")
    if h <= 0 or w <= 0:
        issues.append(f"empty spatial size {h}x{w}")
        return {"ok": False, "issues": issues, "report": {}}
    flat = arr.reshape(c, -1)
    stride = max(1, flat.shape[1] * c // 1_500_000)
    flat = flat[:, ::stride]
    finite = np.isfinite(flat)
    finite_frac = float(finite.mean())
    if finite_frac < 0.999:
        issues.append(f"non-finite fraction {1 - finite_frac:.4f} > 0.001")
    fill_frac = float((flat == sensor.fill_value).mean())
    if fill_frac > 0.98:
        issues.append(f"fill_value fraction {fill_frac:.3f} > 0.98")
    stds = []
    for b in range(c):
        vals = flat[b][finite[b]]
        sd = float(vals.std()) if vals.size else float("nan")
        stds.append(sd)
        if not np.isfinite(sd) or sd < 1e-6:
            name = sensor.bands[b] if b < len(sensor.bands) else str(b)
            issues.append(f"band {name} is near-constant (std={sd:.3g})")
    report = {
        "shape": list(np.asarray(x).shape),
        "finite_frac": finite_frac,
        "fill_frac": fill_frac,
        "band_std": stds,
    }
    return {"ok": not issues, "issues": issues, "report": report}


# the key under which a fetched patch's inspection travels in its fetch meta
INSPECTION_META = "inspection"


def inspection_record(report: dict[str, Any], x: np.ndarray, sensor: SensorSpec) -> dict[str, Any]:
    """The ``input.inspection`` block of a manifest (contract §2.12): the report, the sensor
    inspected and which frame of a (T,C,H,W) input was looked at."""
    arr = np.asarray(x)
    frame = None
    if arr.ndim == 4:
        finite = [i for i in range(arr.shape[0]) if np.isfinite(arr[i]).any()]
        frame = finite[0] if finite else 0
    return {
        "ok": bool(report["ok"]),
        "issues": list(report.get("issues", [])),
        "report": report.get("report", {}),
        "sensor": {"collection": sensor.collection, "bands": list(sensor.bands)},
        "input_ndim": int(arr.ndim),
        "n_frames": int(arr.shape[0]) if arr.ndim == 4 else None,
        "inspected_frame": frame,
    }
