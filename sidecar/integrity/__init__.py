"""Integrity tests of backup archives: scans, content digests, checks against the catalog, drills,
and the levels that combine them. The modules, each importing only those before it: ``failure``
(VerifyFailed, LEVELS), ``digest`` (content hashes), ``scan`` (the one streaming pass), ``checks``
(a scan against its catalog entry), ``drill`` (restore into scratch databases, compare), ``levels``
(``verify_archive``: quick, full, drill), ``scratch`` (scratch sets compared, differences traced to
slices) and ``pitr`` (the pitr level: the oplog archive replayed from one base backup to the next).
A slice's own content check lives with the slice record (``sidecar.pitr.record.slice_check``).
"""
