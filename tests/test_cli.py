"""The click CLI end to end on a real local Ray cluster: exit codes 0 / 1 / 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rs_embed_ray.cli import main
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")


def write_points(path, pts, names=None, extra_row=None):
    lines = ["name,lon,lat,buffer_m"]
    for i, p in enumerate(pts):
        lines.append(f"{names[i] if names else f'site{i}'},{p.lon},{p.lat},{p.buffer_m}")
    if extra_row:
        lines.append(extra_row)
    path.write_text("\n".join(lines) + "\n")
    return path


def args(pts_file, out, source, *extra):
    return [
        "export",
        "--points",
        str(pts_file),
        "--models",
        "spectral_stats,remoteclip",
        "--weights",
        "remoteclip=random",
        "--start",
        "2022-06-01",
        "--end",
        "2022-09-01",
        "--out",
        str(out),
        "--backend",
        "local",
        "--source",
        str(source),
        "--num-workers",
        "2",
        "--chunk-size",
        "4",
        "--no-progress",
        *extra,
    ]


def test_export_ok_exit_0(tmp_path, raster_source):
    pts = write_points(tmp_path / "p.csv", points(3))
    res = CliRunner().invoke(main, args(pts, tmp_path / "out", raster_source))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["status_counts"] == {"ok": 3}
    assert (tmp_path / "out" / "site0.npz").exists()
    man = json.loads((tmp_path / "out" / "site1.json").read_text())
    assert man["name"] == "site1" and man["point_index"] == 1
    assert man["models"][1]["weights"]["weights"] == "random-init"
    ins = CliRunner().invoke(main, ["inspect", str(tmp_path / "out")])
    assert ins.exit_code == 0, ins.output
    info = json.loads(ins.stdout)
    assert info["models"]["remoteclip"]["ok"] == 3


def test_failed_items_exit_1_and_resume(tmp_path, raster_source):
    # the last place lies outside the raster source: a deterministic provider error
    pts = write_points(tmp_path / "p.csv", points(2), extra_row="far,40.0,10.0,160")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, args(pts, out, raster_source, "--continue-on-error"))
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["status_counts"] == {"failed": 1, "ok": 2}
    log = [json.loads(x) for x in (out / "_rs_embed_ray" / "log.jsonl").read_text().splitlines()]
    failed = [r for r in log if r["status"] == "failed"]
    assert {r["index"] for r in failed} == {2} and all(r["error"] for r in failed)
    # the same request without continue_on_error stops at the failure: still exit 1
    res = CliRunner().invoke(main, args(pts, out, raster_source, "--resume"))
    assert res.exit_code == 1 and "far" in res.output


@pytest.mark.parametrize(
    "content,needle",
    [
        ("x,y\n1,2\n", "needs columns"),
        ("name,lon,lat,buffer_m\na,nan,45,10\n", "not finite"),
        ("name,lon,lat,buffer_m\na,15,45,10\na,15.1,45,10\n", "Duplicate name"),
        ("name,lon,lat,buffer_m\na/b,15,45,10\n", "not a safe file name"),
        ("name,lon,lat\na,15,45\n", "buffer"),
    ],
)
def test_bad_input_exit_2_writes_nothing(tmp_path, raster_source, content, needle):
    pts = tmp_path / "p.csv"
    pts.write_text(content)
    res = CliRunner().invoke(main, args(pts, tmp_path / "out", raster_source))
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not (tmp_path / "out").exists()


def test_bad_options_exit_2(tmp_path, raster_source):
    pts = write_points(tmp_path / "p.csv", points(1))
    res = CliRunner().invoke(main, args(pts, tmp_path / "o", raster_source, "--year", "2022"))
    assert res.exit_code == 2 and "either --year" in res.output
    bad = args(pts, tmp_path / "o", raster_source)
    bad[bad.index("spectral_stats,remoteclip")] = "nope"
    res = CliRunner().invoke(main, bad)
    assert res.exit_code == 2 and "Unknown model" in res.output


def test_model_config_option(tmp_path, raster_source):
    from rs_embed_ray.cli import _parse_model_configs

    got = _parse_model_configs(("dofa.variant=large", "olmoearth.patch_size=8", "dofa.x=[1, 2]"))
    assert got == {"dofa": {"variant": "large", "x": [1, 2]}, "olmoearth": {"patch_size": 8}}
    pts = write_points(tmp_path / "p.csv", points(1))
    for bad, needle in (
        ("dofa", "MODEL.KEY=VALUE"),
        ("dofa.variant", "MODEL.KEY=VALUE"),
        ("satmae.layernorm_eps=1e-6", "not among the requested models"),
    ):
        res = CliRunner().invoke(
            main, args(pts, tmp_path / "o", raster_source, "--model-config", bad)
        )
        assert res.exit_code == 2 and needle in res.output, (bad, res.output)
        assert not (tmp_path / "o").exists()


def test_models_lists_catalog():
    res = CliRunner().invoke(main, ["models", "--json"])
    assert res.exit_code == 0
    rows = {r["model"]: r for r in json.loads(res.stdout)}
    assert rows["remoteclip"]["status"] == "available" and rows["remoteclip"]["dim"] == 512
    assert {"prithvi", "dofa", "gse", "clay", "tessera"} <= set(rows)
