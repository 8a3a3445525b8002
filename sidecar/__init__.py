"""mongo-backup-sidecar: MongoDB backups with proof that they restore, visible to Prometheus."""

__version__ = "0.1.0"
