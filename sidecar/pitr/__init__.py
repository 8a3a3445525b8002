"""The continuous oplog archive (point-in-time recovery), in four rooms, each importing only those
before it and ``optime`` (oplog positions, shared by all):

- ``record``: what the archive holds. ``slices`` (gzip'd raw BSON streams, written through the store's
  archive sink), ``catalog`` (``oplog/oplog-slices.jsonl``), ``chain`` (do the slices join, where are the
  gaps, which stretches are restorable), ``slice_check`` (one slice's content), ``offsite`` (the
  bucket's copies) and ``retention`` (which copies go).
- ``capture``: how it grows. ``tailer`` (one resuming cursor over ``local.oplog.rs``), ``archiver``
  (cuts the tail into slices), ``runner`` (the archiver in a thread, or alone), ``probe`` (its health
  file), ``cut_request`` and ``cut`` (a backup's oplog cut taken from the archive), ``state`` (what the
  archiver knows, in memory).
- ``find``: operations searched in the slices (``sidecar oplog find``, ``GET /api/backup/oplog``).
- ``planning``: the base backups (``bases``), the pair the pitr level replays (``pair``) and the plan of
  a restore to a point (``restore_point``: base, slices and cut, or a refusal naming the nearest points).

``status`` puts it together with the server's oplog window for the CLI, the API and the metrics.
"""
