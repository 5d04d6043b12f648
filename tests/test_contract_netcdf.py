"""Issue 21 item 5: netCDF dims named as rs-embed names them (contract §2.16.3), failed
places represented as it does, and rs-embed 0.3.1's own ``load_export`` reading our files
(npz and netCDF, both layouts) with the embeddings ours reads.

The cross-read runs rs-embed in its own Python 3.12 venv (``shared/anchor/setup_anchor.sh``,
``RS_EMBED_ANCHOR_PYTHON`` or ``/tmp/anchor-venv312``); it is skipped when that venv is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rs_embed_ray import TemporalSpec, export_batch, load_export
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
ANCHOR_PY = Path(os.environ.get("RS_EMBED_ANCHOR_PYTHON", "/tmp/anchor-venv312/bin/python"))

ANCHOR_LOAD = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from rs_embed import load_export
out = {}
for p in sys.argv[1:]:
    r = load_export(p)
    m = r.models["spectral_stats"]
    e = None if m.embeddings is None else np.asarray(m.embeddings, dtype=np.float64)
    out[p] = {"layout": r.layout, "n_items": r.n_items, "status": m.status,
              "emb": None if e is None else np.where(np.isnan(e), None, e).tolist()}
print(json.dumps(out))
"""


class Exports:
    """Exports of 3 places, the middle one failed (continue_on_error), made when first asked
    for: a run without the rs-embed venv makes only the two netCDF ones."""

    def __init__(self, root: Path, source: Path) -> None:
        self.root, self.source, self.paths = root, source, {}

    def __getitem__(self, key: tuple[str, str]) -> str:
        if key not in self.paths:
            layout, fmt = key
            sp = points(3)
            res = export_batch(
                spatials=sp,
                temporal=WINDOW,
                models=["spectral_stats"],
                **faulty_local(self.source, fail_items=[sp[1].center()]),  # place 1 fails
                show_progress=False,
                num_workers=2,
                out=str(self.root / f"{layout}_{fmt}"),
                layout=layout,
                format=fmt,
                continue_on_error=True,
            )
            if layout == "per_item":
                self.paths[key] = str(self.root / f"{layout}_{fmt}")
            else:
                self.paths[key] = res.get("npz_path") or res["nc_path"]
        return self.paths[key]


ALL = [(lay, fmt) for lay in ("per_item", "combined") for fmt in ("npz", "netcdf")]


@pytest.fixture(scope="module")
def exports(module_scratch, raster_source) -> Exports:
    return Exports(module_scratch("exports"), raster_source)


def test_netcdf_dims_and_failed_places_as_rs_embed_writes_them(exports):
    with xr.open_dataset(exports[("combined", "netcdf")]) as ds:
        # inputs: a stack of the 2 places that have one (indices in the manifest), whose
        # first dim is renamed because ``point`` already has 3 places
        x = ds["inputs_bchw__spectral_stats"]
        assert x.dims == ("point__inputs_bchw__spectral_stats", "band", "y", "x")
        assert x.shape[0] == 2
        # embeddings of a partial model: one variable per place that has one
        assert "embeddings__spectral_stats" not in ds
        assert ds["embedding__spectral_stats__00000"].dims == ("dim",)
        assert "embedding__spectral_stats__00001" not in ds
        # ours, as additions: coordinates on ``point`` and CF attributes
        assert set(ds.coords) == {"point", "lon", "lat", "name"}
        assert ds["lon"].dims == ("point",) and ds.attrs["Conventions"] == "CF-1.8"
        man = json.loads(ds.attrs["rs_embed_ray_manifest"])
        assert man["models"][0]["inputs"]["indices"] == [0, 2]
    with xr.open_dataset(Path(exports[("per_item", "netcdf")]) / "p00000.nc") as ds:
        assert ds["input_chw__spectral_stats"].dims == ("band", "y", "x")
        assert ds["embedding__spectral_stats"].dims == ("dim",)


def test_rs_embed_load_export_reads_our_files(exports):
    if not ANCHOR_PY.exists():
        pytest.skip(
            f"rs-embed 0.3.1 venv not found at {ANCHOR_PY}: build it with "
            "shared/anchor/setup_anchor.sh (or set RS_EMBED_ANCHOR_PYTHON)"
        )
    run = subprocess.run(
        [str(ANCHOR_PY), "-c", ANCHOR_LOAD, *(exports[k] for k in ALL)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for layout, fmt in ALL:
        path = exports[(layout, fmt)]
        got = theirs[path]
        assert got["layout"] == layout and got["n_items"] == 3
        assert got["status"] == "partial"
        ours = load_export(path).models["spectral_stats"].embeddings
        assert ours.shape == (3, 20)
        emb = np.asarray(
            [[np.nan if v is None else v for v in row] for row in got["emb"]], dtype=np.float64
        )
        assert np.isnan(emb[1]).all() and np.isnan(ours[1]).all()
        np.testing.assert_array_equal(emb[[0, 2]], ours[[0, 2]].astype(np.float64))
