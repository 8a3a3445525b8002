"""What the oplog archive costs and saves (run on demand; docs/pitr.md has the figures).

    .venv/bin/python tests/benchmarks/bench_pitr.py [--documents 87000] [--repeat 3] [--load-seconds 15]

(a) Backup wall time on the embedded server with a grown oplog (``--documents`` ~1 kB documents loaded
    in 8 collections: one oplog entry per document), without an archiver (the backup reads the
    server's oplog: ``source server``) and with ``sidecar pitr stream`` running on the same backup
    directory with the default 60-second slices (``source archive``; a backup that fell back to the
    server ends the benchmark).
    Before each backup one document is written and left a second for the archiver to take in, so the
    dump's start is an entry the archive holds (not one read from the server by its timestamp), and a
    writer inserts a document every 0.1 s during the dump (a dump without writes has a one-entry cut,
    read from the server either way). Medians of ``--repeat`` backups.
(b) At the embedded server's maximum sustained write rate (``--writers`` threads inserting one
    document after another for ``--load-seconds``, on a fresh server), with ``sidecar pitr stream``
    and ``SIDECAR_PITR_SLICE_SECONDS=1``:
    - in-memory lag: an entry's ``wall`` (its commit time on the server) to the moment the archiver's
      tail (``OplogTail``, run here as the archiver runs it) hands it out;
    - stored lag: ``wall`` to the moment the slice holding it is listed in oplog-slices.json (polled
      every 50 ms), per entry;
    - the archiver process's CPU time (utime + stime from /proc) over the load, as a share of one core.
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import bson
import pymongo
from bson.timestamp import Timestamp
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.config import load_settings  # noqa: E402
from sidecar.embedded import EmbeddedServer, free_port  # noqa: E402
from sidecar.pitr.capture.tailer import OplogTail, Rollover, oplog_window  # noqa: E402
from sidecar.pitr.record.catalog import SliceCatalog  # noqa: E402
from sidecar.pitr.record.slices import oplog_dir, read_entries  # noqa: E402
from sidecar.sampledata import load_bulk_data  # noqa: E402
from sidecar.service import BackupService  # noqa: E402


def environment(uri: str, work: Path, **extra: str) -> dict[str, str]:
    env = {
        "SIDECAR_MONGODB_URI": uri,
        "SIDECAR_BACKUP_DIR": str(work / "backups"),
        "SIDECAR_LOG_DIR": str(work / "logs"),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_VERIFY_AFTER_BACKUP": "off",
        "SIDECAR_PITR": "auto",
    }
    return {**env, **extra}


def start_stream(env: dict[str, str]) -> subprocess.Popen:
    """``sidecar pitr stream``, returned once its tail has read the whole oplog (its first caught-up
    mark): its start reads the oplog, which on the embedded server scans all of it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "pitr", "stream", "--metrics-port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env, "SIDECAR_HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while caught_up(port) <= 0:
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("sidecar pitr stream did not start")
        time.sleep(0.1)
    return process


