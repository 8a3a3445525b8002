"""Benchmark: a restore drill and a pitr check on the default throwaway embedded server against the
same two on the backed-up server (the old default, today ``SIDECAR_DRILL_MONGODB_URI=source``): wall
time, entries they add to the backed-up server's oplog, bytes of slices they add to the archive.

    .venv/bin/python tests/benchmarks/bench_proofs.py [--bulk-mb 0]

Starts a private embedded server (a one-node replica set), loads the sample data (``sidecar demo``'s,
plus ``--bulk-mb`` of bulk documents), takes two base backups with the oplog archiver running and a
few application writes between them, then runs each proof once per placement, the archiver running
throughout. One run of each, same machine, printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _settings(uri: str, directory: Path):
    from sidecar.config import load_settings

    return load_settings(
        {
            "SIDECAR_MONGODB_URI": uri,
            "SIDECAR_BACKUP_DIR": str(directory / "backups"),
            "SIDECAR_LOG_DIR": str(directory / "logs"),
            "SIDECAR_MIN_FREE_BYTES": "0",
            "SIDECAR_VERIFY_AFTER_BACKUP": "off",
            "SIDECAR_PITR": "auto",
            "SIDECAR_PITR_SLICE_SECONDS": "1",
            "SIDECAR_LOG_LEVEL": "WARNING",
        }
    )


MARKER = "benchapp.marker"


def _proof_slice_bytes(settings, before: set[str]) -> int:
    """Bytes of the slices added since ``before`` but the one of the settling write (``_settle``)."""
    added = [s for s in _slice_list(settings) if s["fileName"] not in before]
    return sum(s["sizeBytes"] for s in added if set(s["namespaces"]) != {MARKER})


def _slice_list(settings) -> list[dict]:
    from sidecar.pitr.record.catalog import SliceCatalog
    from sidecar.pitr.record.slices import oplog_dir

    return SliceCatalog(oplog_dir(settings)).slices()


def _slice_names(settings) -> set[str]:
    return {s["fileName"] for s in _slice_list(settings)}


def _settle(settings, client, marker: str) -> None:
    """One application write, stored: the archive has read past everything before it."""
    from tests.pitr_support import wait_until_stored

    client[MARKER.split(".")[0]][MARKER.split(".")[1]].insert_one({"after": marker})
    wait_until_stored(settings, client, timeout=600)


def _measure(settings, client, placement: str) -> dict:
    from sidecar.service import BackupService

    settings = settings.replace(
        drill_mongodb_uri="source" if placement == "source" else "",
        drill_allow_unknown_disk=placement == "source",
    )
    service = BackupService(settings)
    out = {}
    for proof in ("drill", "pitr"):
        entries, slices = client.local["oplog.rs"].estimated_document_count(), _slice_names(settings)
        t0 = time.perf_counter()
        if proof == "drill":
            result = service.run_verify(latest=True, level="drill")
        else:
            result = service.run_pitr_verify()
        seconds = time.perf_counter() - t0
        record = result["verification"][proof]
        assert record["ok"], record
        _settle(settings, client, f"{placement} {proof}")
        out[proof] = {
            "seconds": round(seconds, 2),
            "server": record["server"],
            "writtenBytes": record["writtenBytes"],
            "sourceOplogEntriesAdded": client.local["oplog.rs"].estimated_document_count() - entries - 1,
            "sliceBytesAdded": _proof_slice_bytes(settings, slices),  # but the settling write's
            "leftOutEntries": sum(
                s.get("leftOut", 0) for s in _slice_list(settings) if s["fileName"] not in slices
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk-mb", type=int, default=0, help="bulk data on top of the sample data")
    args = parser.parse_args()

    import pymongo

    from sidecar.embedded import EmbeddedServer
    from sidecar.sampledata import load_bulk_data, load_sample_data
    from sidecar.service import BackupService
    from tests.pitr_support import archiving

    with tempfile.TemporaryDirectory(prefix="bench-proofs-") as tmp:
        directory = Path(tmp)
        server = EmbeddedServer(directory / "mongo").start()
        try:
            settings = _settings(server.uri, directory)
            with pymongo.MongoClient(server.uri) as client, archiving(settings):
                load_sample_data(client)
                if args.bulk_mb:
                    load_bulk_data(client, target_bytes=args.bulk_mb * 1024 * 1024, db_name="bulk")
                service = BackupService(settings)
                service.run_backup()
                client.maekcord.patients.update_many({}, {"$set": {"seen": True}})
                _settle(settings, client, "base N-1")
                base = service.run_backup()
                _settle(settings, client, "base N")
                figures = {
                    "dataBytes": base["uncompressedBytes"],
                    "embedded": _measure(settings, client, "embedded"),
                    "source": _measure(settings, client, "source"),
                }
        finally:
            server.stop()
    for proof in ("drill", "pitr"):
        figures[f"{proof}SourceOverEmbedded"] = round(
            figures["source"][proof]["seconds"] / figures["embedded"][proof]["seconds"], 2
        )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
