"""Where outputs live: a local folder, or an object store (``s3://bucket/prefix``, ``gs://...``).

The few operations the writers, the run state, resume and ``load_export`` need, for both:
put a whole object (``put_file`` / ``put_bytes``; ``create=True`` only if absent, the lock),
read, exists, list, delete. Local paths stay ``pathlib.Path`` and keep their old code paths
(``io.atomic``'s temp file + ``os.replace``); a remote location is a ``upath.UPath`` over
fsspec (s3fs / gcsfs), because xarray, zarr, geopandas and pyarrow all speak fsspec and it
already has S3's conditional write (``If-None-Match: *``, ``mode="create"``).

An object is always written with one PUT of a finished local temp file (or a multipart
upload, which S3 and GCS show only once completed): it appears complete or not at all.
Credentials come from the provider chains of boto3 / google-auth (``AWS_*`` variables,
profiles, instance roles, ``GOOGLE_APPLICATION_CREDENTIALS``); an S3-compatible server is
chosen with ``AWS_ENDPOINT_URL`` (botocore reads it). Nothing here takes, stores or prints a
secret; ``redact`` removes one from any text that reaches a message.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ModelError

SCHEMES = ("s3", "gs")
# loggers of the store clients that print request headers at DEBUG (the CLI keeps them at INFO)
STORE_CLIENT_LOGGERS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "urllib3", "google.auth")
_SECRET_ENVS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# AWS: 3-63 of [a-z0-9.-], starting and ending with a letter or digit, not an IP address;
# GCS also takes "_" (and up to 222 characters when dotted)
_BUCKET = {
    "s3": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    "gs": re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"),
}
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")

AnyPath = Any  # pathlib.Path or upath.UPath


def scheme_of(target: str | os.PathLike[str]) -> str | None:
    """``"s3"`` / ``"gs"`` / another URL scheme of ``target``; None for a local path."""
    text = str(target)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    return m.group(1).lower() if m else None


def is_remote(path: Any) -> bool:
    return scheme_of(path) is not None


def as_path(target: str | os.PathLike[str]) -> AnyPath:
    """A ``Path`` for a local path (as given, not resolved), a ``UPath`` for a bucket URL."""
    if is_remote(target):
        from upath import UPath

        return UPath(str(target))
    return Path(target)


def check_url(target: str) -> None:
    """Refuse (``ModelError``) a URL we cannot write to: unknown scheme, bad bucket name."""
    scheme = scheme_of(target)
    if scheme is None:
        return
    if scheme not in SCHEMES:
        raise ModelError(
            f"Output {target!r} uses the scheme {scheme}://, which is not supported: use a "
            "local (or mounted) folder, s3://bucket/prefix or gs://bucket/prefix."
        )
    rest = str(target).split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not _BUCKET[scheme].match(bucket) or _IP.match(bucket) or ".." in bucket:
        allowed = "a-z, 0-9, '.', '-'" + (", '_'" if scheme == "gs" else "")
        raise ModelError(
            f"Output {target!r}: {bucket!r} is not a valid bucket name (3-63 characters of "
            f"{allowed}, starting and ending with a letter or digit); fix the bucket name."
        )
    if not key.strip("/"):
        raise ModelError(
            f"Output {target!r} is a whole bucket; add a prefix of its own "
            f"({scheme}://{bucket}/my-export)."
        )


def redact(text: str) -> str:
    """``text`` without the values of the secret credential variables of this process."""
    for name in _SECRET_ENVS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _bucket_error(path: AnyPath, exc: BaseException) -> ModelError:
    scheme, bucket = scheme_of(path), str(path).split("://", 1)[1].split("/", 1)[0]
    name = type(exc).__name__
    text = redact(str(exc))
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return ModelError(
            f"Output {path}: the bucket {bucket!r} does not exist (or is not visible with "
            "these credentials); create it or fix the bucket name."
        )
    creds = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
    if scheme == "gs":
        creds = "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`"
    if isinstance(exc, PermissionError) or any(
        w in name + text
        for w in ("Credential", "AccessDenied", "Forbidden", "InvalidAccessKey", "Signature")
    ):
        return ModelError(
            f"Output {path}: the store refused the credentials ({name}: {text}); set valid "
            f"credentials ({creds}) with read and write access to {scheme}://{bucket}."
        )
    return ModelError(
        f"Output {path}: cannot reach the bucket ({name}: {text}); check the endpoint "
        "(AWS_ENDPOINT_URL for an S3-compatible server) and the network."
    )


def check_bucket(path: AnyPath) -> None:
    """Before any work: the bucket exists and these credentials may list it."""
    if not is_remote(path):
        return
    try:
        fs = path.fs
        bucket = str(path).split("://", 1)[1].split("/", 1)[0]
        fs.ls(bucket, detail=False, refresh=True)
    except Exception as exc:  # botocore / google-auth errors are not all OSErrors
        raise _bucket_error(path, exc) from None


# -- object operations (remote) --------------------------------------------------------------


def _key(path: AnyPath) -> str:
    return str(path).split("://", 1)[1]


def put_file(local: str | os.PathLike[str], dest: AnyPath) -> None:
    """Upload a finished local file as one object (visible only once complete)."""
    dest.fs.put_file(os.fspath(local), _key(dest))


def put_bytes(dest: AnyPath, data: bytes, *, create: bool = False) -> None:
    """Write one whole object; ``create=True`` raises FileExistsError if it exists (S3's
    ``If-None-Match: *``; GCS's ``ifGenerationMatch=0``)."""
    fs = dest.fs
    # s3fs sends If-None-Match: *, gcsfs ifGenerationMatch=0; both raise FileExistsError
    fs.pipe_file(_key(dest), data, mode="create" if create else "overwrite")
    fs.invalidate_cache(_key(dest))


def read_bytes(path: AnyPath) -> bytes:
    return bytes(path.fs.cat_file(_key(path)))


def list_files(folder: AnyPath) -> list[str]:
    """Full URLs of the objects under ``folder`` (recursively), sorted."""
    fs = folder.fs
    scheme = scheme_of(folder)
    try:
        keys = fs.find(_key(folder), refresh=True)
    except FileNotFoundError:
        return []
    return sorted(f"{scheme}://{k}" for k in keys)


def delete(path: AnyPath) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm_file(_key(path))


def delete_tree(folder: AnyPath) -> None:
    fs = folder.fs
    for url in list_files(folder):
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(_key(url))
    fs.invalidate_cache(_key(folder))


# -- local copies (reading remote exports) ---------------------------------------------------

_CACHE: list[str] = []


def _cache_dir() -> str:
    if not _CACHE:
        _CACHE.append(tempfile.mkdtemp(prefix="rs_embed_ray_remote-"))
        atexit.register(shutil.rmtree, _CACHE[0], True)
    return _CACHE[0]


@contextlib.contextmanager
def local_copy(path: AnyPath) -> Iterator[str]:
    """A local file holding ``path``'s bytes for the block (``path`` itself when local)."""
    if not is_remote(path):
        yield os.fspath(path)
        return
    fd, tmp = tempfile.mkstemp(prefix="rs_embed_ray_get-", suffix=Path(_key(path)).suffix)
    os.close(fd)
    try:
        path.fs.get_file(_key(path), tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def materialize(target: str, skip: tuple[str, ...] = ()) -> str:
    """A local copy of a remote export (one object and its ``.json`` sidecar, or a folder
    without the sub-folders in ``skip``), kept until the process exits; ``target`` when local.
    """
    if not is_remote(target):
        return target
    path = as_path(target.rstrip("/"))
    fs = path.fs
    root = Path(tempfile.mkdtemp(dir=_cache_dir()))
    if fs.isdir(_key(path)):
        base = _key(path).rstrip("/") + "/"
        local = root / path.name
        keys, dests = [], []
        for url in list_files(path):
            rel = _key(url)[len(base) :]
            if not path.suffix and rel.split("/", 1)[0] in skip:  # a per-item folder's state
                continue
            dest = local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            keys.append(_key(url))
            dests.append(str(dest))
        if keys:
            fs.get(keys, dests)  # concurrent GETs (s3fs / gcsfs are async inside)
        local.mkdir(exist_ok=True)
        if not path.suffix:
            return str(local)
    elif not fs.exists(_key(path)):
        raise FileNotFoundError(f"Export path does not exist: {target!r}")
    # the file and its siblings (sidecar, or the array file of a manifest given)
    pattern = f"{_key(path.parent)}/{glob.escape(path.stem)}.*"
    for key in fs.glob(pattern):
        if not fs.isdir(key):
            fs.get_file(key, str(root / key.rsplit("/", 1)[1]))
    return str(root / path.name)
