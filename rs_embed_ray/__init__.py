"""rs-embed-ray: export remote-sensing foundation-model embeddings at scale on Ray."""

from rs_embed_ray.api import export_batch, export_npz, plan_export
from rs_embed_ray.errors import (
    ExportStopped,
    ModelError,
    ProviderError,
    RSEmbedRayError,
    SpecError,
)
from rs_embed_ray.options import (
    ExportConfig,
    ExportLayout,
    ExportModelRequest,
    ExportOptions,
    ExportTarget,
)
from rs_embed_ray.specs import (
    BBox,
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)


def load_export(path, **kwargs):
    """Read an export (either layout, either format); see rs_embed_ray.io.load."""
    from rs_embed_ray.io.load import load_export as _load

    return _load(path, **kwargs)


__all__ = [
    "BBox",
    "ExportConfig",
    "ExportLayout",
    "ExportModelRequest",
    "ExportOptions",
    "ExportStopped",
    "ExportTarget",
    "FetchSpec",
    "InputPrepSpec",
    "ModelError",
    "OutputSpec",
    "PointBuffer",
    "ProviderError",
    "RSEmbedRayError",
    "SensorSpec",
    "SpecError",
    "TemporalSpec",
    "export_batch",
    "export_npz",
    "load_export",
    "plan_export",
]
