"""Input prep (tile / resize / auto): layout, snap, padding, stitching, pooling, batching.

These tests use a tiny deterministic fake Embedder defined here: it tests the tiling math,
not a model. Its grid splits each tile into 2x2 blocks and returns the block means of every
channel, so a correct stitch of an image whose channels hold global row / column indices
reproduces the block means of the whole image. One test at the end runs the real RemoteCLIP
through the same path.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedder, Embedding, ModelInfo
from rs_embed_ray.models.tiling import (
    embed_with_prep,
    resize_bilinear,
    snap_length,
    sub_spatial,
    tile_count,
    tile_starts,
)
from rs_embed_ray.specs import BBox, InputPrepSpec, OutputSpec, PointBuffer


class FakeEmbedder(Embedder):
    info: ClassVar[ModelInfo] = ModelInfo(
        model_id="fake", status="available", sensor=None, image_size=4
    )

    def _load(self, weights: str | None) -> None:
        self.weights_record = {"weights": "random-init", "sha256": None}
        self.calls: list[dict[str, Any]] = []

    def embed_batch(self, inputs, *, output, spatials, temporal, fetch_metas):
        self.calls.append(
            {
                "n": len(inputs),
                "shapes": [x.shape for x in inputs],
                "metas": fetch_metas,
                "spatials": spatials,
            }
        )
        out = []
        for x in inputs:
            blocks = [
                [b.mean(axis=(-2, -1)) for b in np.array_split(rb, 2, axis=-1)]
                for rb in np.array_split(x, 2, axis=-2)
            ]
            grid = np.stack([np.stack(r, axis=-1) for r in blocks], axis=-2)  # (C, 2, 2)
            if output.mode == "grid":
                out.append(Embedding(grid.astype(np.float32), {"model": "fake", "grid_hw": [2, 2]}))
            else:
                out.append(Embedding(x.mean(axis=(-2, -1)).astype(np.float32), {"model": "fake"}))
        return out


def _coords(h: int, w: int) -> np.ndarray:
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
    )
    return np.stack([yy, xx])


def _run(emb, xs, prep, output, metas=None, batch_size=64, spatials=None):
    return embed_with_prep(
        emb,
        xs,
        prep=prep,
        output=output,
        spatials=spatials or [PointBuffer(0, 0, 100)] * len(xs),
        temporal=None,
        fetch_metas=metas,
        batch_size=batch_size,
    )


# ---- geometry --------------------------------------------------------------------------


def test_cover_shift_starts_and_counts():
    assert tile_starts(448, 224) == [0, 224]
    assert tile_starts(500, 224) == [0, 224, 276]
    assert tile_starts(5, 4) == [0, 1]
    assert tile_starts(3, 4) == [0]
    assert tile_starts(4, 4) == [0]
    assert tile_count(5, 5, 4) == 4 and tile_count(900, 300, 224) == 5 * 2


def test_snap_length():
    assert snap_length(230, 224, 0.1) == 224  # 6 px overhang <= round(22.4)
    assert snap_length(246, 224, 0.1) == 224  # 22 px: still snapped
    assert snap_length(247, 224, 0.1) == 247
    assert snap_length(224, 224, 0.1) == 224 and snap_length(100, 224, 0.1) == 100
    assert snap_length(230, 224, 0.0) == 230


def test_resize_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 3, 19, 23)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(16, 20), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(resize_bilinear(x, (16, 20)), want, atol=1e-5)


def test_sub_spatial_partitions_bbox():
    bb = BBox(10.0, 50.0, 12.0, 51.0)
    top_left = sub_spatial(bb, hw=(8, 8), box=(0, 4, 0, 4))
    assert top_left == BBox(10.0, 50.5, 11.0, 51.0)
    pb = PointBuffer(1, 2, 30)
    assert sub_spatial(pb, hw=(8, 8), box=(0, 4, 0, 4)) is pb


# ---- contract behaviours -----------------------------------------------------------------


def test_contract_5x5_tile4_gives_one_batch_of_four():
    emb = FakeEmbedder()
    (e,) = _run(
        emb, [_coords(5, 5)], InputPrepSpec.tile(tile_size=4, max_tiles=9), OutputSpec.pooled()
    )
    assert [c["n"] for c in emb.calls] == [4]
    p = e.meta["input_prep"]
    assert p["resolved_mode"] == "tile" and p["tile_count"] == 4
    assert p == {
        "prep_version": 1,
        "requested_mode": "tile",
        "resolved_mode": "tile",
        "tile_layout": "cover_shift",
        "tile_size": 4,
        "tile_stride": 4,
        "tile_count": 4,
        "pad_edges": True,
        "pad_policy": "edge_replicate",
        "max_tiles": 9,
        "max_tiles_hard": 1024,
        "input_hw": [5, 5],
        "tile_snap_frac": 0.1,
        "merged_output": "pooled_reduce",
    }


def test_resize_meta_is_minimal_and_passes_through():
    emb = FakeEmbedder()
    x = _coords(9, 9)
    (e,) = _run(emb, [x], "resize", OutputSpec.grid(), metas=[{"roi_window_geo": (0, 0.5, 0, 1)}])
    assert e.meta["input_prep"] == {
        "prep_version": 1,
        "requested_mode": "resize",
        "resolved_mode": "resize",
    }
    assert emb.calls[0]["shapes"] == [(2, 9, 9)]
    assert emb.calls[0]["metas"][0]["roi_window_geo"] == (0, 0.5, 0, 1)


def test_grid_stitch_without_overlap_equals_whole_image_blocks():
    emb = FakeEmbedder()
    x = _coords(8, 8)
    (e,) = _run(emb, [x], InputPrepSpec.tile(), OutputSpec.grid())
    assert e.data.shape == (2, 4, 4)
    want = x.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(e.data, want)
    p = e.meta["input_prep"]
    assert p["stitched_grid_shape"] == [4, 4] and p["stitch_policy"] == "midpoint_cut"
    assert p["merged_output"] == "grid_stitch" and e.meta["grid_hw"] == [4, 4]


def test_grid_stitch_midpoint_cut_with_shifted_last_tile():
    # 6 px, tile 4: starts [0, 2]; cut at (4 + 2) // 2 = 3. Tile 0 owns rows [0,3) ->
    # cells [0, ceil(3/4*2)) = 2 cells; tile 1 owns [3,6) = rel [1,4) -> cells [0,2).
    emb = FakeEmbedder()
    x = _coords(6, 6)
    (e,) = _run(emb, [x], InputPrepSpec(tile_snap_frac=0.0), OutputSpec.grid())
    blocks = [(0, 2), (2, 4), (2, 4), (4, 6)]  # pixel rows/cols of the stitched cells
    want = np.array(
        [
            [[x[ch, a0:a1, b0:b1].mean() for b0, b1 in blocks] for a0, a1 in blocks]
            for ch in range(2)
        ]
    )
    np.testing.assert_allclose(e.data, want)


def test_tiles_lose_roi_and_stitched_grid_is_cropped():
    emb = FakeEmbedder()
    x = _coords(8, 8)
    meta = {"roi_window_geo": (0.25, 0.75, 0.0, 1.0), "scene": "s1"}
    (e,) = _run(emb, [x], None, OutputSpec.grid(), metas=[meta])
    assert all("roi_window_geo" not in m and m["scene"] == "s1" for m in emb.calls[0]["metas"])
    assert e.data.shape == (2, 2, 4)
    np.testing.assert_allclose(e.data, x.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))[:, 1:3, :])
    p = e.meta["input_prep"]
    assert p["roi_cropped"] is True and p["roi_grid_shape"] == [2, 4]
    assert e.meta["grid_hw"] == [2, 4]


def test_single_tile_keeps_roi_for_the_embedder():
    emb = FakeEmbedder()
    meta = {"roi_window_geo": (0.25, 0.75, 0.0, 1.0)}
    (e,) = _run(emb, [_coords(4, 4)], "tile", OutputSpec.grid(), metas=[meta])
    assert emb.calls[0]["metas"][0]["roi_window_geo"] == (0.25, 0.75, 0.0, 1.0)
    assert e.meta["input_prep"]["resolved_mode"] == "resize"
    assert e.meta["input_prep"]["requested_mode"] == "tile"


def test_pooled_area_weighted_mean_roi_weights_and_max():
    emb = FakeEmbedder()
    x = _coords(8, 4)  # two tiles stacked vertically
    (e,) = _run(emb, [x], "tile", OutputSpec.pooled())
    np.testing.assert_allclose(e.data, x.mean(axis=(1, 2)))
    # 6 rows, tile 4: tiles [0,4) and [2,6) own [0,3) and [3,6): equal weights
    x6 = _coords(6, 4)
    (e6,) = _run(emb, [x6], InputPrepSpec(tile_snap_frac=0.0), OutputSpec.pooled())
    want = 0.5 * x6[:, 0:4].mean(axis=(1, 2)) + 0.5 * x6[:, 2:6].mean(axis=(1, 2))
    np.testing.assert_allclose(e6.data, want, rtol=1e-6)
    # ROI = top quarter: only the top tile's owned area overlaps
    (er,) = _run(
        emb, [x], "tile", OutputSpec.pooled(), metas=[{"roi_window_geo": (0.0, 0.25, 0.0, 1.0)}]
    )
    np.testing.assert_allclose(er.data, x[:, 0:4].mean(axis=(1, 2)))
    assert er.meta["input_prep"]["roi_cropped"] is True
    (em,) = _run(emb, [x], "tile", OutputSpec.pooled("max"))
    np.testing.assert_allclose(em.data, x[:, 4:8].mean(axis=(1, 2)))


def test_edge_replicate_padding_and_no_padding():
    emb = FakeEmbedder()
    x = _coords(3, 8)  # height shorter than the tile
    _run(emb, [x], "tile", OutputSpec.grid())
    t0 = emb.calls[-1]
    assert t0["shapes"] == [(2, 4, 4), (2, 4, 4)]
    emb2 = FakeEmbedder()
    (e,) = _run(emb2, [x], InputPrepSpec(pad_edges=False), OutputSpec.grid())
    assert emb2.calls[-1]["shapes"] == [(2, 3, 4), (2, 3, 4)]
    assert e.meta["input_prep"]["pad_policy"] == "none"
    # padded: 3 valid of 4 px -> ceil(3/4*2) = 2 cells kept per tile column
    (ep,) = _run(FakeEmbedder(), [x], "tile", OutputSpec.grid())
    assert ep.data.shape == (2, 2, 4)


def test_padding_replicates_edge_values():
    seen = {}

    class Spy(FakeEmbedder):
        def embed_batch(self, inputs, **kw):
            seen["tiles"] = inputs
            return super().embed_batch(inputs, **kw)

    x = _coords(3, 8)
    _run(Spy(), [x], "tile", OutputSpec.grid())
    t = seen["tiles"][0]
    np.testing.assert_array_equal(t[:, 3], t[:, 2])
    np.testing.assert_array_equal(t[:, :3], x[:, :, :4])


def test_snap_downscales_small_overhang_and_records_it():
    emb = FakeEmbedder()
    (e,) = _run(emb, [_coords(9, 9)], InputPrepSpec(tile_snap_frac=0.25), OutputSpec.grid())
    p = e.meta["input_prep"]
    assert p["snapped_from_hw"] == [9, 9] and p["snapped_to_hw"] == [8, 8]
    assert p["input_hw"] == [8, 8] and p["tile_count"] == 4
    assert e.meta["input_hw"] == [9, 9]


def test_max_tiles_warns_and_hard_limit_raises():
    x = _coords(12, 12)  # 9 tiles
    with pytest.warns(UserWarning, match="max_tiles=4"):
        _run(FakeEmbedder(), [x], InputPrepSpec.tile(max_tiles=4), OutputSpec.pooled())
    with pytest.raises(ModelError, match="max_tiles_hard=8"):
        _run(
            FakeEmbedder(),
            [x],
            InputPrepSpec.tile(max_tiles=4, max_tiles_hard=8),
            OutputSpec.pooled(),
        )


def test_auto_mode():
    x = _coords(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (p,) = _run(FakeEmbedder(), [x], "auto", OutputSpec.pooled())
    assert p.meta["input_prep"] == {
        "prep_version": 1,
        "requested_mode": "auto",
        "resolved_mode": "resize",
    }
    (g,) = _run(FakeEmbedder(), [x], "auto", OutputSpec.grid())
    assert g.meta["input_prep"]["resolved_mode"] == "tile"
    (g2,) = _run(
        FakeEmbedder(), [_coords(12, 12)], InputPrepSpec.auto(max_tiles=4), OutputSpec.grid()
    )
    assert g2.meta["input_prep"]["resolved_mode"] == "resize"


def test_tiles_of_all_inputs_are_flattened_into_batches():
    emb = FakeEmbedder()
    xs = [_coords(8, 8), _coords(4, 4), _coords(8, 8), _coords(8, 8)]
    out = _run(emb, xs, "tile", OutputSpec.grid(), batch_size=5)
    assert [c["n"] for c in emb.calls] == [5, 5, 3]  # 4 + 1 + 4 + 4 = 13 calls
    assert [e.data.shape for e in out] == [(2, 4, 4), (2, 2, 2), (2, 4, 4), (2, 4, 4)]
    np.testing.assert_allclose(out[3].data, out[0].data)


def test_stride_must_equal_tile_and_no_size_degrades():
    with pytest.raises(ModelError, match="tile_stride == tile_size"):
        _run(FakeEmbedder(), [_coords(8, 8)], InputPrepSpec(tile_stride=2), OutputSpec.grid())

    class NoSize(FakeEmbedder):
        info: ClassVar[ModelInfo] = ModelInfo(model_id="n", status="available", sensor=None)

    (e,) = _run(NoSize(), [_coords(8, 8)], "tile", OutputSpec.grid())
    assert e.meta["input_prep"]["resolved_mode"] == "resize"


def test_tile_spatials_are_sub_boxes():
    emb = FakeEmbedder()
    bb = BBox(0.0, 0.0, 2.0, 2.0)
    _run(emb, [_coords(8, 8)], "tile", OutputSpec.pooled(), spatials=[bb])
    sp = emb.calls[0]["spatials"]
    assert sp[0] == BBox(0.0, 1.0, 1.0, 2.0) and sp[3] == BBox(1.0, 0.0, 2.0, 1.0)


def test_remoteclip_tiles_a_448_patch_into_a_14x14_grid(remoteclip):
    x = np.random.default_rng(0).uniform(0, 3000, size=(3, 448, 448)).astype(np.float32)
    (e,) = _run(remoteclip, [x], "tile", OutputSpec.grid(), batch_size=4)
    assert e.data.shape == (768, 14, 14) and e.meta["grid_hw"] == [14, 14]
    assert e.meta["input_prep"]["tile_count"] == 4 and e.meta["input_hw"] == [448, 448]
    (tl,) = remoteclip.embed_batch(
        [x[:, :224, :224]],
        output=OutputSpec.grid(),
        spatials=[None],
        temporal=None,
        fetch_metas=[{}],
    )
    np.testing.assert_allclose(e.data[:, :7, :7], tl.data, atol=1e-4)
