"""Where archives live: catalog, local directory, S3-compatible bucket, retention.

``open_archive(settings, entry)`` is the one way to read an archive back, from whichever copy exists
(see ``sidecar.store.backends``).
"""

from __future__ import annotations

from typing import Any


def open_archive(settings: Any, entry: Any, **options: Any) -> Any:
    """The gzip bytes of a catalog entry's archive, local or from the bucket, decrypted and checked."""
    from sidecar.store.backends import open_archive as _open

    return _open(settings, entry, **options)
