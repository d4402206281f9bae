"""jsarchive: archive NATS JetStream streams into object storage and restore them from it.

The public Python API:

- :func:`pipeline.backup.backup_stream` / :class:`pipeline.backup.BackupOptions`
- :func:`pipeline.restore.restore_stream` / :class:`pipeline.restore.RestoreOptions`
- :class:`pipeline.repository.Repository` (listing, resolving and loading backups)
- :mod:`pipeline.keys` (key slots) and :func:`pipeline.keys.generate_identity`
- :func:`pipeline.listing.list_backups`, :func:`pipeline.thaw.thaw_backup`
- :mod:`pipeline.account`: ``backup_account``, ``restore_account``, ``seal_run`` (account sets, sharded runs)
- :mod:`pipeline.natscli`: ``export_backup``, ``import_directory`` (natscli backup directories)
- :mod:`pipeline.inspect`: ``inspect_backup``, ``iter_messages`` (read backups without a server)

Every failure is a :class:`pipeline.errors.JsArchiveError` with a message meant for a person and an exit code.
"""

__version__ = "0.1.0"
