"""Unit tests of the archive layer against an in-memory sink (``mem://``): no server, no emulator, no directory.

Backups are written the way ``import`` writes them (pipeline/ops/natscli/importing.py ``_import_one_async``): snapshot
bytes fed to a :class:`BackupWriter`, then committed. The snapshot is a real S2-framed NATSARC1 archive built here, so
deep checks decode it to the end. Everything else (reading back, verify, listing, prune) goes through the archive URL,
which every ``open_sink`` of the run resolves to the same memory store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.archive.catalog import backup_entries
from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Repository
from pipeline.archive.retention import Policy
from pipeline.archive.verify import FAILED, OK, VerifyOptions, verify_archive
from pipeline.archive.writer import BackupWriter, Committed, WriteSettings
from pipeline.base.errors import IntegrityError, KeyUnavailable
from pipeline.format import natsarc, s2
from pipeline.keys.keyring import KeyRing, generate_identity
from pipeline.ops.listing import list_backups
from pipeline.ops.prune import DELETE, KEEP, LOCKED, PruneOptions, prune
from sinks import Retention, open_sink
from sinks.memory import MemorySink

pytestmark = pytest.mark.unit

KIB = 1024
BLOCK = 16 * KIB  # small blocks: a backup of a few dozen KiB spans several
SERVER = {"version": "2.15.0", "name": "unit", "cluster": None, "api_level": 3}
SNAPSHOT = {"jsck": False, "chunk_size": None, "window_size": None, "chunks": 0}


@dataclass
class Snapshot:
    stream: bytes  # what a server sends: the S2 (Snappy framed) stream
    archive: bytes  # what it decodes to: a NATSARC1 archive
    state: dict  # the stream state the manifest records
    payloads: list[bytes]


def make_snapshot(messages: int, *, seed: int = 1, claim: int | None = None) -> Snapshot:
    """A V2 snapshot of ``messages`` messages (sequences 1..n); ``claim``: the count its state says instead."""
    rng = random.Random(seed)
    count = messages if claim is None else claim
    state = {"messages": count, "bytes": 0, "first_seq": 1, "last_seq": count, "num_deleted": 0}
    words = [b"order", b"paid", b"shipped", b"eu-west", b"sku-", b"qty"]
    payloads = [
        b" ".join(rng.choice(words) + str(rng.randrange(10**6)).encode() for _ in range(24)) for _ in range(messages)
    ]
    state["bytes"] = sum(len(p) for p in payloads)
    t0 = 1_760_000_000_000_000_000
    entries = [natsarc.encode_entry(f"orders.{i % 3}", t0 + i, i, b"", p) for i, p in enumerate(payloads, 1)]
    archive = natsarc.encode_head(state, []) + b"".join(entries) + natsarc.END_MARKER
    return Snapshot(b"".join(bytes(c) for c in s2.snappy_framed([archive])), archive, state, payloads)


def write_backup(
    url: str,
    snap: Snapshot,
    keys: KeyRing,
    *,
    stream: str = "ORDERS",
    encrypt: bool = True,
    retention: Retention | None = None,
    storage_class: str | None = None,
) -> Committed:
    """One backup of ``snap`` into ``url``, fed in pieces that do not line up with blocks (as import does)."""

    async def run() -> Committed:
        settings = WriteSettings(workers=2, retention=retention, storage_class=storage_class)
        w = BackupWriter(Repository.open(url), stream, keys, encrypt, settings, BLOCK)
        await w.start()
        try:
            for off in range(0, len(snap.stream), 7_000):
                await w.feed(snap.stream[off : off + 7_000])
            await w.finish()
        except BaseException:
            await w.abort()
            raise
        return await w.commit(
            server=SERVER,
            config={"name": stream, "subjects": ["orders.>"], "storage": "file", "num_replicas": 1},
            state=snap.state,
            consumers=[],
            include_consumers=True,
            snapshot=SNAPSHOT,
            snapshot_format=w.snapshot_format or "",
        )

    return asyncio.run(run())


@pytest.fixture
def url() -> Iterator[str]:
    with MemorySink.scratch() as store:
        yield f"{store}/archive"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return _keyring(tmp_path_factory.mktemp("keys"))


def _keyring(where: Path) -> KeyRing:
    identity, _recipient = generate_identity()
    path = where / "backup.key"
    path.write_text(identity + "\n")
    path.chmod(0o600)
    return KeyRing.load(identity_files=[str(path)], use_env=False)


def _flip(url: str, key: str, at: int) -> None:
    sink = open_sink(url)
    data = bytearray(sink.get(key))
    data[at] ^= 0x01
    sink.put(key, bytes(data), if_absent=False)


# -- write, then read back -----------------------------------------------------------------------------------------


def test_a_backup_reads_back_byte_for_byte(url: str, keys: KeyRing):
    snap = make_snapshot(400)
    c = write_backup(url, snap, keys)
    assert c.snapshot_format == "V2" and c.encrypted and c.blocks == -(-len(snap.stream) // BLOCK) > 2
    assert c.received_bytes == c.snapshot_bytes == len(snap.stream)

    repo = Repository.open(url)  # a second open of the URL: the same store
    m = repo.load_manifest(repo.resolve(c.manifest_id[:10]))
    assert (m.stream, m.backup_id, m.data_size) == ("ORDERS", c.backup_id, c.stored_bytes)
    opened = open_manifest(repo, m, keys)
    assert b"".join(opened.blocks()) == snap.stream
    assert b"".join(bytes(x) for x in opened.decoded()) == snap.archive
    assert [opened.reader.read_block(i) for i in range(c.blocks)] == [
        snap.stream[i * BLOCK : (i + 1) * BLOCK] for i in range(c.blocks)
    ]
    raw = repo.sink.get(m.data_object)  # sealed: no message payload is stored in the clear
    assert len(raw) == c.stored_bytes and snap.payloads[0][:40] not in raw
    head = repo.sink.head(m.data_object)
    assert head is not None and head.metadata == {"jsarchive-stream": "ORDERS", "jsarchive-backup-id": c.backup_id}


def test_a_clear_backup_needs_no_key_and_a_sealed_one_needs_its_own(url: str, keys: KeyRing, tmp_path: Path):
    snap = make_snapshot(120, seed=2)
    clear = write_backup(url, snap, keys, encrypt=False, storage_class="STANDARD_IA")
    sealed = write_backup(url, snap, keys)
    repo = Repository.open(url)
    assert clear.storage_class == "STANDARD_IA" and sealed.storage_class == "MEMORY"  # what the writer asked is kept
    opened = open_manifest(repo, repo.load_manifest(clear.manifest_id), KeyRing())
    assert b"".join(opened.blocks()) == snap.stream
    assert not repo.load_manifest(clear.manifest_id).encrypted
    with pytest.raises(KeyUnavailable):
        open_manifest(repo, repo.load_manifest(sealed.manifest_id), _keyring(tmp_path))


def test_a_flipped_byte_fails_the_read_of_its_block_only(url: str, keys: KeyRing):
    snap = make_snapshot(300, seed=3)
    c = write_backup(url, snap, keys)
    repo = Repository.open(url)
    m = repo.load_manifest(c.manifest_id)
    _flip(url, m.data_object, m.blocks[1].offset + 5)
    opened = open_manifest(repo, m, keys)  # size and keys are still right: opening succeeds
    assert opened.reader.read_block(0) == snap.stream[:BLOCK]
    with pytest.raises(IntegrityError, match="block 1 of backup .*do not match the manifest's SHA-256"):
        opened.reader.read_block(1)
    with pytest.raises(IntegrityError, match="block 1"):
        b"".join(opened.blocks())


# -- verify --------------------------------------------------------------------------------------------------------


def test_verify_finds_a_flipped_byte_keyless_and_deep(url: str, keys: KeyRing):
    good = write_backup(url, make_snapshot(250, seed=4), keys)
    bad = write_backup(url, make_snapshot(260, seed=5), keys)
    for deep in (False, True):
        report = verify_archive(VerifyOptions(url, all=True, deep=deep, keys=keys))
        assert report.ok and report.exit_code == 0 and all(link.ok for link in report.links)
        assert [(b.manifest_id, b.status) for b in report.backups] == [(bad.manifest_id, OK), (good.manifest_id, OK)]
        if deep:
            assert [b.messages for b in report.backups] == [260, 250] and all(b.deep for b in report.backups)

    m = Repository.open(url).load_manifest(bad.manifest_id)
    _flip(url, m.data_object, m.blocks[2].offset + m.blocks[2].length // 2)
    for deep, keyring in ((False, KeyRing()), (True, keys)):
        report = verify_archive(VerifyOptions(url, all=True, deep=deep, keys=keyring))
        by_id = {b.manifest_id: b for b in report.backups}
        assert not report.ok and report.exit_code == IntegrityError.exit_code
        assert by_id[good.manifest_id].status == OK
        failed = by_id[bad.manifest_id]
        assert failed.status == FAILED and len(failed.problems) == 1 and "block 2" in failed.problems[0]


def test_deep_verify_counts_what_the_keyless_check_cannot(url: str, keys: KeyRing):
    """The stored bytes are intact, but the archive holds one message fewer than its backup recorded."""
    c = write_backup(url, make_snapshot(90, seed=6, claim=91), keys)
    keyless = verify_archive(VerifyOptions(url, backup=c.manifest_id))
    assert keyless.ok and keyless.backups[0].blocks_checked == c.blocks
    deep = verify_archive(VerifyOptions(url, backup=c.manifest_id, deep=True, keys=keys))
    (check,) = deep.backups
    assert check.status == FAILED and check.messages == 90
    assert "holds 90 messages up to sequence 90" in check.problems[0] and "91" in check.problems[0]


# -- listing -------------------------------------------------------------------------------------------------------


def test_listing_and_catalog(url: str, keys: KeyRing):
    first = write_backup(url, make_snapshot(50, seed=7), keys)
    other = write_backup(url, make_snapshot(70, seed=8), keys, stream="OTHER", encrypt=False)
    last = write_backup(url, make_snapshot(60, seed=9), keys)
    entries = list_backups(url)
    assert [(e.manifest_id, e.stream, e.messages) for e in entries] == [
        (last.manifest_id, "ORDERS", 60),
        (other.manifest_id, "OTHER", 70),
        (first.manifest_id, "ORDERS", 50),
    ]
    assert [e.encrypted for e in entries] == [True, False, True]
    assert all(e.problem is None and e.storage_class == "MEMORY" and e.snapshot_format == "V2" for e in entries)
    assert [e.stored_bytes for e in entries] == [last.stored_bytes, other.stored_bytes, first.stored_bytes]
    assert [e.manifest_id for e in list_backups(url, "ORDERS")] == [last.manifest_id, first.manifest_id]

    repo = Repository.open(url)
    repo.sink.delete(repo.data_object(first.backup_id))
    by_id = {e.manifest_id: e for e in backup_entries(repo)}
    assert by_id[first.manifest_id].problem == f"the data object data/{first.backup_id} is missing"
    assert by_id[last.manifest_id].problem is None
    unheaded = backup_entries(repo, "ORDERS", head=False)  # no HEAD: neither the class nor the problem is known
    assert [(e.storage_class, e.problem) for e in unheaded] == [(None, None), (None, None)]


# -- prune ---------------------------------------------------------------------------------------------------------


def _stored_keys(url: str) -> set[str]:
    return {i.key for i in open_sink(url).list("")}


def test_prune_keep_last_deletes_the_older_backups(url: str, keys: KeyRing):
    old = [write_backup(url, make_snapshot(40 + i, seed=10 + i), keys) for i in range(2)]
    newest = write_backup(url, make_snapshot(45, seed=12), keys)
    other = write_backup(url, make_snapshot(30, seed=13), keys, stream="OTHER")
    before = _stored_keys(url)

    plan = prune(PruneOptions(url, Policy(last=1)))  # a dry run
    actions = {p.manifest_id: p.action for p in plan.backups}
    assert actions == {old[0].manifest_id: DELETE, old[1].manifest_id: DELETE, newest.manifest_id: KEEP,
                       other.manifest_id: KEEP}  # fmt: skip
    assert plan.to_delete() == (2, old[0].stored_bytes + old[1].stored_bytes) and plan.objects == []
    assert _stored_keys(url) == before

    done = prune(PruneOptions(url, Policy(last=1), confirm=True))
    assert done.ok and all(p.deleted == (p.action == DELETE) for p in done.backups)
    gone = {k for k in before if any(c.backup_id in k or c.manifest_id in k for c in old)}
    assert len(gone) == 6  # data, manifest and ref of each
    assert _stored_keys(url) == before - gone
    assert [e.manifest_id for e in list_backups(url)] == [other.manifest_id, newest.manifest_id]
    assert verify_archive(VerifyOptions(url, all=True, deep=True, keys=keys)).ok


def test_prune_leaves_a_locked_backup_whole():
    """On a store that enforces retention the policy's victim is reported as locked, and nothing of it goes."""
    keyring = KeyRing()
    with MemorySink.scratch(object_lock=True) as store:
        url = f"{store}/archive"
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
        locked = write_backup(
            url, make_snapshot(20, seed=14), keyring, encrypt=False, retention=Retention("COMPLIANCE", until)
        )
        write_backup(url, make_snapshot(25, seed=15), keyring, encrypt=False)
        before = _stored_keys(url)
        report = prune(PruneOptions(url, Policy(last=1), confirm=True))
        (plan,) = [p for p in report.backups if p.manifest_id == locked.manifest_id]
        assert plan.action == LOCKED and not plan.deleted and {lk.mode for lk in plan.locks} == {"COMPLIANCE"}
        assert report.ok and _stored_keys(url) == before
        assert [e.lock_mode for e in list_backups(url)] == [None, "COMPLIANCE"]


