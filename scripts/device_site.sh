#!/usr/bin/env bash
# Build the packages a bare CUDA machine (Python 3.12, torch, timm, numpy, pandas, pyarrow
# already there) lacks for scripts/bench_gpu.sh, as two tar.xz files under OUT_DIR (about
# 43 MB together, under the device tool's 64 MiB): Ray (without its Java jars, RLlib, Serve,
# Tune, Train, LLM and dashboard build), earthengine-api and its Google clients (only the
# Earth Engine discovery document kept), zarr, numcodecs, open_clip and olmoearth's package.
# Usage: scripts/device_site.sh OUT_DIR   (e.g. .devsite, listed in .git/info/exclude)
# On the device: tar -xJf OUT_DIR/site1.tar.xz -C /tmp/s; tar -xJf OUT_DIR/site2.tar.xz -C /tmp/s
#                export PYTHONPATH=/tmp/s/devsite:/tmp/s/devsite2:$PWD
set -euo pipefail
out=$(realpath -m "${1:?usage: scripts/device_site.sh OUT_DIR}")
work=$(mktemp -d "${TMPDIR:-/tmp}/device_site.XXXXXX")
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_34_x86_64
      --platform manylinux1_x86_64)
python3 -m pip install -q --target "$work/devsite" "${plat[@]}" "ray[data]==2.60.0" \
  "earthengine-api==1.7.50" "zarr==3.1.6" "numcodecs==0.16.6"
python3 -m pip install -q --no-deps --target "$work/devsite2" "${plat[@]}" \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 olmoearth-pretrain-minimal==0.1.5 \
  universal-pathlib==0.3.10 pathlib-abc==0.5.2
cd "$work/devsite"
# what the CUDA image already has (their own versions are used there)
for pkg in numpy pandas pyarrow attrs certifi charset_normalizer click filelock fsspec idna \
  msgpack packaging pyparsing python_dateutil pyyaml requests typing_extensions urllib3 tzdata; do
  rm -rf -- ./"$pkg"-*.dist-info
done
rm -rf -- ./numpy ./numpy.libs ./pandas ./pyarrow ./attr ./attrs ./certifi ./charset_normalizer \
  ./click ./filelock ./fsspec ./idna ./msgpack ./packaging ./pyparsing ./dateutil ./yaml ./_yaml \
  ./requests ./typing_extensions.py ./urllib3 ./tzdata ./bin
rm -rf -- ./ray/jars ./ray/rllib ./ray/serve ./ray/tune ./ray/train ./ray/llm \
  ./ray/dashboard/client/build
find ./googleapiclient/discovery_cache/documents -type f ! -name 'earthengine*' -delete
find . -name __pycache__ -type d -prune -exec rm -rf -- {} +
rm -rf -- "$work/devsite2/bin" "$work/devsite2/open_clip_train"
mkdir -p "$out"
tar -cJf "$out/site1.tar.xz" -C "$work" devsite
tar -cJf "$out/site2.tar.xz" -C "$work" devsite2
rm -rf -- "$work"
ls -la "$out"
