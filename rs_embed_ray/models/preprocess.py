"""Shared, batched image preprocessing in torch (no PIL), plus ROI-window helpers.

Models receive raw provider units (S2 DN 0..10000, float32, CHW). The published pipelines
run per image through PIL (``Resize(bicubic)`` on a uint8 image, ``CenterCrop``,
``ToTensor``, ``Normalize``). Here the same steps run as tensor ops, on the model's device,
for a whole batch at once:

* DN -> uint8 levels: ``floor(clip(x / 10000, 0, 1) * 255)`` in float32, exactly like
  ``(np.clip(x / 10000, 0, 1) * 255).astype(np.uint8)``.
* Resize of the shorter side with torchvision's output-size rule, then centre crop with
  torchvision's ``round((H - S) / 2)`` offsets.
* Pillow's 8-bit bicubic is reproduced exactly: the same a=-0.5 kernel, support widened
  when downsampling, edge taps renormalised, 22-bit fixed-point weights, width pass then
  height pass, each rounded to uint8. The passes are matmuls with (out, in) weight matrices
  in float64 (exact for these integers), so a batch resizes in two matmuls on any device.
  ``F.interpolate(mode="bicubic", antialias=True)`` computes the same kernel in floating
  point but without the intermediate uint8 rounding, which puts 20% of pixels 1..20 levels
  off; hence the explicit matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RoiWindow = tuple[float, float, float, float]  # (y0, y1, x0, x1), fractions of the input


@dataclass(frozen=True)
class CropGeometry:
    """Where the model's square input sits in the original patch (for ROI mapping)."""

    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    crop_top: int
    crop_left: int
    size: int

    def as_meta(self) -> dict[str, Any]:
        return {
            "input_hw": list(self.input_hw),
            "resized_hw": list(self.resized_hw),
            "crop_top": self.crop_top,
            "crop_left": self.crop_left,
        }


