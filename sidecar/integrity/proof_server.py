"""Where a restore proof (a drill, the pitr check) runs: never the backed-up server unless asked by name.

``SIDECAR_DRILL_MONGODB_URI`` chooses:

- empty (the default): ``embedded``, a throwaway embedded server (``secantusdb``, standalone) started
  in ``SIDECAR_DRILL_DIR/server-<job>`` after a check that the volume has room for the archive's raw
  size, stopped and removed afterwards. A directory left by a killed run (no run holds its lock) is
  removed by the next proof, its server process ended first;
- a URI: ``scratch``, that server, refused when it is the backed-up deployment (same replica set
  name, same hosts, or the same process);
- ``source``: the backed-up server, by opt-in; a warning names the expected write volume, and the
  proof is refused when the server reports too little free disk, or reports none (unless
  ``SIDECAR_DRILL_ALLOW_UNKNOWN_DISK``).

Every refusal or failure here is ``VerifyFailed(check=drill-server)``: it says nothing about the archive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pymongo

from sidecar.config import Settings, uri_hosts
from sidecar.embedded import EmbeddedServer, EmbeddedServerError, free_port
from sidecar.engine.client import mongo_client
from sidecar.engine.restore_errors import error_text
from sidecar.integrity.failure import SERVER_CHECK, VerifyFailed
from sidecar.store.filelock import FileLock
from sidecar.text import human_size

log = logging.getLogger("sidecar.integrity")

SCRATCH, EMBEDDED, SOURCE = "scratch", "embedded", "source"
SERVER_KINDS = (SCRATCH, EMBEDDED, SOURCE)
OPT_IN = "source"  # the SIDECAR_DRILL_MONGODB_URI value that names the backed-up server
SERVER_DIR_PREFIX = "server-"
EMBEDDED_ARGS = ("--standalone", "--cache-size", "256M")  # no oplog to write, a modest cache
LEFTOVER_EXIT_SECONDS = 10.0


@dataclass
class ProofServer:
    """The server a proof writes: its kind (``SERVER_KINDS``), a client, what the choice warned of."""

    kind: str
    client: pymongo.MongoClient
    expected_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)

    def facts(self, written_bytes: int) -> dict[str, Any]:
        """What the proof's record says of its server (``writtenBytes``: documents restored plus
        oplog entries replayed)."""
        out: dict[str, Any] = {
            "server": self.kind,
            "expectedBytes": self.expected_bytes,
            "writtenBytes": written_bytes,
        }
        if self.warnings:
            out["serverWarnings"] = self.warnings
        if self.leftovers_removed:
            out["scratchServersRemoved"] = self.leftovers_removed
        return out


class Proof(Protocol):
    written_bytes: int

    def run(self) -> dict[str, Any]: ...


def run_on(server: ProofServer, proof: Proof) -> dict[str, Any]:
    """The proof's details with its server's facts; a failure (VerifyFailed) carries them too."""
    try:
        details = proof.run()
    except VerifyFailed as exc:
        exc.details = {**server.facts(proof.written_bytes), **exc.details}
        raise
    return {**details, **server.facts(proof.written_bytes)}


def refused(reason: str) -> VerifyFailed:
    return VerifyFailed(reason, check=SERVER_CHECK)


@contextlib.contextmanager
def proof_server(settings: Settings, proof: str, expected_bytes: int, job_id: str) -> Iterator[ProofServer]:
    """The server ``proof`` ("restore drill", "pitr check") runs on, for as long as it runs."""
    uri = settings.drill_mongodb_uri
    if not uri:
        with embedded_server(settings, expected_bytes, job_id) as server:
            yield server
    elif uri == OPT_IN:
        with on_source(settings, proof, expected_bytes) as server:
            yield server
    else:
        with scratch_server(settings, expected_bytes) as server:
            yield server


@contextlib.contextmanager
def given_server(uri: str, timeout: float = 10.0) -> Iterator[ProofServer]:
    """A scratch server named by URI, unchecked (tests give theirs to ``verify_archive`` this way)."""
    with _connect(uri, timeout) as client:
        yield ProofServer(SCRATCH, client)


# -- a scratch server named by URI ---------------------------------------------------------------


@contextlib.contextmanager
def scratch_server(settings: Settings, expected_bytes: int) -> Iterator[ProofServer]:
    timeout = settings.connect_timeout_seconds
    with _connect(settings.drill_mongodb_uri, timeout) as client:
        same = same_deployment(settings, client)
        if same:
            raise refused(
                f"SIDECAR_DRILL_MONGODB_URI points at the backed-up deployment ({same}); a proof would "
                f"write its restore there. Name a separate scratch server, leave it empty for an "
                f"embedded one, or set it to '{OPT_IN}' to run on the backed-up server on purpose"
            )
        yield ProofServer(SCRATCH, client, expected_bytes)


@dataclass(frozen=True)
class ServerIdentity:
    set_name: str | None
    hosts: frozenset[str]
    process_id: Any = None


def _host(name: str) -> str:
    """``host:port`` in one spelling: lower case, the default port, one name for the loopback."""
    name = name.strip().lower()
    if name.startswith("["):  # [ipv6]:port
        host, _, port = name[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = name.partition(":") if name.count(":") == 1 else (name, "", "")
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return f"{host}:{port or 27017}"


def identity(uri: str, hello: dict[str, Any] | None) -> ServerIdentity:
    """Who answers at ``uri``: its replica set name, every host it is known by, its process."""
    hosts = {_host(h) for h in uri_hosts(uri).split(",") if h and not uri.startswith("mongodb+srv")}
    hello = hello or {}
    for key in ("hosts", "passives", "arbiters"):
        hosts.update(_host(h) for h in hello.get(key) or [])
    if hello.get("me"):
        hosts.add(_host(hello["me"]))
    process = (hello.get("topologyVersion") or {}).get("processId")
    return ServerIdentity(hello.get("setName"), frozenset(hosts), process)


def same_deployment(settings: Settings, drill: pymongo.MongoClient) -> str | None:
    """How the drill server is the backed-up deployment, or None. The backed-up one unreachable, its
    URI's hosts still count."""
    theirs = identity(settings.drill_mongodb_uri, drill.admin.command("hello"))
    try:
        with _connect(settings.mongodb_uri, settings.connect_timeout_seconds) as source:
            ours = identity(settings.mongodb_uri, source.admin.command("hello"))
    except VerifyFailed:
        ours = identity(settings.mongodb_uri, None)
    if ours.process_id is not None and ours.process_id == theirs.process_id:
        return "the same server process"
    if ours.set_name and ours.set_name == theirs.set_name:
        return f"the same replica set name {ours.set_name!r}"
    shared = sorted(ours.hosts & theirs.hosts)
    return f"the same host {shared[0]}" if shared else None


