"""Find a model's weight file, never silently: explicit path, env dir, HF cache, download.

Every embedder calls :func:`resolve_weights` once, in ``_load``. The result says where the
file came from and its sha256, so the export manifest can record exactly which weights made
an embedding. ``"random"`` is an explicit request for random init (for tests and smoke
runs); it is logged as a WARNING and recorded as ``"random-init"``.

Order (first hit wins):

1. explicit path (``weights={"remoteclip": PATH}`` / CLI ``--weights remoteclip=PATH``);
   a directory is searched for ``filename``. A missing explicit path is an error, not a
   fall-through: the user asked for that file.
2. ``$RS_EMBED_RAY_WEIGHTS_DIR/<model_id>/<filename>``, then
   ``$RS_EMBED_RAY_WEIGHTS_DIR/<filename>``.
3. the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``; read at call time).
4. a download with ``hf_hub_download``. Offline (``HF_HUB_OFFLINE=1``) or an unreachable hub
   fails within seconds (a short TCP probe runs first: huggingface_hub itself retries for
   about 20 s) with a :class:`WeightsError` that lists what was tried and how to fix it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from rs_embed_ray.errors import WeightsError

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "RS_EMBED_RAY_WEIGHTS_DIR"
PROBE_TIMEOUT_ENV = "RS_EMBED_RAY_HF_PROBE_TIMEOUT"
RANDOM_INIT = "random-init"
_RANDOM_SPELLINGS = frozenset({"random", "random-init", "random_init"})
_TRUE = frozenset({"1", "true", "yes", "on"})

Source = Literal["explicit", "env_dir", "hf_cache", "download", "random"]


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's weights come from; ``path`` is None for random init."""

    model_id: str
    path: Path | None
    source: Source
    sha256: str | None
    tried: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_random(self) -> bool:
        return self.path is None

    def record(self) -> dict[str, Any]:
        """The JSON-able weights record stored in every embedding's meta."""
        if self.path is None:
            return {"weights": RANDOM_INIT, "sha256": None}
        return {"weights": str(self.path), "sha256": self.sha256, "source": self.source}


# ---------------------------------------------------------------------------------------
# sha256, once per file per process
# ---------------------------------------------------------------------------------------

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Streaming sha256 of a file, cached by (path, size, mtime) so an actor hashes once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), int(st.st_size), int(st.st_mtime_ns))
    with _SHA_LOCK:
        hit = _SHA_CACHE.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while True:
            block = fh.read(chunk_size)
            if not block:
                break
            h.update(block)
    digest = h.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


