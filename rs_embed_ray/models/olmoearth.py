"""OlmoEarth v1.2 Base (default) on 12 Sentinel-2 bands, up to 12 monthly frames: pooled 768-D,
grid 768x64x64.

Why this model: OlmoEarth is the catalog's long multi-temporal model (30-day steps, up to a
year) and a FlexiViT, so patch size and input size are free (``model_config``).

Architecture and weights come from the ``olmoearth-pretrain-minimal`` package (nothing is
re-implemented here). The published HF repos (``allenai/OlmoEarth-v1_2-Base`` etc.) hold two
files, as the package's ``model_loader`` reads them: ``config.json`` (the full training
config; its ``"model"`` section is the package's ``LatentMIMConfig``) and ``weights.pth``
(``torch.save`` of the whole ``LatentMIM`` state dict: ``encoder.*``, ``decoder.*``,
``target_encoder.*``). The loader here does what ``load_model_from_path`` does, with our
weights resolution and a strict key check that names what does not match:

1. ``weights.pth`` via ``models.weights.resolve_weights`` (explicit path/dir,
   ``RS_EMBED_RAY_WEIGHTS_DIR``, HF cache, download that fails fast offline); its
   ``config.json`` next to it, else resolved the same way;
2. ``Config.from_dict(config["model"]).build()`` (the package's config classes), encoder
   inputs restricted to the modalities the package registers for the model id;
3. ``torch.load(weights_only=True)``, the package's training-only heads dropped,
   ``load_state_dict(strict=True)``; only the encoder is kept.

``weights="random"`` builds the same network from the package's published v1.2 config
(``published_v12_config``; other versions from the package's ``OlmoEarthPretrain_v1``
builder) and records ``random-init``.

Input: S2 ``B2,B3,B4,B8,B5,B6,B7,B8A,B11,B12,B1,B9`` (the package's ``sentinel2_l2a`` band
order) at 10 m, (C,H,W) or (T,C,H,W) raw DN. Frames: the catalog fetches fixed 30-day bins
anchored at the window start (at most 12; a longer window is divided equally into 12), each
an independent composite; a bin without imagery arrives as an all-NaN frame and is dropped
here (at least one frame must have data). Timestamps are ``(day, month0, year)`` of each kept
bin's start (``fetch_meta["frames"]``, else the same bins recomputed from the window).

Preprocessing (spec §3a): ``Normalizer(std_multiplier=2.0).normalize`` per band (the
package's mean +/- 2 std range), NaN pixels -> 0; per frame a square by reflect padding
(``shape_adjust="pad"``; edge padding when the short side is at most half the long one) or a
centre crop (``"crop"``); bilinear resize to ``image_size`` (256; ``align_corners=False``).
Forward: the encoder with ``patch_size`` (4), all tokens visible (``fast_pass``). Outputs:
pooled = ``pool_unmasked_tokens`` mean (or max) over H, W, T and band sets (1 band set for
S2 in v1.1+, 3 in v1); grid = mean over T and band sets, ``(D, image_size/patch,
image_size/patch)``. A padded or ROI-windowed input has its grid cropped back to the real
area before pooling. One forward per distinct frame count in a batch.

``modality="s1"`` (an export's ``modality=`` or ``model_config["modality"]``): the package's
``sentinel1`` input instead, VV,VH in dB from ``COPERNICUS/S1_GRD`` (the package's S1
statistics are in dB), same 30-day-bin timeline, same normaliser, pad/resize, forward and
reductions (S1 has one band set). A linear fetch (``use_float_linear`` / ``S1_GRD_FLOAT``;
the planner then sets ``model_config["s1_units"]="linear"``) is converted first with
``10 log10(max(x, 1e-10))``, as olmoearth_pretrain's ``convert_to_db`` and rs-embed do.

``model_config``: ``variant`` (default ``base_v1_2``; see ``VARIANTS``), ``patch_size`` (1..8),
``image_size``, ``shape_adjust`` (``pad``/``crop``), ``hf_repo``, ``hf_revision``,
``modality`` (``s2``/``s1``), ``s1_units`` (``db``/``linear``).
"""