def caught_up(port: int) -> float:
    """The stream's mongobackup_pitr_caught_up_timestamp_seconds (0 before it has one)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "mongobackup_pitr_caught_up_timestamp_seconds":
            return max((sample.value for sample in family.samples), default=0.0)
    return 0.0


def stop_stream(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_stored(settings, client: pymongo.MongoClient, timeout: float = 60) -> None:
    newest = oplog_window(client).last
    catalog = SliceCatalog(oplog_dir(settings))
    deadline = time.monotonic() + timeout
    while (catalog.last_position() or Timestamp(0, 0)) < newest:
        if time.monotonic() > deadline:
            raise SystemExit("the archive did not catch up")
        time.sleep(0.05)


def timed_backups(settings, client: pymongo.MongoClient, repeat: int, archived: bool) -> list[dict]:
    runs = []
    for n in range(repeat):
        client.benchpitr.marks.insert_one({"n": n})
        time.sleep(1.0)
        stop = threading.Event()
        trickle = threading.Thread(target=writer, args=(client, stop, [0], 0.1))
        t0 = time.perf_counter()
        trickle.start()
        try:
            entry = BackupService(settings).run_backup(prune_after=False)
        finally:
            stop.set()
            trickle.join()
        seconds = time.perf_counter() - t0
        if archived and entry["oplog"]["source"] != "archive":
            raise SystemExit(f"the backup read the server's oplog: {entry['oplog'].get('fallback')}")
        runs.append({"seconds": seconds, "source": entry["oplog"]["source"]})
    return runs


def part_a(work: Path, documents: int, repeat: int) -> dict:
    with EmbeddedServer(work / "a-data") as server, pymongo.MongoClient(server.uri) as client:
        loaded = load_bulk_data(client, target_bytes=documents * 1000, collections=8)
        count = sum(
            client.bench[name].estimated_document_count() for name in client.bench.list_collection_names()
        )
        entries = client.local["oplog.rs"].estimated_document_count()
        env = environment(server.uri, work / "a")
        settings = load_settings(env)
        without = timed_backups(settings, client, repeat, archived=False)
        stream = start_stream(env)
        try:
            with_archiver = timed_backups(settings, client, repeat, archived=True)
        finally:
            stop_stream(stream)
    plain = statistics.median(r["seconds"] for r in without)
    cut = statistics.median(r["seconds"] for r in with_archiver)
    return {
        "documents": count,
        "loadedBytes": loaded,
        "oplogEntries": entries,
        "withoutArchiver": {"medianSeconds": round(plain, 3), "runs": without},
        "withArchiver": {"medianSeconds": round(cut, 3), "runs": with_archiver},
        "ratio": round(cut / plain, 3),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tail_lags(uri: str, stop: threading.Event, lags: list[float]) -> None:
    with pymongo.MongoClient(uri) as client:
        after = oplog_window(client).last
        for entry in OplogTail(client, after).events(stop):
            if entry is not None and not isinstance(entry, Rollover) and "wall" in entry:
                lags.append(time.time() - entry["wall"].replace(tzinfo=dt.UTC).timestamp())


def watch_slices(settings, stop: threading.Event, seen: dict[str, float]) -> None:
    catalog = SliceCatalog(oplog_dir(settings))
    while not stop.is_set():
        if catalog.path.exists():
            for entry in catalog.slices():
                seen.setdefault(entry["fileName"], time.time())
        time.sleep(0.05)


def writer(client: pymongo.MongoClient, stop: threading.Event, counter: list[int], pause: float = 0) -> None:
    """Inserts one document after another (``pause`` seconds apart) until ``stop`` is set."""
    events = client.benchpitr.load
    while not stop.is_set():
        events.insert_one({"at": time.time()})
        counter[0] += 1
        if pause:
            stop.wait(pause)


def part_b(work: Path, seconds: float, writers: int) -> dict:
    with EmbeddedServer(work / "b-data") as server:
        env = environment(server.uri, work / "b", SIDECAR_PITR_SLICE_SECONDS="1")
        settings = load_settings(env)
        stream = start_stream(env)
        stop, done = threading.Event(), threading.Event()
        lags: list[float] = []
        seen: dict[str, float] = {}
        counters = [[0] for _ in range(writers)]
        helpers = [
            threading.Thread(target=tail_lags, args=(server.uri, done, lags)),
            threading.Thread(target=watch_slices, args=(settings, done, seen)),
        ]
        clients = [pymongo.MongoClient(server.uri) for _ in counters]
        pairs = zip(clients, counters, strict=True)
        load = [threading.Thread(target=writer, args=(k, stop, c)) for k, c in pairs]
        try:
            for t in helpers:
                t.start()
            time.sleep(1.0)
            cpu0, t0 = cpu_seconds(stream.pid), time.perf_counter()
            for t in load:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in load:
                t.join()
            wall = time.perf_counter() - t0
            with pymongo.MongoClient(server.uri) as client:
                wait_stored(settings, client, timeout=120)
            cpu = cpu_seconds(stream.pid) - cpu0
            time.sleep(0.2)
        finally:
            done.set()
            for t in helpers:
                t.join()
            for k in clients:
                k.close()
            stop_stream(stream)
        stored = stored_lags(settings, seen)
    written = sum(c[0] for c in counters)
    return {
        "writers": writers,
        "writes": written,
        "writesPerSecond": round(written / seconds, 1),
        "inMemoryLagSeconds": {
            "p50": round(percentile(lags, 0.5), 3),
            "p99": round(percentile(lags, 0.99), 3),
        },
        "storedLagSeconds": {
            "p50": round(percentile(stored, 0.5), 3),
            "p99": round(percentile(stored, 0.99), 3),
        },
        "archiverCpuShareOfOneCore": round(cpu / wall, 3),
        "slices": len(seen),
    }


def stored_lags(settings, seen: dict[str, float]) -> list[float]:
    lags = []
    for name, listed in seen.items():
        for raw in read_entries(settings, oplog_dir(settings) / name):
            doc = bson.decode(raw)
            if doc.get("ns") == "benchpitr.load":
                lags.append(listed - doc["wall"].replace(tzinfo=dt.UTC).timestamp())
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=87_000, help="~1 kB documents to load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=15)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pitr-") as tmp:
        work = Path(tmp)
        result = {"backup": part_a(work, args.documents, args.repeat)}
        print(json.dumps(result, indent=2), flush=True)
        result["archiver"] = part_b(work, args.load_seconds, args.writers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
