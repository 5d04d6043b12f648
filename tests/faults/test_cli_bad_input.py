"""Bad input to ``rs-embed-ray export``: exit 2, a one-line ``error:`` saying what to fix,
and nothing written (no output folder, no state, no temp file), all before Ray starts."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from rs_embed_ray.cli import main

GOOD = "name,lon,lat,buffer_m\na,15.0,45.0,160\nb,15.01,45.0,160\n"


def run(tmp_path, points_text=None, points_path=None, out=None, models="spectral_stats",
        extra=("--start", "2022-06-01", "--end", "2022-09-01")):  # fmt: skip
    pts = points_path
    if pts is None:
        pts = tmp_path / "places.csv"
        pts.write_text(points_text if points_text is not None else GOOD)
    out = out if out is not None else tmp_path / "out"
    res = CliRunner().invoke(main, [
        "export", "--points", str(pts), "--models", models, "--backend", "local",
        "--source", str(tmp_path), "--out", str(out), "--no-progress", *extra,
    ])  # fmt: skip
    return res, out


def assert_refused(res, out, needle, tmp_path, before):
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "error:" in res.output.lower() and needle in res.output, res.output
    assert "Traceback" not in res.output
    assert not os.path.lexists(out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing else appeared


CSV_CASES = [
    ("missing columns", "x,y\n1,2\n", "needs columns"),
    ("no buffer", "lon,lat\n15,45\n", "buffer"),
    ("NaN lon", "name,lon,lat,buffer_m\na,nan,45,160\n", "not finite"),
    ("empty lon", "name,lon,lat,buffer_m\na,,45,160\n", "lon"),
    ("text lon", "name,lon,lat,buffer_m\na,east,45,160\n", "must be a number"),
    ("lon out of range", "name,lon,lat,buffer_m\na,190,45,160\n", "lon"),
    ("no rows", "name,lon,lat,buffer_m\n", "no rows"),
    ("duplicate names", "name,lon,lat,buffer_m\na,15,45,160\na,15.01,45,160\n", "Duplicate"),
    ("names differ by case", "name,lon,lat,buffer_m\nA,15,45,160\na,15.01,45,160\n", "Duplicate"),
    ("name with /", "name,lon,lat,buffer_m\nx/y,15,45,160\n", "not a safe file name"),
    ("name with \\", "name,lon,lat,buffer_m\nx\\y,15,45,160\n", "not a safe file name"),
    ("name ..", "name,lon,lat,buffer_m\n..,15,45,160\n", "not a safe file name"),
    ("name ../up", "name,lon,lat,buffer_m\n../up,15,45,160\n", "not a safe file name"),
    ("absolute name", "name,lon,lat,buffer_m\n/etc/passwd,15,45,160\n", "not a safe file name"),
    ("hidden name", "name,lon,lat,buffer_m\n.bashrc,15,45,160\n", "not a safe file name"),
    ("RTL mark", "name,lon,lat,buffer_m\nevil\u202egpj.exe,15,45,160\n", "not a safe file name"),
]


@pytest.mark.parametrize("label,text,needle", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_bad_points_table(tmp_path, label, text, needle):
    pts = tmp_path / "places.csv"
    pts.write_text(text, encoding="utf-8")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res, out = run(tmp_path, points_path=pts)
    assert_refused(res, out, needle, tmp_path, before)


def test_unreadable_points_files(tmp_path):
    cases = []
    cases.append((tmp_path / "missing.csv", "does not exist"))
    (tmp_path / "folder.csv").mkdir()
    cases.append((tmp_path / "folder.csv", "is a directory"))
    (tmp_path / "junk.parquet").write_bytes(b"\x00\x01 not parquet \xff" * 10)
    cases.append((tmp_path / "junk.parquet", "cannot be read"))
    (tmp_path / "junk.geojson").write_text("{not json")
    cases.append((tmp_path / "junk.geojson", "not valid GeoJSON"))
    (tmp_path / "places.xlsx").write_text("a")
    cases.append((tmp_path / "places.xlsx", "unknown extension"))
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    cases.append((tmp_path / "bin.csv", "Points file"))
    for path, needle in cases:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        res, out = run(tmp_path, points_path=path)
        assert_refused(res, out, needle, tmp_path, before)


@pytest.mark.parametrize(
    "label,kw,needle",
    [
        ("unknown model", dict(models="spectral_stats,nope"), "Unknown model 'nope'"),
        (
            "year and start",
            dict(extra=("--year", "2022", "--start", "2022-06-01", "--end", "2022-09-01")),
            "either --year",
        ),
        ("start without end", dict(extra=("--start", "2022-06-01")), "go together"),
        (
            "end before start",
            dict(extra=("--start", "2022-09-01", "--end", "2022-06-01")),
            "requires start < end",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_options(tmp_path, label, kw, needle):
    (tmp_path / "places.csv").write_text(GOOD)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res, out = run(tmp_path, points_path=tmp_path / "places.csv", **kw)
    assert_refused(res, out, needle, tmp_path, before)


def test_unwritable_output(tmp_path):
    (tmp_path / "places.csv").write_text(GOOD)
    (tmp_path / "a-file").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res, out = run(tmp_path, points_path=tmp_path / "places.csv", out=tmp_path / "a-file" / "o")
    assert_refused(res, out, "which is a file", tmp_path, before)
    res, out = run(tmp_path, points_path=tmp_path / "places.csv", out=tmp_path / "a-file")
    assert_refused(res, tmp_path / "nonexistent", "not a directory", tmp_path, before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_read_only_output_folder(tmp_path):
    (tmp_path / "places.csv").write_text(GOOD)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        res, out = run(tmp_path, points_path=tmp_path / "places.csv", out=ro / "o")
        assert_refused(res, out, "not writable", tmp_path, before)
    finally:
        ro.chmod(0o700)
