"""Encryption at rest in the age format (pyrage): gzip, then age, on the way out; the reverse on the way in.

A file written here is a standard age file (``age -d -i key.txt FILE | mongorestore --archive --gzip``).
pyrage streams by pulling from a reader and pushing to a writer, so each stream below runs that call
in a helper thread joined to the caller by a small bounded queue: memory stays bounded whatever the
archive size, and the caller keeps the ordinary ``write()`` / ``read()`` shape.

Keys never appear in logs or errors: messages name the setting or file, never its content.
"""

from __future__ import annotations

import contextlib
import io
import queue
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyrage

AGE_MAGIC = b"age-encryption.org/v1\n"
_QUEUE_ITEMS = 8
_BATCH = 256 * 1024
_EOF = object()


class EncryptionError(RuntimeError):
    """Encryption or decryption failed; the message says what to check, never a key."""


def parse_recipients(text: str | Iterable[str]) -> list[Any]:
    """age recipients (``age1...``) separated by commas, spaces or new lines; ``#`` starts a comment."""
    if not isinstance(text, str):
        text = "\n".join(text)
    items = []
    for line in text.splitlines():
        items += [item for item in re.split(r"[\s,]+", line.split("#", 1)[0]) if item]
    recipients = []
    for number, item in enumerate(items, 1):
        if not item.startswith("age1"):
            raise ValueError(f"recipient #{number} is not an age public key (age1...)")
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(item))
        except pyrage.RecipientError as exc:
            raise ValueError(
                f"recipient #{number} ({item[:12]}...) is not a valid age public key: {exc}"
            ) from None
    return recipients


