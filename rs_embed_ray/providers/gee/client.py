"""The Earth Engine session: endpoint, project and credentials, the process-wide ee
initialisation, an HTTP transport that holds a quota slot per request, and the retry policy.

Everything that talks to Earth Engine goes through :meth:`EEClient.call`, so one place decides
what is retried and what the user is told (see the package docstring: Retries, Quota, Global
state, Secrets).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.gee.failures import (
    AUTH_HINT,
    PROJECT_HINT,
    Failure,
    RequestTooLarge,
    classify_error,
    redact,
)
from rs_embed_ray.providers.gee.transport import LimitedHttp
from rs_embed_ray.providers.ratelimit import Limiter, LimiterTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "https://earthengine.googleapis.com"
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
URL_ENV = "RS_EMBED_RAY_EE_URL"
PROJECT_ENVS = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
EMULATOR_PROJECT = "emulator"

_EE_LOCK = threading.RLock()
_ACTIVE: object | None = None  # the token of the client that configured ee last


@contextlib.contextmanager
def _no_catalog_fetch(active: bool) -> Iterator[None]:
    """ee.Initialize opens a public STAC catalog URL; against an emulator nothing may leave."""
    if not active:
        yield
        return
    import ee.deprecation

    saved = ee.deprecation._FetchDataCatalogStac
    ee.deprecation._FetchDataCatalogStac = lambda: {}
    try:
        yield
    finally:
        ee.deprecation._FetchDataCatalogStac = saved


class EEClient:
    """One provider's Earth Engine session: resolves endpoint/project/credentials,
    initialises the ee library (again if another client took over the process), and runs
    every call with the retry policy, counting requests and retries per thread.

    Pickles as its configuration; locks, sessions and the transport are rebuilt.
    """

    _RUNTIME = ("_token", "_init_lock", "_ready", "_transport", "_secrets", "_local")

    def __init__(
        self,
        *,
        project: str | None,
        url: str | None,
        high_volume: bool,
        credentials: Any,
        limiter: Limiter,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        max_retry_after_s: float,
        timeout_s: float | None,
        acquire_timeout_s: float | None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.project_arg = project
        self.url_arg = url
        self.high_volume = bool(high_volume)
        self.credentials_arg = credentials
        self.limiter = limiter
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.timeout_s = timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._setup_runtime()

    def _setup_runtime(self) -> None:
        self._token = object()
        self._init_lock = threading.Lock()
        self._ready = False
        self._transport: LimitedHttp | None = None
        self._secrets: tuple[str, ...] = ()
        self._local = threading.local()
        self.url: str = self._resolve_url()
        host = urlsplit(self.url).hostname
        self.emulator = host is not None and not (host or "").endswith("googleapis.com")
        self.project: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup_runtime()

    # -- initialisation ---------------------------------------------------------------------

    def _resolve_url(self) -> str:
        url = self.url_arg or os.environ.get(URL_ENV) or None
        if url:
            return url.rstrip("/")
        return HIGH_VOLUME_URL if self.high_volume else DEFAULT_URL

    def _resolve_project(self) -> str | None:
        if self.project_arg:
            return str(self.project_arg)
        for env in PROJECT_ENVS:
            if os.environ.get(env):
                return os.environ[env]
        return None

    def _resolve_credentials(self) -> tuple[Any, str | None]:
        """(credentials, project implied by them); never logs or returns key material."""
        import ee

        if self.credentials_arg is not None:
            creds = self.credentials_arg
            return creds, getattr(creds, "quota_project_id", None) or getattr(
                creds, "project_id", None
            )
        if self.emulator:
            from google.oauth2.credentials import Credentials

            return Credentials(token="emulator"), None
        key_path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if key_path:
            found = _key_file_credentials(key_path)
            if found is not None:
                return found
            # authorized_user / external_account files: google.auth.default() reads them
        try:
            creds = ee.data.get_persistent_credentials()
        except Exception as exc:
            raise ProviderError(
                "Earth Engine credentials not found or invalid "
                f"({redact(type(exc).__name__)}); {AUTH_HINT}."
            ) from None
        return creds, getattr(creds, "quota_project_id", None)

    def ensure_ready(self) -> None:
        """Initialise the ee library for this client (once; again if another one took over)."""
        if self._ready and _ACTIVE is self._token:
            return
        with _EE_LOCK:
            if self._ready and _ACTIVE is self._token:
                return
            self._initialise()

    def _initialise(self) -> None:
        global _ACTIVE
        import ee

        creds, implied_project = self._resolve_credentials()
        project = self._resolve_project() or implied_project
        if not project and self.emulator:
            project = EMULATOR_PROJECT
        if not project:
            raise ProviderError(f"No Earth Engine project configured: {PROJECT_HINT}.")
        self.project = project
        token = getattr(creds, "token", None)
        self._secrets = (token,) if isinstance(token, str) else ()
        if self._transport is None:
            self._transport = LimitedHttp(self.limiter, self.timeout_s, self.acquire_timeout_s)
        transport = self._transport

        def init() -> None:
            # a re-initialisation must fetch the algorithm list again (ee caches it), so
            # a wrong endpoint, token or project fails here and not at the first fetch
            global _ACTIVE
            _ACTIVE = None  # whoever configured ee before must initialise again
            if ee.data.is_initialized():
                ee.Reset()
            ee.data.setMaxRetries(0)  # one retry policy: ours (see the package docstring)
            with _no_catalog_fetch(self.emulator):
                ee.Initialize(
                    credentials=creds, project=project, url=self.url, http_transport=transport
                )

        t0 = time.monotonic()
        self.call("initialise Earth Engine", init)
        _ACTIVE = self._token
        self._ready = True
        log.info(
            "Earth Engine ready: endpoint=%s project=%s%s (%.2f s)",
            urlsplit(self.url).netloc,
            project,
            " [emulator]" if self.emulator else "",
            time.monotonic() - t0,
        )

    # -- calls and retries ------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.max_backoff_s, self.backoff_s * (2.0**attempt))
        delay = cap * (0.5 + 0.5 * random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one ee call with our retry policy; raise a clear ProviderError at the end."""
        attempt = 0
        while True:
            try:
                return fn()
            except ProviderError:
                raise
            except LimiterTimeout as exc:
                raise ProviderError(f"Earth Engine {what}: {exc}") from None
            except Exception as exc:
                fail = classify_error(exc)
                if fail.retryable and attempt < self.max_retries:
                    delay = self._backoff(attempt, fail.retry_after)
                    attempt += 1
                    self._local.retries = getattr(self._local, "retries", 0) + 1
                    log.warning(
                        "Earth Engine %s failed (%s%s); retry %d/%d in %.2f s",
                        what,
                        fail.kind,
                        f" HTTP {fail.status}" if fail.status else "",
                        attempt,
                        self.max_retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                raise self._error(what, fail, attempt) from None

    def _error(self, what: str, fail: Failure, attempts: int) -> ProviderError:
        msg = redact(fail.message, self._secrets)
        status = f"HTTP {fail.status}: " if fail.status else ""
        tries = f" after {attempts} retries" if attempts else ""
        if fail.kind == "quota":
            return ProviderError(
                f"Earth Engine quota exceeded during {what}{tries} ({status}{msg}). Lower "
                "ee_max_concurrent/ee_max_qps, share one limiter across workers, or ask for "
                "more quota."
            )
        if fail.kind in ("server", "transient"):
            return ProviderError(f"Earth Engine {what} failed{tries} ({status}{msg}).")
        if fail.kind == "auth":
            return ProviderError(
                f"Earth Engine authentication failed during {what} ({status}{msg}); {AUTH_HINT}."
            )
        if fail.kind == "permission":
            return ProviderError(
                f"Earth Engine refused project {self.project!r} during {what} ({status}{msg}); "
                f"check the project is registered for Earth Engine and {PROJECT_HINT}."
            )
        if fail.kind == "not_found":
            return ProviderError(f"Earth Engine {what}: not found ({status}{msg}).")
        if fail.kind == "too_large":
            return RequestTooLarge(f"Earth Engine {what} failed ({status}{msg}).")
        return ProviderError(f"Earth Engine {what} failed ({status}{msg}).")

    def counts(self, values: list[Any], what: str) -> list[int]:
        """Evaluate a list of numbers (collection sizes) in one value:compute."""
        import ee

        out = self.call(what, lambda: ee.List(values).getInfo())
        if not isinstance(out, list) or len(out) != len(values):
            raise ProviderError(f"Earth Engine {what}: unexpected answer {out!r}.")
        return [int(v or 0) for v in out]

    # -- per-thread accounting (the patch meta's requests / retries) ------------------------

    def start(self) -> int:
        """Reset this thread's retry count; the request count to pass to :meth:`spent`."""
        assert self._transport is not None
        self._local.retries = 0
        return self._transport.thread_requests()

    def spent(self, req0: int) -> tuple[int, int]:
        """(requests, retries) of this thread since :meth:`start` returned ``req0``."""
        assert self._transport is not None
        return self._transport.thread_requests() - req0, getattr(self._local, "retries", 0)

    def close(self) -> None:
        """Close this client's HTTP sessions (the ee configuration itself is process-wide)."""
        if self._transport is not None:
            self._transport.close()


def _key_file_credentials(key_path: str) -> tuple[Any, str | None] | None:
    """Credentials of a service-account key file; None for other credential files."""
    import ee

    if not os.path.isfile(key_path):
        raise ProviderError(
            "Earth Engine credentials: GOOGLE_APPLICATION_CREDENTIALS names "
            f"{key_path!r}, which is not a file; {AUTH_HINT}."
        )
    try:
        with open(key_path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        raise ProviderError(
            f"Earth Engine credentials: {key_path!r} (GOOGLE_APPLICATION_CREDENTIALS) "
            f"is not a readable JSON key file; {AUTH_HINT}."
        ) from None
    if not (isinstance(info, dict) and info.get("type") == "service_account"):
        return None
    try:
        creds = ee.ServiceAccountCredentials(None, key_file=key_path)
    except Exception as exc:
        raise ProviderError(
            f"Earth Engine credentials: the service-account key {key_path!r} "
            f"could not be loaded ({type(exc).__name__}); {AUTH_HINT}."
        ) from None
    return creds, info.get("project_id")
