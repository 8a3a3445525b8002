"""Encryption at rest (age via pyrage): streams, keys, and a real backup read back three ways.

Keys are generated per test run; nothing here is a committed key.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest

from sidecar.archive import ArchiveReader, NamespaceEnd
from sidecar.codec.age_stream import (
    AGE_MAGIC,
    AgeWriter,
    EncryptionError,
    decrypt_reader,
    load_identities,
    parse_recipients,
)
from sidecar.codec.gzip_stream import gzip_reader
from sidecar.config import ConfigError, load_settings
from sidecar.store.objects import StoreError
from sidecar.store.source import ArchiveReadError, ArchiveSource, source_for


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def key_file(tmp_path: Path, identity) -> Path:
    """An identity file as age-keygen writes it: comments, then the secret key."""
    path = tmp_path / "key.txt"
    path.write_text(f"# created: test\n# public key: {identity.to_public()}\n{identity}\n")
    path.chmod(0o600)
    return path


def encrypt(data: bytes, recipients, write_sizes=(1, 7, 4096, 65536, 300_000)) -> bytes:
    out = io.BytesIO()
    writer = AgeWriter(out, recipients)
    rng, pos = random.Random(1), 0
    while pos < len(data):
        step = rng.choice(write_sizes)
        writer.write(memoryview(data)[pos : pos + step])
        pos += step
    writer.close()
    return out.getvalue()


def count_documents(stream) -> dict[str, int]:
    reader = ArchiveReader(stream)
    reader.read_prelude()
    return {str(e.namespace): e.documents for e in reader.events() if isinstance(e, NamespaceEnd)}


def test_round_trip_of_odd_write_sizes_and_two_recipients(identity):
    other = pyrage.x25519.Identity.generate()
    data = random.Random(2).randbytes(3 * 1024 * 1024 + 17)
    blob = encrypt(data, [identity.to_public(), other.to_public()])
    assert blob.startswith(AGE_MAGIC)
    for key in (identity, other):  # either recipient can decrypt
        with decrypt_reader(io.BytesIO(blob), [key]) as reader:
            assert reader.read() == data
    empty = encrypt(b"", [identity.to_public()])
    assert decrypt_reader(io.BytesIO(empty), [identity]).read() == b""


def test_reading_part_and_closing_stops_the_helper_thread(identity):
    blob = encrypt(os.urandom(2_000_000), [identity.to_public()])
    reader = decrypt_reader(io.BytesIO(blob), [identity])
    assert len(reader.read(10)) == 10
    reader.close()  # must not hang on the helper thread blocked on a full queue


def test_wrong_identity_says_which_archive_and_which_key_file_never_the_key(identity, tmp_path):
    blob = encrypt(b"patient records", [identity.to_public()])
    stranger = pyrage.x25519.Identity.generate()
    reader = decrypt_reader(io.BytesIO(blob), [stranger], source="b-1.gz.age (s3)", keys="/keys/key.txt")
    with pytest.raises(EncryptionError) as caught:
        reader.read()
    message = str(caught.value)
    assert "b-1.gz.age (s3)" in message and "/keys/key.txt" in message and "matches" in message
    assert str(stranger) not in message and "AGE-SECRET-KEY" not in message


def test_damaged_and_truncated_files_are_rejected_not_returned(identity):
    data = os.urandom(300_000)
    blob = encrypt(data, [identity.to_public()])
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 1
    for bad, expected in (
        (bytes(damaged), "damaged or truncated"),
        (blob[: len(blob) - 100], "damaged or truncated"),
        (blob[:30], "header"),
        (b"\x1f\x8b\x08\x00 plain gzip", "not an age file"),
    ):
        with pytest.raises(EncryptionError, match=expected):
            decrypt_reader(io.BytesIO(bad), [identity]).read()


def test_errors_of_the_underlying_streams_come_through_unchanged(identity):
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    writer = AgeWriter(Full(), [identity.to_public()])
    with pytest.raises(OSError) as caught:
        for _ in range(50):
            writer.write(b"x" * 100_000)
        writer.close()
    assert caught.value.errno == 28

    class Broken(io.BytesIO):
        def read(self, size=-1):
            raise StoreError("cannot reach S3 at http://s3.example (bucket b)", "s3", "unreachable")

    with pytest.raises(StoreError, match="cannot reach S3"):
        decrypt_reader(Broken(), [identity]).read()


def test_recipient_and_identity_parsing(identity, key_file, tmp_path):
    one, two = identity.to_public(), pyrage.x25519.Identity.generate().to_public()
    assert len(parse_recipients(f"{one}, {two}\n# a comment\n")) == 2
    with pytest.raises(ValueError, match=r"recipient #2 is not an age public key"):
        parse_recipients(f"{one} ssh-ed25519")
    assert len(load_identities(key_file)) == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\nAGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(EncryptionError) as caught:
        load_identities(bad)
    assert "line 2" in str(caught.value) and "NOTAKEY" not in str(caught.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(EncryptionError, match="holds no identity"):
        load_identities(empty)


def test_settings_name_the_setting(identity, tmp_path):
    with pytest.raises(ConfigError, match=r"^SIDECAR_AGE_RECIPIENTS: recipient #1"):
        load_settings({"SIDECAR_AGE_RECIPIENTS": "age1notakey"})
    with pytest.raises(ConfigError, match=r"^SIDECAR_AGE_IDENTITY_FILE: cannot read"):
        load_settings({"SIDECAR_AGE_IDENTITY_FILE": str(tmp_path / "missing.txt")})
    settings = load_settings({"SIDECAR_AGE_RECIPIENTS": f"{identity.to_public()}\n"})
    assert settings.age_recipients == (str(identity.to_public()),)


@pytest.fixture
def encrypted_backup(make_settings, sample_counts, key_file, identity, caplog):
    """A real backup taken with SIDECAR_AGE_RECIPIENTS set: (settings, catalog entry)."""
    from sidecar.service import BackupService

    caplog.set_level(logging.DEBUG, logger="sidecar")
    settings = make_settings(
        age_recipients=str(identity.to_public()), age_identity_file=str(key_file), database="maekcord"
    )
    entry = BackupService(settings).run_backup()
    return settings, entry


def test_backup_is_an_age_file_named_gz_age_and_the_key_is_never_logged(encrypted_backup, identity, caplog):
    settings, entry = encrypted_backup
    assert entry["fileName"].endswith(".gz.age")
    path = settings.backup_dir / entry["fileName"]
    assert path.read_bytes().startswith(AGE_MAGIC)
    assert entry["sizeBytes"] == path.stat().st_size  # size and sha256 are of the stored (encrypted) bytes
    assert not list(settings.backup_dir.glob("*.partial")) and not list(settings.backup_dir.glob(".*partial"))
    text = caplog.text + (settings.backup_dir / "backup-info.json").read_text()
    assert "AGE-SECRET-KEY" not in text and str(identity) not in text


def test_stock_age_cli_decrypts_our_backup_into_an_archive_our_reader_accepts(encrypted_backup, key_file):
    if shutil.which("age") is None:
        pytest.skip("the age CLI is not installed (Debian package age)")
    settings, entry = encrypted_backup
    path = settings.backup_dir / entry["fileName"]
    plain = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(path)], capture_output=True, check=True
    ).stdout
    counts = count_documents(gzip_reader(io.BytesIO(plain)))
    assert counts == {ns: v["documents"] for ns, v in entry["namespaces"].items()}
    assert sum(counts.values()) > 0


def test_the_source_decrypts_with_the_identity_file_and_hashes_the_stored_bytes(encrypted_backup, key_file):
    settings, entry = encrypted_backup
    path = settings.backup_dir / entry["fileName"]
    source = source_for(settings, path, entry)
    with source.open() as opened:
        counts = count_documents(opened.data)
        assert source.location == "local" and opened.encrypted and opened.compressed
        assert opened.finish().hexdigest() == entry["sha256"]  # the stored (encrypted) bytes
    assert counts == {ns: v["documents"] for ns, v in entry["namespaces"].items()}
    # a file given by path: an age file is recognised by its header
    with ArchiveSource(path, identity_file=str(key_file)).open() as opened:
        assert count_documents(opened.data) == counts
    with source.open_stored() as raw:
        assert raw.read(len(AGE_MAGIC)) == AGE_MAGIC


def test_the_source_without_or_with_a_wrong_identity(encrypted_backup, tmp_path):
    settings, entry = encrypted_backup
    path = settings.backup_dir / entry["fileName"]
    with (
        pytest.raises(ArchiveReadError, match="age-encrypted: set SIDECAR_AGE_IDENTITY_FILE"),
        source_for(settings.replace(age_identity_file=""), path, entry).open(),
    ):
        pass
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    with (
        source_for(settings.replace(age_identity_file=str(wrong)), path, entry).open() as opened,
        pytest.raises(EncryptionError) as caught,
    ):
        opened.data.read()
    assert entry["fileName"] in str(caught.value) and str(wrong) in str(caught.value)


def test_tampered_archive_fails_before_anything_trusts_it(encrypted_backup):
    settings, entry = encrypted_backup
    path = settings.backup_dir / entry["fileName"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with source_for(settings, path, entry).open() as opened, pytest.raises(EncryptionError):
        while opened.data.read(1 << 16):
            pass
