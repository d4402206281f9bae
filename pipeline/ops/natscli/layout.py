"""The files of a natscli backup directory, as ``nats stream backup`` / ``nats account backup`` write them.

natscli (through jsm.go's ``SnapshotToDirectory``) writes, per stream, a directory with:

- ``stream.tar.s2`` (newer jsm.go names it ``stream.arc.s2`` for a V2 snapshot; import reads either): the
  snapshot chunks as the server sent them, concatenated. jsarchive stores exactly these
  bytes (compressed and sealed block by block), so an export decrypts and decompresses them back, byte for byte.
  A backup stored decoded (``--store decoded``, pipeline/format/payload.py) holds the NATSARC1 archive instead: its
  export frames the archive as Snappy, which the server restores exactly as it would the original (natscli sends the
  file as it is), though it is not the same bytes and is about as large as the archive.
- ``backup.json``: the snapshot response's config and state as jsm.go re-encodes them
  (:mod:`pipeline.ops.natscli.gojson`).

An account backup directory is a directory of such stream directories, named after the streams.
"""

from __future__ import annotations

BACKUP_JSON = "backup.json"
STREAM_DATA = "stream.tar.s2"  # what export writes: every natscli release restores it, older ones only it
# Import accepts both: jsm.go's SnapshotToDirectory switched to stream.arc.s2 for V2 snapshots.
STREAM_DATA_NAMES = (STREAM_DATA, "stream.arc.s2")
S2_MAGIC = b"\xff\x06\x00\x00S2sTwO"
SNAPPY_MAGIC = b"\xff\x06\x00\x00sNaPpY"
READ_SIZE = 1024 * 1024
ORIGIN_TYPE = "natscli-import"
