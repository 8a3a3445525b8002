"""Dump throughput and peak memory against a bare raw-BSON scan of the same data (run on demand).

    .venv/bin/python tests/benchmarks/bench_dump.py --size-mb 1000 [--uri mongodb://...] [--repeat 3]

Without --uri it starts the embedded server with its data in var/bench-mongo (kept between runs, so the
data is loaded once). Each variant runs in its own process so its peak RSS is its own. Prints a table
of medians; the ratio column compares with the bare scan, the lower bound for any dump.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer  # noqa: E402
from sidecar.sampledata import load_bulk_data  # noqa: E402

DB = "bench"

SCAN = textwrap.dedent("""
    import json, resource, sys, time, threading, pymongo
    uri, db, parallel = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = pymongo.MongoClient(uri)
    names = sorted(client[db].list_collection_names())
    total = [0]
    def scan(name):
        n = 0
        for batch in client[db][name].find_raw_batches(batch_size=1000):
            n += len(batch)
        total[0] += n
    t0 = time.perf_counter()
    threads = [threading.Thread(target=scan, args=(n,)) for n in names]
    for i in range(0, len(threads), parallel):
        group = threads[i:i + parallel]
        [t.start() for t in group]; [t.join() for t in group]
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": total[0],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

DUMP = textwrap.dedent("""
    import json, resource, sys, time
    from sidecar.config import load_settings
    from sidecar.service import BackupService
    uri, db, parallel, compression, level, out = sys.argv[1:7]
    settings = load_settings({"SIDECAR_MONGODB_URI": uri, "SIDECAR_DATABASE": db, "SIDECAR_BACKUP_DIR": out,
                              "SIDECAR_PARALLEL_COLLECTIONS": parallel, "SIDECAR_COMPRESSION": compression,
                              "SIDECAR_COMPRESSION_LEVEL": level, "SIDECAR_MIN_FREE_BYTES": "0",
                              "SIDECAR_VERIFY_AFTER_BACKUP": "off"})  # the dump alone
    t0 = time.perf_counter()
    entry = BackupService(settings).run_backup(prune_after=False)
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": entry["uncompressedBytes"],
                      "archive_bytes": entry["sizeBytes"],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def run(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_data(uri: str, size_mb: int) -> None:
    client = pymongo.MongoClient(uri)
    have = sum(client[DB].command("collStats", c)["size"] for c in client[DB].list_collection_names())
    if abs(have - size_mb * 1e6) > 0.1 * size_mb * 1e6:
        print(f"loading ~{size_mb} MB into {DB} (once) ...", flush=True)
        load_bulk_data(client, target_bytes=size_mb * 1_000_000, collections=8, db_name=DB)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--uri")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = None
    if not args.uri:
        server = EmbeddedServer(ROOT / "var" / "bench-mongo", extra_args=("--cache-size", "2G")).start()
    uri = args.uri or server.uri
    try:
        ensure_data(uri, args.size_mb)
        variants = [
            ("bare find() scan, 1 at a time", SCAN, ("1",)),
            ("bare find() scan, 4 at a time", SCAN, ("4",)),
            ("dump, parallel 1, isal level 1", DUMP, ("1", "isal", "1")),
            ("dump, parallel 4, isal level 1", DUMP, ("4", "isal", "1")),
            ("dump, parallel 4, zlib level 6", DUMP, ("4", "zlib", "6")),
        ]
        rows = []
        for label, code, extra in variants:
            results = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as out:
                    results.append(run(code, uri, DB, *extra, *((out,) if code is DUMP else ())))
            rows.append((label, results))
        lower = statistics.median(r["seconds"] for r in rows[1][1])
        header = ("variant", "median s", "MB/s BSON", "x scan", "peak RSS MB", "archive MB")
        print("\n{:<34} {:>9} {:>10} {:>7} {:>12} {:>11}".format(*header))
        for label, results in rows:
            sec = statistics.median(r["seconds"] for r in results)
            mb = results[0]["bytes"] / 1e6
            archive = f"{results[0]['archive_bytes'] / 1e6:.0f}" if "archive_bytes" in results[0] else "-"
            rss = max(r["rss_mb"] for r in results)
            print(f"{label:<34} {sec:>9.2f} {mb / sec:>10.1f} {sec / lower:>7.2f} {rss:>12.0f} {archive:>11}")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
