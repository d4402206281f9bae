"""natscli interoperability: export backups as natscli backup directories and import natscli directories.

One module per idea:

- :mod:`~pipeline.ops.natscli.layout`: the files of a natscli backup directory and their names;
- :mod:`~pipeline.ops.natscli.gojson`: ``backup.json`` byte for byte, as jsm.go re-encodes the snapshot response;
- :mod:`~pipeline.ops.natscli.target`: the export's target directory, written aside and renamed into place;
- :mod:`~pipeline.ops.natscli.export`: a backup or an account set out to such a directory;
- :mod:`~pipeline.ops.natscli.checks`: the ``backup.json`` fields import accepts;
- :mod:`~pipeline.ops.natscli.reading`: a natscli stream or account directory, read and checked;
- :mod:`~pipeline.ops.natscli.importing`: such a directory into the archive (an account also gets a set).

This package is one use case: it imports no other ``pipeline.ops`` module (the ``use-cases`` contract).
"""

from __future__ import annotations

from pipeline.ops.natscli.checks import MAX_STREAM_NAME, check_backup_config, check_backup_state, check_stream_name
from pipeline.ops.natscli.export import (
    ExportedStream,
    ExportOptions,
    ExportResult,
    export_backup,
    export_backup_async,
    natscli_warnings,
    resolve_backup_or_set,
)
from pipeline.ops.natscli.gojson import GO_STRUCTS, backup_json, go_marshal_indent
from pipeline.ops.natscli.importing import ImportOptions, ImportResult, import_directory
from pipeline.ops.natscli.layout import BACKUP_JSON, ORIGIN_TYPE, STREAM_DATA, STREAM_DATA_NAMES
from pipeline.ops.natscli.reading import (
    NatscliStream,
    read_backup_dir,
    read_backup_json,
    read_stream_dir,
    snapshot_consumers,
)
from pipeline.ops.natscli.target import prepare_target, publish_target

__all__ = [
    "BACKUP_JSON",
    "GO_STRUCTS",
    "MAX_STREAM_NAME",
    "ORIGIN_TYPE",
    "STREAM_DATA",
    "STREAM_DATA_NAMES",
    "ExportOptions",
    "ExportResult",
    "ExportedStream",
    "ImportOptions",
    "ImportResult",
    "NatscliStream",
    "backup_json",
    "check_backup_config",
    "check_backup_state",
    "check_stream_name",
    "export_backup",
    "export_backup_async",
    "go_marshal_indent",
    "import_directory",
    "natscli_warnings",
    "prepare_target",
    "publish_target",
    "read_backup_dir",
    "read_backup_json",
    "read_stream_dir",
    "resolve_backup_or_set",
    "snapshot_consumers",
]
