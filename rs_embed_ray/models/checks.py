"""Plan-time checks of a model request: ``model_config`` keys and variant, and an explicit
weights path (a folder must hold the model's file; a file must look like a checkpoint).

Cheap on purpose: no torch, no weights loaded; a checkpoint is judged by its header (the
safetensors JSON header, the zip directory of ``torch.save``, the pickle protocol byte).
"""

from __future__ import annotations

import importlib
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ModelError, WeightsError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_RANDOM = frozenset({"random", "random-init", "random_init"})
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _module(cls: type) -> Any:
    return importlib.import_module(cls.__module__)


def _variant(cls: type, cfg: dict[str, Any]) -> str | None:
    """The variant key the model will use (validated), or None when it has no variants."""
    mod = _module(cls)
    variants = getattr(mod, "VARIANTS", None)
    if not isinstance(variants, dict):
        return None
    norm = getattr(mod, "normalize_variant", None)
    if callable(norm):
        return str(norm(cfg.get("variant")))
    raw = cfg.get("variant")
    key = str(raw).strip().lower() if raw is not None else ("base" if "base" in variants else "")
    if key not in variants:
        raise ModelError(
            f"{cls.info.model_id}: unknown variant {raw!r}; choose one of {sorted(variants)}."
        )
    return key


def check_model_config(cls: Any, model_config: dict[str, Any] | None) -> None:
    if model_config is None:
        return
    if not isinstance(model_config, dict):
        raise ModelError(
            f"model_config of {cls.info.model_id!r} must be a mapping of options, got "
            f"{type(model_config).__name__}."
        )
    known = cls.CONFIG_KEYS
    if known is not None:
        unknown = sorted(set(model_config) - set(known))
        if unknown:
            hint = f"known: {sorted(known)}" if known else "it takes no options"
            raise ModelError(
                f"{cls.info.model_id}: unknown model_config key(s) {unknown} "
                f"(--model-config {cls.info.model_id}.{unknown[0]}=...); {hint}."
            )
    if "variant" in model_config:
        _variant(cls, model_config)


def _expected_files(cls: Any, cfg: dict[str, Any]) -> tuple[str, ...]:
    """The file name(s) a weights folder must hold for this model and config."""
    if cfg.get("filename"):
        return (str(cfg["filename"]),)
    mod = _module(cls)
    variant = _variant(cls, cfg)
    if variant is not None:
        spec = mod.VARIANTS[variant]
        if isinstance(spec, dict) and spec.get("file"):
            return (str(spec["file"]),)
    for attr in ("HF_FILENAMES", "HF_FILENAME", "WEIGHTS_FILENAME"):
        v = getattr(mod, attr, None)
        if isinstance(v, str):
            return (v,)
        if isinstance(v, tuple):
            return v
    return ()


def sniff_checkpoint(path: Path) -> str | None:
    """None when ``path`` starts like a checkpoint (safetensors, torch.save zip or pickle);
    else what it is not. Reads the header only."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"it is {len(head)} bytes long, not a checkpoint"
            if head[:4] == b"PK\x03\x04":
                try:
                    with zipfile.ZipFile(path) as zf:
                        names = zf.namelist()
                except (zipfile.BadZipFile, OSError) as exc:
                    return f"it is a damaged zip archive ({exc})"
                if not any(n.endswith("data.pkl") for n in names):
                    return "it is a zip archive without data.pkl, not a torch.save checkpoint"
                return None
            if head[0] == 0x80 and 2 <= head[1] <= 5:
                return None  # a legacy (pickle) torch.save file
            (n,) = struct.unpack("<Q", head)
            if 2 <= n <= _MAX_SAFETENSORS_HEADER:
                raw = fh.read(n)
                try:
                    header = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    header = None
                if isinstance(header, dict):
                    tensors = [k for k in header if k != "__metadata__"]
                    if not tensors:
                        return "it is a safetensors file without tensors"
                    return None
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return "it is neither a safetensors file nor a torch.save checkpoint"


def check_weights(cls: Any, weights: str | None, model_config: dict[str, Any] | None) -> None:
    info = cls.info
    if weights is None or str(weights).strip().lower() in _RANDOM:
        return
    if info.kind != "on_the_fly" or cls.CONFIG_KEYS == frozenset():
        return  # a product file (its own check_request) or a parameter-free model
    p = Path(str(weights)).expanduser()
    cfg = dict(model_config or {})
    if p.is_dir():
        files = _expected_files(cls, cfg)
        hits = [p / f for f in files if (p / f).is_file()]
        if files and not hits:
            raise WeightsError(
                f"weights for {info.model_id!r}: folder {str(p)!r} has no {' or '.join(files)}; "
                f"pass the checkpoint file itself or a folder holding it."
            )
        if not files:
            hits = [c for c in sorted(p.iterdir()) if c.suffix.lower() in CHECKPOINT_SUFFIXES]
            if not hits:
                raise WeightsError(
                    f"weights for {info.model_id!r}: folder {str(p)!r} holds no checkpoint "
                    f"({'/'.join(CHECKPOINT_SUFFIXES)})."
                )
        p = hits[0]
    if p.is_file():
        why = sniff_checkpoint(p)
        if why is not None:
            raise WeightsError(
                f"weights for {info.model_id!r}: {str(p)!r} is not a readable checkpoint: "
                f"{why}. Pass the model's checkpoint (or 'random')."
            )


__all__ = ["check_model_config", "check_weights", "sniff_checkpoint"]
