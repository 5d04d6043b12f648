"""The Earth Engine transport (providers/gee/client.py) sends the ee client's own
Authorization header, whatever ``~/.netrc`` says: checked on a real HTTP server on a loopback
port, through requests, with a real ``.netrc`` naming that host."""

from __future__ import annotations

import http.server
import threading

import pytest

from rs_embed_ray.providers.gee.client import _LimitedHttp
from rs_embed_ray.providers.ratelimit import LocalLimiter


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_the_bearer_token_is_sent_even_with_a_netrc_for_the_host(server, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    import requests.utils

    assert requests.utils.get_netrc_auth(server) == ("someone", "secret")  # requests sees it
    http = _LimitedHttp(LocalLimiter(2, None), timeout_s=10, acquire_timeout_s=10)
    try:
        for _ in range(2):
            resp, body = http.request(
                f"{server}/v1/projects/p/image:computePixels",
                method="POST",
                body=b"{}",
                headers={"Authorization": "Bearer token-from-google-auth"},
            )
            assert resp.status == 200 and body == b"{}"
    finally:
        http.close()
    assert _Recorder.seen == ["Bearer token-from-google-auth"] * 2
