#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md in one go, for a machine with one CUDA device:
#   1. DOFA base forward alone, batch 1/16/64, mixed precision (auto) and float32;
#   2. the anchor workload (256 places, DOFA base, latency 300 +- 50 ms, 8 workers, chunk 16)
#      exported with --device cuda, both layouts, on Ray and with the default executor;
#   3. a model-bound export (latency 0, chunk 64 = the bound's batch), auto and float32, with
#      the forward-alone bound at batch 64 measured in the same run;
#   4. every catalog model's forward alone, batch 1/16/64, auto.
# Random weights (asked for explicitly by bench.py). Usage: scripts/bench_gpu.sh OUT_DIR
# On a machine without Ray / earthengine-api, build them first with scripts/device_site.sh.
set -u
out=${1:?usage: scripts/bench_gpu.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
py=${PYTHON:-python3}
bench() { echo "+ bench.py $*" >&2; "$py" scripts/bench.py "$@"; }
{
  nvidia-smi -L
  "$py" -c 'import torch, ray, ee, rs_embed_ray; print("torch", torch.__version__, torch.cuda.get_device_name(0), "ray", ray.__version__, "cpus", __import__("os").cpu_count())'
} 2>&1 | tee "$out/env.txt"
bench --forward dofa --batch-sizes 1,16,64 --device cuda --min-seconds 2 | tee "$out/forward_dofa.jsonl"
bench --forward dofa --batch-sizes 1,16,64 --device cuda --precision float32 --min-seconds 2 \
  | tee -a "$out/forward_dofa.jsonl"
anchor=(--n 256 --models dofa --buffer-m 1120 --latency-ms 250 --jitter-ms 100
        --num-workers 8 --chunk-size 16 --device cuda)
# ray: as the session-12 rows; auto: what a user gets on one GPU at this size (in process)
for executor in ray auto; do
  for layout in per_item combined; do
    bench "${anchor[@]}" --layout "$layout" --executor "$executor" | tee -a "$out/export.jsonl"
  done
done
bound=(--n 2048 --models dofa --buffer-m 1120 --latency-ms 0 --num-workers 16
       --chunk-size 64 --device cuda --no-save-inputs)
for prec in auto float32; do
  bench "${bound[@]}" --layout per_item --precision "$prec" | tee -a "$out/export.jsonl"
done
bench --forward remoteclip,dofa:large,satmae,satmaepp,scalemae,terrafm,prithvi,clay,terramind,galileo,anysat,thor \
  --batch-sizes 1,16,64 --device cuda --min-seconds 1 | tee "$out/forward_all.jsonl"
bench --forward olmoearth --frames 1 --batch-sizes 1,16,64 --device cuda --min-seconds 1 \
  | tee -a "$out/forward_all.jsonl"
