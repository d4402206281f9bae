"""Check an archive without restoring it: :func:`verify_archive`.

Without a key (an auditor's check, docs/format.md §11.2) each selected backup is checked as follows:

- the manifest's SHA-256 equals its id, and it is a valid v1 manifest (block table contiguous, sizes add up);
- the data object exists and its size equals the manifest's ``data.size``;
- every block's stored bytes hash to the manifest's SHA-256: ranged reads, ``workers`` at a time, each block read
  in pieces of at most ``piece_size`` bytes, so memory stays at ``workers × piece_size`` whatever the block size.

With ``--all`` it also checks the archive's links: every ref holds a manifest id whose manifest exists and is of
the backup and stream the ref names; every set's hash equals its id and each of its streams points at an
existing manifest of that stream. Manifests without a ref and data objects without a manifest are warnings.
Every ref checked must also be named after its manifest's ``created``: the writer always does that, so a ref whose
name says another time was made by something else (e.g. to pass an old backup off as the newest) and is a problem.
``--latest`` picks each stream's newest backup the way a restore does (pipeline.archive.repository.Repository.latest),
and checks every newer-named ref it passed over.

Chains (docs/design/incremental.md): the restore points of each stream that has deltas are checked for continuity
(:func:`pipeline.format.chain.chain_breaks`): a missing capture, a gap between ranges, an overlap, a link to another
chain or to a re-created stream is a broken ``chain`` link naming the missing range (exit 4). With ``--all`` every
stream's chains are checked; with a backup ID or ``--latest``, the chains of the streams whose selected backup is a
restore point of one.

Signatures (pipeline/archive/signing.py): each backup and set reports who signed it. An invalid object under
``signatures/<id>/`` is a problem; with ``trust_keys`` so is a backup or set that no trusted key signed.

``deep=True`` (with a key for encrypted backups) also opens every block (AES-GCM), decompresses it, checks its
plaintext SHA-256, and parses the whole snapshot stream: S2 framing with every chunk CRC (a backup stored decoded
has none: its blocks are the archive, pipeline/format/payload.py), then the NATSARC1 archive up to its end marker (V2:
message count and last sequence against the manifest's stream state) or the tar (V1: ``meta.inf``, ``msgs/`` and
``msgs/index.db`` present). Memory stays at a few blocks.

Each backup ends ``OK``, ``FAILED`` (its stored bytes or links are wrong) or ``UNVERIFIED`` (it could not be
read to the end: data in cold storage, no key for ``--deep``, access denied, store unreachable).
:attr:`VerifyReport.exit_code`: 0 if everything is OK, 4 if anything FAILED, otherwise the code of the first
reason something stayed unverified (5 no key, 7 unreachable, 10 access denied, 11 cold storage).
"""

from __future__ import annotations

import concurrent.futures
import time

from pipeline.archive.repository import Repository
from pipeline.archive.verify.data import MAX_BLOCK_PROBLEMS, _check_backups, _Meter
from pipeline.archive.verify.deep import V1_REQUIRED
from pipeline.archive.verify.links import _check_links
from pipeline.archive.verify.report import (
    FAILED,
    OK,
    PIECE_SIZE,
    UNVERIFIED,
    BackupCheck,
    LinkCheck,
    LoadedManifest,
    VerifyOptions,
    VerifyReport,
    load_quietly,
    manifest_names,
)
from pipeline.archive.verify.selection import _select
from pipeline.base.errors import UsageError, setting
from pipeline.base.progress import NoProgress, Progress

__all__ = [
    "FAILED",
    "MAX_BLOCK_PROBLEMS",
    "OK",
    "PIECE_SIZE",
    "UNVERIFIED",
    "V1_REQUIRED",
    "BackupCheck",
    "LinkCheck",
    "LoadedManifest",
    "VerifyOptions",
    "VerifyReport",
    "load_quietly",
    "manifest_names",
    "verify_archive",
]


def verify_archive(opts: VerifyOptions, progress: Progress | None = None) -> VerifyReport:
    """Check the selected backups (and, for ``all``, the archive's refs and sets); never raises for what it
    finds, only for what stops it from looking (bad arguments, an unreachable or missing archive)."""
    progress = progress or NoProgress()
    if sum(bool(x) for x in (opts.backup, opts.latest, opts.all)) > 1:
        raise UsageError(f"give one of a backup ID, {setting('latest')} or {setting('all')}")
    selection = "backup" if opts.backup else "latest" if opts.latest else "all"
    started = time.monotonic()
    repo = Repository.open(opts.url, opts.sink)
    report = VerifyReport(url=repo.url, deep=opts.deep, selection=selection, stream=opts.stream)
    meter = _Meter(progress)
    with concurrent.futures.ThreadPoolExecutor(max(1, opts.workers), thread_name_prefix="verify-io") as io_pool:
        refs, loaded, targets = _select(repo, opts, selection, io_pool, report)
        _check_links(repo, opts, selection, refs, loaded, targets, report)
        report.backups = _check_backups(repo, loaded, targets, opts, io_pool, progress, meter)
    # read once io_pool is shut down: reads cut short by a failed check may still have been counting
    report.bytes_read = meter.total
    report.seconds = time.monotonic() - started
    return report