# -- the backed-up server, by opt-in -------------------------------------------------------------


def server_free_bytes(client: pymongo.MongoClient) -> int | None:
    """Free bytes of the file system holding the server's data (dbStats, MongoDB 4.4+), or None."""
    stats = client.admin.command("dbStats")
    total, used = stats.get("fsTotalSize"), stats.get("fsUsedSize")
    return int(total - used) if total is not None and used is not None else None


@contextlib.contextmanager
def on_source(settings: Settings, proof: str, expected_bytes: int) -> Iterator[ProofServer]:
    with _connect(settings.mongodb_uri, settings.connect_timeout_seconds) as client:
        free = server_free_bytes(client)
        needed = expected_bytes + settings.min_free_bytes
        where = f"the backed-up server {uri_hosts(settings.mongodb_uri)}"
        if free is None and not settings.drill_allow_unknown_disk:
            raise refused(
                f"SIDECAR_DRILL_MONGODB_URI={OPT_IN}: {where} does not report its free disk (dbStats "
                f"fsTotalSize), and the {proof} would write about {human_size(expected_bytes)} there; "
                f"set SIDECAR_DRILL_ALLOW_UNKNOWN_DISK=true to run it anyway"
            )
        if free is not None and free < needed:
            raise refused(
                f"SIDECAR_DRILL_MONGODB_URI={OPT_IN}: {where} has {human_size(free)} free, the {proof} "
                f"needs about {human_size(expected_bytes)} plus SIDECAR_MIN_FREE_BYTES"
            )
        warning = (
            f"the {proof} runs on {where} (SIDECAR_DRILL_MONGODB_URI={OPT_IN}): it writes about "
            f"{human_size(expected_bytes)} into scratch databases there, and about as much again into "
            f"its oplog, replicated to every member; the oplog archive leaves these entries out"
        )
        log.warning(warning)
        yield ProofServer(SOURCE, client, expected_bytes, [warning])


