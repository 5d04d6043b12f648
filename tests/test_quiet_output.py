"""Issue 21 item 8: a default CLI run prints our summary and nothing of Ray's own logging;
``RS_EMBED_RAY_LOG_LEVEL=INFO`` brings Ray's lines back. Fresh processes: Ray's C++ prints go
to the process's file descriptor 2 once per process, which an in-process run cannot see."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import points

RAY_NOISE = (
    "Started a local Ray instance",
    "core_worker",
    "constructor arguments",
    "Progress bars disabled",
    "execution finished",
    "UserWarning",
    " INFO ",
)


def run_cli(tmp_path, raster_source, out, *extra, **env):
    pts = tmp_path / "p.csv"
    pts.write_text(
        "lon,lat,buffer_m\n" + "".join(f"{p.lon},{p.lat},{p.buffer_m}\n" for p in points(3))
    )
    cmd = [
        sys.executable,
        "-m",
        "rs_embed_ray.cli",
        "export",
        "--points",
        str(pts),
        "--models",
        "spectral_stats",
        "--start",
        "2022-06-01",
        "--end",
        "2022-09-01",
        "--out",
        str(out),
        "--backend",
        "local",
        "--source",
        str(raster_source),
        "--num-workers",
        "2",
        "--no-progress",
        *extra,
    ]
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **env}
    full_env.pop("RAY_ADDRESS", None)
    full_env.pop("RS_EMBED_RAY_LOG_LEVEL", None)
    full_env.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.mark.parametrize("executor", ["ray", "auto"])
def test_default_cli_run_prints_no_ray_logging(tmp_path, raster_source, executor):
    """``ray``: Ray started and silenced; ``auto`` (the default): 3 places run in process."""
    res = run_cli(tmp_path, raster_source, tmp_path / "quiet", "--executor", executor)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    assert json.loads(res.stdout)["status_counts"] == {"ok": 3}
    for noise in RAY_NOISE:
        assert noise not in res.stdout


def test_level_comes_back_with_env_or_verbose(monkeypatch):
    """-v (this package's logger at INFO) or RS_EMBED_RAY_LOG_LEVEL raise Ray's level again."""
    import logging

    from rs_embed_ray.pipeline.quiet import init_kwargs, ray_log_level

    monkeypatch.delenv("RS_EMBED_RAY_LOG_LEVEL", raising=False)
    own = logging.getLogger("rs_embed_ray")
    monkeypatch.setattr(own, "level", logging.WARNING)
    assert ray_log_level() == logging.WARNING
    assert init_kwargs(ray_log_level()) == {
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    monkeypatch.setattr(own, "level", logging.INFO)  # what the CLI's -v does
    assert ray_log_level() == logging.INFO
    monkeypatch.setattr(own, "level", logging.WARNING)
    monkeypatch.setenv("RS_EMBED_RAY_LOG_LEVEL", "debug")
    assert init_kwargs(ray_log_level()) == {"logging_level": logging.DEBUG, "log_to_driver": True}