from __future__ import annotations

import json
import logging
import warnings
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.preprocess import (
    RoiWindow,
    as_tchw,
    compose_window,
    roi_is_full,
    roi_token_box,
)
from rs_embed_ray.models.preprocess import roi_window_from_meta as _roi_from_meta
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    load_state_dict_file,
)
from rs_embed_ray.models.weights import file_sha256, resolve_weights
from rs_embed_ray.specs import TemporalSpec, fixed_day_bins, window_of

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "weights.pth"
DEFAULT_VARIANT = "base_v1_2"
DEFAULT_IMAGE_SIZE = 256
DEFAULT_PATCH_SIZE = 4
FRAME_DAYS = 30
MAX_FRAMES = 12
IN_CHANS = 12
MODALITY = "sentinel2_l2a"
# the package's sentinel2_l2a band order; our S2 band names, same order
S2_BANDS_MODEL = (
    "B02",
    "B03",
    "B04",
    "B08",
    "B05",
    "B06",
    "B07",
    "B8A",
    "B11",
    "B12",
    "B01",
    "B09",
)
S2_BANDS = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12", "B1", "B9")
# modality="s1": the package's sentinel1 (band order vv, vh; its statistics are in dB)
S1_BANDS = ("VV", "VH")
S1_MODALITY = "sentinel1"
MODALITIES = ("s2", "s1")
S1_UNITS = ("db", "linear")


def s1_linear_to_db(x: np.ndarray) -> np.ndarray:
    """Linear backscatter -> dB: ``10 log10(max(x, 1e-10))`` (olmoearth_pretrain's
    ``convert_to_db``, as rs-embed applies it); NaN stays NaN."""
    return (10.0 * np.log10(np.clip(x, 1e-10, None))).astype(np.float32)


def parse_modality(cfg: dict[str, Any] | None) -> tuple[str, str]:
    """(``model_config["modality"]`` ``s2``|``s1``, ``s1_units`` ``db``|``linear``)."""
    cfg = cfg or {}
    m = str(cfg.get("modality") or "s2").strip().lower().replace("-", "_")
    m = {"sentinel2": "s2", "sentinel_2": "s2", "sentinel1": "s1", "sentinel_1": "s1"}.get(m, m)
    if m not in MODALITIES:
        raise ModelError(
            f"olmoearth: model_config['modality']={cfg.get('modality')!r} is not one of "
            f"{list(MODALITIES)}."
        )
    units = str(cfg.get("s1_units") or "db").strip().lower()
    if units not in S1_UNITS:
        raise ModelError(
            f"olmoearth: model_config['s1_units']={cfg.get('s1_units')!r} is not one of "
            f"{list(S1_UNITS)}."
        )
    return m, units


# training-only heads the package's loader drops before loading (model_loader.py)
TRAINING_ONLY_PREFIXES = ("supervision_head.", "location_token_distillation_head.")

VARIANTS: dict[str, dict[str, Any]] = {
    f"{size}_{ver}": {
        "model_id": f"OlmoEarth-{ver}-{size.capitalize()}",
        "repo": f"allenai/OlmoEarth-{ver}-{size.capitalize()}",
        "size": size,
        "version": ver.replace("_", "."),
        "embed_dim": dim,
    }
    for ver, sizes in (
        ("v1", {"nano": 128, "tiny": 192, "base": 768, "large": 1024}),
        ("v1_1", {"nano": 128, "tiny": 192, "base": 768}),
        ("v1_2", {"nano": 128, "tiny": 192, "small": 384, "base": 768}),
    )
    for size, dim in sizes.items()
}
# rs-embed's spellings: a bare size is v1 (small exists only in v1.2); base_12 = base_v1_2
_ALIASES = {
    **{s: f"{s}_v1" for s in ("nano", "tiny", "base", "large")},
    "small": "small_v1_2",
    **{
        f"{k.split('_', 1)[0]}_{k.split('_', 1)[1][1:].replace('_', '')}": k
        for k in VARIANTS
        if k.count("_") > 1
    },
}

