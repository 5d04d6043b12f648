"""Torch helpers shared by the model implementations: device, autocast, strict loading.

Kept apart from ``base.py`` so the catalog and registry stay importable without torch.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rs_embed_ray.errors import ModelError, WeightsError

log = logging.getLogger(__name__)


def resolve_device(device: str | None) -> str:
    """``auto`` -> cuda when available, else cpu (mps is not used for batch export)."""
    import torch

    dev = (device or "auto").strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} was requested but CUDA is not available.")
    return dev


def autocast_dtype(device: str, precision: str) -> Any:
    """The autocast dtype for ``precision="auto"`` on CUDA (bf16 if supported, else fp16).

    None means plain float32 (CPU, or ``precision="float32"``).
    """
    import torch

    if precision != "auto" or not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: str, dtype: Any) -> AbstractContextManager[Any]:
    """``torch.autocast`` on CUDA with ``dtype``, or a no-op."""
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def precision_label(dtype: Any) -> str:
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def load_state_dict_file(path: str) -> dict[str, Any]:
    """Read a ``.safetensors`` or torch checkpoint into a flat ``{name: tensor}`` dict.

    Torch files load with ``weights_only=True`` (no pickled code runs); a dict wrapped under
    ``state_dict`` / ``model`` / ``module`` is unwrapped.
    """
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise WeightsError(f"Cannot read safetensors file {path}: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Cannot read checkpoint {path}: {exc}") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"Checkpoint {path} does not hold a state dict ({type(obj).__name__}).")
    return dict(obj)


def strip_prefix(
    sd: dict[str, Any], prefixes: tuple[str, ...] = ("model.", "module.")
) -> dict[str, Any]:
    """Drop a wrapper prefix when every key has it (``model.`` from PyTorchModelHubMixin)."""
    for pre in prefixes:
        if sd and all(k.startswith(pre) for k in sd):
            return {k[len(pre) :]: v for k, v in sd.items()}
    return sd


def load_strict(model: Any, sd: dict[str, Any], *, path: str) -> None:
    """``load_state_dict(strict=True)``; a mismatch names missing/extra/mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or bad:
        raise WeightsError(
            f"Checkpoint {path} does not match the architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected "
            f"(e.g. {extra[:3]}), {len(bad)} shape mismatches (e.g. {bad[:2]})."
        )
    model.load_state_dict(sd, strict=True)


__all__ = [
    "autocast_context",
    "autocast_dtype",
    "load_state_dict_file",
    "load_strict",
    "precision_label",
    "resolve_device",
    "strip_prefix",
]
