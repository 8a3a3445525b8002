"""The ``metadata.json`` text mongodump stores per collection: canonical Extended JSON v2, compact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.son import SON

_CANONICAL = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL,
    uuid_representation=json_util.UuidRepresentation.STANDARD,
    document_class=SON,
)


def to_canonical_json(value: Any) -> str:
    return json_util.dumps(value, json_options=_CANONICAL, separators=(",", ":"), ensure_ascii=False)


def build_metadata_json(
    collection: str,
    *,
    options: Mapping[str, Any] | None,
    indexes: Sequence[Mapping[str, Any]],
    uuid: Binary | bytes | None,
    type_: str,
) -> str:
    """Field order follows mongodump's Metadata struct: options (when set), indexes, uuid, name, type."""
    doc: SON = SON()
    if options:
        doc["options"] = options
    doc["indexes"] = list(indexes)
    if uuid:
        doc["uuid"] = bytes(uuid).hex()
    doc["collectionName"] = collection
    doc["type"] = type_
    return to_canonical_json(doc)


def parse_metadata_json(text: str) -> dict[str, Any]:
    """Decode a metadata.json text back into BSON values (ints stay Int32/Int64 faithful)."""
    if not text:
        return {}
    try:
        return json_util.loads(text, json_options=_CANONICAL)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"metadata is not Extended JSON: {exc}") from exc
