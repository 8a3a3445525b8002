"""Latency of /health and /metrics while a ~500 MB backup runs, against the idle sidecar.

    .venv/bin/python tests/benchmarks/bench_api_latency.py [--size-mb 500] [--data-dir var/bench-api]

Starts the embedded MongoDB-compatible server (its data is kept in --data-dir and reused by the next
run), loads --size-mb of ~1 KiB documents once, starts `sidecar serve` as its own process, then
measures sequential keep-alive GETs of /health and /metrics (alternating, paced every --interval-ms):
first idle, then while a backup taken through POST /api/backup/create runs. Prints p50/p99/max in ms
and a Markdown table for docs/api.md. Only 127.0.0.1 is contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer, free_port  # noqa: E402
from sidecar.sampledata import load_bulk_data  # noqa: E402

ADMIN = "admin-token-for-the-benchmark-01"
ENDPOINTS = ("/health", "/metrics")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes, float]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        return response.status, body, (time.perf_counter() - t0) * 1000

    def post(self, path: str) -> tuple[int, dict]:
        self.conn.request("POST", path, headers={"Authorization": f"Bearer {ADMIN}"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


def measure(client: Client, until: callable, interval: float, max_samples: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    i = 0
    while not until() and i < max_samples * len(ENDPOINTS):
        path = ENDPOINTS[i % len(ENDPOINTS)]
        status, _, ms = client.get(path)
        assert status == 200, (path, status)
        samples[path].append(ms)
        i += 1
        time.sleep(interval)
    return samples


def load_data(data_dir: Path, size_mb: int) -> EmbeddedServer:
    marker = data_dir / f"loaded-{size_mb}mb"
    if not marker.exists() and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(data_dir / "mongo", log_path=data_dir / "mongo.log").start()
    if not marker.exists():
        print(f"loading {size_mb} MB of documents (once; kept in {data_dir}) ...", flush=True)
        t0 = time.monotonic()
        with pymongo.MongoClient(server.uri) as client:
            load_bulk_data(client, target_bytes=size_mb * 1_000_000)
        marker.write_text(f"{time.monotonic() - t0:.0f}s\n")
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-api")
    parser.add_argument("--idle-samples", type=int, default=500, help="requests per endpoint when idle")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="pause between requests")
    args = parser.parse_args()

    server = load_data(args.data_dir, args.size_mb)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_MONGODB_URI=server.uri,
        SIDECAR_BACKUP_DIR=str(work / "backups"),
        SIDECAR_LOG_DIR=str(work / "logs"),
        SIDECAR_ADMIN_TOKEN=ADMIN,
        SIDECAR_PORT=str(port),
        SIDECAR_SCHEDULE="off",
        SIDECAR_DRILL_SCHEDULE="off",
        SIDECAR_VERIFY_AFTER_BACKUP="off",
        SIDECAR_MIN_FREE_BYTES="0",
    )
    sidecar_bin = str(Path(sys.executable).with_name("sidecar"))
    with open(work / "serve.log", "wb") as out:
        serve = subprocess.Popen([sidecar_bin, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = Client(port)
                if client.get("/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise SystemExit("sidecar serve did not start; see " + str(work / "serve.log"))
        for _ in range(20):  # warm-up
            for path in ENDPOINTS:
                client.get(path)
        interval = args.interval_ms / 1000
        idle = measure(client, lambda: False, interval, args.idle_samples)

        status, body = client.post("/api/backup/create")
        assert status == 202, body
        job_id = body["job"]["id"]
        state = {"done": False, "checked": 0.0, "job": body["job"]}
        poller = Client(port)

        def finished() -> bool:
            now = time.monotonic()
            if now - state["checked"] > 0.5:
                state["checked"] = now
                _, raw, _ = poller.get(f"/api/backup/jobs/{job_id}", ADMIN)
                state["job"] = json.loads(raw)["job"]
                state["done"] = state["job"]["state"] in ("succeeded", "failed")
            return state["done"]

        busy = measure(client, finished, interval, max_samples=10**6)
        while not finished():
            time.sleep(0.5)
        job = state["job"]
        assert job["state"] == "succeeded", job
    finally:
        serve.terminate()
        serve.wait(60)
        server.stop()
    entries = json.loads((work / "backups" / "backup-info.json").read_text())
    entry = entries[-1]
    shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"backup: {entry['uncompressedBytes'] / 1e6:.0f} MB of BSON -> {entry['fileSize']} archive in "
        f"{entry['durationSeconds']:.1f}s; requests every {args.interval_ms:g} ms, "
        f"alternating /health and /metrics, keep-alive, one client"
    )
    print()
    print("| endpoint | state | requests | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|")
    for path in ENDPOINTS:
        for name, samples in (("idle", idle[path]), ("during backup", busy[path])):
            print(
                f"| `{path}` | {name} | {len(samples)} | {statistics.median(samples):.2f} | "
                f"{percentile(samples, 99):.2f} | {max(samples):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
