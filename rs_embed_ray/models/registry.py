"""Model id -> implementation, imported lazily; aliases; catalog facts for every id.

``get_info`` is cheap (no torch). ``load_embedder`` imports the model's module and builds it
(weights loaded once, in the constructor).
"""

from __future__ import annotations

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


def embedder_class(name: str) -> type[Embedder]:
    info = require_available(name)
    module_name, _, attr = IMPLEMENTATIONS[info.model_id].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_embedder(
    name: str,
    *,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    precision: str = "auto",
) -> Embedder:
    cls = embedder_class(name)
    return cls(device=device, weights=weights, model_config=model_config, precision=precision)
