"""A scan checked against the catalog: the file's size and sha256, the manifest's namespaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar import clock
from sidecar.integrity.scan import ArchiveScan
from sidecar.text import iso_utc


def compare_file(scan: ArchiveScan, entry: Mapping[str, Any] | None) -> list[str]:
    """Quick-level problems against the catalog: size and sha256."""
    if not entry:
        return []
    problems = []
    if entry.get("sizeBytes") is not None and entry["sizeBytes"] != scan.size_bytes:
        problems.append(f"the file is {scan.size_bytes} bytes, the catalog recorded {entry['sizeBytes']}")
    if entry.get("sha256") and entry["sha256"] != scan.sha256:
        problems.append(f"sha256 is {scan.sha256}, the catalog recorded {entry['sha256']}")
    return problems


def compare_manifest(scan: ArchiveScan, entry: Mapping[str, Any] | None) -> list[str]:
    """Full-level problems against the catalog: the namespaces, their documents, bytes and CRCs."""
    manifest = (entry or {}).get("namespaces")
    problems: list[str] = []
    if manifest is not None:
        missing = sorted(set(manifest) - set(scan.namespaces))
        extra = sorted(set(scan.namespaces) - set(manifest))
        if missing:
            problems.append(f"namespaces in the catalog but not in the archive: {', '.join(missing)}")
        if extra:
            problems.append(f"namespaces in the archive but not in the catalog: {', '.join(extra)}")
        for ns in sorted(set(manifest) & set(scan.namespaces)):
            want, got = manifest[ns], scan.namespaces[ns]
            for key, value in (("documents", got.documents), ("bytes", got.bytes), ("crc", got.crc)):
                if want.get(key) is not None and want[key] != value:
                    problems.append(
                        f"{ns}: {key} is {value} in the archive, the catalog recorded {want[key]}"
                    )
    oplog = (entry or {}).get("oplog")
    if entry is not None and "oplog" in entry:
        has = scan.oplog.documents if scan.oplog is not None else None
        want_entries = oplog.get("entries") if oplog else None
        if want_entries != has:
            problems.append(f"the archive holds {has} oplog entries, the catalog recorded {want_entries}")
    return problems


def restore_problems(scan: ArchiveScan, entry: Mapping[str, Any] | None) -> list[str]:
    """Why a scanned archive must not be restored: its own failure, or the catalog's disagreement."""
    if scan.failure is not None:
        return [scan.failure.reason]
    return compare_manifest(scan, entry) + compare_file(scan, entry)


def record(ok: bool, reason: str | None, seconds: float, **details: Any) -> dict[str, Any]:
    """One level's result as the catalog keeps it (``verification.<level>``)."""
    return {
        "ok": ok,
        "reason": reason,
        "durationSeconds": round(seconds, 3),
        "at": iso_utc(clock.now()),
        **{k: v for k, v in details.items() if v is not None},
    }
