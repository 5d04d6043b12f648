"""The model catalog as data: ids, aliases, default sensors, dims, weight sources, status.

All 20 canonical ids of rs-embed's catalog are listed (spec providers_and_models.md §3), so
``models`` can describe them and a request for an unimplemented one fails with a clear
message. ``status="available"`` only where ``IMPLEMENTATIONS`` has a class. Importing this
module is cheap: no torch, no weights.

``weights_source`` spelling: ``hf:<repo>/<file>`` (a Hugging Face model repo file),
``hf-dataset:<repo>/<file>@<rev>``, ``gee:<collection>``, ``url:...``, ``gdrive:<id>``,
``dropbox:<file>``, or a short phrase. Multi-temporal models whose frame count is decided at
run time (galileo, prithvi, olmoearth) record their maximum as ``n_frames``; their notes say
how the count is chosen.
"""

from __future__ import annotations

from rs_embed_ray.models.base import ModelInfo
from rs_embed_ray.specs import SensorSpec

S2 = "COPERNICUS/S2_SR_HARMONIZED"
S1_FLOAT = "COPERNICUS/S1_GRD_FLOAT"
GSE = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
MODIS_SR = "MODIS/061/MOD09GA"

S2_RGB = ("B4", "B3", "B2")
S2_10 = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
GSE_BANDS = tuple(f"A{i:02d}" for i in range(64))

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
    "dofa": "rs_embed_ray.models.dofa:DOFA",
    "prithvi": "rs_embed_ray.models.prithvi:Prithvi",
    "satmae": "rs_embed_ray.models.satmae:SatMAE",
    "satmaepp": "rs_embed_ray.models.satmaepp:SatMAEPP",
    "scalemae": "rs_embed_ray.models.scalemae:ScaleMAE",
    "gse": "rs_embed_ray.models.gse:GoogleSatelliteEmbedding",
    "clay": "rs_embed_ray.models.clay:Clay",
    "copernicus": "rs_embed_ray.models.copernicus:CopernicusEmbed",
    "terrafm": "rs_embed_ray.models.terrafm:TerraFM",
    "olmoearth": "rs_embed_ray.models.olmoearth:OlmoEarth",
    "galileo": "rs_embed_ray.models.galileo:Galileo",
    "terramind": "rs_embed_ray.models.terramind:TerraMind",
    "thor": "rs_embed_ray.models.thor:Thor",
    "fomo": "rs_embed_ray.models.fomo:FoMo",
    "anysat": "rs_embed_ray.models.anysat:AnySat",
    "agrifm": "rs_embed_ray.models.agrifm:AgriFM",
    "tessera": "rs_embed_ray.models.tessera:Tessera",
    "wildsat": "rs_embed_ray.models.wildsat:WildSAT",
    "satvision": "rs_embed_ray.models.satvision:SatVision",
}


def _s2(bands: tuple[str, ...], scale_m: int = 10) -> SensorSpec:
    return SensorSpec(collection=S2, bands=bands, scale_m=scale_m)


