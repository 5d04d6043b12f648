"""The local Ray cluster an export starts for itself (``runner.ensure_ray``): the dashboard,
Ray's metrics export and its event-loop statistics are left out (nothing reads them there;
docs/benchmarks.md, session 19), as the cluster itself reports its configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rs_embed_ray.pipeline.runner import LOCAL_CLUSTER, local_cluster_kwargs

pytestmark = pytest.mark.ray

# a fresh interpreter: the test session's own cluster (conftest) must not be the one joined
PROBE = """
import json, ray, ray._private.state
from rs_embed_ray.pipeline.runner import ensure_ray
ensure_ray(None)
cfg = ray._private.state.state.get_system_config()
node = ray._private.worker._global_node
print(json.dumps({"config": cfg, "dashboard": node.address_info.get("webui_url")}))
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


def test_kwargs_are_a_fresh_copy():
    """Ray adds its own keys to the ``_system_config`` it is given: never to ours."""
    kw = local_cluster_kwargs()
    kw["_system_config"]["object_spilling_config"] = "x"
    assert "object_spilling_config" not in LOCAL_CLUSTER["_system_config"]
    assert local_cluster_kwargs() == LOCAL_CLUSTER
