"""Content digests: an order-independent hash of raw BSON documents, for the archive and the server.

The sum of the documents' sha256 values modulo 2**256: the same for the archive's documents and for
what a server returns, whatever the order. A drill compares the two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pymongo

from sidecar.archive.bsonstream import split_documents

MOD256 = 1 << 256


def content_hash(documents: Iterable[memoryview | bytes]) -> int:
    return sum(int.from_bytes(hashlib.sha256(doc).digest(), "big") for doc in documents) % MOD256


def combine(first: int, second: int) -> int:
    """The content hash of two sets of documents from the hashes of each."""
    return (first + second) % MOD256


def server_content_hash(coll: pymongo.collection.Collection) -> tuple[int, int]:
    """(documents, content hash) of a collection as the server returns its raw documents."""
    total = count = 0
    for batch in coll.find_raw_batches({}, batch_size=1000):
        documents = list(split_documents(batch))
        total = combine(total, content_hash(documents))
        count += len(documents)
    return count, total