CATALOG: dict[str, ModelInfo] = {
    # ---- precomputed products -----------------------------------------------------------
    "gse": ModelInfo(
        model_id="gse",
        status="available",
        kind="precomputed",
        sensor=SensorSpec(
            collection=GSE,
            bands=GSE_BANDS,
            scale_m=10,
            cloudy_pct=None,
            fill_value=-9999.0,
            composite="mosaic",
        ),
        dim_pooled=64,
        dim_grid=64,
        weights_source=f"gee:{GSE}",
        notes="Annual 64-D product fetched as pixels; -9999 -> NaN, nanmean/nanmax pooling "
        "(all-nodata ROI raises); grid = the 64 x H x W pixels on the 3857 lattice with NaN "
        "kept (model_config grid_nodata fills them); year temporal; no tiling.",
    ),
    "tessera": ModelInfo(
        model_id="tessera",
        status="available",
        kind="precomputed",
        sensor=None,
        dim_pooled=128,
        dim_grid=128,
        weights_source="geotessera tile folder (weights / model_config cache_dir / "
        "RS_EMBED_TESSERA_CACHE)",
        notes="128-D at 10 m from a local geotessera tile folder (int8 npy * scales, UTM "
        "landmask GeoTIFFs; no download), resampled (nearest) onto the EPSG:3857 10 m grid "
        "(model_config grid provider|common_grid); year temporal, default 2021; mean/max "
        "pooling; grid = 128 x H x W pixels with transform.",
    ),
    "copernicus": ModelInfo(
        model_id="copernicus",
        status="available",
        kind="precomputed",
        sensor=None,
        dim_pooled=768,
        dim_grid=768,
        weights_source="hf-dataset:torchgeo/copernicus_embed/embed_map_310k.tif"
        "@435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb",
        notes="768-D global grid at 0.25 deg (EPSG:4326), read by windows from the product "
        "file (no fetch, no forward; any backend); year 2021 only (checked at plan time); "
        "BBox window rounded outward, PointBuffer in ground metres; ROI < 1 cell raises; "
        "nanmean/nanmax pooling; grid = 768 x H x W cells north-up with NaN kept.",
    ),
    # ---- RGB models -----------------------------------------------------------------------
    "remoteclip": ModelInfo(
        model_id="remoteclip",
        status="available",
        sensor=_s2(S2_RGB),
        image_size=224,
        dim_pooled=512,
        dim_grid=768,
        grid_hw=(7, 7),
        weights_source="hf:MVRL/remote-clip-vit-base-patch32/model.safetensors",
        notes="open_clip ViT-B-32; pooled = encode_image (not L2-normalised); grid = last "
        "block patch tokens before ln_post.",
    ),
    "satmae": ModelInfo(
        model_id="satmae",
        status="available",
        sensor=_s2(S2_RGB),
        image_size=224,
        dim_pooled=1024,
        dim_grid=1024,
        grid_hw=(14, 14),
        weights_source="hf:MVRL/satmae-vitlarge-fmow-pretrain-800/model.safetensors",
        notes="MAE ViT-L/16 (timm); uint8 -> bicubic 224 (no crop) -> fMoW RGB norm; mean of "
        "patch tokens after the final norm; grid in spatial order (no MAE shuffle); "
        "image-level ViT grid (tiling can show seams).",
    ),
    "satmaepp": ModelInfo(
        model_id="satmaepp",
        status="available",
        sensor=_s2(S2_RGB),
        image_size=224,
        dim_pooled=1024,
        dim_grid=1024,
        grid_hw=(14, 14),
        weights_source="hf:MVRL/satmaepp_ViT-L_pretrain_fmow_rgb/model.safetensors",
        variants=("rgb", "s2_10b"),
        notes="rgb (default, implemented): MAE ViT-L/16 (timm); uint8 -> fMoW norm -> float "
        "bicubic 224 (no crop); channel_order rgb|bgr; mean of patch tokens; image-level ViT "
        "grid. s2_10b (not implemented): bands B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12 at 96 px, "
        "patch 8, grouped channels (1024x12x12).",
    ),
    "scalemae": ModelInfo(
        model_id="scalemae",
        status="available",
        sensor=_s2(S2_RGB),
        image_size=224,
        dim_pooled=1024,
        dim_grid=1024,
        grid_hw=(14, 14),
        weights_source="hf:MVRL/scalemae-vitlarge-800/model.safetensors",
        notes="ViT-L/16 with GSD-scaled sin-cos pos-embed; input_res = scale_m * short_side "
        "/ 224; ImageNet norm; tokens are the last block's (rshf fc_norm = identity).",
    ),
    "wildsat": ModelInfo(
        model_id="wildsat",
        status="available",
        sensor=_s2(S2_RGB),
        image_size=224,
        dim_pooled=256,
        dim_grid=768,
        grid_hw=(14, 14),
        weights_source="gdrive:1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE (vitb16-imagenet-bnfc.pth)",
        variants=("vitb16", "resnet50", "swint"),
        notes="vitb16 (default; resnet50 / swint: torchvision resnet50 / swin_t, grid = the "
        "pooled vector as 1x1): torchvision vit_b_16 (1000-way head kept) + "
        "the image head decoder.backbone3 (1000->256) rebuilt from the file, strict load; "
        "clip/10000, one min-max over the tile, uint8, Pillow bicubic 224, /255 (no mean/std); "
        "pooled = image head (ROI-token mean, 768-D, for a squared rectangle), grid = ViT "
        "patch tokens.",
    ),
    # ---- multispectral single-frame ---------------------------------------------------------
    "dofa": ModelInfo(
        model_id="dofa",
        status="available",
        sensor=_s2(("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")),
        image_size=224,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(14, 14),
        weights_source="hf:earthflow/DOFA/DOFA_ViT_base_e100.pth",
        variants=("base", "large"),
        notes="Wavelength-conditioned patch embed; pooled = fc_norm(mean patch tokens); "
        "large = 1024-D.",
        code_version=2,  # 2: the generated patch kernel in the official (C, k, k, D) layout
    ),
    "clay": ModelInfo(
        model_id="clay",
        status="available",
        sensor=_s2(S2_10),
        image_size=256,
        dim_pooled=1024,
        dim_grid=1024,
        grid_hw=(32, 32),
        weights_source="hf:made-with-clay/Clay/v1.5/clay-v1.5.ckpt",
        notes="Clay v1.5 large, patch 8; (DN-mean)/std (v1.5 metadata), pad square, bilinear "
        "256; side inputs: wavelengths, lat/lon (needs georef), window-midpoint week, gsd; "
        "CLS pooled (ROI: mean of cropped tokens); recipe=rs_embed: rs-embed's gsd.",
    ),
    "terrafm": ModelInfo(
        model_id="terrafm",
        status="available",
        sensor=SensorSpec(collection=S2, bands=S2_12, scale_m=10, modality="s2"),
        image_size=224,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(14, 14),
        weights_source="hf:MBZUAI/TerraFM/TerraFM-B.pth",
        notes=f"ViT-B/16 with 12-ch S2 (L1C stem by default, as the official forward; "
        f"s2_stem='l2a') and 2-ch S1 stems chosen by channel count; "
        f"S2 DN/10000, S1 = VV,VH from {S1_FLOAT} (log1p/p99, pass an S1 sensor); bilinear "
        "224; CLS pooled (ROI: mean of cropped tokens); grid = final-norm patch tokens.",
        code_version=2,  # 2: LayerNorm eps 1e-6 as terrafm_base; default S2 stem l1c
    ),
    "terramind": ModelInfo(
        model_id="terramind",
        status="available",
        sensor=_s2(S2_12),
        image_size=224,
        dim_pooled=384,
        dim_grid=384,
        grid_hw=(14, 14),
        weights_source="hf:ibm-esa-geospatial/TerraMind-1.0-small/TerraMind_v1_small.pt",
        variants=("tiny", "small", "base", "large"),
        notes="TerraMind v1 small encoder on raw S2L2A, v1 z-score; mean of tokens.",
    ),
    "fomo": ModelInfo(
        model_id="fomo",
        status="available",
        sensor=_s2(S2_12),
        image_size=64,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(4, 4),
        weights_source="dropbox:fomo_single_embedding_layer_weights.pt",
        notes=(
            "FoMo-Net_1 MultiSpectralViT (patch 16, one embedding layer, S2 spectral keys "
            "6-15,17,18), DN/10000, 64 px; pooled = mean of all band tokens, grid = tokens "
            "averaged over bands."
        ),
    ),
    "thor": ModelInfo(
        model_id="thor",
        status="available",
        sensor=SensorSpec(collection=S2, bands=S2_10, scale_m=10, modality="s2"),
        image_size=288,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(36, 36),
        weights_source="hf:FM4CS/THOR-1.0-base/thor_v1_vit_base.pt",
        variants=("tiny", "small", "base", "large"),
        notes=(
            "FlexiViT patch 8 with GSD groups (10/20 m), ALiBi; S2 DN/10000 then THOR z-score, "
            "288 fixed (resize_mode=native_snap: rs-embed's snap); grid = group grids "
            f"upsampled to the finest and averaged; S1 = VV,VH from {S1_FLOAT} (log1p/p99)."
        ),
    ),
    "satvision": ModelInfo(
        model_id="satvision",
        status="available",
        # LST_1KM comes from a second collection, MOD21A1D (sensors.COMPANION_BANDS)
        sensor=SensorSpec(
            collection=MODIS_SR,
            bands=(
                "sur_refl_b01",
                "sur_refl_b02",
                "sur_refl_b03",
                "sur_refl_b04",
                "sur_refl_b06",
                "sur_refl_b07",
                "LST_1KM",
            ),
            scale_m=1000,
            cloudy_pct=None,
            composite="mosaic",
        ),
        image_size=128,
        dim_pooled=4096,
        dim_grid=4096,
        grid_hw=(4, 4),
        weights_source="hf:nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128",
        notes="SwinV2-giant, 14 MODIS channels (MOD09GA reflectance + MOD21A1D LST_1KM proxy).",
    ),
    # ---- multi-temporal ---------------------------------------------------------------------
    "prithvi": ModelInfo(
        model_id="prithvi",
        status="available",
        sensor=_s2(("B2", "B3", "B4", "B8A", "B11", "B12"), scale_m=30),
        temporal_mode="multi",
        n_frames=4,
        image_size=224,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(14, 14),
        weights_source="hf:ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL/Prithvi_EO_V2_100M_TL.pt",
        variants=("prithvi_eo_v2_100_tl", "prithvi_eo_v2_300_tl", "prithvi_eo_v2_600_tl"),
        code_version=2,  # 2: inputs z-scored with the published mean/std (upstream recipe)
        notes="Fetched as 4 equal bins over the window; bit-identical (back-filled) frames "
        "dropped, so T is 1..4 (rs-embed's T = clamp(days // 28, 1, 4) is not applied); "
        "temporal coords = bin midpoints, location = place centre (needs georef); "
        "grid = mean over frames; 600_tl variant: 1280-D, 16x16.",
    ),
    "galileo": ModelInfo(
        model_id="galileo",
        status="available",
        sensor=_s2(S2_10),
        temporal_mode="multi",
        n_frames=12,
        frame_bins="30d",
        image_size=64,
        dim_pooled=128,
        dim_grid=128,
        grid_hw=(8, 8),
        weights_source="hf:nasaharvest/galileo/models/nano/encoder.pt",
        notes="Galileo nano encoder (ported; strict load of models/nano/encoder.pt + "
        "config.json), patch 8 at 64 px; explicit 30-day bins from the window start (<= 12, a "
        "longer window in 12 equal bins), empty bins masked; months = bin midpoints. recipe "
        "upstream (default): 2-sigma pretraining normalisation, NDVI group, real pixel size "
        "after the resize; recipe rs_embed: raw DN, NDVI masked, 10 m assumed. pooled = mean "
        "of visible tokens; grid = per-patch mean of visible tokens.",
    ),
    "anysat": ModelInfo(
        model_id="anysat",
        status="available",
        sensor=_s2(S2_10),
        temporal_mode="multi",
        n_frames=8,
        image_size=24,
        dim_pooled=768,
        dim_grid=1536,
        grid_hw=(24, 24),
        weights_source="hf:g-astruc/AnySat/models/AnySat.pth",
        notes="AnySat base, S2 path ported (strict load of AnySat.pth; the other modalities' "
        "projectors checked and set aside); T=8 equal bins, s2_dates = day of year of the bin "
        "midpoints; per-tile z-score over (T,H,W), resize to 24 px, patch = scale_m metres "
        "(multiple of 10). pooled = mean of the patch grid (pooled_source='tile': the class "
        "token); grid = dense 1536-D at 24x24 (grid_feature_mode='patch': 768-D patch tokens).",
    ),
    "agrifm": ModelInfo(
        model_id="agrifm",
        status="available",
        sensor=_s2(S2_10),
        temporal_mode="multi",
        n_frames=8,
        image_size=224,
        dim_pooled=1024,
        dim_grid=1024,
        grid_hw=(14, 14),
        weights_source="url:https://glass.hku.hk/casual/AgriFM/AgriFM.pth",
        notes="AgriFM Video-Swin encoder (ported; strict load of AgriFM.pth, S2_patch_emd "
        "renamed, other sensors' stems set aside); T=8 equal bins (a single composite "
        "repeated to 8); AgriFM S2 z-score, reflect pad to square, bilinear 224. recipe "
        "upstream (default): no clip, antialiased resize; recipe rs_embed: clip 0..10000, "
        "no antialias. pooled = mean of the grid; grid = encoder features (cat fusion, one "
        "frame left at the last stage): 1024x14x14 at 224, cropped to the ROI.",
    ),
    "olmoearth": ModelInfo(
        model_id="olmoearth",
        status="available",
        sensor=SensorSpec(
            collection=S2,
            bands=("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12", "B1", "B9"),
            scale_m=10,
            modality="s2",
        ),
        temporal_mode="multi",
        n_frames=12,
        frame_bins="30d",
        image_size=256,
        dim_pooled=768,
        dim_grid=768,
        grid_hw=(64, 64),
        weights_source="hf:allenai/OlmoEarth-v1_2-Base/weights.pth",
        variants=(
            "base_v1_2",
            "small_v1_2",
            "tiny_v1_2",
            "nano_v1_2",
            "base_v1_1",
            "tiny_v1_1",
            "nano_v1_1",
            "large_v1",
            "base_v1",
            "tiny_v1",
            "nano_v1",
        ),
        notes="olmoearth-pretrain-minimal LatentMIM encoder (config.json + weights.pth); "
        "explicit 30-day bins from the window start (<= 12, a longer window in 12 equal "
        "bins), empty bins fetched as NaN frames and dropped; Normalizer(std 2), reflect "
        "pad to square, bilinear 256, FlexiViT patch 4 (model_config patch_size/image_size); "
        "timestamps = bin starts; pooled = mean of tokens over H,W,T,band sets, grid = mean "
        "over T and band sets. S2 only here (rs-embed's S1 dB modality is not ported).",
    ),
}

CATALOG_IDS: tuple[str, ...] = (
    "gse",
    "remoteclip",
    "copernicus",
    "tessera",
    "satmae",
    "satmaepp",
    "scalemae",
    "anysat",
    "galileo",
    "wildsat",
    "prithvi",
    "terrafm",
    "terramind",
    "dofa",
    "fomo",
    "thor",
    "agrifm",
    "satvision",
    "olmoearth",
    "clay",
)
