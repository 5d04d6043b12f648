"""The driver is SIGKILLed mid-run against the Earth Engine emulator; a new process with a
new Ray cluster resumes. The emulator's request log proves that nothing logged as finished
is fetched again, and the files hold exactly the emulator's pixels for each place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, geo
from rs_embed_ray.testing.ee_emulator import EEEmulator, expected_pixels
from rs_embed_ray.testing.faults import hold_from
from tests.faults.conftest import (
    REPO,
    child_env,
    counts,
    driver_cmd,
    manifest_intact,
    ok_pixel_places,
    records,
    state_dir,
    temps,
)

pytestmark = pytest.mark.usefixtures("clean_ee_env")

PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(8)]
BANDS = ["B2", "B3", "B4", "B8"]


def expected_input(i: int) -> np.ndarray:
    grid = geo.grid_for(PLACES[i], 10)
    return np.asarray(expected_pixels(grid.affine, grid.width, grid.height, BANDS), np.float32)


@pytest.mark.parametrize("layout", ["per_item", "combined"])
def test_killed_driver_resumes_without_refetching(tmp_path, layout):
    out = tmp_path / ("pi" if layout == "per_item" else "c.npz")
    state = state_dir(out, layout)
    killed = threading.Event()
    with EEEmulator(retry_after_s=0, latency_ms=250) as emu:
        # the later half's pixels wait until the driver is killed: with timing alone a loaded
        # machine (CI) started the model actor after every place was fetched, and all eight
        # were logged before the kill could come
        emu.pixels_gate = hold_from(len(PLACES) // 2, killed.is_set, timeout_s=240)
        kw = dict(
            models=["spectral_stats"],
            backend="gee",
            provider_options={"url": emu.url},
            out=str(out),
            layout=layout,
            num_workers=1,
            fetch_threads=1,
            chunk_size=1,
        )
        proc = subprocess.Popen(
            driver_cmd(PLACES, **kw), env=child_env(), cwd=REPO, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                if (state / "log.jsonl").exists() and len(counts(state, "patch", "ok")) >= 2:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed.set()  # the held requests of the killed run end (their client is gone)
        done = set(counts(state, "patch", "ok"))
        assert 2 <= len(done) < len(PLACES)  # killed mid-run
        # per_item on Ray: the model actor writes a place's file as it embeds it, so a file
        # may land before the killed driver logged its place; resume takes it as it is
        files = [out / f"p{i:05d}.npz" for i in range(len(PLACES))] if layout == "per_item" else []
        landed = {i for i, f in enumerate(files) if f.with_suffix(".json").exists()}
        assert all(manifest_intact(files[i])["status"] == "ok" for i in landed)
        kept = done | landed
        assert len(kept) < len(PLACES)
        assert (state / "lock").exists()  # a SIGKILLed run leaves its lock behind

        # requests the killed run still had in flight end on the emulator's side first
        quiet_since, n_seen, give_up = time.time(), len(emu.request_log), time.time() + 60
        while time.time() - quiet_since < 1.0 and time.time() < give_up:
            time.sleep(0.1)
            if emu.in_flight or len(emu.request_log) != n_seen:
                quiet_since, n_seen = time.time(), len(emu.request_log)
        emu.reset_stats()
        emu.latency_ms = 0
        res = subprocess.run(
            driver_cmd(PLACES, **kw, resume=True), env=child_env(), cwd=REPO,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert "DONE" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
        refetched = ok_pixel_places(emu, PLACES)

    # nothing that was logged as fetched is fetched again; everything else exactly once
    assert set(refetched) & kept == set(), (sorted(done), sorted(landed), refetched)
    assert refetched == {i: 1 for i in range(len(PLACES)) if i not in kept}
    logged = {i: 1 for i in range(len(PLACES)) if i in done or i not in landed}
    assert counts(state, "patch", "ok") == logged
    assert [r for r in records(state) if r["status"] != "ok"] == []
    assert not (state / "lock").exists()
    if layout == "per_item":
        assert json.loads(res.stdout.split("DONE", 1)[1]) == ["ok"] * len(PLACES)
        for i in range(len(PLACES)):
            path = out / f"p{i:05d}.npz"
            assert manifest_intact(path)["status"] == "ok"
            with np.load(path) as z:
                np.testing.assert_array_equal(z["input_chw__spectral_stats"], expected_input(i))
        assert temps(out) == []
    else:
        assert manifest_intact(out)["status"] == "ok"
        with np.load(out) as z:
            stack = z["inputs_bchw__spectral_stats"]
            assert stack.shape[0] == len(PLACES)
            for i in range(len(PLACES)):
                np.testing.assert_array_equal(stack[i], expected_input(i))
        assert temps(out.parent) == []
