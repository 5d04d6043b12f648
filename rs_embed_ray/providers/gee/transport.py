"""The HTTP transport the ee client sends through: a quota slot per request, on urllib3.

Why urllib3 and not a requests.Session: the ee client hands us a finished request (URL,
method, body, and headers with google-auth's bearer token), so of requests' work only the
connection pool is needed. The rest ran again for every request: environment proxies and CA
bundle looked up, hooks, cookies, a ``~/.netrc`` lookup that replaced the bearer token with
Basic credentials for a host named there (tests/ee/test_transport_auth.py). Loopback
measurement, 2,000 requests a mode: 1.35 ms of client CPU a request through a Session,
0.78 ms through urllib3 (docs/benchmarks.md, "Session 16").

What requests did once per request is done here once per transport, with requests' own
rules: the proxy for the endpoint from the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...),
the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's), its default
headers under the client's. Retries stay the provider's (``EEClient.call``): urllib3 retries
nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

from rs_embed_ray.providers.ratelimit import Limiter

POOL_SIZE = 128  # kept-alive connections a host (more threads than this only reconnect)


def pool_for(url: str) -> Any:
    """A thread-safe urllib3 pool manager for ``url``, with the proxy and CA bundle the
    environment gives it by requests' own rules (``Session.merge_environment_settings``:
    ``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's)."""
    import requests
    import urllib3

    with requests.Session() as s:
        env = s.merge_environment_settings(url, {}, None, None, None)
    kw: dict[str, Any] = {"num_pools": 4, "maxsize": POOL_SIZE, "block": False}
    if urlsplit(url).scheme == "https":
        ca = requests.certs.where() if env["verify"] is True else env["verify"]
        kw["cert_reqs"] = "CERT_REQUIRED"
        kw["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
    proxy = requests.utils.select_proxy(url, env["proxies"])
    if not proxy:
        return urllib3.PoolManager(**kw)
    user, password = requests.utils.get_auth_from_url(proxy)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as in requests

        return SOCKSProxyManager(proxy, username=user or None, password=password or None, **kw)
    headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **kw)


class LimitedHttp:
    """An httplib2-like transport (what the ee client accepts as ``http_transport``).

    Holds a limiter slot for the whole request and counts requests per thread for the patch
    meta. One pool manager per endpoint, shared by the threads.
    """

    def __init__(self, limiter: Limiter, timeout_s: float | None, acquire_timeout_s: float | None):
        import requests.utils

        self.limiter = limiter
        self.timeout_s = timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._local = threading.local()
        self._pools: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._defaults = dict(requests.utils.default_headers())  # User-Agent, Accept-Encoding...

    def _pool(self, uri: str) -> Any:
        parts = urlsplit(uri)
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools.get(origin)
                if pool is None:
                    pool = self._pools[origin] = pool_for(origin)
        return pool

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        """requests' default headers under the caller's (a name in either case overrides)."""
        low = {k.lower() for k in headers or ()}
        return {
            **{k: v for k, v in self._defaults.items() if k.lower() not in low},
            **(headers or {}),
        }

    def thread_requests(self) -> int:
        return getattr(self._local, "count", 0)

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int | None = None,
        connection_type: Any = None,
        **_: Any,
    ) -> tuple[Any, bytes]:
        import httplib2
        import urllib3.exceptions as ux

        pool = self._pool(uri)
        if isinstance(body, str):
            body = body.encode("utf-8")
        sent = self._headers(headers)
        self._local.count = self.thread_requests() + 1
        with self.limiter.slot(self.acquire_timeout_s):
            try:
                resp = pool.urlopen(
                    method,
                    uri,
                    body=body,
                    headers=sent,
                    timeout=self.timeout_s,
                    retries=False,  # ours are EEClient.call's
                    preload_content=True,
                )
            # NewConnectionError first: urllib3 makes it a TimeoutError too
            except (ux.NewConnectionError, ux.ProtocolError, ux.SSLError, ux.ProxyError) as exc:
                raise ConnectionError(
                    f"Earth Engine connection failed: {type(exc).__name__}"
                ) from exc
            except ux.TimeoutError as exc:
                raise TimeoutError(
                    f"Earth Engine request timed out after {self.timeout_s} s"
                ) from exc
        out: dict[str, Any] = dict(resp.headers)
        out["status"] = resp.status
        return httplib2.Response(out), resp.data

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for p in pools.values():
            p.clear()