# v1.2 architecture per size as published (encoder_config of the HF config.json files)
_V12_SIZES: dict[str, dict[str, Any]] = {
    "nano": {"dim": 128, "depth": 4, "heads": 8, "hidden": [12]},
    "tiny": {"dim": 192, "depth": 12, "heads": 3, "hidden": [64]},
    "small": {"dim": 384, "depth": 12, "heads": 6, "hidden": [64]},
    "base": {"dim": 768, "depth": 12, "heads": 12, "hidden": [64]},
}
# the size sweep's runs record 1/30; the Base release records 0.0333 (a rounded override)
_V12_TEMPORAL_SCALE = {"nano": 1.0 / 30.0, "tiny": 1.0 / 30.0, "small": 1.0 / 30.0, "base": 0.0333}
_V12_MODALITIES = [
    "sentinel2_l2a",
    "sentinel1",
    "landsat",
    "worldcover",
    "srtm",
    "openstreetmap_raster",
    "wri_canopy_height_map",
    "cdl",
    "worldcereal",
]
_DECODE_ONLY = [
    "worldcover",
    "srtm",
    "openstreetmap_raster",
    "wri_canopy_height_map",
    "cdl",
    "worldcereal",
]
_LANDSAT_GROUP = ["B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"]


def normalize_variant(name: Any) -> str:
    """``base_v1_2`` / ``OlmoEarth-v1_2-Base`` / ``base_12`` / ``nano`` (v1) -> a VARIANTS key."""
    raw = str(name or DEFAULT_VARIANT).strip().lower().replace("-", "_").replace(".", "_")
    if raw.startswith("olmoearth_"):  # an HF model id: olmoearth_v1_2_base
        ver, _, size = raw[len("olmoearth_") :].rpartition("_")
        raw = f"{size}_{ver}"
    key = _ALIASES.get(raw, raw)
    if key not in VARIANTS:
        raise ModelError(
            f"Unknown olmoearth variant {name!r}; choose one of {sorted(VARIANTS)} "
            "(or an HF model id such as 'OlmoEarth-v1_2-Base')."
        )
    return key


def _tokenization() -> dict[str, Any]:
    def group(bands: list[str]) -> dict[str, Any]:
        return {
            "_CLASS_": "olmoearth_pretrain.nn.tokenization.ModalityTokenization",
            "band_groups": [list(bands)],
        }

    return {
        "_CLASS_": "olmoearth_pretrain.nn.tokenization.TokenizationConfig",
        "overrides": {"landsat": group(_LANDSAT_GROUP), "sentinel2_l2a": group(S2_BANDS_MODEL)},
    }


