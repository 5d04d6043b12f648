#!/usr/bin/env bash
# Create .venv (if missing) and install rs-embed-ray with everything the tests and the
# quickstart need. torch/torchvision are pinned to builds that import together on CPU
# machines (open_clip needs torchvision). The oracle extra holds the independent model
# implementations the oracle tests compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q "pip==26.3"
# constraints.txt pins every package to the set the suite last passed with, and
# --prefer-binary keeps pip off source builds (a CI run once failed building rioxarray from
# its sdist when the index offered no wheel it would take).
python -m pip install -q --prefer-binary -c constraints.txt "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q --prefer-binary -c constraints.txt -e '.[all,dev,oracle]'
# An editable install leaves the package uncompiled, and with PYTHONDONTWRITEBYTECODE set
# (as on these machines) every Ray worker process compiles it again as it starts (about 2-3 s
# later to the first embedding at 64 places, docs/benchmarks.md); a wheel install compiles
# it once, as this does.
python -m compileall -q rs_embed_ray
