"""A scan against the catalog (integrity/checks.py), pure: each disagreement named exactly."""

from __future__ import annotations

from pathlib import Path

from sidecar.integrity.checks import compare_file, compare_manifest, restore_problems
from sidecar.integrity.scan import ArchiveScan, NamespaceFacts

SHA = "ab" * 32


def scan(**namespaces: NamespaceFacts) -> ArchiveScan:
    facts = {ns.replace("_", "."): f for ns, f in namespaces.items()}
    return ArchiveScan(Path("b.gz"), size_bytes=120, sha256=SHA, namespaces=facts)


def test_size_and_sha256_against_the_catalog() -> None:
    assert compare_file(scan(), {"sizeBytes": 120, "sha256": SHA}) == []
    assert compare_file(scan(), None) == [] and compare_file(scan(), {}) == []
    assert compare_file(scan(), {"sizeBytes": 121, "sha256": "cd" * 32}) == [
        "the file is 120 bytes, the catalog recorded 121",
        f"sha256 is {SHA}, the catalog recorded {'cd' * 32}",
    ]


def test_each_namespace_fact_against_the_manifest() -> None:
    got = scan(
        w_a=NamespaceFacts(documents=2, bytes=50, crc=7),
        w_b=NamespaceFacts(documents=1),
        w_e=NamespaceFacts(documents=1),
    )
    manifest = {
        "w.a": {"documents": 3, "bytes": 51, "crc": 8},
        "w.c": {"documents": 0},
        "w.d": {"documents": 0},
    }
    assert compare_manifest(got, {"namespaces": manifest}) == [
        "namespaces in the catalog but not in the archive: w.c, w.d",
        "namespaces in the archive but not in the catalog: w.b, w.e",
        "w.a: documents is 2 in the archive, the catalog recorded 3",
        "w.a: bytes is 50 in the archive, the catalog recorded 51",
        "w.a: crc is 7 in the archive, the catalog recorded 8",
    ]
    same = {
        "w.a": {"documents": 2, "bytes": 50, "crc": 7},
        "w.b": {"documents": 1, "crc": None},
        "w.e": {"documents": 1},
    }
    assert compare_manifest(got, {"namespaces": same}) == []


def test_the_oplog_entries_against_the_catalog() -> None:
    with_oplog = scan()
    with_oplog.oplog = NamespaceFacts(documents=4)
    assert compare_manifest(with_oplog, {"oplog": {"entries": 4}}) == []
    assert compare_manifest(with_oplog, {"oplog": {"entries": 5}}) == [
        "the archive holds 4 oplog entries, the catalog recorded 5"
    ]
    assert compare_manifest(scan(), {"oplog": None}) == []  # recorded as none, none there
    assert compare_manifest(with_oplog, {"oplog": None}) == [
        "the archive holds 4 oplog entries, the catalog recorded None"
    ]
    assert compare_manifest(with_oplog, {}) == []  # an entry from before oplog capture: not compared


def test_restore_problems_put_the_manifest_first() -> None:
    got = scan(w_a=NamespaceFacts(documents=2))
    entry = {"sizeBytes": 1, "namespaces": {"w.a": {"documents": 3}}}
    assert restore_problems(got, entry) == [
        "w.a: documents is 2 in the archive, the catalog recorded 3",
        "the file is 120 bytes, the catalog recorded 1",
    ]
