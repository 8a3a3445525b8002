"""The one place that runs a backup, verify, restore or prune job (see core.py)."""

from sidecar.service.base import JobFailed, JobListener, connect
from sidecar.service.core import BackupService

__all__ = ["BackupService", "JobFailed", "JobListener", "connect"]
