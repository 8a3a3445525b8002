"""Request checking: bodies are JSON objects with known fields of the right types; names are safe.

Every failure is an ``ApiError`` (4xx) whose message names the field and what is accepted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecar import time_input
from sidecar.api.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
MAX_FILE_NAME = 255
_NS_PATTERN = re.compile(r"[^.\s]+(\..+)?")
_BOOL = {"true": True, "false": False}


@dataclass(frozen=True)
class Field:
    kind: str  # str, bool, enum, patterns, namespace, fileName
    required: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = 255


def bad(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


async def json_body(request: web.Request, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The body as a checked dict; an absent or empty body is ``{}``."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise bad(
            "body_too_large",
            f"request body of {request.content_length} bytes is over the limit of {MAX_BODY_BYTES}",
            413,
        )
    raw = await request.read()  # aiohttp stops at client_max_size with 413
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise bad("malformed_json", "request body is not UTF-8 encoded JSON") from None
        except ValueError as exc:
            raise bad("malformed_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad("invalid_body", f"request body must be a JSON object, got {_json_type(data)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(fields) or "none"
        raise bad("unknown_field", f"unknown field(s): {', '.join(unknown)} (allowed: {allowed})")
    checked: dict[str, Any] = {}
    for name, spec in fields.items():
        if name in data and data[name] is None:
            raise bad("invalid_field", f"field {name} must not be null (leave it out instead)")
        if name not in data:
            if spec.required:
                raise bad("missing_field", f"field {name} is required")
            continue
        checked[name] = _check(name, spec, data[name])
    return checked


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else "an object"


def _check(name: str, spec: Field, value: Any) -> Any:
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad("invalid_field", f"field {name} must be true or false, got {_json_type(value)}")
        return value
    if spec.kind == "patterns":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad(
                "invalid_field",
                f"field {name} must be a namespace pattern or an array of them, got {_json_type(value)}",
            )
        return [namespace(name, item) for item in items]
    if not isinstance(value, str):
        raise bad("invalid_field", f"field {name} must be a string, got {_json_type(value)}")
    if spec.kind == "enum":
        if value not in spec.choices:
            raise bad(
                "invalid_field", f"field {name} must be one of {', '.join(spec.choices)}, got {value!r}"
            )
        return value
    if spec.kind == "fileName":
        return file_name(value, name)
    if spec.kind == "namespace":
        return namespace(name, value)
    if len(value) > spec.max_length:
        raise bad("invalid_field", f"field {name} is longer than {spec.max_length} characters")
    return value


def namespace(name: str, value: str) -> str:
    if not value or len(value) > 255 or not _NS_PATTERN.fullmatch(value):
        raise bad(
            "invalid_field",
            f"field {name}: {value[:80]!r} is not a namespace pattern like db.coll, db.* or *.patients",
        )
    return value


def file_name(value: str, name: str = "fileName") -> str:
    """A bare archive name from the catalog: no directories, no '..', nothing odd."""
    if not value:
        raise bad("invalid_file_name", f"field {name} must not be empty")
    if "/" in value or "\\" in value:
        raise bad("invalid_file_name", f"field {name} must be a bare file name from the catalog, not a path")
    if ".." in value:
        raise bad("invalid_file_name", f"field {name} must not contain '..'")
    if len(value) > MAX_FILE_NAME or any(ord(c) < 32 for c in value):
        raise bad("invalid_file_name", f"field {name} is not a valid file name")
    return value


def query(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise bad(
            "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)} (allowed: {accepted})"
        )
    for key in request.query:
        if len(request.query.getall(key)) > 1:
            raise bad("invalid_parameter", f"query parameter {key} is given more than once")
    return request.query


def flag(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    value = _BOOL.get(raw)
    if value is None:
        raise bad("invalid_parameter", f"query parameter {name} must be true or false, got {raw[:40]!r}")
    return value


def integer(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,12}", raw):
        raise bad("invalid_parameter", f"query parameter {name} must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad("invalid_parameter", f"query parameter {name} must be between {lo} and {hi}, got {value}")
    return value


def moment(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """A time as ``time_input`` reads one, with its zone (``2024-12-01T02:00:00Z``, ``now-1h``)."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return time_input.parse_moment(raw)
    except ValueError as exc:
        raise bad("invalid_parameter", f"query parameter {name}: {exc}") from None


def choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw not in choices:
        raise bad(
            "invalid_parameter",
            f"query parameter {name} must be one of {', '.join(choices)}, got {raw[:40]!r}",
        )
    return raw
