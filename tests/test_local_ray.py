"""The local Ray cluster an export starts for itself (``runner.ensure_ray``): the dashboard,
Ray's metrics export and its event-loop statistics are left out (nothing reads them there;
docs/benchmarks.md, session 19), as the cluster itself reports its configuration, and its
log monitor looks for new log files every 5 s (session 20), as its environment shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rs_embed_ray.pipeline import runner
from rs_embed_ray.pipeline.runner import LOCAL_CLUSTER, QUIET_LOG_MONITOR_ENV, local_cluster_kwargs

pytestmark = pytest.mark.ray

# a fresh interpreter: the test session's own cluster (conftest) must not be the one joined
PROBE = """
import json, os, ray, ray._private.state
from ray._private import ray_constants
from rs_embed_ray.pipeline.runner import QUIET_LOG_MONITOR_ENV, ensure_ray
ensure_ray(None)
cfg = ray._private.state.state.get_system_config()
node = ray._private.worker._global_node
monitor = node.all_processes[ray_constants.PROCESS_TYPE_LOG_MONITOR][0].process.pid
with open(f"/proc/{monitor}/environ", "rb") as fh:
    env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\\0") if b"=" in kv)
print(json.dumps({
    "config": cfg,
    "dashboard": node.address_info.get("webui_url"),
    "monitor_env": {k: env.get(k.encode(), b"").decode() for k in QUIET_LOG_MONITOR_ENV},
    "driver_env": [k for k in QUIET_LOG_MONITOR_ENV if k in os.environ],
}))
ray.shutdown()
"""


def test_export_started_cluster_leaves_out_metrics_and_event_stats():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    res = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=240
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["config"].get("enable_metrics_collection") is False
    assert seen["config"].get("event_stats") is False
    assert not seen["dashboard"], seen["dashboard"]
    # workers' output is off the terminal (the default): Ray's log monitor was started with
    # the quiet settings, and the driver's own environment is as it was
    assert seen["monitor_env"] == QUIET_LOG_MONITOR_ENV
    assert seen["driver_env"] == []


def test_a_users_log_monitor_setting_is_kept(monkeypatch):
    monkeypatch.setenv("LOG_NAME_UPDATE_INTERVAL_S", "0.5")
    monkeypatch.delenv("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", raising=False)
    seen = []
    with runner._environ(QUIET_LOG_MONITOR_ENV):
        seen.append({k: os.environ.get(k) for k in QUIET_LOG_MONITOR_ENV})
    assert seen == [
        {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0", "LOG_NAME_UPDATE_INTERVAL_S": "0.5"}
    ]
    assert os.environ["LOG_NAME_UPDATE_INTERVAL_S"] == "0.5"
    assert "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD" not in os.environ


def test_kwargs_are_a_fresh_copy():
    """Ray adds its own keys to the ``_system_config`` it is given: never to ours."""
    kw = local_cluster_kwargs()
    kw["_system_config"]["object_spilling_config"] = "x"
    assert "object_spilling_config" not in LOCAL_CLUSTER["_system_config"]
    assert local_cluster_kwargs() == LOCAL_CLUSTER
