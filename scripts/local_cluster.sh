#!/usr/bin/env bash
# A throwaway multi-node Ray cluster on this machine, driven the way a real cluster is:
#
#   1. starts a head (`ray start --head --num-cpus N --include-dashboard true`, free ports,
#      its own --temp-dir) and, with --nodes 2, one more node (`ray start --address ...`,
#      its own --temp-dir and agent ports: Ray 2.60 allows several nodes on one host);
#   2. starts the local Earth Engine emulator (loopback, no credentials);
#   3. writes a small points CSV (places near lon 15, lat 45, buffer_m 160);
#   4. submits `rs-embed-ray export ... --backend gee --ee-url <emulator>` with
#      `ray job submit --working-dir <repo> --runtime-env cluster/runtime_env.yaml`;
#   5. checks the outputs (`rs-embed-ray inspect`, one file per place) and reports how many
#      distinct Ray node ids appear in the run's log (where the steps ran);
#   6. ALWAYS stops what it started (trap): each `ray start --block` gets SIGTERM (Ray stops
#      its own processes), leftovers of those sessions get SIGKILL, then the emulator.
#      It never runs `ray stop`, which would kill every Ray instance on the machine.
#
# usage: scripts/local_cluster.sh [options]
#   --work DIR           points, outputs, logs (default: a new /tmp/rs_embed_ray_cluster.*)
#   --nodes 1|2          Ray nodes on this machine (default 2)
#   --cpus-per-node N    logical CPUs per node (default 1)
#   --places N           places in the points CSV (default 8)
#   --models LIST        default spectral_stats,remoteclip (remoteclip runs with random weights)
#   --latency-ms MS      emulator latency per request (default 300)
#   --num-workers N      fetches in flight (default 8: two fetch actors, see README)
#   --chunk-size N       batch size (default 1). Small batches and some latency let the fetch
#                        actor of the node that starts last still get work in a small job
#   --layout L           per_item (default) or combined
#   --timeout S          limit for the job itself (default 300)
#   --api cli|python     entrypoint: the CLI (default), or a Python driver that calls
#                        rs_embed_ray.export_batch(..., ray_address="auto")
#   --keep-ray-logs      keep the Ray temp dirs (they are kept anyway when something fails)
#   --bucket             write to an S3-compatible server instead of $WORK: moto_server on a
#                        loopback port, started before the nodes so they inherit its
#                        AWS_ENDPOINT_URL and (throwaway) credentials; --out is
#                        s3://rs-embed-ray-local/out[.npz], and nothing may land in $WORK
#
# Token auth is off for this throwaway cluster (RAY_AUTH_MODE=disabled); see cluster/README.md
# for real clusters. The last line of stdout is `RESULT {json}` (read by
# tests/cluster/test_local_cluster.py). Exit status: 0 ok, 1 job or output check failed,
# 2 bad usage or the cluster did not start.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="" NODES=2 CPUS=1 PLACES=8 MODELS="spectral_stats,remoteclip" LATENCY_MS=300
NUM_WORKERS=8 CHUNK=1 LAYOUT=per_item JOB_TIMEOUT=300 KEEP_RAY_LOGS=0 API=cli BUCKET=0

usage() { sed -n '17,36p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --cpus-per-node) CPUS=$2; shift 2 ;;
    --places) PLACES=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --num-workers) NUM_WORKERS=$2; shift 2 ;;
    --chunk-size) CHUNK=$2; shift 2 ;;
    --layout) LAYOUT=$2; shift 2 ;;
    --timeout) JOB_TIMEOUT=$2; shift 2 ;;
    --keep-ray-logs) KEEP_RAY_LOGS=1; shift ;;
    --api) API=$2; shift 2 ;;
    --bucket) BUCKET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$NODES" in 1|2) ;; *) echo "--nodes must be 1 or 2" >&2; exit 2 ;; esac
case "$LAYOUT" in per_item|combined) ;; *) echo "--layout: per_item or combined" >&2; exit 2 ;; esac
case "$API" in cli|python) ;; *) echo "--api: cli or python" >&2; exit 2 ;; esac

