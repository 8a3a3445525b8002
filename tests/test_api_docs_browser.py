"""The API docs page works in a real browser: headless Chromium renders Swagger UI from the packaged
assets (no network) and lists every operation of the OpenAPI document."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request

import pytest

from tests.prom_fixtures import start_sidecar

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=8000",
]


def test_swagger_ui_renders_every_operation(tmp_path, mongo_uri):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (deploy/local.sh test installs it)")
    server = start_sidecar(tmp_path / "sidecar", mongo_uri)
    try:
        with urllib.request.urlopen(server.url + "/api-docs/openapi.json", timeout=10) as reply:
            paths = set(json.load(reply)["paths"])
        dom = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                server.url + "/api-docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    finally:
        server.stop()
    rendered = {p for p in paths if f'data-path="{p}"' in dom}
    assert rendered == paths, f"not rendered: {sorted(paths - rendered)}"
    assert "/api/backup/restore" in rendered and "swagger-ui" in dom
