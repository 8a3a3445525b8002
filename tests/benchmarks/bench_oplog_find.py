"""``sidecar oplog find`` scan rate (entries/s, MB/s of raw oplog) and what the catalog filter saves.

    .venv/bin/python tests/benchmarks/bench_oplog_find.py [--inserts 50000] [--slice-bytes 1048576]

Starts a fresh embedded server and the archiver (in this process, as ``sidecar serve`` runs it), inserts
--inserts documents into findbench.patients and 1000 into findbench.other, deletes half the patients
with one deleteMany, then times three searches over the slices: the deletes of patients (every
patients slice streamed, one group found), one _id (every slice streamed), and findbench.other (the
patients-only slices skipped by the catalog); each search then reads the server's oplog past the
archive's end (nothing: the archive is caught up), except the last, whose ``until`` is the archive's
end: the difference between the last two is what reading the server's oplog costs. Prints a Markdown
table. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer  # noqa: E402
from sidecar.pitr.find.query import FindQuery  # noqa: E402
from sidecar.pitr.find.search import find_operations  # noqa: E402
from sidecar.pitr.record.catalog import SliceCatalog  # noqa: E402
from sidecar.pitr.record.slices import oplog_dir  # noqa: E402
from tests.helpers import settings_for  # noqa: E402
from tests.pitr_support import archiving, wait_running, wait_until_stored  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inserts", type=int, default=50000)
    parser.add_argument("--slice-bytes", type=int, default=1 << 20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = EmbeddedServer(root / "data").start()
        try:
            settings = settings_for(
                server.uri, root, pitr="auto", pitr_slice_seconds=5, pitr_slice_max_bytes=args.slice_bytes
            )
            with pymongo.MongoClient(server.uri) as client, archiving(settings) as runner:
                wait_running(runner)
                db = client.findbench
                db.other.insert_many([{"_id": n} for n in range(1000)])
                for start in range(0, args.inserts, 1000):
                    batch = range(start, start + 1000)
                    db.patients.insert_many([{"_id": n, "name": f"p{n}", "x": "y" * 100} for n in batch])
                db.patients.delete_many({"_id": {"$lt": args.inserts // 2}})
                wait_until_stored(settings, client, timeout=600)
            slices = SliceCatalog(oplog_dir(settings)).slices()
            raw = sum(s["rawBytes"] for s in slices)
            total = sum(s["entries"] for s in slices)
            print(f"{len(slices)} slices, {total:,} entries, {raw / 1e6:.1f} MB raw\n")
            print(
                "| search | slices opened / skipped | entries read | seconds | entries/s | MB/s "
                "| server's oplog past the archive: entries read |"
            )
            print("|---|---|---|---|---|---|---|")
            end = f"{slices[-1]['last']['t']}:{slices[-1]['last']['i']}"
            for label, query in (
                ("--ns findbench.patients --op delete", FindQuery.parse(["findbench.patients"], "delete")),
                ("--id 12345", FindQuery.parse(doc_id="12345")),
                ("--ns findbench.other", FindQuery.parse(["findbench.other"], limit=10000)),
                (  # the same, the server's oplog not read: the difference is what reading it costs
                    "--ns findbench.other --until <the archive's end>",
                    FindQuery.parse(["findbench.other"], until=end, limit=10000),
                ),
            ):
                began = time.perf_counter()
                listing = find_operations(settings, query)
                seconds = time.perf_counter() - began
                s, server = listing["slices"], listing["serverOplog"]
                read = sum(e["rawBytes"] for e in slices if query.slice_may_match(e))
                entries = listing["entriesRead"]
                print(
                    f"| `{label}` | {s['opened']} / {s['skipped']} | {entries:,} | {seconds:.2f} | "
                    f"{entries / seconds:,.0f} | {read / 1e6 / seconds:.1f} | "
                    f"{server['entriesRead'] if server['searched'] else 'not read'} |"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
