"""Benchmark: full-level verify (MB/s of uncompressed archive) and restore (documents/s, MB/s), each with
the peak RSS of the process doing it, median of a few runs.

    .venv/bin/python tests/benchmarks/bench_verify_restore.py --size-mb 200

Starts a private embedded server (or uses --uri), fills a ``bench`` database with ~1 KiB patient-like
documents, takes one backup of it, then times ``scan_archive`` (the full level: gunzip, every
document framed and decoded, every CRC) and ``BackupService.run_restore`` (full verify first, then
raw BSON inserts, indexes, post-restore counts) into a renamed database. Each measured run is its
own child process, so its peak RSS (ru_maxrss) is that of the run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings(uri: str, directory: Path):
    from sidecar.config import load_settings

    return load_settings(
        {
            "SIDECAR_MONGODB_URI": uri,
            "SIDECAR_BACKUP_DIR": str(directory / "backups"),
            "SIDECAR_MIN_FREE_BYTES": "0",
            "SIDECAR_VERIFY_AFTER_BACKUP": "off",
            "SIDECAR_NS_INCLUDE": "bench.*",
            "SIDECAR_LOG_LEVEL": "WARNING",
        }
    )


def child_verify(archive: str) -> dict:
    from sidecar.integrity.scan import scan_archive

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    scan = scan_archive(Path(archive))
    seconds = time.perf_counter() - t0
    assert scan.failure is None, scan.failure
    return {
        "seconds": seconds,
        "uncompressed_bytes": scan.uncompressed_bytes,
        "compressed_bytes": scan.size_bytes,
        "documents": scan.documents,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_restore(uri: str, directory: str, archive: str, target: str) -> dict:
    import pymongo

    from sidecar.service import BackupService

    service = BackupService(_settings(uri, Path(directory)))
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = service.run_restore(
        file_name=archive, ns_from="bench.*", ns_to=f"{target}.*", safety_backup=False
    )
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    with pymongo.MongoClient(uri) as client:
        client.drop_database(target)
    return {
        "seconds": seconds,
        "verify_seconds": result["verified"]["seconds"],
        "documents": result["documentsWritten"],
        "bytes": result["bytesWritten"],
        "cpu_seconds": cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="size of the bench data (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each (default 3)")
    parser.add_argument("--uri", help="an existing server instead of a private embedded one")
    parser.add_argument("--only", choices=("verify", "restore"), help="measure only one of the two")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_verify(*rest) if kind == "verify" else child_restore(*rest)
        print(json.dumps(result))
        return 0

    import pymongo

    from sidecar.embedded import EmbeddedServer
    from sidecar.sampledata import load_bulk_data
    from sidecar.service import BackupService

    work = Path(tempfile.mkdtemp(prefix="bench-verify-restore-"))
    server = None if args.uri else EmbeddedServer(work / "mongo").start()
    uri = args.uri or server.uri
    try:
        with pymongo.MongoClient(uri) as client:
            t0 = time.perf_counter()
            load_bulk_data(client, target_bytes=args.size_mb * 1024 * 1024, collections=4, db_name="bench")
            print(
                f"loaded {args.size_mb} MB of bench data in {time.perf_counter() - t0:.1f}s", file=sys.stderr
            )
        entry = BackupService(_settings(uri, work)).run_backup(prune_after=False)
        archive = str(work / "backups" / entry["fileName"])
        print(f"backup {entry['fileName']}: {entry['fileSize']}", file=sys.stderr)
        runs = range(args.runs)
        verifies = [_run_child("verify", archive) for _ in runs] if args.only != "restore" else []
        restores = (
            [_run_child("restore", uri, str(work), archive, f"bench_restore_{i}") for i in runs]
            if args.only != "verify"
            else []
        )
    finally:
        if server is not None:
            server.stop()

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    report: dict = {
        "command": f"python {Path(__file__).relative_to(ROOT)} --size-mb {args.size_mb} --runs {args.runs}",
        "cpu_count": os.cpu_count(),
    }
    if verifies:
        v_sec, first_v = median(verifies, "seconds"), verifies[0]
        report["archive"] = {
            "uncompressed_mb": round(first_v["uncompressed_bytes"] / 1e6, 1),
            "compressed_mb": round(first_v["compressed_bytes"] / 1e6, 1),
            "documents": first_v["documents"],
        }
        report["verify_full"] = {
            "seconds": round(v_sec, 2),
            "mb_per_s": round(first_v["uncompressed_bytes"] / 1e6 / v_sec, 1),
            "cpu_percent": round(100 * median(verifies, "cpu_seconds") / v_sec),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in verifies), 1),
            "runs": [round(r["seconds"], 2) for r in verifies],
        }
    if restores:
        r_sec, first_r = median(restores, "seconds"), restores[0]
        report["restore"] = {
            "seconds": round(r_sec, 2),
            "documents_per_s": round(first_r["documents"] / r_sec),
            "mb_per_s": round(first_r["bytes"] / 1e6 / r_sec, 1),
            "of_which_verify_seconds": round(median(restores, "verify_seconds"), 2),
            "client_cpu_percent": round(100 * median(restores, "cpu_seconds") / r_sec),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in restores), 1),
            "runs": [round(r["seconds"], 2) for r in restores],
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
