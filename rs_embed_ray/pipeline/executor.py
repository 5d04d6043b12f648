"""Which executor runs an export: Ray (``dataflow``: actors, tasks, a cluster) or this
process (``inprocess``: threads). ``executor="auto"`` runs a small job on one machine in
process, where Ray's start-up would be most of the run, and everything else on Ray.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType

from rs_embed_ray.plan import ExportPlan

log = logging.getLogger(__name__)

# The option's values are checked at plan time (validation.EXECUTORS). auto runs in process
# up to this many places: past it, one process's GIL-bound fetch decoding (tens of ms of CPU
# a place) would hold back the model, and Ray's start-up is a small part of the run
# (docs/benchmarks.md, "In-process executor").
LOCAL_MAX_PLACES = 1000


def ray_running() -> bool:
    """Ray already started in this process (by the user, or a test's cluster)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def auto_reason(plan: ExportPlan) -> str | None:
    """Why ``auto`` runs ``plan`` on Ray, or None to run it in process."""
    run = plan.run
    if run.ray_address is not None or os.environ.get("RAY_ADDRESS"):
        return "a Ray address is given"
    if ray_running():
        return "Ray is already running in this process"
    if run.quota.shared_actor:
        return "ee_quota_actor shares a quota through a Ray actor"
    if plan.n_items > LOCAL_MAX_PLACES:
        return f"more than {LOCAL_MAX_PLACES} places"
    if plan.device != "cpu" and _gpus() > 1:
        return "more than one GPU"
    return None


def _gpus() -> int:
    from rs_embed_ray.pipeline.inprocess import visible_gpus

    return visible_gpus()


def choose(plan: ExportPlan) -> str:
    """``ray`` or ``local`` for the plan's ``executor`` option."""
    name = plan.run.executor
    if name != "auto":
        return name
    reason = auto_reason(plan)
    if reason is None:
        log.info("executor: in process (%d places on this machine)", plan.n_items)
        return "local"
    log.info("executor: ray (%s)", reason)
    return "ray"


def flow_of(name: str) -> ModuleType:
    """The stage module of an executor: the same names in both (``dataflow.__all__``)."""
    if name == "local":
        from rs_embed_ray.pipeline import inprocess

        return inprocess
    from rs_embed_ray.pipeline import dataflow

    return dataflow