def published_v12_config(variant: str = DEFAULT_VARIANT) -> dict[str, Any]:
    """The ``model`` + masking sections of a published v1.2 ``config.json`` for ``variant``.

    Written from the published files' structure (``allenai/olmoearth_pretrain_minimal``
    ships the Nano one as a test artifact): the package's ``LatentMIMConfig`` with an
    ``EncoderConfig`` and a 4-block ``PredictorConfig``, mixed 3-D RoPE, one S2 band group.
    Its encoder holds exactly the tensor inventory recorded for each release (Base: 222
    encoder tensors of the three encoder-input modalities, 94,513,984 values). The training
    sections (optimiser, data paths, launch) are left out: the loader does not read them.
    """
    v = VARIANTS[normalize_variant(variant)]
    if v["version"] != "v1.2":
        raise ModelError(f"published_v12_config covers v1.2 variants only, not {variant!r}.")
    a = _V12_SIZES[v["size"]]
    common = {
        "learnable_channel_embeddings": True,
        "max_sequence_length": 12,
        "mlp_ratio": 4.0,
        "num_heads": a["heads"],
        "qk_norm": False,
        "random_channel_embeddings": False,
        "rope_base": 10000.0,
        "rope_coordinate_scale": 1.0,
        "rope_mixed_base": 10.0,
        "rope_temporal_coordinate_scale": _V12_TEMPORAL_SCALE[v["size"]],
        "spatial_pos_encoding": "rope_3d_mixed",
        "supported_modality_names": list(_V12_MODALITIES),
        "temporal_rope_dim_frac": 0.25,
        "tokenization_config": _tokenization(),
        "use_flash_attn": False,
    }
    encoder = {
        "_CLASS_": "olmoearth_pretrain.nn.flexi_vit.EncoderConfig",
        **common,
        "aggregate_then_project": True,
        "band_dropout_modalities": ["sentinel2_l2a", "landsat"],
        "band_dropout_rate": 0.2,
        "depth": a["depth"],
        "drop_path": 0.1,
        "embedding_size": a["dim"],
        "frozen_patch_embeddings": False,
        "log_token_norm_stats": False,
        "max_patch_size": 8,
        "min_patch_size": 1,
        "num_projection_layers": 1,
        "num_register_tokens": 0,
        "patch_embed_hidden_sizes": list(a["hidden"]),
        "random_band_dropout": True,
        "use_linear_patch_embed": True,
    }
    decoder = {
        "_CLASS_": "olmoearth_pretrain.nn.flexi_vit.PredictorConfig",
        **common,
        "decoder_embedding_size": a["dim"],
        "depth": 4,
        "drop_path": 0.0,
        "encoder_embedding_size": a["dim"],
    }
    masking = {
        "_CLASS_": "olmoearth_pretrain.train.masking.MaskingConfig",
        "strategy_config": {
            "decode_ratio": 0.5,
            "encode_ratio": 0.5,
            "only_decode_modalities": list(_DECODE_ONLY),
            "random_ratio": 0.5,
            "type": "random_time_with_decode",
        },
        "tokenization_config": _tokenization(),
    }
    return {
        "_CLASS_": "olmoearth_pretrain.internal.experiment.OlmoEarthExperimentConfig",
        "model": {
            "_CLASS_": "olmoearth_pretrain.nn.latent_mim.LatentMIMConfig",
            "decoder_config": decoder,
            "encoder_config": encoder,
        },
        "run_name": f"v1_2_{v['size']}",
        "train_module": {"masking_config": masking},
    }


def build_latent_mim(config: dict[str, Any]) -> Any:
    """The package's ``LatentMIM`` from a ``config.json`` dict (random init; no download)."""
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.config import Config

    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise WeightsError(
            "olmoearth config.json has no 'model' section (not an OlmoEarth config)."
        )
    try:
        with warnings.catch_warnings():
            # the published configs still spell position_encoding the old way
            warnings.filterwarnings("ignore", ".*spatial_pos_encoding.*", DeprecationWarning)
            return Config.from_dict(config["model"]).build()
    except Exception as exc:
        raise WeightsError(f"olmoearth config.json does not build a model: {exc}") from exc


def _build_random(variant: str) -> Any:
    v = VARIANTS[variant]
    if v["version"] == "v1.2":
        return build_latent_mim(published_v12_config(variant))
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1

    return OlmoEarthPretrain_v1(model_size=v["size"], model_version=v["version"]).model


def _restrict_inputs(model: Any, model_id: str) -> None:
    """Encoder inputs limited to the modalities the package registers for ``model_id``."""
    try:
        from olmoearth_pretrain_minimal.model_loader import ENCODER_INPUT_MODALITY_NAMES, ModelID

        names = ENCODER_INPUT_MODALITY_NAMES[ModelID(model_id)]
    except (ImportError, KeyError, ValueError):
        names = ["sentinel2_l2a", "sentinel1", "landsat"]
    model.encoder.restrict_input_modalities(list(names))


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published ``weights.pth`` keys checked against the built ``LatentMIM`` (strict).

    The package's training-only heads are dropped by name, as its loader does; every other
    key must exist in the model with the same shape and every model key must be present.
    """
    sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    bad = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(sd) & set(own))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or bad:
        raise WeightsError(
            f"{path} does not match the architecture its config.json describes: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected "
            f"(e.g. {extra[:3]}), {len(bad)} shape mismatches (e.g. {bad[:2]}). Is it an "
            "OlmoEarth weights.pth of the selected variant?"
        )
    return sd


def _resolve_config(
    weights_path: Path, explicit: str | None, repo: str, revision: str | None
) -> Path:
    """The ``config.json`` of a weights file: next to it, else resolved like the weights."""
    side = weights_path.parent / CONFIG_FILENAME
    if side.is_file():
        return side
    if explicit is not None and Path(str(explicit)).expanduser().is_dir():
        explicit_cfg: str | None = str(Path(str(explicit)).expanduser() / CONFIG_FILENAME)
    else:
        explicit_cfg = None
    got = resolve_weights(
        "olmoearth", explicit_cfg, filename=CONFIG_FILENAME, hf_repo=repo, hf_revision=revision
    )
    assert got.path is not None
    return got.path


# ---------------------------------------------------------------------------------------
# frames and dates
# ---------------------------------------------------------------------------------------


def frame_bins_for(temporal: TemporalSpec | None) -> tuple[list[tuple[str, str]], bool]:
    """The catalog's fetch bins for a window: fixed 30-day bins from its start, at most 12."""
    start, end = window_of(temporal)
    return fixed_day_bins(start, end, FRAME_DAYS, MAX_FRAMES)


