"""Oplog replay rate (entries/s, MB/s) against the embedded server's own insert rate for the same data.

    .venv/bin/python tests/benchmarks/bench_replay.py [--inserts 20000] [--updates 10000] [--doc-bytes 500]

Starts a fresh embedded server in a temporary directory, inserts --inserts documents of about
--doc-bytes each (insert_many batches of 1000: the server's own insert rate), then applies --updates
single-document updates (``$set``/``$inc``/``$push``, in ordered bulk batches of 1000). It reads those
entries back from local.oplog.rs as raw BSON and replays them with the native translation
(``sidecar.engine.replay.engine.replay``) into another database, the inserts and the updates timed apart.
Prints a Markdown table for docs/pitr-replay.md. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sidecar.embedded import EmbeddedServer  # noqa: E402
from sidecar.engine.namespaces import Renamer  # noqa: E402
from sidecar.engine.replay.engine import ReplayOptions, replay  # noqa: E402
from sidecar.engine.replay.scope import ReplayScope  # noqa: E402

RAW = CodecOptions(document_class=RawBSONDocument)
BATCH = 1000


def documents(count: int, size: int) -> list[dict]:
    rng = random.Random(7)
    return [
        {
            "_id": i,
            "name": f"patient-{i}",
            "visits": rng.randint(0, 50),
            "tags": [rng.choice("abcdef") for _ in range(5)],
            "address": {
                "city": rng.choice(["Seoul", "Busan", "Incheon"]),
                "zip": f"{rng.randint(0, 99999):05d}",
            },
            "notes": "x" * max(size - 150, 0),
        }
        for i in range(count)
    ]


def updates(count: int, docs: int) -> list[pymongo.UpdateOne]:
    rng = random.Random(11)
    shapes = [
        lambda: {"$set": {"address.city": rng.choice(["Daegu", "Gwangju"]), "seen": rng.random()}},
        lambda: {"$inc": {"visits": 1}},
        lambda: {"$push": {"tags": rng.choice("xyz")}},
    ]
    return [pymongo.UpdateOne({"_id": rng.randrange(docs)}, rng.choice(shapes)()) for _ in range(count)]


def newest(client: pymongo.MongoClient):
    return next(client.local["oplog.rs"].find().sort("$natural", -1).limit(1))["ts"]


def entries_between(client: pymongo.MongoClient, start, end, ns: str) -> list[bytes]:
    oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
    query = {"ts": {"$gt": start, "$lte": end}, "ns": ns}
    return [bytes(e.raw) for e in oplog.find(query).sort("$natural", 1)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def row(label: str, count: int, size: int, seconds: float) -> str:
    rates = f"{count / seconds:,.0f} | {size / 1e6 / seconds:.1f}"
    return f"| {label} | {count:,} | {size / 1e6:,.1f} | {seconds:.2f} | {rates} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inserts", type=int, default=20000)
    parser.add_argument("--updates", type=int, default=10000)
    parser.add_argument("--doc-bytes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        server = EmbeddedServer(Path(tmp) / "data").start()
        try:
            client = pymongo.MongoClient(server.uri)
            run(client, args)
        finally:
            server.stop()


def run(client: pymongo.MongoClient, args: argparse.Namespace) -> None:
    src, dst = client.bench_src.people, client.bench_dst.people
    docs = documents(args.inserts, args.doc_bytes)
    start = newest(client)
    insert_s = timed(lambda: [src.insert_many(docs[i : i + BATCH]) for i in range(0, len(docs), BATCH)])
    middle = newest(client)
    ups = updates(args.updates, args.inserts)
    update_s = timed(lambda: [src.bulk_write(ups[i : i + BATCH]) for i in range(0, len(ups), BATCH)])
    end = newest(client)
    inserts = entries_between(client, start, middle, "bench_src.people")
    changes = entries_between(client, middle, end, "bench_src.people")
    options = ReplayOptions(scope=ReplayScope(Renamer(["bench_src.*"], ["bench_dst.*"])), method="native")
    replay_inserts_s = timed(lambda: replay(client, inserts, options))
    replay_updates_s = timed(lambda: replay(client, changes, options))
    assert dst.count_documents({}) == args.inserts
    data_bytes = sum(len(e) for e in inserts)  # entry bytes: the documents plus ~100 bytes of envelope
    print("| pass | entries | MB (oplog) | seconds | entries/s | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("server insert_many (batches of 1000)", args.inserts, data_bytes, insert_s))
    print(row("replay of those inserts", len(inserts), data_bytes, replay_inserts_s))
    print(row("server updates (bulk of 1000)", args.updates, sum(len(e) for e in changes), update_s))
    print(row("replay of those updates", len(changes), sum(len(e) for e in changes), replay_updates_s))


if __name__ == "__main__":
    main()
