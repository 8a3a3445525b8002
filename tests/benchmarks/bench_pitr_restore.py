"""The time of a point-in-time restore against a plain restore of the same base backup.

    .venv/bin/python tests/benchmarks/bench_pitr_restore.py [--docs 20000] [--ops 10000] [--doc-bytes 500]

Starts two fresh embedded servers in a temporary directory (a source and a restore target). On the
source: --docs documents of about --doc-bytes, a base backup, then the oplog archiver (in-process, as
``sidecar serve`` runs it) while --ops writes follow (inserts, ``$set``/``$inc`` updates and deletes in
ordered batches of 1000). Into the target, each timed on its own: the base backup restored plainly
(``restore FILE``), then ``restore --to-time`` the last entry (the same base, its oplog and the slices
replayed). Prints a Markdown table for docs/verify-restore.md. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer  # noqa: E402
from sidecar.pitr.planning.restore_point import PointTarget  # noqa: E402
from sidecar.service import BackupService  # noqa: E402
from tests.helpers import settings_for  # noqa: E402
from tests.pitr_support import archiving, wait_until_stored  # noqa: E402
from tests.replay_support import newest_ts  # noqa: E402

BATCH = 1000


def load(client: pymongo.MongoClient, docs: int, size: int) -> None:
    coll = client.bench.patients
    for start in range(0, docs, BATCH):
        coll.insert_many(
            [{"_id": i, "n": i, "notes": "x" * size} for i in range(start, min(docs, start + BATCH))]
        )


def writes(client: pymongo.MongoClient, docs: int, ops: int, size: int) -> None:
    rng, coll = random.Random(5), client.bench.patients
    requests: list = []
    for k in range(ops):
        shape = k % 4
        if shape == 0:
            requests.append(pymongo.InsertOne({"_id": docs + k, "n": k, "notes": "y" * size}))
        elif shape == 1:
            requests.append(pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$set": {"seen": rng.random()}}))
        elif shape == 2:
            requests.append(pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$inc": {"visits": 1}}))
        else:
            requests.append(pymongo.DeleteOne({"_id": rng.randrange(docs)}))
        if len(requests) == BATCH:
            coll.bulk_write(requests)
            requests = []
    if requests:
        coll.bulk_write(requests)


def timed_restore(service: BackupService, target: str, **kw: object) -> tuple[float, dict]:
    with pymongo.MongoClient(target) as client:
        client.drop_database("bench")
    started = time.monotonic()
    result = service.run_restore(safety_backup=False, **kw)
    return time.monotonic() - started, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--ops", type=int, default=10000)
    parser.add_argument("--doc-bytes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = EmbeddedServer(root / "source").start()
        target = EmbeddedServer(root / "target").start()
        try:
            settings = settings_for(source.uri, root, pitr="auto", verify_after_backup="off")
            client = pymongo.MongoClient(source.uri)
            load(client, args.docs, args.doc_bytes)
            base = BackupService(settings).run_backup()
            with archiving(settings):
                started = time.monotonic()
                writes(client, args.docs, args.ops, args.doc_bytes)
                load_seconds = time.monotonic() - started
                wait_until_stored(settings, client)
            last = newest_ts(client)
            service = BackupService(settings_for(target.uri, root))
            plain, _ = timed_restore(service, target.uri, file_name=base["fileName"])
            point, result = timed_restore(
                service, target.uri, point=PointTarget.to_time(f"{last.time}:{last.inc}")
            )
            replayed = result["pointInTime"]["replay"]
            print("| base | server's own writes | plain restore | --to-time restore | entries | the replay |")
            print("|---|---:|---:|---:|---:|---:|")
            print(
                f"| {args.docs:,} docs x {args.doc_bytes} B, then {args.ops:,} writes "
                f"({len(result['pointInTime']['slices'])} slices) | {load_seconds:.2f} s | {plain:.2f} s | "
                f"{point:.2f} s | "
                f"{replayed['entries']:,} | {replayed['seconds']:.2f} s "
                f"({replayed['entries'] / max(replayed['seconds'], 1e-9):,.0f} entries/s) |"
            )
            client.close()
        finally:
            target.stop()
            source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
