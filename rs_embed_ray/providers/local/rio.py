"""rasterio, or an ImportError that says which extra to install (the local backend's one
third-party dependency, imported here only)."""

from __future__ import annotations

try:
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform as rio_transform
    from rasterio.warp import transform_bounds
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the local backend needs rasterio ({exc}); pip install 'rs-embed-ray[local]'"
    ) from exc

__all__ = [
    "Affine",
    "NotGeoreferencedWarning",
    "Resampling",
    "WarpedVRT",
    "rasterio",
    "rio_transform",
    "transform_bounds",
]
