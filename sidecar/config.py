"""Settings from SIDECAR_* environment variables and an optional file, validated once at start.

Each setting is declared once, as a field of ``Settings`` with its parser and default (``SETTINGS``
lists them for the loader); errors name the variable and say what is accepted.
A ``*_FILE`` variant exists for secrets so they can come from a mounted Kubernetes Secret.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from sidecar.cron import cron_trigger
from sidecar.time_input import zone_name


class ConfigError(ValueError):
    """A setting is wrong; the message names it and what to fix."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
        if lo is not None and hi is None and value < lo:
            raise ValueError(f"must be at least {lo}, got {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return raw

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _patterns(raw: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    for item in items:
        if not re.fullmatch(r"[^.\s]+(\..+)?", item):
            raise ValueError(f"{item!r} is not a namespace pattern like db.coll, db.*, *.patients")
    return items


def _cron(raw: str) -> str:
    if raw.strip() in {"", "off"}:
        return ""
    parts = raw.split()
    if len(parts) != 5:
        raise ValueError(f"must be a 5-field cron expression like '0 2 * * *' or 'off', got {raw!r}")
    try:
        cron_trigger(raw, "UTC")
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {raw!r}: {exc}") from None
    return raw


def _token(raw: str) -> str:
    if raw and len(raw) < 16:
        raise ValueError("must be at least 16 characters long")
    return raw


def _prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw):
        raise ValueError(f"must be letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _str(raw: str) -> str:
    return raw


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _optional_int(lo: int) -> Callable[[str], int | None]:
    """Empty means "not set" (e.g. an S3 retention setting that falls back to the local one)."""
    whole = _int(lo)

    def parse(raw: str) -> int | None:
        return None if raw.strip() == "" else whole(raw)

    return parse


def _age_recipients(raw: str) -> tuple[str, ...]:
    from sidecar.codec.age_stream import parse_recipients

    # ValueError names a bad recipient by position, never echoes a whole key
    return tuple(str(recipient) for recipient in parse_recipients(raw))


def _s3_prefix(raw: str) -> str:
    if raw.startswith("/") or "//" in raw or not re.fullmatch(r"[A-Za-z0-9!_.*'()/=-]*", raw):
        raise ValueError(f"must be an object key prefix like 'mongo/prod/' (no leading '/'), got {raw!r}")
    return raw


def _storage_class(raw: str) -> str:
    if raw and not re.fullmatch(r"[A-Z][A-Z0-9_]*", raw):
        raise ValueError(f"must be an S3 storage class like STANDARD or STANDARD_IA, got {raw!r}")
    return raw


def _setting(parse: Callable[[str], Any], default: str, *, secret: bool = False) -> Any:
    """A ``Settings`` field read from ``SIDECAR_<NAME>`` by ``parse``; ``default`` is the raw text used
    when it is unset. A secret also reads ``SIDECAR_<NAME>_FILE`` and never shows in ``repr``."""
    return field(repr=not secret, metadata={"parse": parse, "default": default, "secret": secret})


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str = _setting(_str, "mongodb://127.0.0.1:27017", secret=True)
    backup_dir: Path = _setting(_path, "./backups")  # noqa: RUF009 - not a default, a declaration
    host: str = _setting(_str, "127.0.0.1")
    port: int = _setting(_int(1, 65535), "5000")
    admin_token: str = _setting(_token, "", secret=True)
    read_token: str = _setting(_token, "", secret=True)
    metrics_require_token: bool = _setting(_bool, "false")
    schedule: str = _setting(_cron, "0 2 * * *")
    timezone: str = _setting(zone_name, "Asia/Seoul")
    retention_days: int = _setting(_int(1), "30")
    retention_min_count: int = _setting(_int(1), "7")
    file_prefix: str = _setting(_prefix, "maekcord-backup")
    engine: str = _setting(_choice("native", "mongodump"), "native")
    compression: str = _setting(_choice("isal", "zlib"), "isal")
    compression_level: int = _setting(_int(0, 9), "1")
    parallel_collections: int = _setting(_int(1, 32), "4")
    database: str = _setting(_str, "")
    ns_include: tuple[str, ...] = _setting(_patterns, "")
    ns_exclude: tuple[str, ...] = _setting(_patterns, "")
    oplog: str = _setting(_choice("auto", "on", "off"), "auto")
    connect_timeout_seconds: float = _setting(_float(0.1, 600), "10")
    min_free_bytes: int = _setting(_int(0), str(64 * 1024 * 1024))
    log_dir: Path = _setting(_path, "./logs")  # noqa: RUF009
    log_level: str = _setting(_choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
    pushgateway_url: str = _setting(_str, "")
    alertmanager_url: str = _setting(_str, "")
    mongodump_path: str = _setting(_str, "mongodump")
    mongorestore_path: str = _setting(_str, "mongorestore")
    alert_backup_max_age_seconds: int = _setting(_int(60), str(26 * 3600))
    alert_verify_max_age_seconds: int = _setting(_int(60), str(26 * 3600))
    alert_drill_max_age_seconds: int = _setting(_int(60), str(8 * 24 * 3600))
    alert_pitr_verify_max_age_seconds: int = _setting(_int(60), str(8 * 24 * 3600))
    alert_size_drop_ratio: float = _setting(_float(0.0, 1.0), "0.5")
    alert_disk_free_min_ratio: float = _setting(_float(0.0, 1.0), "0.10")
    # the oplog archive (docs/alerts.md): the RPO limit, and the shortest server oplog window; 0 = the
    # backup-age limit (the backup interval plus a margin)
    alert_pitr_rpo_seconds: int = _setting(_int(1), "300")
    alert_oplog_window_min_seconds: int = _setting(_int(0), "0")
    drill_schedule: str = _setting(_cron, "0 4 * * 0")
    # the pitr integrity level (integrity/pitr.py): the archive replayed from one base backup to the next
    pitr_verify_schedule: str = _setting(_cron, "0 5 * * 0")
    verify_after_backup: str = _setting(_choice("off", "quick", "full"), "full")
    schedule_misfire_grace_seconds: int = _setting(_int(1), "3600")
    health_interval_seconds: float = _setting(_float(0.5, 3600), "5")
    shutdown_grace_seconds: float = _setting(_float(0, 86400), "30")
    log_retention_days: int = _setting(_int(1, 3650), "7")
    # tiered retention (store/retention.py); SIDECAR_RETENTION_MIN_COUNT is "keep the last N"
    retention_keep_daily: int = _setting(_int(0), "0")
    retention_keep_weekly: int = _setting(_int(0), "0")
    retention_keep_monthly: int = _setting(_int(0), "0")
    retention_max_age_days: int = _setting(_int(0), "0")
    # off-site copies (store/s3.py); credentials only from AWS_* variables or a credentials file
    s3_endpoint: str = _setting(_str, "")
    s3_bucket: str = _setting(_str, "")
    s3_prefix: str = _setting(_s3_prefix, "")
    s3_region: str = _setting(_str, "us-east-1")
    s3_path_style: bool = _setting(_bool, "true")
    s3_storage_class: str = _setting(_storage_class, "")
    s3_sse: str = _setting(_choice("none", "AES256", "aws:kms"), "none")
    s3_sse_kms_key_id: str = _setting(_str, "")
    s3_upload_mode: str = _setting(_choice("after-write", "streaming"), "after-write")
    s3_part_size_bytes: int = _setting(_int(5 * 1024 * 1024, 5 * 1024**3), str(16 * 1024 * 1024))
    # retention in the bucket; empty = the same as the local setting
    s3_retention_days: int | None = _setting(_optional_int(1), "")
    s3_retention_min_count: int | None = _setting(_optional_int(1), "")
    s3_retention_keep_daily: int | None = _setting(_optional_int(0), "")
    s3_retention_keep_weekly: int | None = _setting(_optional_int(0), "")
    s3_retention_keep_monthly: int | None = _setting(_optional_int(0), "")
    s3_retention_max_age_days: int | None = _setting(_optional_int(0), "")
    # encryption at rest (codec/age_stream.py)
    age_recipients: tuple[str, ...] = _setting(_age_recipients, "")
    age_identity_file: str = _setting(_str, "")
    # where restore proofs (drills, the pitr check) run (integrity/proof_server.py): a scratch server's
    # URI; empty = a throwaway embedded server in SIDECAR_DRILL_DIR (empty = <backup dir>/.drill);
    # "source" = the backed-up server itself, by the operator's opt-in (refused when the server does
    # not report its free disk, unless SIDECAR_DRILL_ALLOW_UNKNOWN_DISK)
    drill_mongodb_uri: str = _setting(_str, "", secret=True)
    drill_dir: str = _setting(_str, "")
    drill_allow_unknown_disk: bool = _setting(_bool, "false")
    # point-in-time recovery (pitr/): the continuous oplog archive; auto = on for a replica set member
    pitr: str = _setting(_choice("auto", "on", "off"), "auto")
    pitr_slice_seconds: float = _setting(_float(0.1, 86400), "60")
    pitr_slice_max_bytes: int = _setting(_int(1024, 1024**3), str(16 * 1024 * 1024))
    # slice retention (pitr/record/retention.py): 0 = back to the oldest retained base backup; N shortens the
    # point-in-time window to about N days (the slices a retained base backup's own cut needs stay)
    pitr_retention_days: int = _setting(_int(0, 36500), "0")
    # how long a backup waits for the archive to hold its cut before it reads the server's oplog itself
    pitr_cut_wait_seconds: float = _setting(_float(0.0, 3600), "30")
    # writer threads of a point-in-time restore's replay (engine/replay/parallel.py); 0 = one, in oplog order
    pitr_replay_writers: int = _setting(_int(0, 16), "4")

    @property
    def oplog_window_min_seconds(self) -> int:
        """The server's oplog must hold at least this long: the next resume after an outage must not gap."""
        return self.alert_oplog_window_min_seconds or self.alert_backup_max_age_seconds

    @property
    def drill_directory(self) -> Path:
        """Where the embedded scratch servers of the proofs live: on the backup directory's volume."""
        return Path(self.drill_dir).expanduser() if self.drill_dir else self.backup_dir / ".drill"

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.mongodb_uri)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def public_view(self) -> dict[str, Any]:
        """Settings safe to show in status output: secrets masked, URI redacted."""
        view: dict[str, Any] = {}
        for spec in SETTINGS:
            value = getattr(self, spec.attr)
            if spec.attr == "mongodb_uri":
                value = self.redacted_uri
            elif spec.secret:
                value = "set" if value else "unset"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            view[spec.env] = value
        return view


@dataclass(frozen=True)
class _Spec:
    attr: str
    parse: Callable[[str], Any]
    default: str
    secret: bool

    @property
    def env(self) -> str:
        return "SIDECAR_" + self.attr.upper()


SETTINGS: tuple[_Spec, ...] = tuple(_Spec(f.name, **f.metadata) for f in dataclasses.fields(Settings))


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ***, for logs and errors."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable MongoDB URI>"
    if parts.password is None:
        return uri
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def uri_hosts(uri: str) -> str:
    """The host list of a MongoDB URI, for error messages that must not carry credentials."""
    try:
        return urlsplit(uri).netloc.rpartition("@")[2] or uri
    except ValueError:
        return "<unparseable MongoDB URI>"


def _load_file(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SIDECAR_CONFIG_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"SIDECAR_CONFIG_FILE: {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"SIDECAR_CONFIG_FILE: {path} must hold a mapping of SIDECAR_* keys")
    _refuse_unknown(data, f"SIDECAR_CONFIG_FILE ({path})")
    return {str(k): "" if v is None else _scalar(v) for k, v in data.items()}


_NOT_SETTINGS = {"SIDECAR_CONFIG_FILE"}


def _known_names() -> set[str]:
    return {spec.env for spec in SETTINGS} | {spec.env + "_FILE" for spec in SETTINGS if spec.secret}


def _refuse_unknown(names: Mapping[str, Any], where: str) -> None:
    """A misspelt setting would silently fall back to its default: refuse it instead."""
    known = _known_names()
    for name in sorted(str(n) for n in names):
        if name not in known and not name.startswith("SIDECAR_TEST_"):
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{name}: unknown setting in the {where}{hint}")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _read_secret_file(env_name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{env_name}_FILE: cannot read {path}: {exc.strerror}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first wrong one."""
    env = dict(os.environ if environ is None else environ)
    source: dict[str, str] = {}
    if env.get("SIDECAR_CONFIG_FILE"):
        source.update(_load_file(env["SIDECAR_CONFIG_FILE"]))
    from_env = {k: v for k, v in env.items() if k.startswith("SIDECAR_") and k not in _NOT_SETTINGS}
    _refuse_unknown(from_env, "environment")
    source.update(from_env)
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = source.get(spec.env)
        file_path = source.get(spec.env + "_FILE")
        if spec.secret and file_path and raw is None:
            raw = _read_secret_file(spec.env, file_path)
        if raw is None:
            raw = spec.default
        try:
            values[spec.attr] = spec.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{spec.env}: {exc}") from None
    values.update(overrides)
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.admin_token and settings.admin_token == settings.read_token:
        raise ConfigError("SIDECAR_READ_TOKEN: must differ from SIDECAR_ADMIN_TOKEN")
    if settings.compression == "isal" and settings.compression_level > 3:
        raise ConfigError(
            f"SIDECAR_COMPRESSION_LEVEL: isal takes 0..3, got {settings.compression_level} "
            "(or set SIDECAR_COMPRESSION=zlib for levels 1..9)"
        )
    if not settings.mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("SIDECAR_MONGODB_URI: must start with mongodb:// or mongodb+srv://")
    drill = settings.drill_mongodb_uri
    if drill and drill != "source" and not drill.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(
            "SIDECAR_DRILL_MONGODB_URI: must be empty (a throwaway embedded server), a mongodb:// or "
            "mongodb+srv:// URI of a scratch server, or 'source' (the backed-up server, by opt-in)"
        )
    _check_offsite(settings)


def _check_offsite(settings: Settings) -> None:
    """S3 and age settings that only make sense together; the identity file is read once here."""
    if settings.s3_sse_kms_key_id and settings.s3_sse != "aws:kms":
        raise ConfigError("SIDECAR_S3_SSE_KMS_KEY_ID: needs SIDECAR_S3_SSE=aws:kms")
    if settings.s3_endpoint and not settings.s3_endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"SIDECAR_S3_ENDPOINT: must start with http:// or https://, got {settings.s3_endpoint!r}"
        )
    if not settings.s3_bucket and (settings.s3_endpoint or settings.s3_upload_mode == "streaming"):
        raise ConfigError("SIDECAR_S3_BUCKET: must be set when SIDECAR_S3_ENDPOINT or streaming upload is")
    if settings.age_identity_file:
        from sidecar.codec.age_stream import EncryptionError, load_identities

        try:
            load_identities(settings.age_identity_file)
        except EncryptionError as exc:
            raise ConfigError(f"SIDECAR_AGE_IDENTITY_FILE: {exc}") from None


def check_backup_dir(settings: Settings) -> None:
    """Exists or can be created, is writable, has free space: say what to fix otherwise."""
    path = settings.backup_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"SIDECAR_BACKUP_DIR: cannot create {path}: {exc.strerror}; "
            f"create it and give this user write access (chown/chmod 755)"
        ) from None
    if not path.is_dir():
        raise ConfigError(f"SIDECAR_BACKUP_DIR: {path} exists but is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"SIDECAR_BACKUP_DIR: {path} is not writable by uid {os.getuid()}: {exc.strerror}; "
            f"fix with: chown -R {os.getuid()}:{os.getgid()} {path} && chmod 755 {path}"
        ) from None
    free = shutil.disk_usage(path).free
    if free < settings.min_free_bytes:
        raise ConfigError(
            f"SIDECAR_BACKUP_DIR: only {free} bytes free in {path}, below SIDECAR_MIN_FREE_BYTES="
            f"{settings.min_free_bytes}; free space (df -h {path}) or prune old backups (sidecar prune)"
        )
