"""Writing an archive: the one way, for the native dump, the mongodump engine and the safety backup.

An ``ArchiveSink`` writes ``NAME`` in a directory through ``.NAME.partial``: what comes in is gzip'd
(``archive``: the uncompressed mongodump archive stream) or already gzip (``gzipped``: the stock
``mongodump --archive --gzip`` output), then age-encrypted when there are recipients, then hashed and
counted (the stored bytes, as the catalog records them), written, and optionally copied to a ``tee``
(a streaming bucket upload that may fail without failing the local write). ``commit()`` finishes
every layer, fsyncs, renames to ``NAME`` and fsyncs the directory; ``abort()`` (or an exception in
the ``with`` block) removes the partial file and aborts the tee. Nothing else ever has ``NAME``: a
crash leaves at most a ``.partial`` that the next run's recovery removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

from sidecar.codec.age_stream import AgeWriter
from sidecar.codec.gzip_stream import gzip_writer
from sidecar.store.catalog import PARTIAL_SUFFIX, fsync_dir
from sidecar.store.objects import Digest, StoreError, Upload

log = logging.getLogger("sidecar.store.sink")


class _Stored:
    """The bottom layer: hashes and writes the stored bytes; copies them to the tee until it fails."""

    def __init__(self, file: BinaryIO, tee: Upload | None):
        self.file, self.tee = file, tee
        self.digest = Digest()
        self.tee_error: StoreError | None = None

    def write(self, data: Any) -> int:
        self.digest.update(data)
        written = self.file.write(data)
        if self.tee is not None and self.tee_error is None:
            try:
                self.tee.write(data)
            except StoreError as exc:
                self.tee_error = exc
                log.warning("streaming upload dropped, the archive is uploaded after it is written: %s", exc)
                self.tee.abort()
        return written

    def flush(self) -> None:
        self.file.flush()


class ArchiveSink:
    """``with ArchiveSink(final, ...) as sink: write to sink.archive (or sink.gzipped); sink.commit()``."""

    def __init__(
        self,
        final: Path,
        *,
        recipients: list[Any] | None = None,
        compression: str = "isal",
        level: int = 1,
        tee: Upload | None = None,
    ):
        self.final = Path(final)
        self.partial = self.final.with_name(f".{self.final.name}{PARTIAL_SUFFIX}")
        self._compression, self._level = compression, level
        self._file = open(self.partial, "xb")  # noqa: SIM115 - closed by commit/abort
        self._stored = _Stored(self._file, tee)
        self._age = AgeWriter(self._stored, recipients) if recipients else None  # type: ignore[arg-type]
        self._gzip: BinaryIO | None = None
        self.finished = False

    @property
    def gzipped(self) -> BinaryIO:
        """Where gzip bytes go (encrypted on their way when encrypting)."""
        return self._age or self._stored  # type: ignore[return-value]

    @property
    def archive(self) -> BinaryIO:
        """Where the uncompressed archive goes: compressed here, then as ``gzipped``."""
        if self._gzip is None:
            self._gzip = gzip_writer(self.gzipped, self._compression, self._level)
        return self._gzip

    @property
    def tee(self) -> Upload | None:
        """The streaming upload, while it has not failed (commit it after the catalog is written)."""
        return self._stored.tee if self._stored.tee_error is None else None

    def __enter__(self) -> ArchiveSink:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None or not self.finished:
            self.abort()

    def commit(self) -> Digest:
        """Finish gzip and age, fsync, rename to the final name; the stored bytes' sha256 and size."""
        if self._gzip is not None:
            self._gzip.close()
        if self._age is not None:
            self._age.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)
        self.finished = True
        return self._stored.digest

    def abort(self) -> None:
        """Stop every layer without finishing it; the partial file and the tee's upload go."""
        if self.finished:
            return
        self.finished = True  # nothing more to do either way
        if self._age is not None:
            self._age.abort()
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(Exception):  # its trailer goes nowhere: the layers below are closed
            if self._gzip is not None:
                self._gzip.close()
        self.partial.unlink(missing_ok=True)
        if self.tee is not None:
            self.tee.abort()
