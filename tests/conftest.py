"""Shared fixtures: a real MongoDB-wire server, sample data, and settings for a temporary backup dir.

With SIDECAR_TEST_MONGODB_URI set, tests use that server (e.g. a real mongod); otherwise one embedded
``secantusdb`` process (a one-node replica set) is started for the session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pymongo
import pytest

from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.sampledata import load_sample_data
from tests.helpers import discard, settings_for


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    if given:
        yield given
        return
    # The oplog bounded: the embedded server reads all of it on every oplog query (three per backup), and
    # the session's restores grow it (11 000 entries after test_restore, test_interop_tools and
    # test_s3_service); the window any test reads is a few hundred entries.
    oplog = ("--oplog-max-entries", "5000")
    server = EmbeddedServer(tmp_path_factory.mktemp("mongo") / "data", extra_args=oplog).start()
    try:
        yield server.uri
    finally:
        discard(server)


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10000) as client:
        yield client


@pytest.fixture(scope="module")
def module_mongo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pymongo.MongoClient]:
    """A client of a server whose oplog holds only this module's writes, for modules that query the
    oplog after nearly every write: the embedded server reads its whole oplog on every oplog query, and
    the session server's grows all session long. A module overrides ``mongo_client`` with it. With
    SIDECAR_TEST_MONGODB_URI set, that server (a real mongod reads its oplog by ts)."""
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    server = None if given else EmbeddedServer(tmp_path_factory.mktemp("module-mongo") / "data").start()
    try:
        with pymongo.MongoClient(given or server.uri, serverSelectionTimeoutMS=10000) as client:
            yield client
    finally:
        if server is not None:
            discard(server)


@pytest.fixture(scope="session")
def sample_counts(mongo_client: pymongo.MongoClient) -> dict[str, int]:
    """The rich sample data, loaded once per session; tests must not modify these databases."""
    return load_sample_data(mongo_client)


@pytest.fixture
def make_settings(tmp_path: Path, mongo_uri: str) -> Callable[..., Settings]:
    """Settings for a fresh backup dir; keyword arguments override SIDECAR_* values by attribute name."""

    def make(**values: object) -> Settings:
        return settings_for(mongo_uri, tmp_path, **values)

    return make


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A private embedded server that a test may stop and restart (failure scenarios)."""
    server = EmbeddedServer(tmp_path / "own-mongo").start()
    try:
        yield server
    finally:
        discard(server)


@pytest.fixture
def scratch_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A separate scratch server for proofs (``SIDECAR_DRILL_MONGODB_URI``): a standalone embedded
    one, so that it is never taken for the backed-up deployment (every embedded replica set is
    named ``secantus``)."""
    server = EmbeddedServer(tmp_path / "scratch-mongo", extra_args=("--standalone",)).start()
    try:
        yield server
    finally:
        discard(server)
