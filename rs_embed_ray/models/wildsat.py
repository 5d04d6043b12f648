"""WildSAT (ViT-B/16, torchvision) on Sentinel-2 RGB: pooled = the image head (256-D), grid =
ViT patch tokens 768 x 14 x 14.

Why this model: a satellite encoder fine-tuned with wildlife observations (species ranges,
habitat text and ground images) into one 256-D space, so its embedding carries ecology.

The official code is github.com/cvl-umass/wildsat (``train.py`` + ``models/get_model.py``; no
package ships it). Its satellite model is ``SingleTaskModel(backbone, decoder)``: the backbone
is torchvision's own ``vit_b_16`` with its 1000-way ImageNet ``heads`` kept (``num_feats =
heads.head.out_features``), and the decoder, for the published ``satellite_head=
threelinearnobias``, three ``Sequential(Linear(1000, 256, bias=False))`` branches
``backbone1`` (text), ``backbone2`` (SINR, species ranges) and ``backbone3`` (ground images).
The published ``vitb16-imagenet-bnfc.pth`` (Google Drive, see the catalog) is ``train.py``'s
checkpoint: ``{"satellite_state_dict": {"module.backbone.*", "module.decoder.backbone{1,2,3}
.0.weight"}, "opt": argparse.Namespace, ...}``. Here the backbone is torchvision's
``vit_b_16(weights=None)`` (the official package, not a port) and the decoder is rebuilt from
the file's ``decoder.<branch>.<i>.weight|bias`` keys (a Linear at each stored index, ReLU at
the indices between, as rs-embed 0.3.1 does); the whole ``satellite_state_dict`` then loads
strictly (``module.`` / ``satellite_model.`` / ``model.`` prefixes peeled). The file is read
with ``weights_only=True`` and ``argparse.Namespace`` allowed; ``model_config
trusted_pickle=true`` falls back to a full unpickle for files holding other objects.

Preprocessing (spec §3, rs-embed 0.3.1's recipe): S2 ``B4,B3,B2`` DN, NaN -> 0, clip
0..10000, ``/10000``, one min-max over the whole tile (all three channels; a flat tile gives
zeros), ``* 255`` truncated to uint8, Pillow-exact bicubic to 224 x 224, ``/255``; no
ImageNet mean/std. ``norm="unit_scale"`` skips the min-max (rs-embed's
``RS_EMBED_WILDSAT_NORM=unit_scale``).

Where this departs from upstream (anchor README): WildSAT trained on Satlas 8-bit
true-colour PNGs (``ToTensor`` -> ``/255``, resize, then ``x - min`` divided by
``max(max, 1)``, i.e. only shifted); S2 surface reflectance has no such 8-bit product, so the
per-tile min-max stretch of rs-embed (and of the spec) is the default here; there is no
upstream recipe for reflectance input to follow instead.

Outputs from one forward: the tokens of the encoder (final LayerNorm applied, as torchvision's
``encoder`` returns them); pooled = the image head (``decoder.backbone3``) on the backbone's
1000-way output (``feature="backbone"``: that 1000-D output itself; a file without a decoder
falls back to it), or, when the input is a fetch-square of a rectangular ROI, the mean (max) of
the ROI's patch tokens (768-D, as rs-embed); grid = the 14 x 14 patch tokens (CLS dropped),
cropped to the ROI. Variants (``model_config["variant"]``): ``vitb16`` (default), and the
published ``resnet50`` / ``swint`` files (torchvision ``resnet50`` / ``swin_t`` with their
1000-way heads, the same decoder); these have no token grid, so their grid is the pooled
vector as 1 x 1 (rs-embed's ``vector_as_1x1``) and a ROI crop leaves it unchanged.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import (
    as_chw,
    pil_like_bicubic_resize,
    roi_window_from_meta,
    stack_by_shape,
)
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    to_numpy,
    tokens_to_grid,
)
from rs_embed_ray.models.weights import resolve_weights

log = logging.getLogger(__name__)

GDRIVE_ID = "1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE"
# variant -> the published file and its Google Drive id (rs-embed 0.3.1's table)
VARIANTS: dict[str, dict[str, str]] = {
    "vitb16": {"file": "vitb16-imagenet-bnfc.pth", "gdrive": GDRIVE_ID},
    "resnet50": {
        "file": "resnet50-imagenet-bnfc.pth",
        "gdrive": "1LwCjzT1p0yFOtv1m0YD-rl7tP0eYXTb2",
    },
    "swint": {"file": "swint-imagenet-bnfc.pth", "gdrive": "12rfb3ES9-RuIAk_RjzYrMQJG_5J1Iq5H"},
}
_ALIASES = {"vit": "vitb16", "vitbase16": "vitb16", "resnet": "resnet50", "swin": "swint"}
# a key only each torchvision backbone has (to tell a file's architecture)
_ARCH_KEY = {
    "vitb16": "backbone.conv_proj.weight",
    "resnet50": "backbone.layer1.0.conv1.weight",
    "swint": "backbone.features.0.0.weight",
}
IMAGE_SIZE = 224
PATCH = 16
EMBED_DIM = 768
N_CLASSES = 1000  # the kept ImageNet head: the decoder's input
COMMON_DIM = 256  # opt.common_embed_dim of the published file
IMAGE_BRANCH = 3  # decoder.backbone3: the ground-image branch
NORMS = ("minmax", "unit_scale")
FEATURES = ("image_head", "backbone")
CONFIG_KEYS = ("variant", "feature", "norm", "image_branch", "filename", "trusted_pickle")
_PREFIXES = ("module.", "satellite_model.", "model.")
_DECODER_KEY = re.compile(r"^decoder\.(backbone\d*)\.(\d+)\.(weight|bias)$")

# branch name -> [(index, in, out, bias)]; the published threelinearnobias decoder
HeadSpec = dict[str, list[tuple[int, int, int, bool]]]
PUBLISHED_HEADS: HeadSpec = {f"backbone{i}": [(0, N_CLASSES, COMMON_DIM, False)] for i in (1, 2, 3)}


def normalize_variant(raw: Any) -> str:
    """The variant name (default vitb16, rs-embed's aliases accepted); unknown names raise."""
    v = str(raw or "vitb16").strip().lower().replace("-", "").replace("_", "")
    v = _ALIASES.get(v, v)
    if v in VARIANTS:
        return v
    raise ModelError(f"wildsat: unknown variant {raw!r}; choose one of {sorted(VARIANTS)}.")


@dataclass(frozen=True)
class WildSATConfig:
    variant: str = "vitb16"
    feature: str = "image_head"
    norm: str = "minmax"
    image_branch: int = IMAGE_BRANCH
    trusted_pickle: bool = False


def parse_config(model_config: dict[str, Any] | None) -> WildSATConfig:
    """``model_config`` -> :class:`WildSATConfig`; a bad value raises ModelError naming it."""
    cfg = model_config or {}
    variant = normalize_variant(cfg.get("variant"))
    feature = str(cfg.get("feature") or "image_head").strip().lower()
    if feature not in FEATURES:
        raise ModelError(
            f"wildsat model_config feature must be one of {FEATURES}, got {feature!r}."
        )
    norm = str(cfg.get("norm") or "minmax").strip().lower()
    if norm not in NORMS:
        raise ModelError(f"wildsat model_config norm must be one of {NORMS}, got {norm!r}.")
    try:
        branch = int(cfg.get("image_branch", IMAGE_BRANCH))
    except (TypeError, ValueError):
        raise ModelError(
            f"wildsat model_config image_branch must be an integer, got {cfg['image_branch']!r}."
        ) from None
    trusted = cfg.get("trusted_pickle", False)
    if trusted not in (True, False, "true", "false"):
        raise ModelError(
            f"wildsat model_config trusted_pickle must be true/false, got {trusted!r}."
        )
    return WildSATConfig(variant, feature, norm, branch, trusted in (True, "true"))


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def build_wildsat(heads: HeadSpec | None = None, variant: str = "vitb16") -> Any:
    """torchvision ``vit_b_16`` / ``resnet50`` / ``swin_t`` (``weights=None``, 1000-way head
    kept) + the decoder ``heads`` (default: the published three 1000 -> 256 linear
    branches), random init."""
    import torch
    import torchvision
    from torch import nn

    class WildSATNet(nn.Module):
        def __init__(self, spec: HeadSpec) -> None:
            super().__init__()
            self.arch = variant
            build = {"vitb16": "vit_b_16", "resnet50": "resnet50", "swint": "swin_t"}[variant]
            self.backbone = getattr(torchvision.models, build)(weights=None)
            self.decoder = nn.Module()
            for name, layers in spec.items():
                by_idx = {i: (fi, fo, b) for i, fi, fo, b in layers}
                seq = [
                    nn.Linear(by_idx[i][0], by_idx[i][1], bias=by_idx[i][2])
                    if i in by_idx
                    else nn.ReLU()
                    for i in range(max(by_idx) + 1)
                ]
                setattr(self.decoder, name, nn.Sequential(*seq))

        def tokens(self, x: Any) -> Any:
            """(B, 3, 224, 224) -> (B, 197, 768): torchvision's forward up to the encoder."""
            bb = self.backbone
            t = bb._process_input(x)
            cls = bb.class_token.expand(t.shape[0], -1, -1)
            return bb.encoder(torch.cat([cls, t], dim=1))

        def forward(self, x: Any, branch: str | None) -> tuple[Any, Any, Any]:
            """(tokens or None, backbone 1000-way output, image-head output or None)."""
            if self.arch != "vitb16":
                logits = self.backbone(x)
                return None, logits, getattr(self.decoder, branch)(logits) if branch else None
            tok = self.tokens(x)
            logits = self.backbone.heads(tok[:, 0])
            img = getattr(self.decoder, branch)(logits) if branch else None
            return tok, logits, img

    if variant not in VARIANTS:
        raise ModelError(f"Unknown WildSAT variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    return WildSATNet(PUBLISHED_HEADS if heads is None else heads)


def read_checkpoint(path: str, *, trusted_pickle: bool = False) -> tuple[dict[str, Any], dict]:
    """A WildSAT ``.pth`` -> (satellite state dict with prefixes peeled, ``opt`` as a dict).

    ``train.py`` pickles an ``argparse.Namespace`` beside the tensors: it is allowed in the
    ``weights_only`` unpickler; anything else needs ``trusted_pickle``."""
    import torch

    try:
        if trusted_pickle:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Cannot read WildSAT checkpoint {path}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. If the file is trusted and holds "
            "other pickled objects, pass model_config trusted_pickle=true."
        ) from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"WildSAT checkpoint {path} is not a dict ({type(obj).__name__}).")
    opt = obj.get("opt")
    opt_d = dict(vars(opt)) if isinstance(opt, argparse.Namespace) else dict(opt or {})
    sd = obj.get("satellite_state_dict")
    if not isinstance(sd, dict):
        sd = obj.get("state_dict")
    if not isinstance(sd, dict):
        sd = obj if obj and all(hasattr(v, "shape") for v in obj.values()) else None
    if not sd:
        raise WeightsError(
            f"WildSAT checkpoint {path} has no 'satellite_state_dict' (keys: {sorted(obj)[:6]})."
        )
    out: dict[str, Any] = {}
    for k, v in sd.items():
        key = str(k)
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))) :]
        out[key] = v
    return out, opt_d


