"""Preprocessing: band order, DN scaling, uint8 truncation, resize/crop, CLIP normalisation.

Golden numbers are computed by hand in the test; the resize path is compared with the
published per-image pipeline (PIL + torchvision transforms) when those are installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray.models.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    CropGeometry,
    clip_style_batch,
    pil_bicubic_matrix,
    roi_token_box,
    roi_window_from_meta,
    roi_window_in_crop,
)

torch = pytest.importorskip("torch")


def test_golden_constant_patch_band_order_scaling_normalisation():
    # channel 0 is B4 (red), 1 is B3 (green), 2 is B2 (blue): DN 2000 / 1000 / 500
    x = np.empty((3, 10, 10), np.float32)
    x[0], x[1], x[2] = 2000.0, 1000.0, 500.0
    t, geoms = clip_style_batch([x], size=224, mean=CLIP_MEAN, std=CLIP_STD)
    assert tuple(t.shape) == (1, 3, 224, 224)
    # DN/10000*255 truncated: 51.0 -> 51, 25.5 -> 25, 12.75 -> 12
    want = [
        (51 / 255 - 0.48145466) / 0.26862954,
        (25 / 255 - 0.4578275) / 0.26130258,
        (12 / 255 - 0.40821073) / 0.27577711,
    ]
    got = t[0].numpy()
    for c in range(3):
        np.testing.assert_allclose(got[c], want[c], atol=1e-6)
    assert geoms[0] == CropGeometry((10, 10), (224, 224), 0, 0, 224)


def test_golden_clipping_of_out_of_range_dn():
    x = np.empty((3, 4, 4), np.float32)
    x[0], x[1], x[2] = 12000.0, -50.0, 10000.0
    got = clip_style_batch([x], size=224, mean=CLIP_MEAN, std=CLIP_STD)[0][0].numpy()
    np.testing.assert_allclose(got[0], (1.0 - 0.48145466) / 0.26862954, atol=1e-6)
    np.testing.assert_allclose(got[1], (0.0 - 0.4578275) / 0.26130258, atol=1e-6)
    np.testing.assert_allclose(got[2], (1.0 - 0.40821073) / 0.27577711, atol=1e-6)


def test_golden_resize_geometry_non_square():
    # 8 x 16 -> shorter side 224 -> 224 x 448, centre crop starts at column 112.
    x = np.zeros((3, 8, 16), np.float32)
    x[:, :, 8:] = 10000.0  # right half white
    t, geoms = clip_style_batch([x], size=224, mean=(0, 0, 0), std=(1, 1, 1))
    g = geoms[0]
    assert g.resized_hw == (224, 448) and (g.crop_top, g.crop_left) == (0, 112)
    row = t[0, 0, 100].numpy()
    # the step (input column 8 = resized column 224) lands in the middle of the crop; the
    # bicubic kernel reaches 2 input pixels = 56 output pixels either side of it
    assert row[:56].max() == 0.0 and row[169:].min() == 1.0
    assert 0.0 < row[111] < 0.5 < row[112] < 1.0


def test_pil_weight_rows_sum_to_one_fixed_point():
    for n_in, n_out in [(10, 224), (300, 224), (224, 224), (1, 7)]:
        m = pil_bicubic_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in)
        assert np.all(np.abs(m.sum(1) - (1 << 22)) <= n_in)  # rounding of each tap


@pytest.mark.parametrize("hw", [(64, 64), (37, 53), (300, 256), (500, 180), (224, 224), (2, 5)])
def test_matches_pil_torchvision_pipeline_exactly(hw):
    PIL = pytest.importorskip("PIL.Image")
    T = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    x = rng.uniform(-100, 11000, size=(3, *hw)).astype(np.float32)
    u8 = (np.clip(x / 10000.0, 0, 1) * 255).astype(np.uint8)
    pipeline = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    want = pipeline(PIL.fromarray(u8.transpose(1, 2, 0), mode="RGB")).numpy()
    got = clip_style_batch([x], size=224, mean=CLIP_MEAN, std=CLIP_STD)[0][0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_roi_helpers():
    assert roi_window_from_meta({}) is None
    assert roi_window_from_meta({"roi_window_geo": (0, 1, 0, 1)}) is None
    assert roi_window_from_meta({"roi_window_geo": [0.1, 0.9, 0, 1]}) == (0.1, 0.9, 0.0, 1.0)
    assert roi_token_box((0.25, 0.75, 0.0, 1.0), grid_h=7, grid_w=7) == (1, 6, 0, 7)
    assert roi_token_box((0.5, 0.5, 0.5, 0.5), grid_h=7, grid_w=7) == (3, 4, 3, 4)
    assert roi_token_box((2 / 7, 5 / 7, 0, 1), grid_h=7, grid_w=7) == (2, 5, 0, 7)
    sq = CropGeometry((64, 64), (224, 224), 0, 0, 224)
    assert roi_window_in_crop((0.25, 0.75, 0.0, 1.0), sq) == (0.25, 0.75, 0.0, 1.0)
    wide = CropGeometry((8, 16), (224, 448), 0, 112, 224)
    y0, y1, x0, x1 = roi_window_in_crop((0.0, 1.0, 0.5, 1.0), wide)
    assert (y0, y1, x0, x1) == (0.0, 1.0, 0.5, 1.0)