if ! command -v ray >/dev/null 2>&1 && [ -f "$REPO/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$REPO/.venv/bin/activate"
fi
for tool in ray rs-embed-ray python setsid; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (activate the venv)" >&2; exit 2; }
done

# this cluster only: no token auth, no drain wait on SIGTERM, no usage stats, and never
# join whatever cluster RAY_ADDRESS may name in the caller's environment
export RAY_AUTH_MODE=disabled RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 RAY_USAGE_STATS_ENABLED=0
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1
unset RAY_ADDRESS RAY_API_SERVER_ADDRESS

WORK=${WORK:-$(mktemp -d /tmp/rs_embed_ray_cluster.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# Ray's unix sockets live under --temp-dir and must stay short (108 bytes), so not in WORK
RAY_TMP=$(mktemp -d /tmp/rsrc.XXXXXX)
PIDFILE="$WORK/cluster.pids"  # "kind pid" per line: lets a caller clean up after a SIGKILL
: >"$PIDFILE"
HEAD_PID="" WORKER_PID="" EMU_PID="" S3_PID="" SUBMIT_PID="" OK=0

log() { echo "[local_cluster] $*" >&2; }

session_pids() {  # every process still in session $1 (the session setsid gave a `ray start`)
  ps -eo pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'
}

stop_session() {  # SIGTERM the `ray start --block` leader, wait, then SIGKILL what is left
  local leader=$1 i left
  [ -n "$leader" ] || return 0
  kill -TERM "$leader" 2>/dev/null || true
  for i in $(seq 1 60); do
    left=$(session_pids "$leader")
    [ -z "$left" ] && return 0
    sleep 0.5
  done
  log "session $leader still has processes after 30 s; SIGKILL: $(echo $left)"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "stopping the cluster and the emulator"
  if [ -n "$SUBMIT_PID" ]; then  # interrupted while the job ran: the cluster goes anyway
    kill -TERM "$SUBMIT_PID" 2>/dev/null
    wait "$SUBMIT_PID" 2>/dev/null
  fi
  stop_session "$WORKER_PID"  # the extra node first, then the head
  stop_session "$HEAD_PID"
  if [ -n "$EMU_PID" ]; then
    kill -TERM "$EMU_PID" 2>/dev/null
    wait "$EMU_PID" 2>/dev/null
  fi
  if [ -n "$S3_PID" ]; then
    kill -TERM "$S3_PID" 2>/dev/null
    wait "$S3_PID" 2>/dev/null
  fi
  if [ "$OK" = 1 ] && [ "$KEEP_RAY_LOGS" = 0 ]; then
    rm -rf "$RAY_TMP"
  else
    log "Ray logs kept in $RAY_TMP"
  fi
  : >"$PIDFILE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
  python - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for() {  # wait_for SECONDS DESCRIPTION PID COMMAND...: until COMMAND succeeds, while PID lives
  local limit=$1 what=$2 pid=$3 t=0
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "$what: the process exited"
      return 1
    fi
    t=$((t + 1))
    if [ "$t" -ge "$limit" ]; then
      log "timed out after ${limit}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

n_alive_nodes() {  # bounded: a GCS that is not up must not hang the script
  timeout 20 python - "$GCS" <<'PY'
import sys
from ray._raylet import GcsClient
nodes = GcsClient(address=f"127.0.0.1:{sys.argv[1]}").get_all_node_info(timeout=5)
print(sum(1 for n in nodes.values() if n.state == 0))  # 0 = ALIVE
PY
}
nodes_up() { [ "$(n_alive_nodes 2>/dev/null)" -ge "$1" ]; }
node_diag() {  # node_diag NAME LOG TEMPDIR: why a node did not register (to stderr)
  log "$1 did not register: $(n_alive_nodes 2>/dev/null || echo '?') node(s) alive; load $(cut -d' ' -f1-3 /proc/loadavg)"
  tail -5 "$2" 2>/dev/null | sed "s/^/[local_cluster]   $1: /" >&2 || true
  # `ray start` gives its raylet 30 s to register (hard-coded in Ray 2.60's node.py, whatever
  # the message says): on a loaded machine it may not; the raylet's first fatal lines say why
  for f in "$3"/session_latest/logs/raylet.out "$3"/session_latest/logs/raylet.err; do
    { [ -s "$f" ] && grep -m3 -E "Check failed|\] F |[Ff]ailed|[Tt]imed out" "$f" |
      cut -c1-240 | sed "s/^/[local_cluster]   $(basename "$f"): /" >&2; } || true
  done
  return 0
}
head_up() { nodes_up 1 && curl -sf --max-time 5 "http://127.0.0.1:$DASH/api/version"; }

# --- 0. the bucket: before the nodes, which inherit its endpoint and credentials ----------
S3_BUCKET=rs-embed-ray-local
if [ "$BUCKET" = 1 ]; then
  command -v moto_server >/dev/null 2>&1 || { echo "missing: moto_server (pip install 'moto[server]')" >&2; exit 2; }
  read -r S3_PORT <<<"$(free_ports 1)"
  setsid moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/s3_server.log" 2>&1 &
  S3_PID=$!
  echo "s3_server $S3_PID" >>"$PIDFILE"
  wait_for 60 "the S3 server" "$S3_PID" curl -sf --max-time 2 "http://127.0.0.1:$S3_PORT/" || exit 2
  # throwaway credentials of this loopback server only; a real cluster gets them from its
  # provider chain (instance role, IRSA / workload identity, a mounted secret)
  export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=local-cluster AWS_SECRET_ACCESS_KEY=local-cluster-secret \
    AWS_EC2_METADATA_DISABLED=true AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null
  python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$S3_BUCKET')"
  log "S3 server at $AWS_ENDPOINT_URL, bucket s3://$S3_BUCKET"
fi

OBJ_STORE=${RS_EMBED_RAY_OBJECT_STORE_BYTES:-536870912}  # 512 MiB per node: a shared machine
T0=$(date +%s.%N)

# --- 1. head (Ray gives a raylet 30 s to register: on a loaded machine, try again) ----------
for attempt in 1 2 3; do
  read -r GCS DASH CLIENT H_AGENT H_AGENT_GRPC H_RTE <<<"$(free_ports 6)"
  log "starting the head: $CPUS CPU(s), GCS 127.0.0.1:$GCS, dashboard http://127.0.0.1:$DASH"
  setsid ray start --head --block --disable-usage-stats \
    --node-ip-address 127.0.0.1 --port "$GCS" --num-cpus "$CPUS" --num-gpus 0 \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH" \
    --ray-client-server-port "$CLIENT" --dashboard-agent-listen-port "$H_AGENT" \
    --dashboard-agent-grpc-port "$H_AGENT_GRPC" --runtime-env-agent-port "$H_RTE" \
    --object-store-memory "$OBJ_STORE" --temp-dir "$RAY_TMP/head$attempt" \
    >>"$WORK/ray_head.log" 2>&1 &
  HEAD_PID=$!
  echo "ray_head $HEAD_PID" >>"$PIDFILE"
  wait_for 120 "the head" "$HEAD_PID" head_up && break
  stop_session "$HEAD_PID"
  HEAD_PID=""
  if [ "$attempt" = 3 ]; then
    tail -20 "$WORK/ray_head.log" >&2
    exit 2
  fi
done

# --- 2. the second node ---------------------------------------------------------------------
if [ "$NODES" = 2 ]; then
  for attempt in 1 2 3; do
    read -r W_AGENT W_AGENT_GRPC W_RTE <<<"$(free_ports 3)"
    log "starting a second node: $CPUS CPU(s)"
    setsid ray start --block --disable-usage-stats --address "127.0.0.1:$GCS" \
      --node-ip-address 127.0.0.1 --num-cpus "$CPUS" --num-gpus 0 \
      --dashboard-agent-listen-port "$W_AGENT" --dashboard-agent-grpc-port "$W_AGENT_GRPC" \
      --runtime-env-agent-port "$W_RTE" --object-store-memory "$OBJ_STORE" \
      --temp-dir "$RAY_TMP/node2_$attempt" >>"$WORK/ray_node2.log" 2>&1 &
    WORKER_PID=$!
    echo "ray_node2 $WORKER_PID" >>"$PIDFILE"
    wait_for 240 "the second node" "$WORKER_PID" nodes_up 2 && break
    node_diag "the second node (attempt $attempt)" "$WORK/ray_node2.log" "$RAY_TMP/node2_$attempt"
    stop_session "$WORKER_PID"
    WORKER_PID=""
    if [ "$attempt" = 3 ]; then
      tail -20 "$WORK/ray_node2.log" >&2
      exit 2
    fi
  done
fi
T_CLUSTER=$(date +%s.%N)
log "cluster up: $(n_alive_nodes) node(s) in $(python -c "print(round($T_CLUSTER - $T0, 1))") s"

# --- 3. Earth Engine emulator + points ------------------------------------------------------
setsid python -m rs_embed_ray.testing.ee_emulator --port 0 --latency-ms "$LATENCY_MS" \
  >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
echo "emulator $EMU_PID" >>"$PIDFILE"
wait_for 60 "the emulator" "$EMU_PID" grep -q "listening on" "$WORK/emulator.log" || exit 2
EE_URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/emulator.log" | head -1)
log "emulator at $EE_URL (latency ${LATENCY_MS} ms)"

POINTS="$WORK/points.csv"
python - "$POINTS" "$PLACES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w", encoding="utf-8") as fh:
    fh.write("lon,lat,buffer_m,name\n")
    for i in range(n):  # a grid with 0.01 deg steps around (15, 45)
        fh.write(f"{15 + 0.01 * (i % 10):.4f},{45 + 0.01 * (i // 10):.4f},160,p{i:05d}\n")
PY

# --- 4. the job -----------------------------------------------------------------------------
if [ "$BUCKET" = 1 ]; then ROOT="s3://$S3_BUCKET"; else ROOT="$WORK"; fi
if [ "$LAYOUT" = per_item ]; then OUT="$ROOT/out"; else OUT="$ROOT/out.npz"; fi
[ "$BUCKET" = 1 ] || rm -rf "$OUT" "$WORK/out.rs_embed_ray"
SUBMISSION_ID="rs_embed_ray_local_$(date +%s)_$$"
WEIGHTS=()
case ",$MODELS," in *,remoteclip,*) WEIGHTS=(--weights remoteclip=random) ;; esac
if [ "$API" = cli ]; then
  ENTRYPOINT=(rs-embed-ray -v export --points "$POINTS" --models "$MODELS" "${WEIGHTS[@]}"
    --start 2022-06-01 --end 2022-09-01 --out "$OUT" --layout "$LAYOUT"
    --backend gee --ee-url "$EE_URL" --num-workers "$NUM_WORKERS" --chunk-size "$CHUNK"
    --no-progress)
else
  # the same request through the Python API, joining the cluster with ray_address="auto"
  cat >"$WORK/driver.py" <<PY
import json
import logging
from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.io.points import read_points

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
spatials, names = read_points("$POINTS")
models = "$MODELS".split(",")
res = export_batch(
    spatials=spatials, names=names, temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=models, weights={"remoteclip": "random"} if "remoteclip" in models else None,
    out="$OUT", layout="$LAYOUT", backend="gee", provider_options={"url": "$EE_URL"},
    num_workers=$NUM_WORKERS, chunk_size=$CHUNK, show_progress=False, ray_address="auto",
)
items = [res] if isinstance(res, dict) else list(res)
print(json.dumps({"items": len(items), "ok": sum(r.get("status") == "ok" for r in items)}))
PY
  ENTRYPOINT=(python "$WORK/driver.py")
fi
log "submitting $SUBMISSION_ID ($API): $PLACES place(s), models $MODELS, layout $LAYOUT"
T_SUBMIT=$(date +%s.%N)
set +e
# in the background + wait, so that a signal to this script runs the trap at once
timeout "$JOB_TIMEOUT" ray job submit --address "http://127.0.0.1:$DASH" \
  --submission-id "$SUBMISSION_ID" \
  --working-dir "$REPO" --runtime-env "$REPO/cluster/runtime_env.yaml" \
  -- "${ENTRYPOINT[@]}" >"$WORK/job.log" 2>&1 &
SUBMIT_PID=$!
wait "$SUBMIT_PID"
SUBMIT_RC=$?
SUBMIT_PID=""
set -e
T_DONE=$(date +%s.%N)
if [ "$SUBMIT_RC" = 124 ]; then
  log "the job ran past ${JOB_TIMEOUT}s; stopping it"
  ray job stop --address "http://127.0.0.1:$DASH" "$SUBMISSION_ID" >/dev/null 2>&1 || true
fi
log "ray job submit exit $SUBMIT_RC; the job's log: $WORK/job.log"
[ "$SUBMIT_RC" = 0 ] || tail -30 "$WORK/job.log" >&2

# --- 5. outputs and nodes -------------------------------------------------------------------
set +e
python - "$WORK" "$OUT" "$LAYOUT" "$PLACES" "$MODELS" "$GCS" "$NODES" "$DASH" \
  "$SUBMIT_RC" "$T0" "$T_CLUSTER" "$T_SUBMIT" "$T_DONE" "$SUBMISSION_ID" <<'PY'
import json, re, subprocess, sys
from collections import Counter
from pathlib import Path

(work, out, layout, places, models, gcs, nodes, dash, submit_rc,
 t0, t_cluster, t_submit, t_done, sub_id) = sys.argv[1:]
from rs_embed_ray.io import storage
from rs_embed_ray.io.state import RunState

remote = storage.is_remote(out)
places, out, models = int(places), storage.as_path(out), models.split(",")
problems = []
job_status, job_runtime_s = "UNKNOWN", None
try:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(f"http://127.0.0.1:{dash}").get_job_info(sub_id)
    job_status = str(getattr(info.status, "value", info.status))
    if info.start_time and info.end_time:
        job_runtime_s = round((info.end_time - info.start_time) / 1000, 2)
except Exception as exc:
    problems.append(f"cannot read the job's status: {exc}")
state = out / "_rs_embed_ray" if layout == "per_item" else out.with_name(out.stem + ".rs_embed_ray")
recs = list(RunState(state).read_log())  # log.jsonl, or the log objects on a bucket
if not recs:
    problems.append(f"no log in {state}")
by_kind = {}
for r in recs:
    by_kind.setdefault(f"{r['kind']}:{r['key']}", Counter())[r.get("node") or "?"] += 1
node_ids = sorted({r.get("node") for r in recs if r.get("node")})

try:
    from ray._raylet import GcsClient
    info = GcsClient(address=f"127.0.0.1:{gcs}").get_all_node_info(timeout=5)
    cluster_nodes = sorted(n.hex() for n, v in info.items() if v.state == 0)
except Exception as exc:  # the cluster is still up here; this is only for the report
    cluster_nodes, problems = [], [*problems, f"cannot list nodes: {exc}"]
# where Ray placed the actors of the job (dead ones included): fetch actors should be on
# every node even when one of them happened to do all the work of a small job
actor_nodes = {}
try:
    from ray.util.state import list_actors

    for a in list_actors(address=f"http://127.0.0.1:{dash}", detail=True, limit=10000,
                         raise_on_missing_output=False):
        label = a.repr_name or a.class_name or ""
        for kind in ("FetchWorker", "ModelWorker", "EEQuotaActor"):
            if kind in label or kind in (a.class_name or ""):
                actor_nodes.setdefault(kind, Counter())[a.node_id or "?"] += 1
except Exception as exc:
    problems.append(f"cannot list actors: {exc}")
unknown = [n for n in node_ids if cluster_nodes and n not in cluster_nodes]
if unknown:
    problems.append(f"log names nodes that are not in the cluster: {unknown}")

summary = {}
if out.exists():
    res = subprocess.run(["rs-embed-ray", "inspect", str(out)], capture_output=True, text=True)
    if res.returncode == 0:
        summary = json.loads(res.stdout)
    else:
        problems.append(f"rs-embed-ray inspect failed: {res.stderr.strip()[-300:]}")
else:
    problems.append(f"no output at {out}")
if summary:
    if summary.get("status") != "ok":
        problems.append(f"export status {summary.get('status')!r}")
    if summary.get("n_items") != places:
        problems.append(f"{summary.get('n_items')} items, expected {places}")
    for m in models:
        got = (summary.get("models") or {}).get(m, {}).get("ok")
        if got != places:
            problems.append(f"model {m}: {got} ok, expected {places}")
    if summary.get("missing_items"):
        problems.append(f"missing items: {summary['missing_items'][:5]}")
if layout == "per_item" and out.exists():
    if remote:
        names = [u[len(str(out)) + 1 :] for u in storage.list_files(out)]
        names = [n for n in names if "/" not in n]
    else:
        names = [p.name for p in out.iterdir()]
    n_npz = sum(n.endswith(".npz") for n in names)
    n_json = sum(n.endswith(".json") for n in names)
    if (n_npz, n_json) != (places, places):
        problems.append(f"{n_npz} .npz / {n_json} .json files, expected {places} each")
if remote:  # the nodes wrote only to the server: no export file in the work folder
    local = [str(p) for p in Path(work).rglob("*") if p.suffix in (".npz", ".nc", ".parquet")]
    if local or Path(work, "out").exists():
        problems.append(f"files written locally with --bucket: {local[:3]}")
if job_status != "SUCCEEDED" or submit_rc != "0":
    problems.insert(0, f"job {job_status} (ray job submit exit {submit_rc})")
print(f"job {sub_id}: {job_status}", file=sys.stderr)

# the driver's "fetch[..]: N items in X s" / "infer[..]" / "write" lines (rs-embed-ray -v)
stages = {}
job_log = Path(work) / "job.log"
if job_log.exists():
    pat = re.compile(r"((?:fetch|infer)\[[^\]]+\]|write): (\d+) items in ([\d.]+)s")
    for m in pat.finditer(job_log.read_text(errors="replace")):
        stages[m.group(1)] = float(m.group(3))

bucket_objects = []
if remote:  # every object on the server, for the report (what the nodes wrote)
    try:
        bucket_objects = sorted(out.fs.find(str(out).split("://", 1)[1].split("/", 1)[0]))
    except Exception as exc:
        problems.append(f"cannot list the bucket: {exc}")

t0, t_cluster, t_submit, t_done = map(float, (t0, t_cluster, t_submit, t_done))
result = {
    "ok": not problems,
    "problems": problems,
    "job_status": job_status,
    "submission_id": sub_id,
    "out": str(out),
    "bucket": remote,
    "n_bucket_objects": len(bucket_objects),
    "bucket_objects": bucket_objects[:200],
    "layout": layout,
    "places": places,
    "models": models,
    "cluster_nodes": len(cluster_nodes) or int(nodes),
    "distinct_nodes_in_log": len(node_ids),
    "node_ids_in_log": node_ids,
    "steps_per_node": {k: dict(v) for k, v in sorted(by_kind.items())},
    "actors_per_node": {k: dict(v) for k, v in sorted(actor_nodes.items())},
    "log_steps": len(recs),
    "cluster_start_s": round(t_cluster - t0, 2),
    "submit_to_done_s": round(t_done - t_submit, 2),
    "job_runtime_s": job_runtime_s,
    "stage_s": stages,
    "places_per_s_end_to_end": round(places / max(1e-9, t_done - t_submit), 2),
}
print(f"distinct node ids in the log: {len(node_ids)} (cluster nodes: {result['cluster_nodes']})",
      file=sys.stderr)
for k, v in result["steps_per_node"].items():
    print(f"  {k}: " + ", ".join(f"{n[:8]}={c}" for n, c in v.items()), file=sys.stderr)
for k, v in result["actors_per_node"].items():
    print(f"  actors {k}: " + ", ".join(f"{n[:8]}={c}" for n, c in v.items()), file=sys.stderr)
for p in problems:
    print(f"PROBLEM: {p}", file=sys.stderr)
print("RESULT " + json.dumps(result))
sys.exit(0 if not problems else 1)
PY
CHECK_RC=$?
set -e
if [ "$CHECK_RC" = 0 ]; then
  OK=1
  log "ok: outputs in $OUT"
  exit 0
fi
log "FAILED (logs in $WORK)"
exit 1
