"""`sidecar serve` as a real process, answering what an operator or a client gets wrong.

Requests aiohttp cannot parse (a header or request line over 8 KB) get the API's JSON error with
nothing of the request echoed and at most one WARNING, however many arrive; a missing Swagger UI
asset is a JSON 404.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from sidecar.api.protocol import RateLimitedWarning
from sidecar.embedded import EmbeddedServer
from tests.test_api_sigterm import ADMIN, Serve, call


def raw_request(port: int, data: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.fixture
def serve(tmp_path: Path, own_server: EmbeddedServer) -> Serve:
    serve = Serve(tmp_path, own_server.uri, grace=5)
    yield serve
    serve.process.terminate()
    serve.process.wait(30)


def test_oversized_headers_get_a_json_error_echoing_nothing_and_one_warning(serve: Serve) -> None:
    secret = ADMIN + "x" * 9000  # a bearer token in a header line over aiohttp's 8190 bytes
    requests = {
        "header": f"GET /api/backup/status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {secret}\r\n\r\n",
        "request line": f"GET /{'a' * 9000}?t={ADMIN} HTTP/1.1\r\nHost: a\r\n\r\n",
    }
    for what, request in requests.items():
        for _ in range(10):
            status, headers, body = raw_request(serve.port, request.encode())
            assert status.endswith(" 400 Bad Request"), what
            assert headers["content-type"].startswith("application/json"), what
            error = json.loads(body)["error"]
            assert error["code"] == "request_too_large" and "8190 bytes" in error["message"], what
            assert ADMIN.encode() not in body and b"xxxx" not in body and b"aaaa" not in body
    assert call(serve.port, "GET", "/health", None)[0] == 200  # still serving
    records = serve.log()
    refused = [r for r in records if "unparsable request" in r["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "WARNING", refused
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in serve.out.read_text() and ADMIN not in serve.out.read_text()


def test_a_missing_swagger_asset_is_a_json_404(serve: Serve) -> None:
    status, body = call(serve.port, "GET", "/api-docs/assets/no-such-file.js", None)
    assert status == 404
    assert body == {
        "error": {
            "code": "not_found",
            "message": "no such file: /api-docs/assets/no-such-file.js (see /api-docs)",
        }
    }
    status, headers, page = raw_request(
        serve.port, b"GET /api-docs/assets/swagger-ui.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert status == "HTTP/1.1 200 OK" and headers["content-type"] == "text/css" and len(page) > 1000


def test_the_warning_comes_back_after_its_interval_counting_what_it_did_not_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    warning = RateLimitedWarning(logging.getLogger("sidecar.test"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "sidecar.test"):
        for t in (0, 1, 2, 59, 61, 62):
            now[0] = t
            warning.warn("refused")
    assert [r.getMessage() for r in caplog.records] == [
        "refused",
        "refused (3 more like it not logged since the last warning)",
    ]
