"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from sidecar.config import Settings, load_settings


def settings_for(mongo_uri: str, directory: Path, **values: object) -> Settings:
    """Settings for a backup dir under ``directory``; keyword arguments override SIDECAR_* by attribute."""
    env = {
        "SIDECAR_MONGODB_URI": mongo_uri,
        "SIDECAR_BACKUP_DIR": str(directory / "backups"),
        "SIDECAR_LOG_DIR": str(directory / "logs"),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_CONNECT_TIMEOUT_SECONDS": "5",
        "SIDECAR_PITR": "off",  # the oplog archiver runs in the tests that ask for it (pitr="auto")
    }
    env.update({f"SIDECAR_{k.upper()}": str(v) for k, v in values.items()})
    return load_settings(env)