# -- progress of a phase that fails ----------------------------------------------------------------------------------


class _Recorder:
    """A Progress that remembers how each phase ended."""

    def __init__(self) -> None:
        self.ends: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        self.ends.append(f"start {task.split()[0]}")

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self, summary: str = "", *, what: str = "") -> None:
        self.ends.append("finish")

    def abort(self, reason: str = "interrupted") -> None:
        self.ends.append("abort")

    def log(self, message: str) -> None:
        pass

    def part(self) -> _Recorder:
        return self


def test_a_failed_export_ends_its_bar_as_interrupted(url: str, keys: KeyRing, tmp_path: Path):
    """An export cut short by a damaged block says so: its bar is aborted, never finished (shown as complete)."""
    from pipeline.ops.natscli import ExportOptions, export_backup

    snap = make_snapshot(300, seed=5)
    c = write_backup(url, snap, keys)
    m = Repository.open(url).load_manifest(c.manifest_id)
    _flip(url, m.data_object, m.blocks[-1].offset + 5)
    seen = _Recorder()
    with pytest.raises(IntegrityError):
        export_backup(ExportOptions(url=url, backup=c.manifest_id, directory=str(tmp_path / "out"), keys=keys), seen)
    assert seen.ends == ["start export", "abort"]
    c2 = write_backup(url, make_snapshot(50, seed=6), keys)
    seen = _Recorder()
    export_backup(ExportOptions(url=url, backup=c2.manifest_id, directory=str(tmp_path / "ok"), keys=keys), seen)
    assert seen.ends == ["start export", "finish"]
