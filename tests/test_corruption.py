"""The corruption matrix: each damage gets its own precise error at the full level (what broke, the
offset in the uncompressed archive, the namespace), and a restore refuses it before any write."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.service import JobFailed
from tests.test_restore_support import (  # noqa: F401 - fixtures
    SampleArchive,
    archive_layout,
    read_uncompressed,
    sample_archive_fixture,
    scratch_db_fixture,
    write_gzip,
)


@dataclass
class Damage:
    reason: str  # a regular expression the failure reason must match
    check: str
    offset: int | None = None  # None: not asserted exactly
    namespace: str | None = None


def _flip(data: bytes, at: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def _first(blocks, kind: str, ns: str):
    return next(b for b in blocks if b.kind == kind and b.namespace == ns)


def truncated(path: Path, data: bytes) -> Damage:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 6 // 10])
    return Damage(
        r"the gzip stream is truncated: the file ends before the end of the compressed data", "gzip"
    )


def flipped_value_byte(path: Path, data: bytes) -> Damage:
    """Inside a string value: the document still decodes, only the namespace's CRC can tell."""
    blocks = archive_layout(data)
    doc = [b for b in blocks if b.kind == "document" and b.namespace == "maekcord.patients"][7]
    eof = _first(blocks, "eof", "maekcord.patients")
    write_gzip(path, _flip(data, doc.offset + doc.size - 3, 0x01))
    return Damage(
        r"the documents are damaged: their CRC-64 is -?\d+, while the EOF block and the catalog say -?\d+",
        "archive",
        eof.offset,
        "maekcord.patients",
    )


def flipped_type_byte(path: Path, data: bytes) -> Damage:
    """The type byte of a document's first element: the document no longer decodes."""
    doc = [
        b for b in archive_layout(data) if b.kind == "document" and b.namespace == "maekcord.appointments"
    ][3]
    out = bytearray(data)
    out[doc.offset + 4] = 0x55  # no BSON type has this number
    write_gzip(path, bytes(out))
    return Damage(
        r"a document is not valid BSON \(InvalidBSON: .*\)", "archive", doc.offset, "maekcord.appointments"
    )


def flipped_crc_byte(path: Path, data: bytes) -> Damage:
    eof = _first(archive_layout(data), "eof", "maekcord.appointments")
    write_gzip(path, _flip(data, eof.offset + eof.size - 5))  # inside the int64 CRC, the last field
    return Damage(
        r"the CRC field of the EOF block is damaged: it says -?\d+; the documents give -?\d+, which is "
        r"what the catalog recorded",
        "archive",
        eof.offset,
        "maekcord.appointments",
    )


def missing_eof_block(path: Path, data: bytes) -> Damage:
    eof = _first(archive_layout(data), "eof", "maekcord.sessions")
    damaged = data[: eof.offset] + data[eof.offset + eof.size + 4 :]
    write_gzip(path, damaged)
    return Damage(
        r"archive finished before all collections were seen: maekcord\.sessions \(no EOF block\)",
        "archive",
        len(damaged),
        "maekcord.sessions",
    )


def not_an_archive(path: Path, data: bytes) -> Damage:
    path.write_text("maekcord backup list\n2024-12-01 15.2MB\n")
    return Damage(r"not a gzip-compressed mongodump archive: the file starts with 6d61656b", "gzip", 0)


def empty_file(path: Path, data: bytes) -> Damage:
    path.write_bytes(b"")
    return Damage(r"the file is empty \(0 bytes\)", "file", 0)


def gzip_of_something_else(path: Path, data: bytes) -> Damage:
    path.write_bytes(gzip.compress(b'[{"fileName": "maekcord-backup-2024-12-01T02-00-00.gz"}]'))
    return Damage(
        r"stream does not appear to be a mongodump archive \(bad magic 5b7b2266, expected 6de29981\)",
        "archive",
        0,
    )


def flipped_compressed_byte(path: Path, data: bytes) -> Damage:
    raw = path.read_bytes()
    path.write_bytes(_flip(raw, len(raw) // 2))
    return Damage(r"compressed data is damaged|gzip CRC-32 check failed", "gzip")


MATRIX: dict[str, Callable[[Path, bytes], Damage]] = {
    "truncated file": truncated,
    "flipped byte inside a document (a value)": flipped_value_byte,
    "flipped byte inside a document (a type)": flipped_type_byte,
    "flipped byte in a CRC": flipped_crc_byte,
    "missing EOF block": missing_eof_block,
    "not an archive": not_an_archive,
    "empty file": empty_file,
    "gzip of something else": gzip_of_something_else,
    "flipped byte in the compressed data": flipped_compressed_byte,
}


@pytest.fixture(scope="module")
def pristine(sample_archive: SampleArchive) -> bytes:
    return read_uncompressed(sample_archive.path)


@pytest.mark.parametrize("case", list(MATRIX))
def test_full_verify_names_the_damage_and_restore_refuses_it(
    case, sample_archive, pristine, tmp_path, mongo_uri, mongo_client, scratch_db
):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri)
    damage = MATRIX[case](path, pristine)
    name = path.name

    with pytest.raises(JobFailed) as info:
        service.run_verify(file_name=name, level="full")
    assert info.value.stage == "verify"
    record = service.catalog.get(name)["verification"]["full"]
    assert record["ok"] is False
    assert record["failedCheck"] == damage.check, record
    assert re.search(damage.reason, record["reason"]), record["reason"]
    if damage.offset is not None:
        assert record["offset"] == damage.offset, record
    if damage.namespace is not None:
        assert record["namespace"] == damage.namespace
        assert f"namespace {damage.namespace!r}" in record["reason"] or damage.namespace in record["reason"]
    if damage.offset is not None and damage.check == "archive":
        assert f"offset {damage.offset}" in record["reason"]

    target = scratch_db()
    with pytest.raises(JobFailed, match=r"^refusing to restore .*; nothing was written$") as refused:
        service.run_restore(file_name=name, ns_from=("*.*",), ns_to=(f"{target}_*.*",))
    assert re.search(damage.reason, str(refused.value))
    assert not [db for db in mongo_client.list_database_names() if db.startswith(target)]
    assert len(service.catalog.load()) == 1  # no safety backup either


def test_every_damage_has_its_own_reason(sample_archive, pristine, tmp_path, mongo_uri):
    reasons = {}
    for number, (case, make) in enumerate(MATRIX.items()):
        service, path = sample_archive.copy_into(tmp_path / str(number), mongo_uri)
        make(path, pristine)
        with pytest.raises(JobFailed):
            service.run_verify(file_name=path.name, level="full")
        reason = service.catalog.get(path.name)["verification"]["full"]["reason"]
        reasons[case] = reason.split(" (")[0].split(":")[0]
    assert len(set(reasons.values())) == len(reasons), reasons


def test_without_the_catalog_a_damaged_document_is_a_crc_mismatch(
    sample_archive, pristine, tmp_path, mongo_uri
):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri)
    flipped_value_byte(path, pristine)
    loose = tmp_path / "loose.gz"
    path.rename(loose)
    with pytest.raises(JobFailed, match=r"CRC mismatch: the EOF block says -?\d+, the documents give -?\d+ "):
        service.run_verify(file_name=str(loose), level="full")


def test_quick_level_sees_a_damaged_file_through_its_sha256(sample_archive, pristine, tmp_path, mongo_uri):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri)
    flipped_value_byte(path, pristine)  # a valid gzip file: only the checksum tells at this level
    with pytest.raises(JobFailed, match=r"quick verification .* failed: the file is \d+ bytes, the catalog"):
        service.run_verify(file_name=path.name, level="quick")
