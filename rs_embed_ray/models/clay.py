"""Clay v1.5 (large, patch 8) on 10 Sentinel-2 bands: pooled 1024-D (CLS), grid 1024x32x32.

Why this model: Clay is the catalog's metadata-conditioned MAE. Besides the pixels it takes
the band wavelengths (its DOFA-style dynamic patch embedding), the ground sampling distance
(it scales the position code), and the place and the time of year.

Architecture, written here from the published source of ``claymodel`` (``Encoder``,
``DynamicEmbedding``, ``Transformer``; no code copied). Module names follow the published
state dict, so ``made-with-clay/Clay`` ``v1.5/clay-v1.5.ckpt`` (a Lightning checkpoint whose
``state_dict`` holds ``model.encoder.*``, ``model.decoder.*``, ``model.teacher.*`` and
``model.proj.*``) loads by name and shape, strictly, into the encoder; the decoder, the
DINOv2 teacher and the projection are dropped by name, any other key is an error:

* ``patch_embedding``: wavelengths (um) -> 1-D sin-cos code (128-D, ``omega_k =
  1e4^(-k/63)``) -> ``fclayer`` (residual 2-layer GELU MLP) -> ``weight_generator``: a
  1-layer torch ``TransformerEncoder`` (d=128, 4 heads, GELU, post-norm) over
  ``[128 latent tokens, C codes, 1 bias token]``; ``fc_weight`` maps each band's output
  (+ its code) to a ``(D, 8, 8)`` kernel slice, ``fc_bias`` the bias token to D biases; a
  stride-8 conv with the kernel scaled by 0.02;
* position code: ``[sin x, cos x, sin y, cos y]`` of ``D - 8`` dims with ``omega_k =
  gsd / 1e4^(2 (k / (q-1)) / (D-8))``, ``q = (D-8)/4`` (Clay's gsd-scaled table, computed
  for the actual token grid), concatenated with the 8 metadata values ``[time(4) |
  latlon(4)]`` and added to every patch token; then the CLS token is prepended (it gets
  neither);
* ``transformer``: ``depth`` pre-norm blocks (attention: LayerNorm, ``to_qkv`` without
  bias, ``to_out`` without bias; MLP: LayerNorm, Linear, GELU, Linear) and a final ``norm``.
  Inference runs with no masking (``mask_ratio=0``, no shuffle), as the tutorials do.

Preprocessing (spec §3a): ``(DN - mean) / std`` per band with the v1.5 ``metadata.yaml``
Sentinel-2 L2A statistics (no clip, no /10000; input that looks already scaled is refused),
centre pad to a square (reflect; edge when too wide), bilinear resize to 256
(``align_corners=False``; ``model_config["image_size"]`` changes it, a multiple of 8).
Side inputs: the Clay wavelengths, ``time = [sin, cos](week * 2pi/52) + [sin, cos](hour *
2pi/24)`` of the fetch window's midpoint (ISO week; hour 0; a year window gives July 2,
as rs-embed), ``latlon = [sin, cos](lat) + [sin, cos](lon)`` of the place centre (Clay needs
georeferenced input), and the gsd.

Where this follows UPSTREAM rather than rs-embed 0.3.1 (``model_config["recipe"]``):

* ``"upstream"`` (default): ``gsd`` is the ground size of the model's pixels, ``scale_m *
  side / image_size`` (side = the square input before the resize). Clay's tutorials pass the
  chip's true pixel size: the position code is how the model knows the footprint. For the
  usual 256-px fetch at 10 m this is 10 m, the same as rs-embed.
* ``"rs_embed"``: ``gsd = scale_m`` even when the input was resized (rs-embed's adapter), so
  a 224-px patch resized to 256 is described as 10 m pixels (it is 8.75 m).

Outputs: pooled = the CLS token of the final norm (the model's embedding, as in the
tutorials) for a full frame; a padded or ROI-windowed input has its token grid cropped back
to the real area and pooled by mean (``roi_grid_mean``, as rs-embed). Grid = the patch
tokens after the final norm, (D, 32, 32) at 256 px.

Against rs-embed 0.3.1's adapter (scripts/clay_compare_rs_embed.py: the same checkpoint
file and raw inputs of 256 and 224 px, CPU float32): ``recipe="rs_embed"`` gives the same
pooled and grid embeddings (max abs difference 0.0 for both inputs); the default upstream
recipe matches at 256 px (0.0) and departs at 224 px (gsd 8.75 instead of 10: pooled max abs
0.034, grid 1.87, on values of magnitude ~3.5).

Oracle: terratorch 1.2.11 ships Clay v1.5's upstream code (``terratorch.models.backbones.
clay_v15``); tests/oracle/test_oracle_clay.py loads the same checkpoint into its
``Encoder``. The ``claymodel==1.5.0`` wheel is unusable (it installs ``model.py``,
``utils.py``, ... at the top level of site-packages and imports ``src.*``).
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import (
    RoiWindow,
    as_chw,
    first_scaled_range,
    square_pad,
    stack_by_shape,
)
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_state_dict_file,
    strip_prefix,
    to_numpy,
    tokens_to_grid,
)
from rs_embed_ray.specs import BBox, PointBuffer, SpatialSpec, TemporalSpec, window_of

log = logging.getLogger(__name__)

HF_REPO = "made-with-clay/Clay"
HF_FILENAME = "v1.5/clay-v1.5.ckpt"
# encoder hyper-parameters of claymodel's clay_mae_* factories; only large has weights
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 192, "depth": 6, "heads": 4, "dim_head": 48, "mlp_ratio": 2},
    "small": {"dim": 384, "depth": 6, "heads": 6, "dim_head": 64, "mlp_ratio": 2},
    "base": {"dim": 768, "depth": 12, "heads": 12, "dim_head": 64, "mlp_ratio": 4},
    "large": {"dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "mlp_ratio": 4},
}
PATCH = 8
IMAGE_SIZE = 256
WAVE_DIM = 128
N_LATENT = 128
KERNEL_SCALE = 0.02
RECIPES = ("upstream", "rs_embed")

# Clay v1.5 metadata.yaml, sentinel-2-l2a (blue..swir22 = S2 B2..B12)
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_MEAN = (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0)
S2_STD = (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0)
S2_WAVELENGTH_UM = (0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19)
_IGNORED_PREFIXES = ("decoder.", "teacher.", "proj.", "mrl.")


# ---------------------------------------------------------------------------------------
# side inputs
# ---------------------------------------------------------------------------------------


def midpoint_of(temporal: TemporalSpec | None) -> date:
    """The date the time code describes: the midpoint of the fetch window, truncated to a
    day (a year window: July 2; None: the package default window), as rs-embed."""
    start, end = window_of(temporal)
    a, b = datetime.fromisoformat(start), datetime.fromisoformat(end)
    return (a + (b - a) / 2).date()


def time_code(day: date, hour: int = 0) -> list[float]:
    """``[sin, cos](ISO week * 2pi/52) + [sin, cos](hour * 2pi/24)``, Clay's time code."""
    week = day.isocalendar()[1] * 2 * math.pi / 52
    hr = hour * 2 * math.pi / 24
    return [math.sin(week), math.cos(week), math.sin(hr), math.cos(hr)]


