"""Earth Engine answering 10% 429s, 5% 500s and latency spikes (the emulator): with the
provider's retries every place ends ok; with them off the failures are logged with their
error, the CLI exits 1, and ``--resume`` redoes exactly the failed places."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from rs_embed_ray import PointBuffer, export_batch, geo
from rs_embed_ray.cli import main
from rs_embed_ray.testing.ee_emulator import EEEmulator
from tests.faults.conftest import (
    WINDOW,
    assert_per_item_complete,
    counts,
    ok_pixel_places,
    records,
    state_dir,
)

pytestmark = pytest.mark.usefixtures("ray_cluster", "clean_ee_env")

PLACES = [PointBuffer(15.0 + 0.01 * (i % 4), 45.0 - 0.01 * (i // 4), 160.0) for i in range(16)]
# 10% 429 (with Retry-After) + 5% 500. Seed 60: requests 7, 12, 13 and 16 fail (500, 429,
# 429, 500), whatever order the places' requests arrive in; the first ones (the preflight,
# the actors' start) pass
FLAKY = dict(error_rate=0.15, error_codes=(429, 429, 500), seed=60, retry_after_s=0)


class SpikyEmulator(EEEmulator):
    """Latency spikes: a quarter of the compute calls wait 400 ms. Drawn from a generator
    of their own, so that the seeded error sequence does not depend on arrival order."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._spikes = random.Random(1)
        self.spike_ms = 400.0

    def _delay(self) -> None:
        with self._lock:
            wait = self.spike_ms if self._spikes.random() < 0.25 else 5.0
        time.sleep(wait / 1000.0)


def gee_kw(emu, out, **extra):
    d = dict(
        spatials=PLACES,
        temporal=WINDOW,
        models=["spectral_stats"],
        backend="gee",
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=4,
        chunk_size=2,
    )
    d.update(extra)
    d.setdefault("provider_options", {"url": emu.url, "backoff_s": 0.01, "max_backoff_s": 0.05})
    return d


def test_retries_absorb_429_500_and_latency_spikes(tmp_path):
    out = tmp_path / "pi"
    with SpikyEmulator(**FLAKY) as emu:
        res = export_batch(**gee_kw(emu, out))
        codes = Counter(r["status"] for r in emu.request_log)
    assert codes[429] > 0 and codes[500] > 0, codes  # the errors were injected...
    assert [r["status"] for r in res] == ["ok"] * len(PLACES)  # ...and absorbed
    state = state_dir(out, "per_item")
    assert [r for r in records(state) if r["status"] != "ok"] == []
    assert counts(state, "patch") == {i: 1 for i in range(len(PLACES))}
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(len(PLACES))])


def write_points(path):
    lines = ["lon,lat,buffer_m"] + [f"{p.lon},{p.lat},{p.buffer_m}" for p in PLACES]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_args(pts, out, url, *extra):
    return ["export", "--points", str(pts), "--models", "spectral_stats", "--backend", "gee",
            "--ee-url", url, "--start", "2022-06-01", "--end", "2022-09-01", "--out", str(out),
            "--num-workers", "4", "--chunk-size", "2", "--no-progress", *extra]  # fmt: skip


def test_without_retries_failures_are_logged_and_resume_redoes_exactly_them(tmp_path):
    out = tmp_path / "pi"
    state = state_dir(out, "per_item")
    pts = write_points(tmp_path / "places.csv")
    with SpikyEmulator(**FLAKY) as emu:
        res = export_batch(
            **gee_kw(emu, out, provider_options={"url": emu.url, "max_retries": 0}),
            continue_on_error=True,
        )
        failed = {i for i, r in enumerate(res) if r["status"] != "ok"}
        assert len(failed) == 4, failed  # the 4 injected errors, one place each
        bad = [r for r in records(state) if r["status"] == "failed" and r["kind"] == "patch"]
        assert {r["index"] for r in bad} == failed
        for r in bad:  # each failure is logged with its error: which call, which HTTP status
            assert "Earth Engine" in r["error"] and (
                "HTTP 429" in r["error"] or "HTTP 500" in r["error"]
            ), r["error"]
        for i in failed:
            assert res[i]["models"][0]["error"]

        # the CLI, resuming: the flaky errors are gone, but one failed place has no imagery
        # now (a deterministic error): exit 1, and exactly the failed places were fetched
        emu.error_rate, emu.spike_ms = 0.0, 0.0
        still_bad = min(failed)
        emu.empty_regions = [geo.grid_for(PLACES[still_bad], 10).bounds()]
        emu.reset_stats()
        cli = CliRunner().invoke(
            main, cli_args(pts, out, emu.url, "--resume", "--continue-on-error")
        )
        assert cli.exit_code == 1, (cli.output[-1500:], failed, ok_pixel_places(emu, PLACES))
        summary = json.loads(cli.stdout.strip().splitlines()[-1])
        assert summary["status_counts"] == {"failed": 1, "ok": len(PLACES) - 1}, summary
        fetched = ok_pixel_places(emu, PLACES)  # (the empty place may cost one request)
        assert set(fetched) - {still_bad} == failed - {still_bad}, (failed, fetched)
        assert set(fetched.values()) == {1}, fetched
        last = [r for r in records(state) if r["index"] == still_bad and r["kind"] == "patch"]
        assert last[-1]["status"] == "failed" and "No images" in last[-1]["error"]

        # fixed: --resume redoes exactly that place, exit 0
        emu.empty_regions = []
        emu.reset_stats()
        cli = CliRunner().invoke(main, cli_args(pts, out, emu.url, "--resume"))
        assert cli.exit_code == 0, cli.output
        assert ok_pixel_places(emu, PLACES) == {still_bad: 1}
    assert counts(state, "patch", "ok") == {i: 1 for i in range(len(PLACES))}
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(len(PLACES))])
