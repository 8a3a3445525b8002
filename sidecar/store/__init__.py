"""Where bytes live: the catalog, the local directory, S3-compatible storage, retention.

Archive bytes go one way in and one way out: ``sink.ArchiveSink`` writes every archive (temp name,
hash, compress, encrypt, fsync, rename, optional bucket tee) and ``source.ArchiveSource`` reads every
archive back (local file or bucket copy, hash, decrypt, gunzip). ``objects`` holds what the places
share (StoreError, ObjectInfo, the upload protocol, the sha256 digest).
"""