def latlon_code(lat: float, lon: float) -> list[float]:
    """``[sin, cos](lat) + [sin, cos](lon)`` in radians, Clay's location code."""
    la, lo = math.radians(float(lat)), math.radians(float(lon))
    return [math.sin(la), math.cos(la), math.sin(lo), math.cos(lo)]


def place_lat_lon(spatial: SpatialSpec | None) -> tuple[float, float]:
    if isinstance(spatial, (BBox, PointBuffer)):
        lon, lat = spatial.center()
        return float(lat), float(lon)
    raise ModelError(
        "clay needs georeferenced input: pass a BBox or PointBuffer for every place (its "
        f"location code comes from the centre); got {type(spatial).__name__}."
    )


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def wave_code(waves_um: Any, dim: int = WAVE_DIM) -> Any:
    """(C,) wavelengths (um) -> (C, dim): ``[sin, cos](w * 1e4^(-k/(dim/2-1)))``."""
    import torch

    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, device=waves_um.device) / (half - 1)))
    ang = waves_um.float()[:, None] * omega[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def gsd_pos_table(side: int, dim: int, gsd: Any) -> Any:
    """(B,) gsd -> (B, side*side, dim) Clay position codes, row-major tokens."""
    import torch

    q = dim // 4
    k = torch.arange(q, dtype=torch.float32, device=gsd.device) / (q - 1)
    omega = (1.0 / (10000.0 ** (2 * k / dim)))[None, :] * gsd.float()[:, None]  # (B, q)
    ys, xs = torch.meshgrid(
        torch.arange(side, device=gsd.device), torch.arange(side, device=gsd.device), indexing="ij"
    )
    x = xs.flatten().float()[None, :, None] * omega[:, None, :]
    y = ys.flatten().float()[None, :, None] * omega[:, None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)


def build_clay_encoder(size: str = "large") -> Any:
    """The Clay v1.5 encoder as an ``nn.Module`` (random init; no download)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if size not in SIZES:
        raise ModelError(f"Unknown clay model_size {size!r}; choose one of {sorted(SIZES)}.")
    cfg = SIZES[size]
    dim, heads, dim_head = cfg["dim"], cfg["heads"], cfg["dim_head"]

    class FCBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = nn.Linear(WAVE_DIM, WAVE_DIM)
            self.l2 = nn.Linear(WAVE_DIM, WAVE_DIM)

        def forward(self, x: Any) -> Any:
            return x + F.gelu(self.l2(F.gelu(self.l1(x))))

    class WeightGenerator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = nn.TransformerEncoderLayer(
                d_model=WAVE_DIM,
                nhead=4,
                activation="gelu",
                dropout=0.0,
                norm_first=False,
                batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.fc_weight = nn.Linear(WAVE_DIM, PATCH * PATCH * dim)
            self.fc_bias = nn.Linear(WAVE_DIM, dim)
            self.weight_tokens = nn.Parameter(torch.randn(N_LATENT, WAVE_DIM) * 0.02)
            self.bias_token = nn.Parameter(torch.randn(1, WAVE_DIM) * 0.02)

        def forward(self, codes: Any) -> tuple[Any, Any]:
            seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)
            out = self.encoder(seq)
            w = self.fc_weight(out[N_LATENT:-1] + seq[N_LATENT:-1])  # (C, D*8*8)
            return w, self.fc_bias(out[-1])

    class DynamicEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight_generator = WeightGenerator()
            self.fclayer = FCBlock()
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward(self, x: Any, waves_um: Any) -> Any:
            codes = self.fclayer(wave_code(waves_um).to(x.device))
            w, b = self.weight_generator(codes)
            kernel = w.reshape(w.shape[0], dim, PATCH, PATCH).transpose(0, 1) * KERNEL_SCALE
            y = F.conv2d(x, kernel.to(x.dtype), b.to(x.dtype), stride=PATCH)
            return y.flatten(2).transpose(1, 2)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
            self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

        def forward(self, x: Any) -> Any:
            b, n, _ = x.shape
            qkv = self.to_qkv(self.norm(x)).reshape(b, n, 3, heads, dim_head)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v)
            return self.to_out(o.transpose(1, 2).reshape(b, n, heads * dim_head))

    class FeedForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = int(dim * cfg["mlp_ratio"])
            self.net = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
            )

        def forward(self, x: Any) -> Any:
            return self.net(x)

    class Transformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.layers = nn.ModuleList(
                [nn.ModuleList([Attention(), FeedForward()]) for _ in range(cfg["depth"])]
            )

        def forward(self, x: Any) -> Any:
            for attn, ff in self.layers:
                x = attn(x) + x
                x = ff(x) + x
            return self.norm(x)

    class ClayEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dim = dim
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.patch_embedding = DynamicEmbedding()
            self.transformer = Transformer()

        def forward_tokens(self, x: Any, waves_um: Any, time: Any, latlon: Any, gsd: Any) -> Any:
            """(B, C, H, W) normalised pixels, (C,) um, (B, 4) time, (B, 4) latlon, (B,) gsd
            -> (B, 1 + L, D) final-norm tokens, CLS first."""
            tok = self.patch_embedding(x, waves_um)
            b, n, _ = tok.shape
            side = math.isqrt(n)
            pos = gsd_pos_table(side, dim - 8, gsd.to(tok.device))
            meta = torch.cat([time, latlon], dim=-1).to(tok.device)[:, None, :].expand(b, n, 8)
            tok = tok + torch.cat([pos, meta.float()], dim=-1).to(tok.dtype)
            seq = torch.cat([self.cls_token.expand(b, -1, -1).to(tok.dtype), tok], dim=1)
            return self.transformer(seq)

    return ClayEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published ClayMAE keys (``model.encoder.*`` ...) -> this encoder's keys; strict on
    everything but the decoder, teacher and projection (dropped by name)."""
    sd = strip_prefix(dict(sd), ("model.", "module."), nested=True)
    if any(k.startswith("encoder.") for k in sd):
        ignored = sorted(k for k in sd if k.startswith(_IGNORED_PREFIXES))
        stray = [k for k in sd if not k.startswith("encoder.") and k not in set(ignored)]
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    else:  # a bare encoder state dict
        ignored, stray = [], []
    check_state_dict(model, sd, path=path, what="Clay", stray=stray)
    if ignored:
        log.info("clay: ignored %d non-encoder keys (e.g. %s)", len(ignored), ignored[:3])
    return sd


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


def check_config(model_config: dict[str, Any] | None) -> tuple[str, str, int]:
    """(model_size, recipe, image_size) of a ``model_config``; a bad value is a ModelError
    naming the key (cheap: run at plan time, before any cluster work)."""
    cfg = dict(model_config or {})
    size = str(cfg.get("model_size") or "large").strip().lower()
    if size not in SIZES:
        raise ModelError(f"clay model_size must be one of {sorted(SIZES)}, got {size!r}")
    recipe = str(cfg.get("recipe") or "upstream").strip().lower()
    if recipe not in RECIPES:
        raise ModelError(f"clay recipe must be one of {list(RECIPES)}, got {recipe!r}")
    try:
        image_size = int(cfg.get("image_size") or IMAGE_SIZE)
    except (TypeError, ValueError):
        image_size = -1
    if image_size < PATCH or image_size % PATCH:
        raise ModelError(
            f"clay image_size must be a positive multiple of {PATCH}, got {cfg.get('image_size')!r}"
        )
    return size, recipe, image_size


class Clay(TorchEmbedder):
    """Clay v1.5 large on S2 B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12 with wavelengths, place,
    time and gsd.

    ``model_config``: ``model_size`` (``large``; the others have no published weights),
    ``recipe`` (``upstream`` | ``rs_embed``: see the module docstring), ``image_size``
    (default 256, a multiple of 8), ``scale_m`` (the fetch's pixel size, default the
    sensor's 10 m), ``hf_repo``, ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["clay"]
    batch_size_cpu = 4
    batch_size_cuda = 32

    config_parser = staticmethod(check_config)

    def _load(self, weights: str | None) -> None:
        import torch

        self.size, self.recipe, self.image_size = check_config(self.model_config)
        sensor_scale = self.info.sensor.scale_m  # type: ignore[union-attr]
        self.scale_m = float(self.model_config.get("scale_m") or sensor_scale)
        self._init_runtime()
        resolved = self._resolve_weights(weights, filename=HF_FILENAME, hf_repo=HF_REPO)
        if resolved.path is None:
            model = build_seeded(build_clay_encoder, self.size)
        else:  # no init pass for 311 M values the file overwrites: build on meta, assign
            with torch.device("meta"):
                model = build_clay_encoder(self.size)
            sd = prepare_state_dict(
                model, load_state_dict_file(str(resolved.path)), path=str(resolved.path)
            )
            model.load_state_dict(sd, strict=True, assign=True)
        self.model = model.to(self.device).eval()
        self._waves = torch.tensor(S2_WAVELENGTH_UM, dtype=torch.float32, device=self.device)
        self._mean = torch.tensor(S2_MEAN, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(S2_STD, device=self.device).view(1, -1, 1, 1)
        log.info(
            "clay %s loaded on %s (amp=%s, recipe=%s, weights=%s)",
            self.size,
            self.device,
            self._amp_dtype,
            self.recipe,
            self.weights_record.get("weights"),
        )

    def preprocess(self, inputs: list[np.ndarray]) -> tuple[Any, list[RoiWindow], list[float]]:
        """Raw DN patches -> (B, 10, S, S) normalised; each input's content window and the
        gsd its model pixels get (see ``recipe``)."""
        import torch.nn.functional as F

        arrays = []
        for x in inputs:
            arrays.append(as_chw(x, channels=len(BANDS), model_id="clay"))
        wins: dict[tuple[int, ...], RoiWindow] = {}
        size = self.image_size

        def transform(t: Any, shape: tuple[int, ...]) -> Any:
            # the range check runs batched on the model's device (one host sync a batch)
            scaled = first_scaled_range(t, nodata_ok=False)
            if scaled is not None:
                lo, hi = scaled
                raise ModelError(
                    f"clay input looks already scaled (values in [{lo:.3f}, {hi:.3f}]); pass "
                    "raw Sentinel-2 SR DN (0..10000)."
                )
            t = (t - self._mean) / self._std
            t, wins[shape] = square_pad(t)
            if t.shape[-1] != size:
                t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            return t

        x = stack_by_shape(arrays, transform, device=self.device)
        gsds = [self.gsd_for(max(a.shape[-2:])) for a in arrays]
        return x, [wins[a.shape] for a in arrays], gsds

    def gsd_for(self, side: int) -> float:
        """Ground size (m) the model is told its pixels have, for a square input of ``side``."""
        if self.recipe == "rs_embed":
            return self.scale_m
        return self.scale_m * float(side) / float(self.image_size)

    def forward(self, x: Any, time: Any, latlon: Any, gsd: Any) -> tuple[np.ndarray, np.ndarray]:
        """One forward: (B, D) CLS and (B, D, h, w) patch-token grids as float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(x, self._waves, time, latlon, gsd)
        return to_numpy(tok[:, 0]), tokens_to_grid(tok[:, 1:])

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw DN patches with one forward; ROI/padded inputs cropped back and pooled
        by mean, full frames pooled by CLS."""
        import torch

        n, output = len(batch), batch.output
        if len(batch.spatials) != n:
            raise ModelError(f"clay got {n} inputs but {len(batch.spatials)} spatials.")
        places = [place_lat_lon(s) for s in batch.spatials]
        day = midpoint_of(batch.temporal)
        tcode = time_code(day)
        x, pad_wins, gsds = self.preprocess(batch.inputs)
        dev = self.device
        time = torch.tensor([tcode] * n, dtype=torch.float32, device=dev)
        latlon = torch.tensor([latlon_code(*p) for p in places], dtype=torch.float32, device=dev)
        gsd = torch.tensor(gsds, dtype=torch.float32, device=dev)
        cls, grids = self.forward(x, time, latlon, gsd)

        out: list[Embedding] = []
        for i in range(n):
            g, win = crop_padded(grids[i], pad_wins[i], batch.metas[i])
            meta: dict[str, Any] = {
                "model": "clay",
                "model_size": self.size,
                "recipe": self.recipe,
                "weights": dict(self.weights_record),
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": self.image_size,
                "patch_size": PATCH,
                "preprocess": "clay_v15_s2_stats_pad_square_bilinear",
                "bands": list(BANDS),
                "wavelengths_um": list(S2_WAVELENGTH_UM),
                "time_midpoint": day.isoformat(),
                "latlon_center": [places[i][0], places[i][1]],
                "gsd_m": round(gsds[i], 6),
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if win is not None:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
            if output.mode == "pooled":
                if win is None:
                    meta["pooling"] = "model_cls"
                    vec = cls[i]
                else:
                    meta["pooling"] = "roi_grid_mean"
                    vec = g.mean(axis=(1, 2))
                if output.pooling != "mean" and win is None:
                    meta["pooling_note"] = f"clay pools by CLS; pooling={output.pooling!r} ignored"
                out.append(pooled_embedding(vec, meta))
            else:
                out.append(grid_embedding(np.ascontiguousarray(g), meta, "vit_patch_tokens"))
        return out


__all__ = [
    "BANDS",
    "HF_FILENAME",
    "HF_REPO",
    "IMAGE_SIZE",
    "RECIPES",
    "S2_MEAN",
    "S2_STD",
    "S2_WAVELENGTH_UM",
    "SIZES",
    "Clay",
    "build_clay_encoder",
    "check_config",
    "gsd_pos_table",
    "latlon_code",
    "midpoint_of",
    "prepare_state_dict",
    "time_code",
    "wave_code",
]
