"""The time of a point-in-time restore against a plain restore of the same base backup.

    .venv/bin/python tests/benchmarks/bench_pitr_restore.py [--docs 20000] [--ops 10000] [--doc-bytes 500]
        [--shape mixed|inserts|updates] [--writers N] [--child] [--slice-seconds 5]

Starts two fresh embedded servers in a temporary directory (a source and a restore target). On the
source: --docs documents of about --doc-bytes, a base backup, then the oplog archiver (in-process, as
``sidecar serve`` runs it) while --ops writes follow in ordered batches of 1000: ``mixed`` interleaves
inserts, ``$set``/``$inc`` updates and deletes; ``inserts`` and ``updates`` are one kind only. Into the
target, each timed on its own (in this process; with --child as an operator runs it, ``sidecar restore
... --json`` in a child process, whose peak RSS is then reported, measured by ``peak_rss.py``): the
base backup restored plainly (``restore FILE``), then ``restore --to-time`` the last entry (the same
base, its oplog and the slices replayed, with SIDECAR_PITR_REPLAY_WRITERS=--writers). Prints a
Markdown row for docs/pitr-replay.md: the replay's rate against the server's own rate for the same
writes (measured while the archiver tails them). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]
PEAK_RSS = Path(__file__).with_name("peak_rss.py")
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer  # noqa: E402
from sidecar.pitr.planning.restore_point import PointTarget  # noqa: E402
from sidecar.service import BackupService  # noqa: E402
from tests.helpers import settings_for  # noqa: E402
from tests.pitr_support import archiving, wait_until_stored  # noqa: E402
from tests.replay_support import newest_ts  # noqa: E402

BATCH = 1000
Request = pymongo.InsertOne | pymongo.UpdateOne | pymongo.DeleteOne


def load(client: pymongo.MongoClient, docs: int, size: int) -> None:
    coll = client.bench.patients
    for start in range(0, docs, BATCH):
        coll.insert_many(
            [{"_id": i, "n": i, "notes": "x" * size} for i in range(start, min(docs, start + BATCH))]
        )


def _mixed(rng: random.Random, docs: int, k: int, size: int) -> Request:
    shape = k % 4
    if shape == 0:
        return pymongo.InsertOne({"_id": docs + k, "n": k, "notes": "y" * size})
    if shape == 1:
        return pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$set": {"seen": rng.random()}})
    if shape == 2:
        return pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$inc": {"visits": 1}})
    return pymongo.DeleteOne({"_id": rng.randrange(docs)})


def _insert(rng: random.Random, docs: int, k: int, size: int) -> Request:
    return pymongo.InsertOne({"_id": docs + k, "n": k, "notes": "y" * size})


def _update(rng: random.Random, docs: int, k: int, size: int) -> Request:
    if k % 2:
        return pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$inc": {"visits": 1}})
    return pymongo.UpdateOne({"_id": rng.randrange(docs)}, {"$set": {"seen": rng.random()}})


SHAPES: dict[str, Callable[..., Request]] = {
    "mixed": _mixed,
    "inserts": _insert,
    "updates": _update,
}


def writes(client: pymongo.MongoClient, docs: int, ops: int, size: int, shape: str = "mixed") -> None:
    rng, coll, make = random.Random(5), client.bench.patients, SHAPES[shape]
    requests: list = []
    for k in range(ops):
        requests.append(make(rng, docs, k, size))
        if len(requests) == BATCH:
            coll.bulk_write(requests)
            requests = []
    if requests:
        coll.bulk_write(requests)


def timed_restore(service: BackupService, target: str, **kw: object) -> tuple[float, dict, int]:
    """The restore in this process: (seconds, its report, 0: no RSS of its own)."""
    with pymongo.MongoClient(target) as client:
        client.drop_database("bench")
    started = time.monotonic()
    result = service.run_restore(safety_backup=False, **kw)
    return time.monotonic() - started, result, 0


def child_restore(env: dict[str, str], target: str, *args: str) -> tuple[float, dict, int]:
    """``sidecar restore ARGS --json`` in a child process, as an operator runs it: (seconds, its report,
    its peak RSS in bytes, measured by ``peak_rss.py``: this process's own peak would count in it)."""
    with pymongo.MongoClient(target) as client:
        client.drop_database("bench")
    command = [sys.executable, "-m", "sidecar", "restore", *args, "--no-safety-backup", "--json", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        rss = Path(tmp) / "rss"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(PEAK_RSS), str(rss), *command], env=env, capture_output=True, cwd=ROOT
        )
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr.decode()
        return seconds, json.loads(done.stdout), int(rss.read_text())


