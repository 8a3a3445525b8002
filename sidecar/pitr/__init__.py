"""The continuous oplog archive (point-in-time recovery, capture side).

``archiver`` tails ``local.oplog.rs`` (``tailer``) and cuts it into slices (``slices``: gzip'd raw BSON
streams, written through the store's archive sink) recorded in their own catalog (``catalog``:
``oplog/oplog-slices.jsonl``). ``chain`` proves offline that the slices join and finds the gaps and the
restorable windows; ``status`` puts it together with the server's oplog window for the CLI, the API and
the metrics; ``runner`` runs the archiver in a thread (``sidecar serve``) or alone (``sidecar pitr stream``).
``find`` searches the slices for operations (``sidecar oplog find``, ``GET /api/backup/oplog``).
``plan`` picks the base backup, slices and cut of a restore to a point (or refuses it, naming the
nearest restorable points).
"""
