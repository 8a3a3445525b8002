"""The one place that runs a job: backup, verify (pitr_verify: the oplog archive's), restore, prune.

Each job kind is a module of functions of one ``JobContext`` (context.py); ``BackupService`` is that
context with the job kinds as methods, and ``JobRunner`` (runner.py) runs them in worker threads for
the event loop. The scheduler, the HTTP API, the CLI and the CronJob mode all call these, so every
path takes the same lock, leaves the same records and is counted the same.
"""

from sidecar.service import backup, pitr_verify, prune, restore, verify
from sidecar.service.context import JobContext, JobFailed, JobListener, connect
from sidecar.service.runner import JobRunner, ShuttingDown
from sidecar.store.catalog import Entry


class BackupService(JobContext):
    run_backup = backup.run_backup
    run_verify = verify.run_verify
    run_drill = verify.run_drill
    run_pitr_verify = pitr_verify.run_pitr_verify
    resolve_archive = verify.resolve_archive
    run_restore = restore.run_restore
    run_prune = prune.run_prune
    plan_prune = prune.plan_prune

    def list_backups(self) -> list[Entry]:
        return self.catalog.load()


__all__ = ["BackupService", "JobContext", "JobFailed", "JobListener", "JobRunner", "ShuttingDown", "connect"]
