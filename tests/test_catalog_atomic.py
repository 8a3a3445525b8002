"""A catalog write that fails halfway leaves the previous ``backup-info.json`` intact (temp + rename).

Written against the public ``Catalog`` API only: a write in place (open the catalog for writing, dump)
passes every other test and fails both of these.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sidecar.store.catalog import Catalog


def entry(name: str) -> dict[str, object]:
    return {"fileName": f"{name}.gz", "status": "completed", "createdAt": "2025-01-01T00:00:00.000Z"}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog(tmp_path)
    catalog.add(entry("a"))
    catalog.add(entry("b"))
    return catalog


def assert_unchanged(catalog: Catalog, before: bytes) -> None:
    assert catalog.path.read_bytes() == before
    assert [e["fileName"] for e in catalog.load()] == ["a.gz", "b.gz"]


def test_an_entry_that_cannot_be_encoded_fails_the_write_mid_dump(catalog: Catalog) -> None:
    before = catalog.path.read_bytes()
    with pytest.raises(TypeError):  # json.dump has written a and b when it reaches the bad value
        catalog.add({**entry("c"), "documentCounts": object()})
    assert_unchanged(catalog, before)


def test_a_full_disk_at_fsync_fails_the_write(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    before = catalog.path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        catalog.add(entry("c"))
    monkeypatch.undo()
    assert_unchanged(catalog, before)
