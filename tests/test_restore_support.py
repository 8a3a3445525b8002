"""Shared fixtures and helpers of the verify, restore, corruption and interop tests (no tests here).

One backup of the sample databases per test module (``sample_archive``); restores go to databases
named ``rt_<random>`` that the ``scratch_db`` fixture drops afterwards. A test module imports the
fixture functions (``sample_archive_fixture``...) and pytest offers them under their short names.
The sample databases (maekcord, maekcord_files, analytics) are read, never written.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest

from sidecar.archive.bsonstream import split_documents
from sidecar.archive.format import MAGIC
from sidecar.config import Settings
from sidecar.service import BackupService
from sidecar.store.catalog import Catalog
from tests.helpers import settings_for

SAMPLE_NS = "maekcord.*,maekcord_files.*,analytics.*"
SAMPLE_DBS = ("maekcord", "maekcord_files", "analytics")


@dataclass
class SampleArchive:
    settings: Settings
    entry: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.settings.backup_dir / self.entry["fileName"]

    def copy_into(self, directory: Path, mongo_uri: str, **values: object) -> tuple[BackupService, Path]:
        """A fresh backup directory holding this archive and its catalog entry (to corrupt freely)."""
        settings = settings_for(mongo_uri, directory, **values)
        settings.backup_dir.mkdir(parents=True, exist_ok=True)
        target = settings.backup_dir / self.entry["fileName"]
        shutil.copyfile(self.path, target)
        Catalog(settings.backup_dir).add({k: v for k, v in self.entry.items() if k != "verification"})
        return BackupService(settings), target


@pytest.fixture(scope="module", name="sample_archive")
def sample_archive_fixture(
    mongo_uri: str, sample_counts: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> SampleArchive:
    """One backup of the three sample databases, taken once per test module."""
    settings = settings_for(mongo_uri, tmp_path_factory.mktemp("sample"), ns_include=SAMPLE_NS)
    entry = BackupService(settings).run_backup()
    return SampleArchive(settings, entry)


@pytest.fixture(name="scratch_db")
def scratch_db_fixture(mongo_client: pymongo.MongoClient) -> Iterator[Callable[[], str]]:
    """A factory of fresh database names ``rt_<hex>``; every one handed out is dropped afterwards."""
    names: list[str] = []

    def new() -> str:
        names.append(f"rt_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield new
    for name in names:
        mongo_client.drop_database(name)


def raw_documents(client: pymongo.MongoClient, ns: str) -> list[bytes]:
    db, coll = ns.split(".", 1)
    out = []
    for batch in client[db][coll].find_raw_batches():
        out += [bytes(doc) for doc in split_documents(batch)]
    return out


def read_uncompressed(path: Path) -> bytes:
    with gzip.open(path, "rb") as handle:
        return handle.read()


def write_gzip(path: Path, data: bytes) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(data)
    return path


@dataclass
class Block:
    """One element of the archive stream after the prelude: a header or a document."""

    kind: str  # header, eof, document
    offset: int
    size: int
    namespace: str


def archive_layout(data: bytes) -> list[Block]:
    """Where every namespace header, EOF block and document sits in an uncompressed archive."""
    assert data[:4] == MAGIC
    pos, blocks = 4, []
    # prelude: header document, collection documents, terminator
    pos += struct.unpack_from("<i", data, pos)[0]
    while struct.unpack_from("<i", data, pos)[0] != -1:
        pos += struct.unpack_from("<i", data, pos)[0]
    pos += 4
    while pos < len(data):
        size = struct.unpack_from("<i", data, pos)[0]
        header = bson.decode(data[pos : pos + size])
        ns = f"{header['db']}.{header['collection']}" if header["db"] else header["collection"]
        blocks.append(Block("eof" if header["EOF"] else "header", pos, size, ns))
        pos += size
        if header["EOF"]:
            pos += 4
            continue
        while (size := struct.unpack_from("<i", data, pos)[0]) != -1:
            blocks.append(Block("document", pos, size, ns))
            pos += size
        pos += 4
    return blocks


def database_exists(client: pymongo.MongoClient, name: str) -> bool:
    return name in client.list_database_names()
