"""The oplog replay: archived oplog entries applied to a restored base, up to a cut.

``engine`` drives it; ``units`` groups raw entries into what is applied whole (the cut, transactions,
nested applyOps); ``scope`` decides which namespaces are written under which names; ``crud`` and
``commands`` turn entries into idempotent writes and commands; ``apply`` applies them (ordinary writes,
or ``applyOps`` on mongod); ``doc_diff`` and ``bson_raw`` apply mongod's ``$v: 2`` diffs to raw
documents; ``archive_oplog`` replays a mongodump archive's own oplog (``mongorestore --oplogReplay``).
"""