def as_chw(x: Any, *, channels: int, model_id: str, zero_nonfinite: bool = True) -> np.ndarray:
    """Validate one input as float32 CHW (a 1-frame TCHW is squeezed); NaN/inf -> 0, unless
    ``zero_nonfinite=False`` (the model zeroes them batched on its device)."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] != channels:
        raise ModelError(
            f"{model_id} expects CHW input with {channels} bands, got shape {tuple(a.shape)}."
        )
    if a.shape[1] < 1 or a.shape[2] < 1:
        raise ModelError(f"{model_id} got an empty input of shape {tuple(a.shape)}.")
    if zero_nonfinite and not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


def first_scaled_range(t: Any, *, nodata_ok: bool) -> tuple[float, float] | None:
    """(min, max) of the first image of the batch ``t`` (N, ...) whose values all lie in
    [0, 2], i.e. reflectance where raw DN (0..10000) was expected; None when there is none.
    ``nodata_ok``: an all-zero image is nodata, not scaled. One batched min/max on the
    tensor's device and one host sync, instead of two host passes per image."""
    import torch

    flat = t.reshape(t.shape[0], -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    scaled = (lo >= 0.0) & (hi <= 2.0)
    if nodata_ok:
        scaled &= hi > 0.0
    if not bool(scaled.any()):
        return None
    k = int(torch.nonzero(scaled)[0, 0])
    return float(lo[k]), float(hi[k])


def resized_shorter_side_hw(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)`` output size: shorter side -> size, aspect kept (floor)."""
    if w <= h:
        return int(size * h / w), int(size)
    return int(size), int(size * w / h)


def center_crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``CenterCrop`` offsets for an image at least ``size`` on both sides."""
    return round((h - size) / 2.0), round((w - size) / 2.0)


def dn_to_uint8_levels(x: Any, *, scale: float = 10000.0) -> Any:
    """Raw DN -> uint8 levels 0..255 as float32 (truncation, as ``astype(np.uint8)``)."""
    import torch

    t = x.to(torch.float32)
    return torch.floor(torch.clamp(t / float(scale), 0.0, 1.0) * 255.0)


_PIL_PRECISION_BITS = 22  # Pillow: 32 - 8 bits - 2 guard bits for 8-bit images


def _bicubic_kernel(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=256)
def pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) fixed-point weights of Pillow's 8-bit bicubic resample along one axis.

    Pillow centres output pixel i at ``(i + 0.5) * in/out``, widens the a=-0.5 kernel by the
    downscale factor, keeps the taps inside the image, renormalises them, and rounds each
    weight to a 22-bit fixed-point integer. The integers are returned as float64 so a
    matmul over uint8 values is exact.
    """
    scale = float(in_size) / float(out_size)
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    one = float(1 << _PIL_PRECISION_BITS)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi, dtype=np.float64)
        w = _bicubic_kernel((taps - center + 0.5) / filterscale)
        total = w.sum()
        if total != 0.0:
            w = w / total
        fixed = np.trunc(w * one + np.where(w < 0.0, -0.5, 0.5))
        mat[i, lo:hi] = fixed
    return mat


def pil_like_bicubic_resize(img: Any, out_hw: tuple[int, int]) -> Any:
    """Resize (N, C, H, W) uint8-valued floats exactly like Pillow's bicubic on uint8.

    Width pass, then height pass, each rounded to uint8 as Pillow stores it; the sums run in
    float64 with Pillow's fixed-point weights, so the result is bit-identical to
    ``Image.resize(..., Image.BICUBIC)`` (checked in the tests).
    """
    import torch

    _, _, h, w = img.shape
    oh, ow = int(out_hw[0]), int(out_hw[1])
    half = float(1 << (_PIL_PRECISION_BITS - 1))
    one = float(1 << _PIL_PRECISION_BITS)
    y = img.to(torch.float64)
    if ow != w:
        mw = torch.from_numpy(pil_bicubic_matrix(w, ow)).to(device=y.device)
        y = torch.clamp(torch.floor((torch.matmul(y, mw.T) + half) / one), 0.0, 255.0)
    if oh != h:
        mh = torch.from_numpy(pil_bicubic_matrix(h, oh)).to(device=y.device)
        y = torch.matmul(mh, y)
        y = torch.clamp(torch.floor((y + half) / one), 0.0, 255.0)
    return y.to(torch.float32)


def norm_tensors(mean: Sequence[float], std: Sequence[float], device: Any) -> tuple[Any, Any]:
    """Per-channel mean and std as (1, C, 1, 1) float32 tensors on ``device``."""
    import torch

    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


def stack_by_shape(
    images: Sequence[np.ndarray],
    transform: Callable[[Any, tuple[int, ...]], Any],
    *,
    device: Any,
) -> Any:
    """Apply ``transform(stack, shape)`` once per group of equal-shaped images (stacked as
    one (N, ...) tensor on ``device``); the results, in input order, as one contiguous
    (B, ...) tensor. Batching by shape keeps one resize call per input size."""
    import torch

    out: list[Any] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    if len(groups) == 1:  # the usual batch: one shape, already in order, no second stack
        (shape,) = groups
        return transform(torch.from_numpy(np.stack(images)).to(device), shape).contiguous()
    for shape, idx in groups.items():
        t = transform(torch.from_numpy(np.stack([images[i] for i in idx])).to(device), shape)
        for j, i in enumerate(idx):
            out[i] = t[j]
    return torch.stack(out).contiguous()


def clip_style_batch(
    images: Sequence[np.ndarray],
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: Any = "cpu",
    dn_scale: float = 10000.0,
) -> tuple[Any, list[CropGeometry]]:
    """Raw DN CHW patches -> normalised (B, C, size, size) float32 on ``device``.

    DN/scale clip [0,1] -> uint8 levels -> Resize(size, bicubic) -> CenterCrop(size) ->
    /255 -> Normalize(mean, std). Images of equal shape are resized together.
    """
    import torch

    if not images:
        raise ModelError("clip_style_batch needs at least one image.")
    out: list[Any] = [None] * len(images)
    geoms: list[CropGeometry | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(int(v) for v in im.shape), []).append(i)
    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    for shape, idx in groups.items():
        _, h, w = shape
        stack = np.stack([images[i] for i in idx], axis=0)
        t = torch.from_numpy(stack).to(device=device, dtype=torch.float32)
        t = dn_to_uint8_levels(t, scale=dn_scale)
        rh, rw = resized_shorter_side_hw(h, w, size)
        t = pil_like_bicubic_resize(t, (rh, rw))
        top, left = center_crop_offsets(rh, rw, size)
        t = t[:, :, top : top + size, left : left + size]
        t = (t / 255.0 - m) / s
        g = CropGeometry((h, w), (rh, rw), top, left, size)
        for j, i in enumerate(idx):
            out[i] = t[j]
            geoms[i] = g
    return torch.stack(out, dim=0).contiguous(), [g for g in geoms if g is not None]


# ---------------------------------------------------------------------------------------
# ROI windows (fetch-square crop-back)
# ---------------------------------------------------------------------------------------


def roi_window_from_meta(meta: dict[str, Any] | None) -> RoiWindow | None:
    """The fetch-square window ``(y0, y1, x0, x1)`` from a fetch meta, or None if full/absent."""
    if not meta:
        return None
    raw = meta.get("roi_window_geo")
    if raw is None:
        return None
    try:
        y0, y1, x0, x1 = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise ModelError(
            f"fetch_meta['roi_window_geo'] must be (y0, y1, x0, x1) fractions, got {raw!r}."
        ) from None
    win = (
        min(max(y0, 0.0), 1.0),
        min(max(y1, 0.0), 1.0),
        min(max(x0, 0.0), 1.0),
        min(max(x1, 0.0), 1.0),
    )
    if roi_is_full(win):
        return None
    return win


def roi_is_full(win: RoiWindow, *, eps: float = 1e-6) -> bool:
    y0, y1, x0, x1 = win
    return y0 <= eps and y1 >= 1.0 - eps and x0 <= eps and x1 >= 1.0 - eps


def roi_token_box(win: RoiWindow, *, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """Fractions -> token indices ``(y0, y1, x0, x1)``, rounded outward, at least 1x1."""
    y0f, y1f, x0f, x1f = win
    y0 = max(0, min(int(np.floor(y0f * grid_h + 1e-9)), grid_h - 1))
    y1 = max(y0 + 1, min(int(np.ceil(y1f * grid_h - 1e-9)), grid_h))
    x0 = max(0, min(int(np.floor(x0f * grid_w + 1e-9)), grid_w - 1))
    x1 = max(x0 + 1, min(int(np.ceil(x1f * grid_w - 1e-9)), grid_w))
    return y0, y1, x0, x1


def roi_window_in_crop(win: RoiWindow, geom: CropGeometry) -> RoiWindow:
    """Map an input-fraction window into the model's centre-cropped square."""
    rh, rw = geom.resized_hw
    y0, y1, x0, x1 = win
    size = float(geom.size)

    def _f(v: float, full: int, off: int) -> float:
        return min(max((v * full - off) / size, 0.0), 1.0)

    return (
        _f(y0, rh, geom.crop_top),
        _f(y1, rh, geom.crop_top),
        _f(x0, rw, geom.crop_left),
        _f(x1, rw, geom.crop_left),
    )


