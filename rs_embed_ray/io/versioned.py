"""Conditional writes by object version on an object store: what the run's lock needs so that
no writer overwrites an object it did not last write.

An object's *version* is what the store changes on every write of it: S3's ``ETag``
(``If-Match`` / ``If-None-Match: *`` on PutObject) and GCS's ``generation``
(``ifGenerationMatch``, ``0`` for absent). :func:`put` writes only if the object is still at
the version the caller saw, and returns the new one; :class:`ObjectChanged` says the store
holds another (someone else wrote, or deleted, it). Only the two stores the outputs support.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from rs_embed_ray.io.storage import AnyPath, scheme_of

ABSENT = ""  # the version of an object that does not exist


class ObjectChanged(FileExistsError):
    """The object is not at the version the write was conditional on."""


def _split(path: AnyPath) -> tuple[str, str]:
    bucket, _, key = str(path).split("://", 1)[1].partition("/")
    return bucket, key


def version(path: AnyPath) -> str:
    """The object's current version (``ABSENT`` when there is none)."""
    fs, (bucket, key) = path.fs, _split(path)
    try:
        if scheme_of(path) == "s3":
            return str(fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"])
        fs.invalidate_cache(f"{bucket}/{key}")
        return str(fs.info(f"{bucket}/{key}")["generation"])
    except FileNotFoundError:
        return ABSENT


def put(path: AnyPath, data: bytes, match: str) -> str:
    """Write the whole object only if it is at version ``match`` (``ABSENT``: only if there is
    none); return its new version. Raises :class:`ObjectChanged` otherwise."""
    fs, (bucket, key) = path.fs, _split(path)
    try:
        if scheme_of(path) == "s3":
            cond = {"IfNoneMatch": "*"} if match == ABSENT else {"IfMatch": match}
            out: Any = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
            new = str(out["ETag"])
        else:
            new = _gcs_put(fs, bucket, key, data, match or "0")
    except FileExistsError as exc:  # gcsfs: 412; s3fs: If-None-Match failed
        raise ObjectChanged(f"{path} is not at version {match or 'absent'}") from exc
    except OSError as exc:  # s3fs maps a failed If-Match (412) to EINVAL
        if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
            raise ObjectChanged(f"{path} is not at version {match}") from exc
        raise
    fs.invalidate_cache(f"{bucket}/{key}")
    return new


def _gcs_put(fs: Any, bucket: str, key: str, data: bytes, generation: str) -> str:
    """A multipart upload (as gcsfs's own ``pipe_file``) with ``ifGenerationMatch``; the
    JSON API's other upload types take the condition too, but fake-gcs-server honours it on
    this one only."""
    meta = json.dumps({"name": key})
    body = (
        (
            f"--==0==\nContent-Type: application/json; charset=UTF-8\n\n{meta}\n"
            "--==0==\nContent-Type: application/octet-stream\n\n"
        ).encode()
        + data
        + b"\n--==0==--"
    )
    out = fs.call(
        "POST",
        f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
        uploadType="multipart",
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=body,
        json_out=True,
        ifGenerationMatch=generation,
    )
    return str(out["generation"])


def delete(path: AnyPath, match: str) -> bool:
    """Delete the object only if it is at version ``match``: checked just before, and on GCS
    sent as ``ifGenerationMatch`` too (S3 servers and fake-gcs-server delete regardless of a
    condition). Returns whether it was deleted."""
    fs, (bucket, key) = path.fs, _split(path)
    if version(path) != match:
        return False
    try:
        if scheme_of(path) == "s3":
            fs.call_s3("delete_object", Bucket=bucket, Key=key)
        else:
            fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=match)
    except FileNotFoundError:
        return False
    except FileExistsError:  # 412: someone else's version
        return False
    fs.invalidate_cache(f"{bucket}/{key}")
    return True
