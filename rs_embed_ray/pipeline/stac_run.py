"""What the STAC writer (``io.stac``) is told of a finished run: the plan's request, the
models' weights as the manifests recorded them, and what the run measured (device, the wall
time of the stages that ran each model). No ray; credentials never."""

from __future__ import annotations

import platform
from typing import Any

from rs_embed_ray.io.manifest import jsonable, package_version, utc_ts
from rs_embed_ray.plan import ExportPlan

# the options recorded as ``emb:runtime_parameters`` (provider options are left out: they
# may hold credentials or endpoints)
_RUN_PARAMS = ("format", "layout", "dtype", "backend", "device", "save_inputs", "save_embeddings")


def _device_name(device: str) -> str:
    """The GPU's name (torch), else the CPU's model name (/proc/cpuinfo), else the platform."""
    if device.startswith("cuda"):
        try:
            import torch

            return str(torch.cuda.get_device_name(0))
        except Exception:  # no GPU visible in the driver: say what we know
            return "cuda"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _manifests(result: Any) -> Any:
    """The combined manifest as a one-element list, or the per-item manifests (read lazily:
    the first ones usually answer)."""
    return [result] if isinstance(result, dict) else result


def _weights(result: Any, name: str) -> dict[str, Any] | None:
    """The weights record of model ``name`` from the combined manifest or the first
    per-item manifest that has one."""
    for man in _manifests(result):
        for e in (man or {}).get("models", []):
            if e.get("model") == name and isinstance(e.get("weights"), dict):
                return e["weights"]
    return None


def _dim(result: Any, name: str) -> int | None:
    """Model ``name``'s vector length as written (the first array reference's shape)."""
    for man in _manifests(result):
        for e in (man or {}).get("models", []):
            ref = e.get("embeddings") or e.get("embedding") if e.get("model") == name else None
            shape = (ref or {}).get("shape") if isinstance(ref, dict) else None
            if shape:
                return int(shape[1] if "embeddings" in e else shape[0])
    return None


def stac_run(plan: ExportPlan, device: str, result: Any, stage_s: dict[str, float]) -> dict:
    """The ``run`` mapping :func:`rs_embed_ray.io.stac.write_stac` reads."""
    p = plan
    params = {k: getattr(p, k) for k in _RUN_PARAMS}
    params.update(
        output=jsonable(p.output),
        input_prep=jsonable(p.input_prep),
        precision=p.run.infer.precision,
        chunk_size=p.run.infer.batch_size,
        max_retries=p.run.retry.max_retries,
        models=[m.name for m in p.models],
    )
    energy_base = {"device_type": "gpu" if device.startswith("cuda") else "cpu"}
    energy_base["name"] = _device_name(device)
    models = []
    for m in p.models:
        energy = {**energy_base, "inference_duration_s": round(stage_s.get(m.key, 0.0), 3)}
        models.append(
            {
                "name": m.name,
                "key": m.key,
                "describe": m.info.describe(),
                "sensor": jsonable(m.sensor),
                "weights": _weights(result, m.name),
                "dim": _dim(result, m.name),
                "energy": energy,
            }
        )
    return {
        "layout": p.layout,
        "format": p.format,
        "ext": p.ext,
        "out_path": str(p.out_path),
        "names": p.names,
        "spatials": p.spatial_forms(),
        "temporal": jsonable(p.temporal),
        "temporals": p.temporal_forms(),
        "models": models,
        "output": jsonable(p.output),
        "input_prep": jsonable(p.input_prep),
        "dtype": p.dtype,
        "backend": p.backend,
        "source": p.provider_options.get("source"),
        "runtime_parameters": jsonable(params),
        "package_version": package_version(),
        "created": utc_ts(),
    }