# -- the embedded scratch server -----------------------------------------------------------------


@contextlib.contextmanager
def embedded_server(settings: Settings, expected_bytes: int, job_id: str) -> Iterator[ProofServer]:
    root = settings.drill_directory
    removed = remove_leftovers(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise refused(f"SIDECAR_DRILL_DIR: cannot use {root}: {exc.strerror or exc}") from None
    if free < expected_bytes + settings.min_free_bytes:
        raise refused(
            f"SIDECAR_DRILL_DIR: {root} has {human_size(free)} free, the embedded scratch server needs "
            f"about {human_size(expected_bytes)} (the raw size of what it restores) plus "
            f"SIDECAR_MIN_FREE_BYTES; free space there or point SIDECAR_DRILL_DIR at a larger volume"
        )
    home = root / f"{SERVER_DIR_PREFIX}{job_id}"
    with _held(home):
        server = EmbeddedServer(
            home / "data",
            port=free_port(),
            log_path=home / "server.log",
            extra_args=EMBEDDED_ARGS,
            pid_file=home / "pid",
        )
        try:
            try:
                server.start()
            except (EmbeddedServerError, OSError) as exc:
                raise refused(f"cannot start the embedded scratch server: {exc}{_log_tail(home)}") from None
            with _connect(server.uri, settings.connect_timeout_seconds) as client:
                yield ProofServer(EMBEDDED, client, expected_bytes, leftovers_removed=removed)
        finally:
            server.stop(timeout=0)  # killed: its data is thrown away, a clean shutdown takes 2 s


@contextlib.contextmanager
def _held(home: Path) -> Iterator[None]:
    """``home`` created and locked while the proof runs: the lock tells a live run's directory from
    a killed one's. Removed afterwards, whatever happened."""
    home.mkdir(parents=True)
    try:
        with FileLock(home / "lock"):
            yield
    finally:
        shutil.rmtree(home, ignore_errors=True)


def remove_leftovers(root: Path) -> list[str]:
    """Remove the server directories of killed runs under ``root`` (their process ended first); a
    directory whose run still holds its lock stays. The names removed."""
    removed = []
    for home in sorted(root.glob(f"{SERVER_DIR_PREFIX}*")) if root.is_dir() else []:
        lock = FileLock(home / "lock")
        try:
            if not lock.acquire(wait=False):
                continue  # a live run's
        except OSError:
            pass  # no lock file: killed before it existed
        try:
            _end_server(home)
        finally:
            lock.release()
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home.name)
        log.warning("removed the scratch server directory %s left by a killed proof", home)
    return removed


def _end_server(home: Path) -> None:
    """End the embedded server a killed run left in ``home``, if it still runs (its command line names
    ``home``: a pid the system gave to another process since is left alone)."""
    try:
        pid = int((home / "pid").read_text(encoding="utf-8"))
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(home).encode() not in command:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + LEFTOVER_EXIT_SECONDS
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(home: Path) -> str:
    try:
        tail = (home / "server.log").read_text(encoding="utf-8", errors="replace").strip()[-300:]
    except OSError:
        return ""
    return f" (its log ends: {tail})" if tail else ""


@contextlib.contextmanager
def _connect(uri: str, timeout: float) -> Iterator[pymongo.MongoClient]:
    """A client that answered a ping, or VerifyFailed(drill-server) naming the hosts, never a password."""
    try:
        client = mongo_client(uri, timeout, "proof")
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        raise refused(f"cannot connect to the drill server {uri_hosts(uri)}: {error_text(exc)}") from None
    with client:
        yield client
