"""The slice catalog at 30 days of 60-second slices: the cost of recording one more slice, of a cold
read (status, metrics in a new process) and of a warm read (the same catalog object again), and the
bytes written per slice, against rewriting the whole document per slice as the JSON catalog did.

    .venv/bin/python tests/benchmarks/bench_slice_catalog.py [--slices 43200]

Entries are shaped like the archiver's (docs/pitr.md), with three namespaces each. Prints a Markdown
table for docs/pitr.md. Touches only a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.pitr.record.catalog import SliceCatalog  # noqa: E402
from sidecar.store.jsonfile import LockedJsonFile  # noqa: E402


def entry(n: int) -> dict:
    t = 1_760_000_000 + 60 * n
    return {
        "fileName": f"oplog-{t}.1-{t + 59}.40.bson.gz",
        "first": {"t": t, "i": 1},
        "last": {"t": t + 59, "i": 40},
        "prev": {"t": t - 1, "i": 40} if n else None,
        "entries": 2400,
        "rawBytes": 480_000,
        "sizeBytes": 61_000,
        "sha256": "ab" * 32,
        "namespaces": {"ward.patients": 1800, "ward.visits": 500, "ward.notes": 100},
        "firstWall": "2025-10-09T08:53:20Z",
        "lastWall": "2025-10-09T08:54:19Z",
        "createdAt": "2025-10-09T08:54:20Z",
        "encrypted": False,
        "locations": ["local", "s3"],
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cold_read(directory: Path) -> float:
    """A fresh process's first read (as ``sidecar pitr status`` makes it), timed inside that process."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); "
        "from sidecar.pitr.record.catalog import SliceCatalog; "
        "c = SliceCatalog(sys.argv[2]); s = time.perf_counter(); c.load(); print(time.perf_counter() - s)"
    )
    answer = subprocess.run([sys.executable, "-c", code, str(ROOT), str(directory)], capture_output=True)
    return float(answer.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=43_200)
    count = parser.parse_args().slices
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        catalog = SliceCatalog(directory)
        build = timed(lambda: [catalog.add_slice(entry(n)) for n in range(count)])
        one_more = timed(lambda: catalog.add_slice(entry(count)))
        cold = cold_read(directory)
        warm = timed(catalog.load)
        log_bytes = catalog.path.stat().st_size
        document = catalog.load()
        rewrite = LockedJsonFile(directory / "whole.json")
        rewrite_time = timed(lambda: rewrite.write(document))
        whole_bytes = (directory / "whole.json").stat().st_size
        compact = timed(catalog.compact)
        line = len(json.dumps({"op": "slice", "slice": entry(count)})) + 1
    print(f"| {count:,} slices | JSON-lines log | whole JSON document |")
    print("|---|---|---|")
    print(
        f"| record one more slice | {one_more * 1000:.1f} ms, {line:,} B appended | "
        f"{rewrite_time * 1000:.0f} ms, {whole_bytes / 1e6:.1f} MB rewritten |"
    )
    print(f"| cold read (new process) | {cold * 1000:.0f} ms ({log_bytes / 1e6:.1f} MB) | |")
    print(f"| warm read (same process) | {warm * 1000:.1f} ms | |")
    print(f"| compaction (prune) | {compact * 1000:.0f} ms | |")
    print(f"| building the {count:,} (one append each) | {build:.1f} s | |")


if __name__ == "__main__":
    main()
