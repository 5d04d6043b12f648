"""A fetch actor and the inference actor die mid-run (``os._exit``, as an OOM kill would):
Ray Data restarts them and retries their tasks, the run completes, every place is logged ok
exactly once and every output file is written exactly once and whole.

Ray Data 2.60 defaults that make this work (nothing to configure in the runner): map actors
are created with ``max_restarts=-1`` and ``max_task_retries=-1`` (ActorPoolMapOperator.
_apply_default_remote_args), so a dead actor is restarted (its constructor runs again) and
the task it was running is resubmitted; task-pool stages (the writers) keep Ray Core's
``max_retries=3`` for worker deaths. A task whose UDF *raises* is not retried
(``actor_task_retry_on_errors=False``, ``retried_map_errors=False``) and fails the dataset
(``max_errored_blocks=0``): our workers turn per-place errors into rows instead of raising.
"""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray import export_batch
from rs_embed_ray.testing.faults import MODEL, faulty_local
from tests.conftest import points
from tests.faults.conftest import (
    assert_per_item_complete,
    counts,
    local_kw,
    manifest_intact,
    records,
    state_dir,
    temps,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")

N = 10


@pytest.mark.parametrize("layout", ["per_item"])
def test_fetch_and_model_actor_killed_mid_run(tmp_path, raster_source, layout):
    fetch_died, model_died = tmp_path / "fetch-died", tmp_path / "model-died"
    out = tmp_path / ("pi" if layout == "per_item" else "c.npz")
    # the 3rd fetch of some fetch actor and the 2nd batch of the model actor kill their
    # process, once (the marker file): the restarted actors carry on
    faults = faulty_local(raster_source, exit_on_call=3, exit_marker=str(fetch_died))
    res = export_batch(
        **local_kw(raster_source, models=[MODEL], **faults),
        spatials=points(N),
        out=str(out),
        layout=layout,
        model_configs={MODEL: {"exit_on_call": 2, "exit_marker": str(model_died)}},
    )
    assert fetch_died.exists() and model_died.exists()  # both kills happened
    state = state_dir(out, layout)
    assert [r for r in records(state) if r["status"] != "ok"] == []
    # every place ends ok exactly once per step: no lost and no duplicated place
    assert counts(state, "patch") == {i: 1 for i in range(N)}
    assert counts(state, "embed") == {i: 1 for i in range(N)}
    if layout == "per_item":
        assert [r["status"] for r in res] == ["ok"] * N
        assert_per_item_complete(out, [f"p{i:05d}" for i in range(N)])
    else:
        assert res["status"] == "ok"
        man = manifest_intact(out)
        with np.load(out) as z:
            assert z[f"embeddings__{MODEL}"].shape == (N, 20)
            assert np.isfinite(z[f"embeddings__{MODEL}"]).all()
        assert man["n_items"] == N
        assert temps(out.parent) == []


def test_actors_dying_while_they_start(tmp_path, raster_source):
    """A death in the constructor (e.g. OOM while loading weights) is survived too."""
    out = tmp_path / "c.npz"
    faults = faulty_local(
        raster_source, exit_in_init=True, exit_marker=str(tmp_path / "fetch-died")
    )
    res = export_batch(
        **local_kw(raster_source, models=[MODEL], **faults),
        spatials=points(4),
        out=str(out),
        layout="combined",
        model_configs={MODEL: {"exit_in_init": True, "exit_marker": str(tmp_path / "model-died")}},
    )
    assert (tmp_path / "fetch-died").exists() and (tmp_path / "model-died").exists()
    assert res["status"] == "ok"
    state = state_dir(out, "combined")
    assert counts(state, "patch") == {i: 1 for i in range(4)}
    assert counts(state, "embed") == {i: 1 for i in range(4)}
    manifest_intact(out)
    with np.load(out) as z:
        assert z[f"embeddings__{MODEL}"].shape == (4, 20)
    assert temps(out.parent) == []
