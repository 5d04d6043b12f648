"""What went wrong with an Earth Engine call: classify a client/transport error, and redact
secrets from any message before it is shown or logged."""

from __future__ import annotations

import contextlib
import email.utils
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rs_embed_ray.errors import ProviderError

_RETRYABLE = {408, 429, 500, 502, 503, 504}
AUTH_HINT = "run `earthengine authenticate` or set GOOGLE_APPLICATION_CREDENTIALS"
PROJECT_HINT = (
    "set EE_PROJECT (or GOOGLE_CLOUD_PROJECT), pass project=..., or run "
    "`earthengine set_project` / `gcloud auth application-default set-quota-project`"
)


class RequestTooLarge(ProviderError):
    """Earth Engine refused a request as too big (bytes, side or bands): the tile is split."""


_PEM = r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
_SECRET_PATTERNS = [
    (re.compile(r"(?i)bearer\s+[^\s,;\"']+"), "Bearer ***"),
    (re.compile(r"ya29\.[0-9A-Za-z_\-\.]+"), "***"),
    (re.compile(_PEM, re.S), "***"),
    (re.compile(r"(?i)(access_token|refresh_token|client_secret|private_key|key)=[^&\s]+"),
     r"\1=***"),
    (re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*"), r"\1"),
]  # fmt: skip


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Strip tokens, private keys and URL query strings from a message before it is shown."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


def _parse_retry_after(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class Failure:
    kind: str  # quota | server | transient | auth | permission | too_large | not_found | other
    status: int | None
    retry_after: float | None
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind in ("quota", "server", "transient")


def classify_error(exc: BaseException) -> Failure:
    """Read the HTTP status and Retry-After behind an ee/googleapiclient/transport error."""
    from googleapiclient.errors import HttpError

    status: int | None = None
    retry_after: float | None = None
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, HttpError):
            with contextlib.suppress(Exception):
                status = int(seen.resp.status)
                retry_after = _parse_retry_after(seen.resp.get("retry-after"))
            break
        seen = seen.__cause__ or seen.__context__
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if status is None:
        try:
            import google.auth.exceptions as gae

            if isinstance(exc, gae.GoogleAuthError):
                return Failure("auth", None, None, msg)
        except ImportError:  # pragma: no cover - google-auth ships with earthengine-api
            pass
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return Failure("transient", None, None, msg)
        if "too many requests" in low or "quota exceeded" in low or "resource_exhausted" in low:
            return Failure("quota", 429, None, msg)
        if "please authorize access" in low:
            return Failure("auth", None, None, msg)
        if "no project found" in low:
            return Failure("permission", None, None, msg)
        return Failure("other", None, None, msg)
    if status == 429:
        kind = "quota"
    elif status in _RETRYABLE:
        kind = "server" if status >= 500 else "transient"
    elif status == 401:
        kind = "auth"
    elif status == 403:
        kind = "permission"
    elif status == 404:
        kind = "not_found"
    elif status == 400 and ("total request size" in low or "must be less than or equal" in low):
        kind = "too_large"
    elif status >= 500:
        kind = "server"
    else:
        kind = "other"
    return Failure(kind, status, retry_after, msg)