def head_spec(sd: dict[str, Any], *, path: str) -> HeadSpec:
    """The decoder branches stored in ``sd`` (``decoder.<branch>.<i>.weight|bias``): a
    Linear at each index with a 2-D weight. Other decoder layers (BatchNorm of the ``mlp``
    heads, the Satlas conv) are refused by name."""
    layers: dict[str, dict[int, dict[str, Any]]] = {}
    for k, v in sd.items():
        if not k.startswith("decoder."):
            continue
        m = _DECODER_KEY.match(k)
        if m is None:
            raise WeightsError(f"WildSAT checkpoint {path}: unsupported decoder key {k!r}.")
        layers.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = v
    spec: HeadSpec = {}
    for name, idx in layers.items():
        spec[name] = []
        for i, p in sorted(idx.items()):
            w = p.get("weight")
            if w is None or w.ndim != 2:
                raise WeightsError(
                    f"WildSAT checkpoint {path}: decoder.{name}.{i} is not a Linear layer "
                    "(only linear image heads are supported)."
                )
            spec[name].append((i, int(w.shape[1]), int(w.shape[0]), "bias" in p))
    return spec


def image_branch(spec: HeadSpec, prefer: int = IMAGE_BRANCH) -> str | None:
    """rs-embed's choice: ``backbone<prefer>`` if stored, else a single ``backbone`` head,
    else the highest-numbered branch; None without a decoder."""
    if f"backbone{prefer}" in spec:
        return f"backbone{prefer}"
    if "backbone" in spec:
        return "backbone"
    numbered = sorted((int(k[8:]), k) for k in spec if k[8:].isdigit())
    return numbered[-1][1] if numbered else None


