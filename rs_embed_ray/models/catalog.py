"""The model catalog as data: ids, aliases, default sensors, dims, weight sources, status."""

from __future__ import annotations

from rs_embed_ray.models.base import ModelInfo
from rs_embed_ray.specs import SensorSpec

S2 = "COPERNICUS/S2_SR_HARMONIZED"

MODEL_ALIASES: dict[str, str] = {
    "gse_annual": "gse",
    "remoteclip_s2rgb": "remoteclip",
    "copernicus_embed": "copernicus",
    "satmae_rgb": "satmae",
    "satmaepp_rgb": "satmaepp",
    "satmae++": "satmaepp",
    "scalemae_rgb": "scalemae",
    "prithvi_eo_v2_s2_6b": "prithvi",
    "terrafm_b": "terrafm",
    "thor_1_0_base": "thor",
    "satvision_toa": "satvision",
}

# implemented ids -> "module:Class"
IMPLEMENTATIONS: dict[str, str] = {
    "remoteclip": "rs_embed_ray.models.remoteclip:RemoteCLIP",
}

CATALOG: dict[str, ModelInfo] = {
    "remoteclip": ModelInfo(
        model_id="remoteclip",
        status="available",
        sensor=SensorSpec(collection=S2, bands=("B4", "B3", "B2"), scale_m=10),
        image_size=224,
        dim_pooled=512,
        dim_grid=768,
        grid_hw=(7, 7),
        weights_source="hf:MVRL/remote-clip-vit-base-patch32/model.safetensors",
    ),
}
