"""Weight resolution order, records and errors (rs_embed_ray.models.weights); no network."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest

from rs_embed_ray.errors import WeightsError
from rs_embed_ray.models import weights as W
from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

REPO = "MVRL/remote-clip-vit-base-patch32"
FN = "model.safetensors"


def _file(path: Path, payload: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _resolve(explicit=None, **kw):
    kw.setdefault("filename", FN)
    kw.setdefault("hf_repo", REPO)
    return W.resolve_weights("remoteclip", explicit, **kw)


def test_explicit_path_wins_and_records_sha(tmp_path, monkeypatch):
    f = _file(tmp_path / "x" / "my.safetensors", b"abc")
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "envdir"))
    _file(tmp_path / "envdir" / "remoteclip" / FN)
    rw = _resolve(str(f))
    assert rw.source == "explicit"
    assert rw.record() == {
        "weights": str(f.absolute()),
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "source": "explicit",
    }


def test_explicit_directory_is_searched_for_filename(tmp_path):
    f = _file(tmp_path / "snap" / FN)
    rw = _resolve(str(tmp_path / "snap"))
    assert rw.path == f.absolute()


def test_explicit_missing_path_is_an_error_not_a_fallthrough(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path))
    _file(tmp_path / FN)
    with pytest.raises(WeightsError) as ei:
        _resolve(str(tmp_path / "nope.safetensors"))
    msg = str(ei.value)
    assert "does not exist" in msg and "--weights remoteclip=" in msg


@pytest.mark.parametrize("spelling", ["random", "RANDOM", "random-init"])
def test_random_init_is_recorded_and_warned(spelling, caplog):
    with caplog.at_level(logging.WARNING, logger="rs_embed_ray.models.weights"):
        rw = _resolve(spelling)
    assert rw.is_random and rw.source == "random"
    assert rw.record() == {"weights": "random-init", "sha256": None}
    assert any(r.levelno == logging.WARNING and "RANDOM" in r.getMessage() for r in caplog.records)


def test_env_dir_model_subdir_then_flat(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path))
    flat = _file(tmp_path / FN, b"flat")
    assert _resolve().path == flat.absolute()
    sub = _file(tmp_path / "remoteclip" / FN, b"sub")
    rw = _resolve()
    assert rw.path == sub.absolute() and rw.source == "env_dir"
    assert rw.sha256 == hashlib.sha256(b"sub").hexdigest()


def test_env_dir_beats_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_hf_cache_entry(cache, REPO, FN, _file(tmp_path / "blob", b"cached"))
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "env"))
    env_file = _file(tmp_path / "env" / FN, b"env")
    assert _resolve().path == env_file.absolute()


def test_hf_cache_layout_is_found(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    blob = _file(tmp_path / "blob", b"cached-bytes")
    entry = write_hf_cache_entry(cache, REPO, FN, blob, commit="a" * 40)
    rw = _resolve()
    assert rw.source == "hf_cache"
    assert rw.path == entry.absolute()  # the snapshot path, not the blob it links to
    assert rw.sha256 == hashlib.sha256(b"cached-bytes").hexdigest()
    # a pinned revision that is not cached is not silently replaced by another one
    with pytest.raises(WeightsError):
        _resolve(hf_revision="b" * 40)


def test_hf_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    write_hf_cache_entry(tmp_path / "home" / "hub", REPO, FN, _file(tmp_path / "b"))
    assert _resolve().source == "hf_cache"


def test_offline_fails_fast_and_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "w"))
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as ei:
        _resolve()
    assert time.monotonic() - t0 < 2.0
    msg = str(ei.value)
    for needle in (
        "Tried:",
        f"env_dir: {tmp_path / 'w' / 'remoteclip' / FN}",
        f"env_dir: {tmp_path / 'w' / FN}",
        "hf_cache: MVRL/remote-clip-vit-base-patch32/model.safetensors",
        "HF_HUB_OFFLINE",
        'weights={"remoteclip": "/path/model.safetensors"}',
        "--weights remoteclip=/path/model.safetensors",
        "RS_EMBED_RAY_WEIGHTS_DIR",
        "--weights remoteclip=random",
    ):
        assert needle in msg, needle


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setenv("RS_EMBED_RAY_HF_PROBE_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="unreachable"):
        _resolve()
    assert time.monotonic() - t0 < 3.0


def test_download_when_reachable(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: None)
    seen = {}

    def fake_download(repo_id, filename, **kw):
        seen.update(kw, repo_id=repo_id, filename=filename)
        return str(_file(tmp_path / "dl" / filename, b"downloaded"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    rw = _resolve(hf_revision="abc")
    assert rw.source == "download" and rw.record()["source"] == "download"
    assert seen["repo_id"] == REPO and seen["revision"] == "abc"
    assert seen["cache_dir"] == str(tmp_path / "empty_hf_cache")


def test_no_repo_known(monkeypatch):
    with pytest.raises(WeightsError, match="no Hugging Face repo"):
        W.resolve_weights("tessera", None, filename="x.pt", hf_repo=None)


def test_sha256_streaming_and_cached(tmp_path):
    f = _file(tmp_path / "big.bin", b"0123456789" * 100_000)
    assert W.file_sha256(f, chunk_size=4096) == hashlib.sha256(f.read_bytes()).hexdigest()
    st = f.stat()
    assert (str(f.resolve()), st.st_size, st.st_mtime_ns) in W._SHA_CACHE


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_torch_checkpoint_reads_the_same_mapped_or_not(tmp_path, zip_format) -> None:
    """Zip checkpoints are memory-mapped; the legacy format cannot be and is read whole.
    Both give back what torch.save wrote, unwrapped from ``state_dict``."""
    import torch

    from rs_embed_ray.models.runtime import load_state_dict_file

    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0])}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=zip_format)
    got = load_state_dict_file(str(path))
    assert sorted(got) == ["b", "w"]
    assert all(torch.equal(got[k], sd[k]) for k in sd)