# ---------------------------------------------------------------------------------------
# Hugging Face helpers (environment read at call time, not import time)
# ---------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hf_offline() -> bool:
    """True when the user told huggingface_hub (or us) not to touch the network."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    return False


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, honouring env vars set after import."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub missing
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(xdg) / "huggingface" / "hub"


def _hf_endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT).rstrip("/")
    except Exception:  # pragma: no cover
        return "https://huggingface.co"


def _probe_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(PROBE_TIMEOUT_ENV, "3")))
    except ValueError:
        return 3.0


def hub_reachable(endpoint: str | None = None, *, timeout: float | None = None) -> str | None:
    """None when a TCP connection to the hub opens within ``timeout``; else the reason."""
    url = urlparse(endpoint or _hf_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout or _probe_timeout()):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


def _cached_hf_file(
    repo: str, filename: str, revision: str | None, repo_type: str = "model"
) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(
            repo_id=repo,
            filename=filename,
            cache_dir=str(hf_cache_dir()),
            revision=revision,
            repo_type=repo_type,
        )
    except Exception as exc:  # a malformed cache must not hide the other options
        log.debug("HF cache lookup failed for %s/%s: %s", repo, filename, exc)
        return None
    if isinstance(hit, str) and os.path.isfile(hit):
        return Path(hit)
    return None


# ---------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------


def _how_to_fix(
    model_id: str,
    filename: str,
    hf_repo: str | None,
    repo_type: str = "model",
    random_ok: bool = True,
) -> str:
    lines = [
        "Fix one of:",
        f'  * pass an explicit file: weights={{"{model_id}": "/path/{filename}"}} '
        f"(CLI: --weights {model_id}=/path/{filename});",
        f"  * put the file at ${WEIGHTS_DIR_ENV}/{model_id}/{filename} "
        f"(or ${WEIGHTS_DIR_ENV}/{filename});",
    ]
    if hf_repo:
        kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
        lines.append(
            f"  * pre-populate the Hugging Face cache on a machine with network "
            f"(hf download {hf_repo} {filename}{kind}) and point HF_HOME/HF_HUB_CACHE "
            "at it;"
        )
    if random_ok:
        lines.append(
            f"  * or run with random weights for a smoke test: "
            f'weights={{"{model_id}": "random"}} (CLI: --weights {model_id}=random).'
        )
    return "\n".join(lines)


def _hit(model_id: str, path: Path, source: Source, tried: list[str]) -> ResolvedWeights:
    # absolute, not resolve(): an HF snapshot entry is a symlink into blobs/, and the
    # snapshot path is the one a person recognises. The sha256 is of the target's bytes.
    p = Path(os.path.abspath(path.expanduser()))
    rw = ResolvedWeights(
        model_id=model_id, path=p, source=source, sha256=file_sha256(p), tried=tuple(tried)
    )
    log.info("weights for %s: %s (source=%s, sha256=%s)", model_id, p, source, rw.sha256)
    return rw


def resolve_weights(
    model_id: str,
    explicit: str | None,
    *,
    filename: str,
    hf_repo: str | None,
    hf_revision: str | None = None,
    allow_download: bool = True,
    hf_repo_type: str = "model",
    random_ok: bool = True,
) -> ResolvedWeights:
    """Find ``filename`` for ``model_id`` (see the module docstring for the order).

    ``hf_repo_type="dataset"`` looks up a Hugging Face dataset repo (a precomputed product
    file); ``random_ok=False`` leaves "random" out of the advice (it makes no sense for a
    product). Raises WeightsError naming every location tried and the ways to fix it.
    """
    tried: list[str] = []

    if explicit is not None and str(explicit).strip():
        spec = str(explicit).strip()
        if spec.lower() in _RANDOM_SPELLINGS:
            log.warning(
                "%s: using RANDOMLY INITIALISED weights (explicit 'random'); embeddings are "
                "not meaningful and are recorded as weights='random-init'.",
                model_id,
            )
            return ResolvedWeights(model_id=model_id, path=None, source="random", sha256=None)
        p = Path(spec).expanduser()
        if p.is_dir():
            if (p / filename).is_file():
                return _hit(model_id, p / filename, "explicit", [f"explicit: {p / filename}"])
            problem = f"the explicit directory {spec!r} has no {filename!r}"
        elif p.is_file():
            return _hit(model_id, p, "explicit", [f"explicit: {p}"])
        else:
            problem = f"the explicit path {spec!r} does not exist"
        raise WeightsError(
            f"Weights for {model_id!r}: {problem}.\n"
            + _how_to_fix(model_id, filename, hf_repo, hf_repo_type, random_ok)
        )

    env_dir = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env_dir:
        base = Path(env_dir).expanduser()
        for cand in (base / model_id / filename, base / filename):
            tried.append(f"env_dir: {cand}")
            if cand.is_file():
                return _hit(model_id, cand, "env_dir", tried)
    else:
        tried.append(f"env_dir: ${WEIGHTS_DIR_ENV} not set")

    if hf_repo:
        cache = hf_cache_dir()
        rev = f"@{hf_revision}" if hf_revision else ""
        tried.append(f"hf_cache: {hf_repo}{rev}/{filename} in {cache}")
        hit = _cached_hf_file(hf_repo, filename, hf_revision, hf_repo_type)
        if hit is not None:
            return _hit(model_id, hit, "hf_cache", tried)

        if not allow_download:
            tried.append("download: disabled")
        elif hf_offline():
            tried.append("download: skipped (HF_HUB_OFFLINE is set)")
        else:
            endpoint = _hf_endpoint()
            why = hub_reachable(endpoint)
            if why is not None:
                tried.append(f"download: {endpoint} {why}")
            else:
                try:
                    from huggingface_hub import hf_hub_download

                    got = hf_hub_download(
                        repo_id=hf_repo,
                        filename=filename,
                        revision=hf_revision,
                        repo_type=hf_repo_type,
                        cache_dir=str(hf_cache_dir()),
                        etag_timeout=_probe_timeout(),
                        endpoint=endpoint,
                    )
                    return _hit(model_id, Path(got), "download", tried)
                except Exception as exc:
                    tried.append(
                        f"download: {hf_repo}/{filename} failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})"
                    )
    else:
        tried.append("hf: no Hugging Face repo is known for this model")

    raise WeightsError(
        f"No weights found for model {model_id!r} (file {filename!r}). Tried:\n"
        + "\n".join(f"  - {t}" for t in tried)
        + "\n"
        + _how_to_fix(model_id, filename, hf_repo, hf_repo_type, random_ok)
    )


__all__ = [
    "RANDOM_INIT",
    "WEIGHTS_DIR_ENV",
    "ResolvedWeights",
    "file_sha256",
    "hf_cache_dir",
    "hf_offline",
    "hub_reachable",
    "resolve_weights",
]
