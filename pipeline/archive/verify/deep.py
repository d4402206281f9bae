"""``verify --deep``: open every block (AES-GCM with the backup's data key), decompress it, check its plaintext
SHA-256, and parse the whole snapshot stream to its end: the NATSARC1 archive (V2) or the tar (V1)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

from pipeline.archive.reader import BlockReader, unwrap_data_key
from pipeline.archive.repository import Repository
from pipeline.archive.verify.report import OK, BackupCheck, VerifyOptions
from pipeline.base.errors import JsArchiveError, KeyUnavailable
from pipeline.format import manifest as mf
from pipeline.format import natsarc, payload, s2
from pipeline.keys.keyring import KeyRing

V1_REQUIRED = ("meta.inf", "msgs/index.db")


def _open(repo: Repository, m: mf.Manifest, keys: KeyRing, check: BackupCheck) -> tuple[dict | None, bytes | None]:
    """The body and data key, or (None, None) with the reason recorded (then the keyless block check runs)."""
    data_key = None
    if m.encrypted:
        try:
            # the manifest's own slots, then slots added later (keyslots/…), each key checked against the body
            data_key = unwrap_data_key(repo, m, keys)
        except KeyUnavailable as e:
            check.unverified(f"--deep: {e}; only the keyless checks were made", e.exit_code)
            return None, None
    try:
        return m.open_body(data_key), data_key
    except JsArchiveError as e:
        check.fail(str(e))
        return None, None


def _deep(
    repo: Repository,
    m: mf.Manifest,
    body: dict,
    data_key: bytes | None,
    check: BackupCheck,
    opts: VerifyOptions,
    meter: Callable[[int], None],
) -> None:
    encoding = payload.inner_encoding(body, m.snapshot_format, m.id)
    reader = BlockReader(repo, m, body, data_key, opts.prefetch, max(1, min(opts.workers, 4)))
    plain = 0

    def blocks() -> Iterator[bytes]:
        nonlocal plain
        for index, block in enumerate(reader.blocks()):
            check.blocks_checked += 1
            plain += len(block)
            meter(m.blocks[index].length)
            yield block

    decoded = payload.decoded(blocks(), encoding)
    try:
        if m.snapshot_format == "V2":
            _deep_v2(decoded, body, check)
        else:
            _deep_v1(decoded, m, check)
    finally:
        decoded.close()
    check.snapshot_bytes = plain
    check.deep = check.status == OK


def _deep_v2(decoded: Iterator[bytes], body: dict, check: BackupCheck) -> None:
    ar = natsarc.ArchiveReader(decoded)
    n = first = last = 0
    for msg in ar.messages():
        n += 1
        if not first:
            first = msg.sequence
        last = msg.sequence
    if not ar.complete:
        check.fail("the NATSARC1 archive has no end marker")
        return
    check.messages = n
    held = body.get("held")
    if isinstance(held, dict) and "messages" in held:
        # the backup counted what it stored (pipeline/format/census.py): the archive must hold exactly that
        want = (int(held.get("messages", -1)), int(held.get("first_seq", -1)), int(held.get("last_seq", -1)))
        if (n, first, last) != want:
            check.fail(
                f"the archive holds {n} messages from sequence {first} to {last}; its backup counted {want[0]} "
                f"from {want[1]} to {want[2]} when it was written"
            )
        return
    state = body.get("state") or {}
    own = ar.state  # the archive's state.json
    want_n, want_last = int(state.get("messages", 0) or 0), int(state.get("last_seq", 0) or 0)
    deleted = int(state.get("num_deleted", 0) or 0)

    def agrees(count: int, last_seq: int, slack: int) -> bool:
        # the last message may precede last_seq when the newest messages were deleted (last_seq stays)
        return n == count and (n == 0 or last == last_seq or 0 < last_seq - last <= slack)

    if agrees(want_n, want_last, deleted):
        return
    own_n, own_last = int(own.get("messages", -1) or 0), int(own.get("last_seq", -1) or 0)
    if own and agrees(own_n, own_last, int(own.get("num_deleted", 0) or 0)):
        check.notes.append(
            f"the stream changed while the snapshot was taken: the archive holds {n} messages up to sequence "
            f"{last} (its own state.json agrees), the manifest recorded {want_n} up to {want_last}"
        )
        return
    check.fail(
        f"the archive holds {n} messages up to sequence {last}; the manifest's stream state says {want_n} "
        f"messages up to sequence {want_last}"
    )


def _deep_v1(decoded: Iterator[bytes], m: mf.Manifest, check: BackupCheck) -> None:
    f = s2.BlockFile(decoded)
    contents = natsarc.read_v1_tar(io.BufferedReader(f, buffer_size=1 << 20), keep=lambda name: name == "meta.inf")
    while f.read(1 << 20):  # past the tar's end: every remaining block and S2 checksum is still checked
        pass
    names = {x.name for x in contents.members}
    missing = [n for n in V1_REQUIRED if n not in names]
    if not any(n.startswith("msgs/") for n in names):
        missing.append("msgs/")
    if missing:
        check.fail(f"the snapshot tar lacks {', '.join(missing)}")
        return
    name = contents.config.get("name")
    if name is not None and name != m.stream:
        check.fail(f"the snapshot's meta.inf is of stream {name!r}, the manifest says {m.stream!r}")
