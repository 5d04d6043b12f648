"""The columns the pipeline's stages pass to each other, named once.

Rows travel through Ray Data as numpy batches keyed by these names: the driver builds the
place rows, FETCH adds its result, INFER adds the embedding, the shard writer turns that into a
result again, and the driver reads the result back into the run's log. Pure constants, no ray.
"""

from __future__ import annotations

# -- a place row (the driver builds it) ------------------------------------------------------
INDEX = "index"  # int64: the place's position in the request
SPATIAL = "spatial"  # JSON of the place's SpatialSpec
# JSON of the place's own TemporalSpec ("null": none); when absent, the run's window holds
TEMPORAL = "temporal"
EMBED = "embed"  # bool, chained fetch+infer only: False when the place's embedding is done

# -- a stage's result per place (FETCH, and the embedding shard writer) ----------------------
STATUS = "status"  # one of the STATUS_* values below
ERROR = "error"  # error text, "" when ok
SHARD = "shard"  # the shard file that holds the place's array, "" when not ok
SHAPE = "shape"  # JSON list of the array's shape, "" when not ok
SHA1 = "sha1"  # digest of the array, "" when not ok
NODE = "node"  # the Ray node the step ran on
DONE_AT = "done_at"  # float, the embedding shard writer: when the batch's shard was written
RESULT = (STATUS, ERROR, SHARD, SHAPE, SHA1)

# -- INFER's output, before the shard writer -------------------------------------------------
EMB = "emb"  # the embedding, serialised (io.npz.array_to_bytes)
META = "meta"  # JSON of the embedding's meta

# FETCH's result columns, renamed when a chained INFER stage carries them on to the driver
FETCH_PREFIX = "fetch_"

# -- the per-item writer ------------------------------------------------------------------------
PAYLOAD = "payload"  # JSON: what one place's file is made of (io.assemble.write_item)
MANIFEST = "manifest"  # JSON: the manifest it wrote, or {"error": ...}
# the last model's stage on Ray writing the files of the places it finishes (a CPU actor):
# ITEM, in the place row: JSON of the file's payload less the stage's own steps and what the
# row already says ("name", "fingerprint", "sources"), "" when the file is not due after it;
# WRITTEN, in its result: the file's status ("" when not written there), with MANIFEST
ITEM = "item"
WRITTEN = "written"

# -- statuses --------------------------------------------------------------------------------
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIP = "skip"  # chained INFER: embedded in an earlier run, fetched only for its input
STATUS_WRITE_FAILED = "write_failed"
# WRITTEN: the output location took no more writes (OutputWriteError; MANIFEST: its errno,
# message and path); the driver logs the batch, then stops the run
STATUS_OUTPUT_ERROR = "output_error"


def fetched(column: str) -> str:
    """The name of FETCH's ``column`` once a chained INFER stage has carried it on."""
    return FETCH_PREFIX + column
