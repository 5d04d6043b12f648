"""The Earth Engine transport (providers/gee/transport.py) against real HTTP servers on
loopback ports, with requests (what the transport replaced, code we did not write) as the
reference: the same request on the wire, the same proxy from the environment, the client's
own Authorization header whatever ``~/.netrc`` says, and transport failures raised as the
retry policy expects them."""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from rs_embed_ray.providers.gee.failures import classify_error
from rs_embed_ray.providers.gee.transport import LimitedHttp
from rs_embed_ray.providers.ratelimit import LocalLimiter

HEADERS = {
    "authorization": "Bearer token-from-google-auth",
    "content-type": "application/json",
    "user-agent": "google-api-python-client/2 (gzip)",
    "x-goog-api-client": "gdcl/2 gl-python/3.11",
}
BODY = b'{"expression": {"values": {"0": {"constantValue": 1}}}}'


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request (request line, headers, body); answers gzip when asked."""

    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(
            {
                "line": self.requestline,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        payload = b'{"ok": true}' * 100
        gz = "gzip" in self.headers.get("Accept-Encoding", "")
        data = gzip.compress(payload) if gz else payload
        self.send_response(200)
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def http_transport() -> Iterator[LimitedHttp]:
    t = LimitedHttp(LocalLimiter(2, None), timeout_s=5, acquire_timeout_s=5)
    yield t
    t.close()


def _via_requests(uri: str) -> bytes:
    """The reference: requests as a Session sends it, environment settings included."""
    with requests.Session() as s:
        r = s.request("POST", uri, data=BODY, headers=HEADERS, timeout=5)
        return r.content


def test_the_wire_request_is_what_requests_sends(server, http_transport) -> None:
    uri = f"{server}/v1/projects/p/image:computePixels?alt=json"
    ref_content = _via_requests(uri)
    resp, content = http_transport.request(uri, method="POST", body=BODY, headers=HEADERS)
    ref, ours = _Recorder.seen
    assert ours["line"] == ref["line"]
    assert ours["body"] == ref["body"] == BODY
    assert ours["headers"] == ref["headers"]  # defaults (Accept-Encoding, ...) included
    assert resp.status == 200 and content == ref_content == b'{"ok": true}' * 100  # gunzipped
    assert http_transport.thread_requests() == 1


def test_a_str_body_is_sent_as_utf8(server, http_transport) -> None:
    http_transport.request(f"{server}/x", method="POST", body=BODY.decode(), headers=HEADERS)
    assert _Recorder.seen[0]["body"] == BODY


def test_the_bearer_token_is_sent_even_with_a_netrc_for_the_host(
    server, http_transport, tmp_path, monkeypatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    import requests.utils

    assert requests.utils.get_netrc_auth(server) == ("someone", "secret")  # requests sees it
    for _ in range(2):
        resp, _ = http_transport.request(
            f"{server}/v1/projects/p/image:computePixels",
            method="POST",
            body=b"{}",
            headers={"Authorization": "Bearer token-from-google-auth"},
        )
        assert resp.status == 200
    assert [r["headers"]["authorization"] for r in _Recorder.seen] == [
        "Bearer token-from-google-auth"
    ] * 2


def test_the_environment_proxy_is_used_as_requests_uses_it(server, monkeypatch) -> None:
    """HTTP_PROXY names the recorder as a proxy: both clients send it the absolute URL and
    the proxy's credentials; NO_PROXY for the host sends straight to it."""
    monkeypatch.setenv("HTTP_PROXY", server.replace("http://", "http://user:pw@"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = "http://ee.example.invalid/v1/projects/p/image:computePixels"
    _via_requests(target)
    t = LimitedHttp(LocalLimiter(2, None), timeout_s=5, acquire_timeout_s=5)
    try:
        t.request(target, method="POST", body=BODY, headers=HEADERS)
    finally:
        t.close()
    ref, ours = _Recorder.seen
    assert ours["line"] == ref["line"] == f"POST {target} HTTP/1.1"
    assert ours["headers"]["proxy-authorization"] == ref["headers"]["proxy-authorization"]
    assert ours["headers"]["proxy-authorization"].startswith("Basic ")

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _Recorder.seen = []
    t = LimitedHttp(LocalLimiter(2, None), timeout_s=5, acquire_timeout_s=5)
    try:
        t.request(f"{server}/direct", method="POST", body=BODY, headers=HEADERS)
    finally:
        t.close()
    assert _Recorder.seen[0]["line"] == "POST /direct HTTP/1.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_a_transient_connection_error(http_transport) -> None:
    with pytest.raises(ConnectionError) as info:
        http_transport.request(f"http://127.0.0.1:{_free_port()}/x", method="POST", body=b"{}")
    assert classify_error(info.value).kind == "transient"


def _raw_server(reply: bytes, wait_s: float) -> tuple[str, socket.socket]:
    """A socket server that reads a request, waits, sends ``reply`` and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                time.sleep(wait_s)
                try:
                    conn.sendall(reply)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", srv


def test_a_slow_answer_is_a_timeout(monkeypatch) -> None:
    url, srv = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", wait_s=2.0)
    t = LimitedHttp(LocalLimiter(2, None), timeout_s=0.3, acquire_timeout_s=5)
    try:
        with pytest.raises(TimeoutError, match=r"timed out after 0\.3 s") as info:
            t.request(f"{url}/x", method="POST", body=b"{}")
        assert classify_error(info.value).kind == "transient"
    finally:
        t.close()
        srv.close()


def test_a_body_cut_short_is_a_connection_error() -> None:
    url, srv = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", wait_s=0.0)
    t = LimitedHttp(LocalLimiter(2, None), timeout_s=5, acquire_timeout_s=5)
    try:
        with pytest.raises(ConnectionError) as info:
            t.request(f"{url}/x", method="POST", body=b"{}")
        assert classify_error(info.value).kind == "transient"
    finally:
        t.close()
        srv.close()