def load_wildsat(
    path: str, *, variant: str = "vitb16", trusted_pickle: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Build the ``variant`` network with the decoder the file describes and load it
    strictly; (model, ``opt``). A file of another backbone is refused by name."""
    sd, opt = read_checkpoint(path, trusted_pickle=trusted_pickle)
    enc = str(opt.get("satellite_encoder") or variant)
    if enc != variant or _ARCH_KEY[variant] not in sd:
        raise WeightsError(
            f"WildSAT checkpoint {path} is not the {variant} model (satellite_encoder={enc!r}); "
            f"pass model_config variant for its backbone ({sorted(VARIANTS)})."
        )
    model = build_seeded(build_wildsat, head_spec(sd, path=path), variant)
    check_state_dict(model, sd, path=path, what="WildSAT")
    model.load_state_dict(sd, strict=True)
    return model, opt


# ---------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------


def to_uint8_levels(x: np.ndarray, norm: str = "minmax") -> np.ndarray:
    """Raw DN (3, H, W) -> uint8 levels (as float32): clip 0..10000, /10000, one min-max over
    the tile (``minmax``), x 255 truncated. The float32 arithmetic of rs-embed 0.3.1."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.clip(a, 0.0, 10000.0) / 10000.0
    if norm == "minmax":
        lo, hi = float(np.min(a)), float(np.max(a))
        a = (a - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(a, dtype=np.float32)
    return np.clip(a * 255.0, 0.0, 255.0).astype(np.uint8).astype(np.float32)


def preprocess(inputs: list[np.ndarray], *, norm: str = "minmax", device: Any = "cpu") -> Any:
    """Raw (3, H, W) DN patches -> (B, 3, 224, 224) float32 in [0, 1] on ``device``."""
    levels = [to_uint8_levels(as_chw(x, channels=3, model_id="wildsat"), norm) for x in inputs]

    def transform(t: Any, shape: tuple[int, ...]) -> Any:
        return pil_like_bicubic_resize(t, (IMAGE_SIZE, IMAGE_SIZE)) / 255.0

    return stack_by_shape(levels, transform, device=device)


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class WildSAT(TorchEmbedder):
    """WildSAT (ViT-B/16 by default) on S2 B4,B3,B2; see the module docstring.

    ``model_config``: ``variant`` (``vitb16`` | ``resnet50`` | ``swint``), ``feature``
    (``image_head`` default | ``backbone``), ``norm`` (``minmax`` default | ``unit_scale``),
    ``image_branch`` (3), ``filename``, ``trusted_pickle`` (false).
    """

    info: ClassVar[ModelInfo] = CATALOG["wildsat"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 8
    batch_size_cuda = 64

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.cfg = parse_config(self.model_config)
        self._init_runtime()
        filename = str(self.model_config.get("filename") or VARIANTS[self.cfg.variant]["file"])
        try:
            resolved = resolve_weights("wildsat", weights, filename=filename, hf_repo=None)
        except WeightsError as exc:
            gid = VARIANTS[self.cfg.variant]["gdrive"]
            raise WeightsError(
                f"{exc}\nThe published {filename} is on Google Drive (id {gid}, "
                "github.com/cvl-umass/wildsat); download it by hand (no download at run time)."
            ) from None
        self.weights_record = resolved.record()
        if resolved.path is None:
            model, opt = build_seeded(build_wildsat, None, self.cfg.variant), {}
        else:
            model, opt = load_wildsat(
                str(resolved.path),
                variant=self.cfg.variant,
                trusted_pickle=self.cfg.trusted_pickle,
            )
        stored: HeadSpec = {n: [] for n, _ in model.decoder.named_children()}
        self.branch = (
            image_branch(stored, self.cfg.image_branch)
            if self.cfg.feature == "image_head"
            else None
        )
        self.feature_source = (
            "image_head"
            if self.branch
            else ("backbone" if self.cfg.feature == "backbone" else "backbone_fallback")
        )
        self.opt = {k: opt[k] for k in ("satellite_head", "common_embed_dim") if k in opt}
        self.model = model.to(self.device).eval()

    def forward(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """One forward: ((B, 768, 14, 14) patch tokens, or the pooled vector as 1 x 1 for
        the CNN/Swin variants; (B, D) pooled feature)."""
        with self.inference():
            tok, logits, img = self.model(x, self.branch)
            vec = to_numpy(img if img is not None else logits)
            if tok is None:
                return vec[:, :, None, None].copy(), vec
            grid = tokens_to_grid(tok[:, 1:, :], IMAGE_SIZE // PATCH)
        return grid, vec

    def _embed(self, batch: Batch) -> list[Embedding]:
        x = preprocess(batch.inputs, norm=self.cfg.norm, device=self.device)
        grids, vecs = self.forward(x)
        out: list[Embedding] = []
        for i in range(len(batch)):
            meta: dict[str, Any] = {
                "model": "wildsat",
                "weights": dict(self.weights_record),
                "variant": self.cfg.variant,
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "preprocess": f"div_10000_{self.cfg.norm}_uint8_pil_bicubic_div_255",
                "feature_source": self.feature_source,
                "image_head_branch": self.branch,
                "output_mode": batch.output.mode,
                **self.opt,
                **self.run_meta(),
            }
            win = roi_window_from_meta(batch.metas[i])
            g = crop_to_roi(grids[i], win, meta)
            if batch.output.mode != "pooled":
                kind = "vit_patch_tokens" if self.cfg.variant == "vitb16" else "vector_as_1x1"
                out.append(grid_embedding(g, meta, kind))
            elif win is None:
                meta["pooling"] = self.feature_source
                out.append(pooled_embedding(vecs[i], meta))
            else:
                meta["pooling"] = f"roi_grid_{batch.output.pooling}"
                out.append(pooled_embedding(pool(g, batch.output.pooling), meta))
        return out


__all__ = [
    "PUBLISHED_HEADS",
    "VARIANTS",
    "WildSAT",
    "WildSATConfig",
    "build_wildsat",
    "head_spec",
    "image_branch",
    "load_wildsat",
    "normalize_variant",
    "parse_config",
    "preprocess",
    "read_checkpoint",
    "to_uint8_levels",
]
