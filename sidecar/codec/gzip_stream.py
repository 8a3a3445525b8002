"""Gzip streams: one member, as ``mongodump --gzip`` writes, with ISA-L (igzip) when chosen."""

from __future__ import annotations

import gzip
from typing import BinaryIO

from isal import igzip


def gzip_writer(raw: BinaryIO, kind: str = "isal", level: int = 1) -> BinaryIO:
    """Compressing writer over ``raw``; closing it finishes the member but leaves ``raw`` open.

    No file name and mtime 0 in the header, like Go's gzip.Writer, so equal input gives equal bytes.
    """
    module = igzip if kind == "isal" else gzip
    return module.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0)


def gzip_reader(raw: BinaryIO) -> BinaryIO:
    """Decompressing reader; raises EOFError on a truncated stream, BadGzipFile on a non-gzip one."""
    return igzip.GzipFile(fileobj=raw, mode="rb")
