"""The alternative dump engine: the stock ``mongodump --archive --gzip`` when it is installed.

The URI (and so the password) goes into a 0600 ``--config`` file, never onto the command line where
``ps`` would show it. The result is read back with our reader so the catalog records the same facts
as for the native engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import yaml

from sidecar.archive import ArchiveReader, NamespaceEnd
from sidecar.archive.format import OPLOG_NAMESPACE
from sidecar.engine.compression import gzip_reader
from sidecar.engine.dump import DumpCancelled, DumpError, DumpOptions, DumpResult, NamespaceStats


def find_tool(path: str) -> str | None:
    return shutil.which(path)


def mongodump_arguments(
    tool: str, config_path: str, archive: Path, options: DumpOptions, oplog: bool
) -> list[str]:
    args = [
        tool,
        f"--config={config_path}",
        f"--archive={archive}",
        "--gzip",
        f"--numParallelCollections={options.parallel_collections}",
    ]
    if options.database:
        args.append(f"--db={options.database}")
    args += [f"--nsInclude={p}" for p in options.ns_include]
    args += [f"--nsExclude={p}" for p in options.ns_exclude]
    if oplog:
        args.append("--oplog")
    return args


def write_tool_config(directory: str, uri: str) -> str:
    path = os.path.join(directory, "mongotools.yaml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"uri": uri}, handle)
    return path


def run_mongodump(
    tool: str,
    uri: str,
    archive: Path,
    options: DumpOptions,
    *,
    oplog: bool,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> DumpResult:
    """Run mongodump into ``archive`` (already gzip) and summarize what it wrote."""
    with tempfile.TemporaryDirectory(prefix="sidecar-tool-") as tmp:
        config = write_tool_config(tmp, uri)
        proc = subprocess.Popen(
            mongodump_arguments(tool, config, archive, options, oplog),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise DumpError(f"mongodump did not finish within {timeout}s") from None
    if cancel is not None and cancel.is_set():
        raise DumpCancelled()
    if proc.returncode != 0:
        last = (stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise DumpError(f"mongodump failed: {last[0]}")
    return summarize_archive(archive)


def summarize_archive(archive: Path) -> DumpResult:
    with open(archive, "rb") as raw, gzip_reader(raw) as stream:
        reader = ArchiveReader(stream)
        prelude = reader.read_prelude()
        result = DumpResult(prelude.header.server_version)
        types = {str(c.namespace): c.type for c in prelude.collections}
        for event in reader.events():
            if (
                isinstance(event, NamespaceEnd)
                and (event.namespace.db, event.namespace.collection) != OPLOG_NAMESPACE
            ):
                ns = str(event.namespace)
                result.namespaces[ns] = NamespaceStats(
                    event.documents, event.bytes, event.crc, types.get(ns, "")
                )
    return result
