"""Ray's own output on the terminal: off by default, back with ``-v`` or
``RS_EMBED_RAY_LOG_LEVEL``.

A run used to print Ray's INFO lines (``Started a local Ray instance``, one ``Dataset ...
execution finished`` per stage), a ``Progress bars disabled`` warning and a ``core_worker``
error about actor constructor arguments. Where they come from, and what is done here:

- the ``ray`` logger: ``ray.init(logging_level=...)`` sets it (Ray's default is INFO);
- the ``ray.data`` logger has its own console handler at INFO (Ray Data configures it when
  imported, ``propagate=False``); its level is set here, the session's ``ray-data.log`` file
  keeps everything;
- ``Progress bars disabled``: Ray Data warns once when its bars are off, and they are off on
  purpose (the driver draws its own per stage), so that once-only warning is marked as given;
- ``core_worker.cc ... has constructor arguments in the object store and max_restarts > 0``:
  Ray Data itself passes object refs (its DataContext, its map transformer, a location-tracker
  actor) to every map actor it starts (ray-project/ray#57733), whatever the user's arguments;
  ours are small and inline. Ray prints that line once per process, from C++ straight to
  file descriptor 2, so quiet runs spend that one print on a throw-away actor with stderr
  pointed at /dev/null for the submission call;
- Ray Data's ``UserWarning`` about a writer pool larger than its inputs: the pools are sized
  to their batches (``runner._writers``); where Ray Data bundles blocks otherwise the
  remaining, harmless note is not shown.

Worker processes' own output reaches the driver only when verbose (``log_to_driver``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import ray

log = logging.getLogger(__name__)

ENV = "RS_EMBED_RAY_LOG_LEVEL"


def ray_log_level() -> int:
    """The level for Ray's own loggers: ``RS_EMBED_RAY_LOG_LEVEL`` (a name or number) when
    set, else INFO when this package logs at INFO (CLI ``-v``), else WARNING."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        if raw.isdigit():
            return int(raw)
        level = logging.getLevelName(raw.upper())
        if isinstance(level, int):
            return level
        log.warning("%s=%r is not a logging level; using WARNING", ENV, raw)
        return logging.WARNING
    own = logging.getLogger("rs_embed_ray").getEffectiveLevel()
    return logging.INFO if own <= logging.INFO else logging.WARNING


def init_kwargs(level: int) -> dict[str, Any]:
    """``ray.init`` keywords for ``level``: Ray's logger, and workers' output when verbose."""
    return {"logging_level": level, "log_to_driver": level <= logging.INFO}


def quiet_ray_data(level: int) -> None:
    """Ray Data's console output at ``level`` (its log file is left as it is)."""
    from ray.data._internal.logging import SessionFileHandler

    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, SessionFileHandler):
            handler.setLevel(level)
    if level > logging.INFO:
        from ray.util.debug import log_once

        # our own bars replace Ray Data's (runner._configure_data_context): nothing to warn
        log_once("ray_data_progress_manager_disabled")
        # writer pools are sized to their expected batches (runner._writers); when Ray Data
        # bundles blocks differently it still notes an idle writer slot: harmless, not shown
        warnings.filterwarnings(
            "ignore",
            message=r"The maximum number of concurrent tasks for .* only received",
            category=UserWarning,
        )


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@ray.remote(num_cpus=0, max_restarts=1)
class _Probe:
    def __init__(self, arg: Any) -> None:
        self.arg = arg


_SPENT = False


def spend_actor_arg_warning() -> None:
    """Give Ray's once-per-process ``constructor arguments in the object store`` print to a
    throw-away actor, with stderr at /dev/null for the submission (see the module doc)."""
    global _SPENT
    if _SPENT:
        return
    _SPENT = True
    ref = ray.put(0)
    with _stderr_to_devnull():
        actor = _Probe.remote(ref)  # the print happens here, in the driver, synchronously
    ray.kill(actor, no_restart=True)


__all__ = ["ENV", "init_kwargs", "quiet_ray_data", "ray_log_level", "spend_actor_arg_warning"]
