"""Where bytes live: the catalog, the local directory, S3-compatible storage, retention. Archive bytes
go one way in (``sink.ArchiveSink``) and one way out (``source.ArchiveSource``).
"""
