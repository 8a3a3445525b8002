"""Integrity tests of backup archives: scans, content digests, checks against the catalog, drills,
and the levels that combine them (quick, full, drill; see ``levels.py``).

The modules, each importing only those before it: ``failure`` (VerifyFailed, LEVELS), ``digest``
(content hashes), ``scan`` (the one streaming pass), ``checks`` (a scan against the catalog entry),
``drill`` (restore into scratch databases and compare), ``levels`` (verify_archive).
"""

from sidecar.integrity.checks import compare_file, compare_manifest, restore_problems
from sidecar.integrity.drill import DRILL_PREFIX, Drill, drill_database_name, drop_drill_databases
from sidecar.integrity.failure import LEVELS, VerifyFailed
from sidecar.integrity.levels import VerifyReport, verify_archive
from sidecar.integrity.scan import ArchiveScan, as_source, scan_archive

__all__ = [
    "DRILL_PREFIX",
    "LEVELS",
    "ArchiveScan",
    "Drill",
    "VerifyFailed",
    "VerifyReport",
    "as_source",
    "compare_file",
    "compare_manifest",
    "drill_database_name",
    "drop_drill_databases",
    "restore_problems",
    "scan_archive",
    "verify_archive",
]
