"""Sample data for the demo, the tests and the benchmarks: a medical-records shape with every BSON type.

Deterministic (seeded) so that tests can compare restored data with what was loaded.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid

import pymongo
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation

SURNAMES = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임"]
GIVEN = ["민준", "서연", "도윤", "하은", "시우", "지우", "예준", "수아", "주원", "지호"]
DIAGNOSES = ["고혈압", "당뇨병", "천식", "독감", "골절", "편두통", "위염", "비염"]
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _patient(rng: random.Random, i: int) -> dict:
    return {
        "_id": ObjectId(f"{i:024x}"),
        "patientId": f"P{i:07d}",
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN),
        "birthDate": dt.datetime(1930 + rng.randrange(90), rng.randrange(1, 13), rng.randrange(1, 28)),
        "ward": rng.choice(["내과", "외과", "소아과", "응급실"]),
        "active": rng.random() < 0.8,
        "balance": Decimal128(f"{rng.randrange(0, 10**7)}.{rng.randrange(100):02d}"),
        "visits": Int64(rng.randrange(0, 2**40)),
        "diagnoses": [
            {"code": rng.choice(DIAGNOSES), "at": EPOCH + dt.timedelta(days=rng.randrange(700))}
            for _ in range(rng.randrange(1, 4))
        ],
        "notes": "진료 기록 " * rng.randrange(1, 20),
    }


def _edge_cases() -> list[dict]:
    return [
        {
            "_id": "int-extremes",
            "min64": Int64(-(2**63)),
            "max64": Int64(2**63 - 1),
            "min32": -(2**31),
            "max32": 2**31 - 1,
            "neg_zero": -0.0,
            "inf": float("inf"),
            "nan": float("nan"),
        },
        {
            "_id": "dates",
            "before_1970": dt.datetime(1901, 12, 13, 20, 45, 52),
            "epoch": dt.datetime(1970, 1, 1),
            "far": dt.datetime(9999, 12, 31, 23, 59, 59),
        },
        {
            "_id": "binary",
            "bin": Binary(bytes(range(256))),
            "subtype": Binary(b"\x00\x01", 0x80),
            "uuid": Binary.from_uuid(
                uuid.UUID("12345678-1234-5678-1234-567812345678"), UuidRepresentation.STANDARD
            ),
        },
        {
            "_id": "special",
            "regex": Regex("^김", "i"),
            "py_re": re.compile("a+b", re.IGNORECASE),
            "min": MinKey(),
            "max": MaxKey(),
            "code": Code("function(){return 1}"),
            "ts": Timestamp(1700000000, 7),
            "null": None,
            "oid": ObjectId("5f1b2c3d4e5f60718293a4b5"),
        },
        {
            "_id": "nested",
            "deep": [[1, [2, [3, [4, {"k": [5, {"x": "깊다"}]}]]]]],
            "empty_arr": [],
            "empty_doc": {},
        },
        {"_id": "korean", "text": "환자 기록은 안전하게 백업되어야 합니다. 🏥", "키": "값"},
    ]


def load_sample_data(client: pymongo.MongoClient, *, patients: int = 500, seed: int = 7) -> dict[str, int]:
    """Create the sample databases from scratch; returns expected document counts per namespace."""
    rng = random.Random(seed)
    for name in ("maekcord", "maekcord_files", "analytics"):
        client.drop_database(name)
    main = client.maekcord
    main.patients.insert_many([_patient(rng, i) for i in range(patients)])
    main.patients.create_index("patientId", unique=True, name="patientId_unique")
    main.patients.create_index([("ward", 1), ("birthDate", -1)], name="ward_birth")
    main.patients.create_index("ward", partialFilterExpression={"active": True}, name="active_ward")
    main.appointments.insert_many(
        [
            {"patientId": f"P{rng.randrange(patients):07d}", "at": EPOCH + dt.timedelta(hours=i)}
            for i in range(200)
        ]
    )
    main.sessions.create_index("createdAt", expireAfterSeconds=3600, name="session_ttl")
    main.sessions.insert_many([{"user": f"u{i}", "createdAt": dt.datetime(2030, 1, 1)} for i in range(10)])
    main.create_collection("audit_log", capped=True, size=1 << 20, max=1000)
    main.audit_log.insert_many([{"event": "login", "seq": i} for i in range(50)])
    main.create_collection(
        "prescriptions", validator={"$jsonSchema": {"bsonType": "object", "required": ["drug"]}}
    )
    main.prescriptions.insert_many([{"drug": "아스피린", "mg": 100}, {"drug": "이부프로펜", "mg": 200}])
    main.create_collection("active_patients", viewOn="patients", pipeline=[{"$match": {"active": True}}])
    main.create_collection("pending_uploads")
    main["records.archive"].insert_many([{"year": 2020 + i} for i in range(5)])
    files = client.maekcord_files
    files.attachments.insert_one({"_id": "xray-001", "image": Binary(rng.randbytes(2 * 1024 * 1024))})
    client.analytics.edge_cases.insert_many(_edge_cases())
    return {
        "maekcord.patients": patients,
        "maekcord.appointments": 200,
        "maekcord.sessions": 10,
        "maekcord.audit_log": 50,
        "maekcord.prescriptions": 2,
        "maekcord.active_patients": 0,
        "maekcord.pending_uploads": 0,
        "maekcord.records.archive": 5,
        "maekcord_files.attachments": 1,
        "analytics.edge_cases": 6,
    }


def load_bulk_data(
    client: pymongo.MongoClient, *, target_bytes: int, collections: int = 4, db_name: str = "bench"
) -> int:
    """Fill ``collections`` collections with ~1 KiB patient-like documents up to ``target_bytes``."""
    rng = random.Random(11)
    client.drop_database(db_name)
    per_coll, batch, written = target_bytes // collections, 2000, 0
    for c in range(collections):
        coll, size, i = client[db_name][f"records{c}"], 0, 0
        while size < per_coll:
            docs = [{**_patient(rng, c * 10**7 + i + k), "pad": rng.randbytes(600)} for k in range(batch)]
            coll.insert_many(docs, ordered=False)
            i += batch
            size += batch * 1100
        written += size
    return written