def square_pad(t: Any) -> tuple[Any, RoiWindow]:
    """Centre pad (N, C, H, W) to a square (reflect, or edge when too wide); returns the
    padded tensor and the real content's window in it."""
    import torch.nn.functional as F

    _, _, h, w = t.shape
    s = max(h, w)
    if h == w:
        return t, (0.0, 1.0, 0.0, 1.0)
    top, left = (s - h) // 2, (s - w) // 2
    pads = (left, s - w - left, top, s - h - top)
    mode = "reflect" if (s - h) < h and (s - w) < w else "replicate"
    return F.pad(t, pads, mode=mode), (top / s, (top + h) / s, left / s, (left + w) / s)


def compose_window(inner: RoiWindow, outer: RoiWindow | None) -> RoiWindow:
    """``outer`` (a window in the input's fractions) mapped into the model's square input,
    whose content sits at ``inner`` (``inner`` itself when there is no ``outer``), clipped
    to the square: a centre crop puts parts of the input outside it."""
    y0, y1, x0, x1 = inner
    if outer is not None:
        oy0, oy1, ox0, ox1 = outer
        y0, y1, x0, x1 = (
            y0 + oy0 * (y1 - y0),
            y0 + oy1 * (y1 - y0),
            x0 + ox0 * (x1 - x0),
            x0 + ox1 * (x1 - x0),
        )
    return (max(0.0, y0), min(1.0, y1), max(0.0, x0), min(1.0, x1))


def crop_grid(grid_dhw: np.ndarray, win: RoiWindow) -> np.ndarray:
    """Crop a (D, h, w) token grid to a fractional window (rounded outward)."""
    y0, y1, x0, x1 = roi_token_box(win, grid_h=grid_dhw.shape[-2], grid_w=grid_dhw.shape[-1])
    return np.ascontiguousarray(grid_dhw[..., y0:y1, x0:x1])


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CropGeometry",
    "RoiWindow",
    "as_chw",
    "center_crop_offsets",
    "clip_style_batch",
    "compose_window",
    "crop_grid",
    "dn_to_uint8_levels",
    "norm_tensors",
    "first_scaled_range",
    "pil_like_bicubic_resize",
    "resized_shorter_side_hw",
    "roi_is_full",
    "roi_token_box",
    "roi_window_from_meta",
    "roi_window_in_crop",
    "square_pad",
    "stack_by_shape",
]


def as_tchw(
    x: Any, model: str, bands: Sequence[str], max_frames: int, frames_hint: str
) -> np.ndarray:
    """A multi-frame model's input as float32 (T, C, H, W): one (C, H, W) frame becomes T=1;
    a wrong band count, an empty axis or too many frames is a ModelError naming the model."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != len(bands):
        raise ModelError(
            f"{model} expects (C, H, W) or (T, C, H, W) input with C={len(bands)} bands "
            f"({', '.join(bands)}), got {tuple(a.shape)}."
        )
    if min(a.shape) < 1:
        raise ModelError(f"{model} got an empty input of shape {tuple(a.shape)}.")
    if a.shape[0] > max_frames:
        raise ModelError(
            f"{model} takes at most {max_frames} frames, got {a.shape[0]} ({frames_hint})."
        )
    return a
