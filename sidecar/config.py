"""Settings from SIDECAR_* environment variables and an optional file, validated once at start.

Each setting is declared once in ``SETTINGS``; errors name the variable and say what is accepted.
A ``*_FILE`` variant exists for secrets so they can come from a mounted Kubernetes Secret.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from sidecar.cron import cron_trigger


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


def _timezone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r} (use an IANA name like Asia/Seoul)") from None
    return raw


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


def _optional_int(lo: int) -> Callable[[str], int | None]:
    """Empty means "not set" (e.g. an S3 retention setting that falls back to the local one)."""
    whole = _int(lo)

    def parse(raw: str) -> int | None:
        return None if raw.strip() == "" else whole(raw)

    return parse


def _age_recipients(raw: str) -> tuple[str, ...]:
    from sidecar.engine.encryption import parse_recipients

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


@dataclass(frozen=True)
class _Spec:
    attr: str
    parse: Callable[[str], Any]
    default: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "SIDECAR_" + self.attr.upper()


SETTINGS: tuple[_Spec, ...] = (
    _Spec("mongodb_uri", _str, "mongodb://127.0.0.1:27017", secret=True),
    _Spec("backup_dir", _str, "./backups"),
    _Spec("host", _str, "127.0.0.1"),
    _Spec("port", _int(1, 65535), "5000"),
    _Spec("admin_token", _token, "", secret=True),
    _Spec("read_token", _token, "", secret=True),
    _Spec("metrics_require_token", _bool, "false"),
    _Spec("schedule", _cron, "0 2 * * *"),
    _Spec("timezone", _timezone, "Asia/Seoul"),
    _Spec("retention_days", _int(1), "30"),
    _Spec("retention_min_count", _int(1), "7"),
    _Spec("file_prefix", _prefix, "maekcord-backup"),
    _Spec("engine", _choice("native", "mongodump"), "native"),
    _Spec("compression", _choice("isal", "zlib"), "isal"),
    _Spec("compression_level", _int(0, 9), "1"),
    _Spec("parallel_collections", _int(1, 32), "4"),
    _Spec("database", _str, ""),
    _Spec("ns_include", _patterns, ""),
    _Spec("ns_exclude", _patterns, ""),
    _Spec("oplog", _choice("auto", "on", "off"), "auto"),
    _Spec("connect_timeout_seconds", _float(0.1, 600), "10"),
    _Spec("min_free_bytes", _int(0), str(64 * 1024 * 1024)),
    _Spec("log_dir", _str, "./logs"),
    _Spec("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
    _Spec("pushgateway_url", _str, ""),
    _Spec("alertmanager_url", _str, ""),
    _Spec("mongodump_path", _str, "mongodump"),
    _Spec("mongorestore_path", _str, "mongorestore"),
    _Spec("alert_backup_max_age_seconds", _int(60), str(26 * 3600)),
    _Spec("alert_verify_max_age_seconds", _int(60), str(26 * 3600)),
    _Spec("alert_drill_max_age_seconds", _int(60), str(8 * 24 * 3600)),
    _Spec("alert_size_drop_ratio", _float(0.0, 1.0), "0.5"),
    _Spec("alert_disk_free_min_ratio", _float(0.0, 1.0), "0.10"),
    _Spec("drill_schedule", _cron, "0 4 * * 0"),
    _Spec("verify_after_backup", _choice("off", "quick", "full"), "full"),
    _Spec("schedule_misfire_grace_seconds", _int(1), "3600"),
    _Spec("health_interval_seconds", _float(0.5, 3600), "5"),
    _Spec("shutdown_grace_seconds", _float(0, 86400), "30"),
    _Spec("log_retention_days", _int(1, 3650), "7"),
    # tiered retention (store/retention.py); SIDECAR_RETENTION_MIN_COUNT is "keep the last N"
    _Spec("retention_keep_daily", _int(0), "0"),
    _Spec("retention_keep_weekly", _int(0), "0"),
    _Spec("retention_keep_monthly", _int(0), "0"),
    _Spec("retention_max_age_days", _int(0), "0"),
    # off-site copies (store/s3.py); credentials only from AWS_* variables or a credentials file
    _Spec("s3_endpoint", _str, ""),
    _Spec("s3_bucket", _str, ""),
    _Spec("s3_prefix", _s3_prefix, ""),
    _Spec("s3_region", _str, "us-east-1"),
    _Spec("s3_path_style", _bool, "true"),
    _Spec("s3_storage_class", _storage_class, ""),
    _Spec("s3_sse", _choice("none", "AES256", "aws:kms"), "none"),
    _Spec("s3_sse_kms_key_id", _str, ""),
    _Spec("s3_upload_mode", _choice("after-write", "streaming"), "after-write"),
    _Spec("s3_part_size_bytes", _int(5 * 1024 * 1024, 5 * 1024**3), str(16 * 1024 * 1024)),
    # retention in the bucket; empty = the same as the local setting
    _Spec("s3_retention_days", _optional_int(1), ""),
    _Spec("s3_retention_min_count", _optional_int(1), ""),
    _Spec("s3_retention_keep_daily", _optional_int(0), ""),
    _Spec("s3_retention_keep_weekly", _optional_int(0), ""),
    _Spec("s3_retention_keep_monthly", _optional_int(0), ""),
    _Spec("s3_retention_max_age_days", _optional_int(0), ""),
    # encryption at rest (engine/encryption.py)
    _Spec("age_recipients", _age_recipients, ""),
    _Spec("age_identity_file", _str, ""),
    # restore drills (verify.py): a scratch server for drills; empty = the backed-up server itself
    _Spec("drill_mongodb_uri", _str, "", secret=True),
)


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str
    backup_dir: Path
    host: str
    port: int
    admin_token: str
    read_token: str
    metrics_require_token: bool
    schedule: str
    timezone: str
    retention_days: int
    retention_min_count: int
    file_prefix: str
    engine: str
    compression: str
    compression_level: int
    parallel_collections: int
    database: str
    ns_include: tuple[str, ...]
    ns_exclude: tuple[str, ...]
    oplog: str
    connect_timeout_seconds: float
    min_free_bytes: int
    log_dir: Path
    log_level: str
    pushgateway_url: str
    alertmanager_url: str
    mongodump_path: str
    mongorestore_path: str
    alert_backup_max_age_seconds: int
    alert_verify_max_age_seconds: int
    alert_drill_max_age_seconds: int
    alert_size_drop_ratio: float
    alert_disk_free_min_ratio: float
    drill_schedule: str = "0 4 * * 0"
    verify_after_backup: str = "full"
    schedule_misfire_grace_seconds: int = 3600
    health_interval_seconds: float = 5.0
    shutdown_grace_seconds: float = 30.0
    log_retention_days: int = 7
    retention_keep_daily: int = 0
    retention_keep_weekly: int = 0
    retention_keep_monthly: int = 0
    retention_max_age_days: int = 0
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_path_style: bool = True
    s3_storage_class: str = ""
    s3_sse: str = "none"
    s3_sse_kms_key_id: str = ""
    s3_upload_mode: str = "after-write"
    s3_part_size_bytes: int = 16 * 1024 * 1024
    s3_retention_days: int | None = None
    s3_retention_min_count: int | None = None
    s3_retention_keep_daily: int | None = None
    s3_retention_keep_weekly: int | None = None
    s3_retention_keep_monthly: int | None = None
    s3_retention_max_age_days: int | None = None
    age_recipients: tuple[str, ...] = ()
    age_identity_file: str = ""
    drill_mongodb_uri: str = ""

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.mongodb_uri)

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

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
    values["backup_dir"] = Path(values["backup_dir"]).expanduser()
    values["log_dir"] = Path(values["log_dir"]).expanduser()
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
        from sidecar.engine.encryption import EncryptionError, load_identities

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
