"""Model id -> implementation, imported lazily; aliases; catalog facts for every id.

``get_info`` is cheap (no torch). ``load_embedder`` imports the model's module and builds it
(weights loaded once, in the constructor).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedder, ModelInfo
from rs_embed_ray.models.catalog import CATALOG, IMPLEMENTATIONS, MODEL_ALIASES
from rs_embed_ray.models.spectral_stats import INFO as _SPECTRAL_STATS

# built-in baseline, outside rs-embed's catalog
CATALOG.setdefault("spectral_stats", _SPECTRAL_STATS)
IMPLEMENTATIONS.setdefault("spectral_stats", "rs_embed_ray.models.spectral_stats:SpectralStats")


def canonical_model_id(name: str) -> str:
    key = str(name).strip().lower()
    return MODEL_ALIASES.get(key, key)


def list_models() -> list[ModelInfo]:
    return [CATALOG[k] for k in sorted(CATALOG)]


def get_info(name: str) -> ModelInfo:
    """Catalog facts for a model id or alias; unknown ids raise ModelError listing the ids."""
    mid = canonical_model_id(name)
    info = CATALOG.get(mid)
    if info is None:
        raise ModelError(f"Unknown model {name!r}. Available: {', '.join(sorted(CATALOG))}")
    return info


def require_available(name: str) -> ModelInfo:
    info = get_info(name)
    if info.status != "available" or info.model_id not in IMPLEMENTATIONS:
        avail = sorted(k for k in CATALOG if CATALOG[k].status == "available")
        raise ModelError(
            f"Model {info.model_id!r} is in the catalog but not implemented yet. "
            f"Implemented: {', '.join(avail)}"
        )
    return info


def register_model(model_id: str, target: str, *, like: str) -> ModelInfo:
    """Add model ``model_id``, built by ``target`` ("module:Class"), with the catalog facts
    of model ``like`` (sensor, outputs, sizes): e.g. a test model that wraps a real one.

    Registration is seen only by this process: the plan carries the resolved target
    (``implementation_target``) to Ray's workers, which import it themselves."""
    module_name, sep, attr = str(target).partition(":")
    if not (module_name and sep and attr):
        raise ModelError(f"model target {target!r}: write it as 'module:Class'.")
    mid = canonical_model_id(model_id)
    info = dataclasses.replace(require_available(like), model_id=mid)
    CATALOG[mid] = info
    IMPLEMENTATIONS[mid] = str(target)
    return info


def implementation_target(name: str) -> str:
    """The "module:Class" that implements model ``name`` (ModelError when it has none)."""
    return IMPLEMENTATIONS[require_available(name).model_id]


def import_target(target: str) -> Any:
    """The object a "module:attr" target names, imported."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def embedder_class(name: str) -> type[Embedder]:
    return import_target(implementation_target(name))


def load_embedder(
    name: str,
    *,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    precision: str = "auto",
    target: str | None = None,
) -> Embedder:
    """Build model ``name``; from ``target`` ("module:Class", resolved in the driver by
    ``implementation_target``) when given, so a worker needs no registration of its own."""
    cls = import_target(target) if target else embedder_class(name)
    return cls(device=device, weights=weights, model_config=model_config, precision=precision)
