"""Security: credentials never reach manifests, logs or error messages; item names cannot
write outside the output; loading never unpickles; the emulator binds loopback only."""

from __future__ import annotations

import json
import logging
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from rs_embed_ray import ModelError, PointBuffer, ProviderError, export_batch
from rs_embed_ray.api import plan_export
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.testing.ee_emulator import EEEmulator
from tests.conftest import points
from tests.faults.conftest import WINDOW, local_kw

TOKEN = "ya29.SECRET-access-token-5f3a9c"  # an OAuth access token, as Google issues them
KEY_ID = "SECRETKEYID0123456789abcdef"
KEY_BODY = "MIIEvSECRETKEYMATERIALdoNotLeak0123456789"
CLIENT_SECRET = "GOCSPX-SECRET-client-secret-42"
SECRETS = (TOKEN, KEY_ID, KEY_BODY, CLIENT_SECRET)


def fake_key_file(path: pathlib.Path, token_uri: str = "http://127.0.0.1:9/token") -> pathlib.Path:
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": KEY_ID,
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n",
        "client_email": "exporter@my-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "client_secret": CLIENT_SECRET,
        "token_uri": token_uri,
    }))  # fmt: skip
    return path


def assert_no_secret(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{s[:12]}... leaked into {where}"


def all_text_under(root: pathlib.Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            out[str(p)] = p.read_bytes().decode("latin-1")  # binary files too, byte for byte
    return out


PLACES = [PointBuffer(15.0, 45.0, 160.0), PointBuffer(15.01, 45.0, 160.0)]


@pytest.mark.usefixtures("ray_cluster", "clean_ee_env")
def test_credentials_never_reach_outputs_logs_or_errors(tmp_path, monkeypatch, caplog, capfd):
    from google.oauth2.credentials import Credentials

    key = fake_key_file(tmp_path / "key.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    caplog.set_level(logging.DEBUG)
    with EEEmulator(retry_after_s=0, auth_token=TOKEN, error_rate=0.2, seed=5) as emu:
        # a full run with a real bearer token, under injected 429/500s (errors get logged)
        for layout, out in (("per_item", tmp_path / "pi"),):
            res = export_batch(
                spatials=PLACES, temporal=WINDOW, models=["spectral_stats"], backend="gee",
                provider_options={"url": emu.url, "credentials": Credentials(token=TOKEN),
                                  "backoff_s": 0.01},
                out=str(out), layout=layout, show_progress=False, num_workers=2,
            )  # fmt: skip
            items = [res] if isinstance(res, dict) else list(res)
            assert all(r["status"] == "ok" for r in items)
            assert_no_secret(json.dumps(items), "the returned manifests")
        assert any(r["status"] in (429, 500) for r in emu.request_log)
        # a wrong token: 401 before any item runs; the message names the problem, not the token
        with pytest.raises(ProviderError, match="authentication") as ei:
            export_batch(
                spatials=PLACES, temporal=WINDOW, models=["spectral_stats"], backend="gee",
                provider_options={"url": emu.url, "max_retries": 0,
                                  "credentials": Credentials(token=TOKEN + "-wrong")},
                out=str(tmp_path / "bad"), layout="per_item", show_progress=False,
            )  # fmt: skip
        assert_no_secret(str(ei.value), "the 401 error")
    # the fake key file at Google's real endpoint: refused while loading, contents unsaid
    with pytest.raises(ProviderError, match="service-account key") as ei:
        export_batch(
            spatials=PLACES, temporal=WINDOW, models=["spectral_stats"], backend="gee",
            provider_options={"project": "my-project"}, out=str(tmp_path / "bad2"),
            layout="per_item", show_progress=False,
        )  # fmt: skip
    assert_no_secret(str(ei.value), "the key-file error")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
    # every file the runs wrote (arrays, manifests, log.jsonl, run.json, final.json)
    for path, text in all_text_under(tmp_path).items():
        if path != str(key):
            assert_no_secret(text, path)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the Python log")
    cap = capfd.readouterr()
    assert_no_secret(cap.out + cap.err, "stdout/stderr")
    # and what the Ray workers (fetch actors) logged in this session
    import ray

    session = pathlib.Path(ray._private.worker.global_worker.node.get_session_dir_path())
    for p in (session / "logs").glob("*worker*"):
        assert_no_secret(p.read_bytes().decode("latin-1"), str(p))


BAD_NAMES = [
    "../evil", "..", ".", "a/b", "a\\b", "/etc/passwd", "C:\\x", "a\x00b", ".hidden",
    "evil\u202egpj.exe", "zero\u200bwidth", "tab\there", "new\nline", "", "   ",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_names_cannot_escape_the_output(tmp_path, raster_source, name):
    with pytest.raises(ModelError, match="safe file name"):
        plan_export(**local_kw(raster_source), spatials=points(2), names=["ok", name],
                    out=str(tmp_path / "o"), layout="per_item")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_odd_but_safe_names_stay_inside(tmp_path, raster_source):
    names = ["a..b", "café", "日本語", "x y", "-dash", "name.with.dots", "e\u0301"]
    plan = plan_export(**local_kw(raster_source), spatials=points(len(names)), names=names,
                       out=str(tmp_path / "o"), layout="per_item")  # fmt: skip
    for i in range(len(names)):
        path = plan.item_path(i)
        assert path.parent == (tmp_path / "o").resolve()
        assert path.resolve().is_relative_to((tmp_path / "o").resolve())
    assert plan.names[-1] == "\u00e9"  # NFC: one spelling per name, so no twin files


class Boom:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.usefixtures("ray_cluster")
def test_loading_never_unpickles(tmp_path, raster_source):
    from rs_embed_ray import load_export

    marker = tmp_path / "unpickled"
    out = tmp_path / "pi"
    args = dict(**local_kw(raster_source), spatials=points(2), out=str(out), layout="per_item")
    export_batch(**args)
    keys = json.loads((out / "p00000.json").read_text())["npz_keys"]
    np.savez(out / "p00000.npz", **{k: np.array([Boom(marker)], dtype=object) for k in keys})
    with pytest.raises(ValueError, match="pickle"):
        load_export(out / "p00000.npz")
    shard = tmp_path / "shard.npz"
    np.savez(shard, d0=np.array([Boom(marker)], dtype=object), m0=np.array([Boom(marker)]))
    with pytest.raises(ValueError, match="pickle"):
        ShardReader().read(shard, 0)
    # resume reads the file without unpickling, finds it damaged and writes it again
    res = export_batch(**args, resume=True)
    assert [bool(r.get("resume_skipped")) for r in res] == [False, True]
    with np.load(out / "p00000.npz", allow_pickle=False) as z:
        assert all(z[k].dtype == np.float32 for k in z.files)
    assert not marker.exists()


def test_emulator_binds_loopback_only():
    for host in ("0.0.0.0", "::", socket.gethostname()):
        try:
            addrs = {i[4][0] for i in socket.getaddrinfo(host, None)}
        except socket.gaierror:
            continue
        if all(a.startswith("127.") or a == "::1" for a in addrs):
            continue  # this host name is loopback here: allowed
        with pytest.raises(ValueError, match="loopback"):
            EEEmulator(host=host)
    with EEEmulator() as emu:
        bound = emu._server.server_address[0]
        assert bound == "127.0.0.1" and emu.url.startswith("http://127.0.0.1:")
    cli = subprocess.run(
        [sys.executable, "-m", "rs_embed_ray.testing.ee_emulator", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 2 and "loopback" in cli.stderr
