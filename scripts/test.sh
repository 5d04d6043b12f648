#!/usr/bin/env bash
# The test command: install (idempotent), lint, then the whole suite on a real local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} HF_HUB_OFFLINE=1
ruff check rs_embed_ray tests scripts
ruff format --check rs_embed_ray tests scripts
python -m pytest -q -p no:cacheprovider "$@"