def load_identities(path: str | Path) -> list[Any]:
    """The ``AGE-SECRET-KEY-1...`` lines of an age identity file (as ``age-keygen`` writes it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EncryptionError(f"cannot read the age identity file {path}: {exc.strerror or exc}") from None
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise EncryptionError(
                f"line {number} of the age identity file {path} is not an age identity (AGE-SECRET-KEY-1...)"
            ) from None
    if not identities:
        raise EncryptionError(f"the age identity file {path} holds no identity (AGE-SECRET-KEY-1...)")
    return identities


def _put(items: queue.Queue, item: Any, stopped: Callable[[], bool]) -> bool:
    """Put ``item``, waiting for room while not ``stopped()``; False when it stopped first."""
    while not stopped():
        with contextlib.suppress(queue.Full):
            items.put(item, timeout=0.5)
            return True
    return False


class _Raised:
    """Wraps the caller's stream for the pyrage thread and keeps the real exception it raised.

    pyrage turns a Python exception inside read/write into a bare OSError; the original (ENOSPC, an S3
    error) is what the caller must see, so it is kept here and re-raised on the caller's side.
    """

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except BaseException as exc:
            self.error = exc
            raise

    def write(self, data: bytes) -> int:
        try:
            written = self.stream.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        return len(data) if written is None else written

    def flush(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()


class _QueueSource:
    """The reader pyrage encrypts from: bytes the caller wrote, handed over through the queue."""

    def __init__(self, items: queue.Queue):
        self.items = items
        self.view = memoryview(b"")
        self.pos = 0
        self.done = False

    def read(self, size: int = -1) -> bytes:
        while self.pos >= len(self.view) and not self.done:
            item = self.items.get()
            if item is _EOF:
                self.done = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self.view, self.pos = memoryview(item), 0
        if size is None or size < 0:
            size = len(self.view) - self.pos
        out = bytes(self.view[self.pos : self.pos + size])
        self.pos += len(out)
        return out


class AgeWriter(io.RawIOBase):
    """Writable stream: what is written comes out of ``raw`` age-encrypted to ``recipients``.

    ``close()`` finishes the age stream (the last chunk is what makes a file complete) and leaves ``raw``
    open; ``abort()`` stops without finishing, so a reader sees a truncated, rejected file.
    """

    def __init__(self, raw: BinaryIO, recipients: list[Any]):
        super().__init__()
        if not recipients:
            raise EncryptionError("no age recipients given (SIDECAR_AGE_RECIPIENTS)")
        self._sink = _Raised(raw)
        self._items: queue.Queue = queue.Queue(_QUEUE_ITEMS)
        self._pending = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(list(recipients),), name="age-encrypt", daemon=True
        )
        self._thread.start()

    def _run(self, recipients: list[Any]) -> None:
        try:
            pyrage.encrypt_io(_QueueSource(self._items), self._sink, recipients)
        except BaseException as exc:
            self._error = self._sink.error or exc  # the writing side sees it on its next call

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed AgeWriter")
        self._raise_if_failed()
        view = memoryview(data).cast("B")
        self._pending += view
        if len(self._pending) >= _BATCH:
            self._put(bytes(self._pending))
            self._pending.clear()
        return len(view)

    def _put(self, item: Any) -> None:
        if not _put(self._items, item, lambda: self._error is not None or not self._thread.is_alive()):
            self._raise_if_failed()
            raise EncryptionError("the age encryption thread stopped unexpectedly")

    def _raise_if_failed(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, pyrage.EncryptError | OSError) and error is not self._sink.error:
            raise EncryptionError(f"age encryption failed: {error}") from None
        raise error

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._error is None:
                if self._pending:
                    self._put(bytes(self._pending))
                    self._pending.clear()
                self._put(_EOF)
            self._thread.join()
            self._raise_if_failed()
            self._sink.flush()
        finally:
            super().close()

    def abort(self) -> None:
        """Stop the encryption thread without finishing the stream."""
        if self.closed:
            return
        self._error = self._error or EncryptionError("aborted")
        with contextlib.suppress(Exception):
            while True:
                try:
                    self._items.get_nowait()
                except queue.Empty:
                    break
            self._items.put(EncryptionError("aborted"), timeout=5)
        self._thread.join(timeout=30)
        super().close()


class _QueueSink:
    """The writer pyrage decrypts into: hands plaintext to the reading side through the queue."""

    def __init__(self, owner: AgeReader):
        self.owner = owner

    def write(self, data: bytes) -> int:
        item = bytes(data)
        if not _put(self.owner._items, item, lambda: self.owner.closed):
            raise OSError("reader closed")
        return len(item)

    def flush(self) -> None:
        pass


class AgeReader(io.RawIOBase):
    """Readable stream of the plaintext of the age stream ``raw``, decrypted with ``identities``.

    Errors surface on ``read()``: a wrong key as EncryptionError naming ``source``; a damaged or
    truncated file as EncryptionError (age authenticates every 64 KiB chunk, so no unauthenticated
    byte is ever returned); an error of ``raw`` itself (disk, network) as that error.
    """

    def __init__(self, raw: BinaryIO, identities: list[Any], *, source: str = "the archive", keys: str = ""):
        super().__init__()
        if not identities:
            raise EncryptionError("no age identity given (SIDECAR_AGE_IDENTITY_FILE)")
        self._source = _Raised(raw)
        self._what, self._keys = source, keys or "the given age identities"
        self._items: queue.Queue = queue.Queue(_QUEUE_ITEMS)
        self._view = memoryview(b"")
        self._pos = 0
        self._finished = False
        self._thread = threading.Thread(
            target=self._run, args=(list(identities),), name="age-decrypt", daemon=True
        )
        self._thread.start()

    def _run(self, identities: list[Any]) -> None:
        try:
            pyrage.decrypt_io(self._source, _QueueSink(self), identities)
            outcome: Any = _EOF
        except BaseException as exc:
            outcome = self._translate(exc)
        _put(self._items, outcome, lambda: self.closed)

    def _translate(self, exc: BaseException) -> BaseException:
        if self._source.error is not None:
            return self._source.error
        text = str(exc)
        if "No matching keys" in text:
            return EncryptionError(
                f"cannot decrypt {self._what}: none of the identities in {self._keys} matches "
                f"the recipients it was encrypted to (wrong SIDECAR_AGE_IDENTITY_FILE?)"
            )
        if isinstance(exc, pyrage.DecryptError) and ("header" in text.lower() or "fill" in text.lower()):
            return EncryptionError(
                f"cannot decrypt {self._what}: not an age file, or its header is truncated"
            )
        return EncryptionError(
            f"cannot decrypt {self._what}: the encrypted data is damaged or truncated "
            f"(age authentication failed: {text})"
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        while self._pos >= len(self._view):
            if self._finished:
                return 0
            item = self._items.get()
            if item is _EOF:
                self._finished = True
                return 0
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            self._view, self._pos = memoryview(item), 0
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._view) - self._pos)
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def close(self) -> None:
        if self.closed:
            return
        super().close()  # from here the helper thread's writes fail and it ends
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._items.get(timeout=0.2)
        self._thread.join()


def decrypt_reader(
    raw: BinaryIO, identities: list[Any], *, source: str = "the archive", keys: str = ""
) -> BinaryIO:
    """Buffered plaintext reader over the age stream ``raw``."""
    return io.BufferedReader(AgeReader(raw, identities, source=source, keys=keys), buffer_size=1 << 20)
