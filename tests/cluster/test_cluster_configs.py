"""The deployment files under cluster/ parse and carry what users rely on: images, GPU
resources, the entrypoint (parsed by the real CLI), the Earth Engine key Secret mounted as a
file, the bucket as the default output (no shared volume), and a Dockerfile that installs
what README/setup_env.sh install."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCKERFILE = CLUSTER / "docker" / "Dockerfile"
K8S = CLUSTER / "k8s"
LAUNCHER = CLUSTER / "launcher"
SHARED = "/mnt/cluster_storage"
KEY_DIR = "/var/secrets/ee"
BUCKET_SCHEME = {"aws": "s3", "gcp": "gs"}


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def base_image() -> str:
    froms = [ln.split()[1] for ln in dockerfile_lines() if ln.upper().startswith("FROM ")]
    assert len(froms) == 1, froms
    return froms[0]


def pip_specs(text: str) -> list[str]:
    """Every argument of every `pip install` in a shell text (options dropped)."""
    specs = []
    for m in re.finditer(r"pip install ([^&;|\n]+)", text):
        specs += [a for a in shlex.split(m.group(1)) if not a.startswith("-")]
    return specs


def local_extras(specs: list[str]) -> set[str]:
    """Extras of the local-package spec ('.[a,b]' / '/path/.[a]'); fails if there is none."""
    found = [re.fullmatch(r"\S*\.\[([\w,]+)\]", s) for s in specs]
    found = [m for m in found if m]
    assert found, f"no local package install among {specs}"
    return {e for m in found for e in m.group(1).split(",")}


def pins(specs: list[str]) -> dict[str, str]:
    return dict(s.split("==", 1) for s in specs if "==" in s)


def pod_templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    out = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for g in spec["workerGroupSpecs"]:
        out[g["groupName"]] = g["template"]["spec"]
    return out


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        (doc,) = load_all(K8S / name)
        docs.append(doc)
    return docs


def test_every_yaml_parses() -> None:
    files = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yaml.example"))
    names = {f.relative_to(CLUSTER).as_posix() for f in files}
    assert {
        "runtime_env.yaml",
        "launcher/aws-gpu.yaml",
        "launcher/gcp-gpu.yaml",
        "k8s/raycluster.yaml",
        "k8s/rayjob.yaml",
        "k8s/pvc.yaml",
        "k8s/secret-ee.yaml.example",
    } <= names
    for f in files:
        docs = load_all(f)
        assert docs and all(isinstance(d, dict) for d in docs), f


def test_dockerfile_matches_ray_and_the_documented_install() -> None:
    assert base_image() == f"rayproject/ray:{ray.__version__}-py311-gpu"
    run = " ".join(ln for ln in dockerfile_lines() if ln.upper().startswith("RUN "))
    docker_specs = pip_specs(run)
    assert local_extras(docker_specs) == {"all"}
    setup = (REPO / "scripts" / "setup_env.sh").read_text(encoding="utf-8")
    setup_specs = pip_specs(setup)
    assert "all" in local_extras(setup_specs)  # setup_env adds dev tools on top
    # same torch/torchvision builds (setup_env also pins pip itself)
    torch_pins = {"torch", "torchvision"}
    setup_torch = {k: v for k, v in pins(setup_specs).items() if k in torch_pins}
    assert pins(docker_specs) == setup_torch and len(setup_torch) == 2
    copied = " ".join(ln for ln in dockerfile_lines() if ln.upper().startswith("COPY "))
    assert "pyproject.toml" in copied and "rs_embed_ray" in copied
    # cluster/README.md documents the install; the top README may delegate to scripts/
    assert local_extras(pip_specs((CLUSTER / "README.md").read_text(encoding="utf-8"))) == {"all"}
    top = REPO / "README.md"
    top_specs = pip_specs(top.read_text(encoding="utf-8")) if top.exists() else []
    if any(re.fullmatch(r"\S*\.\[[\w,]+\]", s) for s in top_specs):
        assert "all" in local_extras(top_specs)


def test_launcher_configs_are_valid_gpu_clusters() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    for name, provider in (("aws-gpu.yaml", "aws"), ("gcp-gpu.yaml", "gcp")):
        raw = yaml.safe_load((LAUNCHER / name).read_text(encoding="utf-8"))
        validate_config(prepare_config(raw))  # Ray's own schema, as `ray up` checks it
        assert raw["provider"]["type"] == provider
        assert raw["docker"]["image"] == base_image()
        types = raw["available_node_types"]
        head = types[raw["head_node_type"]]
        assert head["resources"].get("CPU") == 0
        head_cmds = " ".join(raw["head_start_ray_commands"])
        assert "--head" in head_cmds and "--num-cpus=0" in head_cmds
        workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
        gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
        cpu = [v for v in workers.values() if not v["resources"].get("GPU")]
        assert gpu and cpu, workers
        assert all(v["min_workers"] == 0 and v["max_workers"] > 0 for v in workers.values())
        run_opts = " ".join(raw["docker"]["run_options"])
        # the bucket is the default: no shared volume is mounted (the outputs and the run's
        # state go to --out s3:// / gs://, see the header's command)
        assert SHARED not in run_opts
        assert f"--out {BUCKET_SCHEME[provider]}://" in (LAUNCHER / name).read_text()
        assert "GOOGLE_APPLICATION_CREDENTIALS=" in run_opts and "EE_PROJECT=" in run_opts
        key_path = run_opts.split("GOOGLE_APPLICATION_CREDENTIALS=")[1].split()[0]
        assert key_path in raw["file_mounts"]
        assert not any(SHARED in c for c in raw["initialization_commands"] or [])
        assert local_extras(pip_specs(" ".join(raw["setup_commands"]))) == {"all"}


def test_kuberay_specs_gpu_group_secret_and_bucket_identity() -> None:
    (secret,) = load_all(K8S / "secret-ee.yaml.example")
    assert secret["kind"] == "Secret"
    key_name = next(iter(secret["stringData"]))
    assert "REPLACE" in secret["stringData"][key_name]
    assert "BEGIN PRIVATE KEY" not in secret["stringData"][key_name]
    (pvc,) = load_all(K8S / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    for doc in k8s_docs():
        spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        assert spec["rayVersion"] == ray.__version__
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["authOptions"]["mode"] == "token"
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert all(g["minReplicas"] == 0 for g in spec["workerGroupSpecs"])
        gpu_groups = 0
        for group, pod in pod_templates(doc).items():
            volumes = {v["name"]: v for v in pod["volumes"]}
            for c in pod["containers"]:
                assert c["image"].endswith("/rs-embed-ray:0.1.0"), (doc["kind"], group)
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                # the bucket is the default: no shared volume; the pod's identity (service
                # account mapped to a cloud role) reaches the bucket, no key in the pod
                assert SHARED not in mounts
                assert not any("persistentVolumeClaim" in v for v in volumes.values())
                assert pod["serviceAccountName"] == "rs-embed-ray"
                key_vol = volumes[mounts[KEY_DIR]]["secret"]
                assert key_vol["secretName"] == secret["metadata"]["name"]
                (item,) = key_vol["items"]
                assert item["key"] == key_name
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{KEY_DIR}/{item['path']}"
                assert env.get("EE_PROJECT")
                if "/dev/shm" in mounts:
                    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
                limits = c["resources"]["limits"]
                if "nvidia.com/gpu" in limits:
                    gpu_groups += 1
                    assert limits["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"]
                    assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        assert gpu_groups == 1, doc["kind"]


def test_rayjob_entrypoint_parses_with_the_cli_and_writes_to_a_bucket() -> None:
    from rs_embed_ray.cli import export

    (job,) = load_all(K8S / "rayjob.yaml")
    assert job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["rs-embed-ray", "export"]
    ctx = export.make_context("export", args[2:])  # parses every option, runs nothing
    assert ctx.params["out"].startswith("gs://")
    from rs_embed_ray.io.storage import check_url

    check_url(ctx.params["out"].replace("YOUR_BUCKET", "your-bucket"))  # a valid bucket URL
    # the points file: a ConfigMap mounted on the head, where the driver reads it
    head = pod_templates(job)["head"]
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    folder, _, _ = ctx.params["points"].rpartition("/")
    volume = next(v for v in head["volumes"] if v["name"] == mounts[folder])
    assert volume["configMap"]["name"] == "rs-embed-ray-points"
    assert ctx.params["backend"] == "gee" and ctx.params["resume"] is True
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]


def test_runtime_env_is_usable_by_ray_job_submit() -> None:
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text(encoding="utf-8"))
    assert set(env) <= {"excludes", "env_vars", "working_dir", "py_modules", "pip"}
    assert ".venv/" in env["excludes"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env["env_vars"].items())


def test_local_cluster_script_is_wired_to_these_files() -> None:
    text = (REPO / "scripts" / "local_cluster.sh").read_text(encoding="utf-8")
    assert "cluster/runtime_env.yaml" in text
    assert "ray job submit" in text and "--working-dir" in text
    assert "RAY_AUTH_MODE=disabled" in text
    assert "ray stop" not in text.replace("`ray stop`", "")  # it must never stop others' Ray


def test_local_cluster_script_has_a_bucket_run() -> None:
    """--bucket starts the S3 server and exports its endpoint BEFORE the first `ray start`
    (nodes inherit the environment they start in), and writes to an s3:// output. The run
    itself (minutes) is recorded in docs/benchmarks.md, not repeated here."""
    import subprocess

    script = REPO / "scripts" / "local_cluster.sh"
    text = script.read_text(encoding="utf-8")
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--bucket" in usage.stdout
    assert text.index("setsid moto_server") < text.index("export AWS_ENDPOINT_URL")
    assert text.index("export AWS_ENDPOINT_URL") < text.index("setsid ray start --head")
    assert 'ROOT="s3://$S3_BUCKET"' in text