def frame_starts(
    n: int, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
) -> tuple[list[date], str]:
    """Start date of each of ``n`` frames and where they came from.

    ``fetch_meta["frames"]`` when it has ``n`` entries; else the catalog's bins for the
    window when there are ``n`` of them; else (``n`` frames from elsewhere) ``n`` equal
    whole-day bins of the window (one frame: the window start).
    """
    frames = (fetch_meta or {}).get("frames")
    if isinstance(frames, list) and len(frames) == n and n > 0:
        try:
            return [date.fromisoformat(str(f["start"])) for f in frames], "fetch_meta_frames"
        except (KeyError, TypeError, ValueError):
            pass
    bins, _ = frame_bins_for(temporal)
    if len(bins) == n:
        return [date.fromisoformat(s) for s, _ in bins], "window_bins"
    start, end = window_of(temporal)
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    total = (d1 - d0).days
    return [date.fromordinal(d0.toordinal() + (total * i) // n) for i in range(n)], "window_split"


def timestamp(d: date) -> list[int]:
    """OlmoEarth's ``(day, month0, year)`` of a date (months are zero-indexed)."""
    return [d.day, d.month - 1, d.year]


def _square(t: Any, mode: str) -> tuple[Any, RoiWindow]:
    """(N, C, H, W) -> a square: centre reflect pad (edge when too wide) or centre crop."""
    import torch.nn.functional as F

    _, _, h, w = t.shape
    if h == w:
        return t, (0.0, 1.0, 0.0, 1.0)
    if mode == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        # the content window in the square's fractions is all of it; the ROI window of the
        # input maps to a clipped window (see preprocess.compose_window)
        return t[..., top : top + s, left : left + s], (
            -top / s,
            (h - top) / s,
            -left / s,
            (w - left) / s,
        )
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    pads = (left, s - w - left, top, s - h - top)
    mode_pad = "reflect" if (s - h) < h and (s - w) < w else "replicate"
    return F.pad(t, pads, mode=mode_pad), (top / s, (top + h) / s, left / s, (left + w) / s)


class OlmoEarth(TorchEmbedder):
    """OlmoEarth (v1.2 Base by default) on S2 12 bands, 30-day frames, FlexiViT patch 4."""

    info: ClassVar[ModelInfo] = CATALOG["olmoearth"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {
            "variant",
            "patch_size",
            "image_size",
            "shape_adjust",
            "hf_repo",
            "hf_revision",
            "modality",
            "s1_units",
        }
    )
    config_parser = staticmethod(parse_modality)
    batch_size_cpu = 4
    batch_size_cuda = 16

    def _load(self, weights: str | None) -> None:
        cfg = self.model_config
        self.modality, self.s1_units = parse_modality(cfg)
        self.mod_name = S1_MODALITY if self.modality == "s1" else MODALITY
        self.bands = S1_BANDS if self.modality == "s1" else S2_BANDS
        self.variant = normalize_variant(cfg.get("variant"))
        spec = VARIANTS[self.variant]
        self.model_id = str(spec["model_id"])
        self.patch_size = self._int_cfg("patch_size", DEFAULT_PATCH_SIZE, 1, 8)
        self.image_size = self._int_cfg("image_size", DEFAULT_IMAGE_SIZE, 1, 4096)
        if self.image_size % self.patch_size:
            raise ModelError(
                f"olmoearth image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )
        self.shape_adjust = str(cfg.get("shape_adjust") or "pad").strip().lower()
        if self.shape_adjust not in ("pad", "crop"):
            raise ModelError(
                f"olmoearth shape_adjust must be 'pad' or 'crop', got {cfg.get('shape_adjust')!r}."
            )
        self._init_runtime()
        repo = str(cfg.get("hf_repo") or spec["repo"])
        revision = cfg.get("hf_revision")
        resolved = resolve_weights(
            "olmoearth", weights, filename=WEIGHTS_FILENAME, hf_repo=repo, hf_revision=revision
        )
        record = resolved.record()
        if resolved.path is None:
            model = build_seeded(_build_random, self.variant)
            record["config"] = f"builtin:{self.variant}"
        else:
            cfg_path = _resolve_config(resolved.path, weights, repo, revision)
            try:
                config = json.loads(cfg_path.read_text())
            except (OSError, ValueError) as exc:
                raise WeightsError(f"Cannot read olmoearth config {cfg_path}: {exc}") from exc
            self._check_config(config, cfg_path)
            model = build_seeded(build_latent_mim, config)
            sd = prepare_state_dict(
                model, load_state_dict_file(str(resolved.path)), path=str(resolved.path)
            )
            model.load_state_dict(sd, strict=True)
            record["config"] = str(cfg_path)
            record["config_sha256"] = file_sha256(cfg_path)
        record["model_id"] = self.model_id
        record["hf_repo"] = repo
        self.weights_record = record
        _restrict_inputs(model, self.model_id)
        self.encoder = model.encoder.to(self.device).eval()
        del model  # decoder and target encoder are not needed for embeddings
        if self.patch_size > int(self.encoder.max_patch_size):
            raise ModelError(
                f"olmoearth patch_size {self.patch_size} exceeds the model's max_patch_size "
                f"{self.encoder.max_patch_size}."
            )
        self.embed_dim = int(self.encoder.embedding_size)
        self.n_band_sets = int(self.encoder.tokenization_config.get_num_bandsets(self.mod_name))
        from olmoearth_pretrain_minimal import Normalizer
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

        self._modality = Modality.SENTINEL1 if self.modality == "s1" else Modality.SENTINEL2_L2A
        want = ("vv", "vh") if self.modality == "s1" else S2_BANDS_MODEL
        if tuple(self._modality.band_order) != want:
            raise ModelError(
                f"olmoearth-pretrain-minimal's {self.mod_name} band order changed: "
                f"{self._modality.band_order}"
            )
        self.normalizer = Normalizer(std_multiplier=2.0)
        log.info(
            "olmoearth %s loaded on %s (patch=%d, image=%d, amp=%s, weights=%s)",
            self.variant,
            self.device,
            self.patch_size,
            self.image_size,
            self._amp_dtype,
            record.get("weights"),
        )

    def _int_cfg(self, key: str, default: int, lo: int, hi: int) -> int:
        raw = self.model_config.get(key, default)
        try:
            v = int(raw)
        except (TypeError, ValueError):
            raise ModelError(f"olmoearth {key} must be an integer, got {raw!r}.") from None
        if not lo <= v <= hi or isinstance(raw, bool):
            raise ModelError(f"olmoearth {key} must be in {lo}..{hi}, got {raw!r}.")
        return v

    def _check_config(self, config: dict[str, Any], path: Path) -> None:
        """The config must describe the selected variant's width (a clear error otherwise)."""
        enc = (config.get("model") or {}).get("encoder_config") or {}
        want = int(VARIANTS[self.variant]["embed_dim"])
        got = enc.get("embedding_size")
        if got is not None and int(got) != want:
            raise WeightsError(
                f"{path} describes a {got}-D OlmoEarth, not variant {self.variant!r} "
                f"({want}-D). Pass the matching model_config variant."
            )

    def resolve_input_image_size(self, model_config: dict[str, Any] | None = None) -> int:
        """Tiling hook: the model runs at ``image_size`` (a FlexiViT takes any multiple of
        the patch size; the tiler cuts native-resolution tiles of this size)."""
        return int(self.image_size)

    # ---- inputs ----------------------------------------------------------------------

    def _as_tchw(self, x: Any) -> np.ndarray:
        return as_tchw(
            x, "olmoearth", self.bands, MAX_FRAMES, "the catalog fetches 30-day bins, at most 12"
        )

    def select_frames(
        self, x: Any, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
    ) -> tuple[np.ndarray, list[date], dict[str, Any]]:
        """Frames with data (all-NaN sentinel frames dropped), their bin starts, frame meta."""
        a = self._as_tchw(x)
        starts, source = frame_starts(a.shape[0], temporal, fetch_meta)
        keep = [t for t in range(a.shape[0]) if not np.isnan(a[t]).all()]
        if not keep:
            raise ModelError(
                f"olmoearth: all {a.shape[0]} frames are empty (no imagery in any 30-day bin); "
                "widen the window or raise cloudy_pct."
            )
        meta: dict[str, Any] = {
            "n_frames_input": int(a.shape[0]),
            "n_frames_used": len(keep),
            "n_empty_frames_dropped": int(a.shape[0] - len(keep)),
            "frame_dates": [starts[t].isoformat() for t in keep],
            "frame_dates_source": source,
        }
        dropped = [starts[t].isoformat() for t in range(a.shape[0]) if t not in keep]
        if dropped:
            meta["dropped_frame_dates"] = dropped
        return a[keep], [starts[t] for t in keep], meta

    def preprocess(self, frames: list[np.ndarray]) -> tuple[list[Any], list[RoiWindow]]:
        """Raw (T, C, H, W) frames -> normalised (T, C, S, S) tensors; content windows."""
        import torch
        import torch.nn.functional as F

        out: list[Any] = [None] * len(frames)
        wins: list[RoiWindow] = [(0.0, 1.0, 0.0, 1.0)] * len(frames)
        size = self.image_size
        for i, f in enumerate(frames):
            if self.modality == "s1" and self.s1_units == "linear":
                f = s1_linear_to_db(f)
            hwc = np.moveaxis(f, 1, -1)  # (T, H, W, C): the normaliser wants bands last
            norm = self.normalizer.normalize(self._modality, hwc)
            norm = np.nan_to_num(norm, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
            t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(norm, -1, 1))).to(self.device)
            t, win = _square(t, self.shape_adjust)
            if t.shape[-1] != size:
                t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            out[i] = t
            wins[i] = win
        return out, wins

    # ---- forward ---------------------------------------------------------------------

    def forward(self, x: Any, timestamps: Any) -> tuple[Any, Any]:
        """One forward: (B, T, C, S, S) + (B, T, 3) -> TokensAndMasks, tokens (B,h,w,T,S,D)."""
        import torch
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
            MaskedOlmoEarthSample,
        )

        b, t, _, h, w = x.shape
        data = x.permute(0, 3, 4, 1, 2).contiguous()  # (B, H, W, T, C)
        mask = torch.zeros((b, h, w, t, self.n_band_sets), dtype=torch.float32, device=x.device)
        sample = MaskedOlmoEarthSample(
            timestamps=timestamps, **{self.mod_name: data, f"{self.mod_name}_mask": mask}
        )
        with self.inference():
            out = self.encoder(sample, patch_size=self.patch_size, fast_pass=True)
        tm = out["tokens_and_masks"]
        return tm, getattr(tm, self.mod_name)

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw (T, 12, H, W) series; one forward per distinct kept-frame count."""
        import torch
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import PoolingType

        inputs, metas, output, temporal = batch.inputs, batch.metas, batch.output, batch.temporal
        n = len(inputs)
        frames: list[np.ndarray] = []
        stamps: list[list[list[int]]] = []
        fmetas: list[dict[str, Any]] = []
        for i in range(n):
            f, starts, fm = self.select_frames(inputs[i], temporal, metas[i])
            frames.append(f)
            stamps.append([timestamp(d) for d in starts])
            fmetas.append(fm)
        xs, pad_wins = self.preprocess(frames)

        pooled: list[np.ndarray | None] = [None] * n  # pooled over all tokens (uncropped)
        grids: list[np.ndarray | None] = [None] * n  # (D, h, w) mean over T and band sets
        gmax: list[np.ndarray | None] = [None] * n  # (D, h, w) max over T and band sets
        want_max = output.mode == "pooled" and output.pooling == "max"
        pool_type = PoolingType.MAX if want_max else PoolingType.MEAN
        by_t: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            by_t.setdefault(int(f.shape[0]), []).append(i)
        for idx in by_t.values():
            x = torch.stack([xs[i] for i in idx])
            ts = torch.tensor([stamps[i] for i in idx], dtype=torch.long, device=self.device)
            tm, tok = self.forward(x, ts)
            with torch.inference_mode():
                vec = tm.pool_unmasked_tokens(pooling_type=pool_type).float().cpu().numpy()
                tok = tok.float()
                g = tok.mean(dim=(3, 4)).permute(0, 3, 1, 2).cpu().numpy()
                gm = tok.amax(dim=(3, 4)).permute(0, 3, 1, 2).cpu().numpy() if want_max else None
            for j, i in enumerate(idx):
                pooled[i] = vec[j].astype(np.float32)
                grids[i] = g[j].astype(np.float32)
                if gm is not None:
                    gmax[i] = gm[j].astype(np.float32)

        results: list[Embedding] = []
        for i in range(n):
            g = grids[i]
            assert g is not None
            win = compose_window(pad_wins[i], _roi_from_meta(metas[i]))
            cropped = not roi_is_full(win)
            box = (0, g.shape[1], 0, g.shape[2])
            if cropped:
                box = roi_token_box(win, grid_h=g.shape[1], grid_w=g.shape[2])
            y0, y1, x0, x1 = box
            a = np.asarray(inputs[i])
            meta: dict[str, Any] = {
                "model": "olmoearth",
                "variant": self.variant,
                "model_id": self.model_id,
                "weights": dict(self.weights_record),
                "input_hw": [int(a.shape[-2]), int(a.shape[-1])],
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "shape_adjust": self.shape_adjust,
                "preprocess": "olmoearth_normalizer_std2_nan0_square_bilinear",
                "modality": self.modality,
                "bands": list(self.bands),
                "band_names": list(self._modality.band_order),
                "timestamps": stamps[i],
                **fmetas[i],
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if cropped:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
            if output.mode == "pooled":
                if not cropped:
                    vec = pooled[i]
                    meta["pooling"] = f"unmasked_token_{output.pooling}"
                elif output.pooling == "max":
                    gm_i = gmax[i]
                    assert gm_i is not None
                    vec = gm_i[:, y0:y1, x0:x1].max(axis=(1, 2))
                    meta["pooling"] = "roi_grid_max"
                else:
                    vec = g[:, y0:y1, x0:x1].mean(axis=(1, 2))
                    meta["pooling"] = "roi_grid_mean"
                meta["pooled_over"] = "patch_tokens_frames_and_band_sets"
                results.append(Embedding(data=np.ascontiguousarray(vec, np.float32), meta=meta))
            else:
                grid = np.ascontiguousarray(g[:, y0:y1, x0:x1], dtype=np.float32)
                meta["pooling"] = "none"
                meta["grid_type"] = "vit_patch_tokens_mean_over_frames_and_band_sets"
                meta["grid_hw"] = [int(grid.shape[1]), int(grid.shape[2])]
                results.append(Embedding(data=grid, meta=meta))
        return results


__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_VARIANT",
    "S1_BANDS",
    "S2_BANDS",
    "S2_BANDS_MODEL",
    "VARIANTS",
    "WEIGHTS_FILENAME",
    "OlmoEarth",
    "build_latent_mim",
    "frame_bins_for",
    "frame_starts",
    "normalize_variant",
    "parse_modality",
    "s1_linear_to_db",
    "prepare_state_dict",
    "published_v12_config",
    "timestamp",
]