def restore_env(target: str, root: Path, writers: int) -> dict[str, str]:
    """The sidecar's environment for restores into ``target`` from the catalog under ``root``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
        "PYTHONPATH": str(ROOT),
        "SIDECAR_MONGODB_URI": target,
        "SIDECAR_BACKUP_DIR": str(root / "backups"),
        "SIDECAR_LOG_DIR": str(root / "logs"),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_PITR": "off",
        "SIDECAR_PITR_REPLAY_WRITERS": str(writers),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--ops", type=int, default=10000)
    parser.add_argument("--doc-bytes", type=int, default=500)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mixed")
    parser.add_argument(
        "--writers", type=int, default=4, help="SIDECAR_PITR_REPLAY_WRITERS (0: in oplog order)"
    )
    parser.add_argument("--child", action="store_true", help="restore in child processes, for their peak RSS")
    parser.add_argument(
        "--slice-seconds", type=float, default=5, help="SIDECAR_PITR_SLICE_SECONDS of the source"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = EmbeddedServer(root / "source").start()
        target = EmbeddedServer(root / "target").start()
        try:
            settings = settings_for(
                source.uri,
                root,
                pitr="auto",
                verify_after_backup="off",
                pitr_slice_seconds=args.slice_seconds,
            )
            client = pymongo.MongoClient(source.uri)
            load(client, args.docs, args.doc_bytes)
            base = BackupService(settings).run_backup()
            with archiving(settings):
                started = time.monotonic()
                writes(client, args.docs, args.ops, args.doc_bytes, args.shape)
                load_seconds = time.monotonic() - started
                wait_until_stored(settings, client, timeout=args.slice_seconds + 60)
            last = newest_ts(client)
            if args.child:
                env = restore_env(target.uri, root, args.writers)
                plain, _, _ = child_restore(env, target.uri, base["fileName"])
                point, result, rss = child_restore(env, target.uri, "--to-time", f"{last.time}:{last.inc}")
            else:
                service = BackupService(settings_for(target.uri, root, pitr_replay_writers=args.writers))
                plain, _, _ = timed_restore(service, target.uri, file_name=base["fileName"])
                to = PointTarget.to_time(f"{last.time}:{last.inc}")
                point, result, rss = timed_restore(service, target.uri, point=to)
            replayed = result["pointInTime"]["replay"]
            rate = replayed["entries"] / max(replayed["seconds"], 1e-9)
            print(
                "| tail | server's own writes | plain restore | --to-time restore | entries | the replay "
                "| replay / server rate | peak RSS |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            server_rate = args.ops / load_seconds
            print(
                f"| {args.shape}: {args.docs:,} docs x {args.doc_bytes} B, then {args.ops:,} writes "
                f"({len(result['pointInTime']['slices'])} slices), writers={args.writers} | "
                f"{load_seconds:.2f} s ({server_rate:,.0f}/s) | {plain:.2f} s | "
                f"{point:.2f} s ({point / plain:.1f}x) "
                f"| {replayed['entries']:,} | {replayed['seconds']:.2f} s ({rate:,.0f} entries/s) "
                f"| {rate / server_rate:.2f}x | {f'{rss / 2**20:,.0f} MiB' if rss else '-'} |"
            )
            client.close()
        finally:
            target.stop()
            source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
