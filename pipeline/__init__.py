"""jsarchive: archive NATS JetStream streams into object storage and restore them from it.

The public Python API:

- :func:`pipeline.flows.backup.backup_stream` / :class:`pipeline.flows.backup.BackupOptions`
- :func:`pipeline.flows.restore.restore_stream` / :class:`pipeline.flows.restore.RestoreOptions`
- :class:`pipeline.archive.repository.Repository` (listing, resolving and loading backups)
- :mod:`pipeline.keys.keyring` (key slots) and :func:`pipeline.keys.keyring.generate_identity`
- :func:`pipeline.ops.listing.list_backups`, :func:`pipeline.ops.thaw.thaw_backup`
- :func:`pipeline.ops.account_backup.backup_account`, :func:`pipeline.ops.account_restore.restore_account`,
  :func:`pipeline.archive.runs.seal_run` (account sets, sharded runs)
- :class:`pipeline.jetstream.placement.RestoreTarget` (where a restore lands: cluster, tags, replicas)
- :mod:`pipeline.ops.natscli`: ``export_backup``, ``import_directory`` (natscli backup directories)
- :mod:`pipeline.archive.inspect`: ``inspect_backup``, ``iter_messages`` (read backups without a server)

Every failure is a :class:`pipeline.base.errors.JsArchiveError` with a message meant for a person and an exit code.
"""

__version__ = "0.1.0"
