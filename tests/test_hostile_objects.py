"""Hostile archive objects are contained (pipeline/format/objects.py): an adversary who can write to the bucket plants
one object, and every reader ends in one IntegrityError (exit 4) naming it, with bounded memory, never a traceback.

The archive is real: backups of real nats-servers (V2 and V1), a set, an added key slot and run records; the
hostile objects are planted next to them the way an attacker with write access would (named by their hash).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.archive.repository import KEYSLOT_FORMAT, Repository, parse_extra_slot
from pipeline.archive.runs import seal_run_in
from pipeline.archive.sets import list_sets
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import IntegrityError
from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.format import objects
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.manifest import canonical
from pipeline.format.sets import build_set, parse_set, set_entry
from pipeline.jetstream.client import ConnectOptions
from pipeline.keys.keyring import KeyRing, generate_identity
from pipeline.ops.listing import list_backups, show_backup
from sinks.local import LocalSink
from tests.conftest import make_server
from tests.streams import fill_stream

ROOT = Path(__file__).resolve().parent.parent


# -- a real archive ----------------------------------------------------------------------------------------------------


@dataclass
class World:
    archive: Path
    key: Path  # age identity that opens the encrypted backup
    keys: KeyRing
    enc: str  # manifest ids: encrypted V2, plain V2, plain V1
    plain: str
    v1: str
    set_id: str
    run: str


_WORLD: dict[str, World] = {}


def build_world(base: Path) -> World:
    """Backups of real servers (V2 encrypted and plain, V1 plain), a set, an added key slot and a sealed run."""
    ident, _ = generate_identity()
    key = base / "id.key"
    key.write_text(ident + "\n")
    key.chmod(0o600)
    keys = KeyRing.load(identity_files=[str(key)], use_env=False)
    archive = base / "archive"
    ids = {}
    with make_server(None, base / "v2") as srv:
        asyncio.run(fill_stream(srv.url, messages=2000, deletes=(7, 8), payload_size=60))
        for name, encrypt in (("enc", True), ("plain", False)):
            opts = BackupOptions(
                stream="ORDERS",
                url=str(archive),
                connect=ConnectOptions(servers=srv.url),
                keys=keys,
                encrypt=encrypt,
                transfer=TransferConfig(block_size=8 * 1024),
            )
            ids[name] = backup_stream(opts).manifest_id
    with make_server("2.14.6", base / "v1") as srv:
        asyncio.run(fill_stream(srv.url, name="OLD", messages=2000, deletes=(5,), payload_size=60))
        opts = BackupOptions(stream="OLD", url=str(archive), connect=ConnectOptions(servers=srv.url), encrypt=False)
        ids["v1"] = backup_stream(opts).manifest_id
    repo = Repository.open(str(archive))
    members = [repo.load_manifest(ids["enc"]), repo.load_manifest(ids["v1"])]
    stamp = members[0].created
    set_id = repo.write_set(
        build_set(
            account={"name": "A", "domain": None, "server": None},
            started=stamp,
            finished=stamp,
            entries=[set_entry(m) for m in members],
            skipped=[],
            warnings=[],
            options={"consumers": True, "check": False, "include": [], "exclude": []},
        )
    )
    _, other = generate_identity()
    repo.write_extra_slot(members[0], KeyRing.load(recipients=[other], use_env=False).wrap(os.urandom(32), "x")[0])
    run = "r1"
    shard = {"index": 0, "count": 1}
    plan = {
        "format": objects.RUN_PLAN,
        "version": 1,
        "run": run,
        "shard": shard,
        "created": stamp,
        "tool": {"name": "jsarchive", "version": "test"},
        "account": {"name": "A", "domain": None, "server": None},
        "options": {},
        "streams": ["ORDERS"],
        "mine": ["ORDERS"],
        "warnings": [],
    }
    done = {
        "format": objects.RUN_STREAM,
        "version": 1,
        "run": run,
        "stream": "ORDERS",
        "shard": shard,
        "finished": stamp,
        "manifest_id": ids["enc"],
        "skipped": None,
        "warnings": [],
    }
    repo.put_small(f"runs/{run}/plan/0-of-1", canonical(plan))
    repo.put_small(f"runs/{run}/done/ORDERS", canonical(done))
    return World(archive, key, keys, ids["enc"], ids["plain"], ids["v1"], set_id, run)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    if "w" not in _WORLD:
        _WORLD["w"] = build_world(tmp_path_factory.mktemp("hostile-world"))
    return _WORLD["w"]


@pytest.fixture
def archive(world: World, tmp_path: Path) -> Path:
    """A fresh copy of the world's archive to plant things in."""
    dest = tmp_path / "archive"
    shutil.copytree(world.archive, dest)
    return dest


def cli(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}\n{r.output}"
    return r.exit_code, r.stdout, r.stderr


def plant(archive: Path, prefix: str, raw: bytes) -> str:
    """Store ``raw`` under ``prefix`` + its SHA-256, as content-addressed objects are named; its key."""
    key = prefix + hashlib.sha256(raw).hexdigest()
    path = archive / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return key


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class CountingSink(LocalSink):
    """A real local sink that records how many bytes each read asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.asked: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes:
        self.asked.append((key, -1))  # a whole-object read: the gate never does this
        return super().get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.asked.append((key, length))
        return super().get_range(key, start, length)


# -- the gate itself ------------------------------------------------------------------------------------------------


def test_shape_check_is_linear_and_never_recurses():
    unclosed = b"[" * 200_000 + b"}"  # unbalanced, yet the parser would recurse 200,000 times to find out
    for raw in (deep_json(200_000), b'{"a":' * 100_000 + b"1" + b"}" * 100_000, deep_json(65), unclosed):
        with pytest.raises(IntegrityError, match="nests deeper than 64 levels"):
            objects.parse_json(raw, "thing", objects.MAX_MANIFEST)
    assert objects.parse_json(deep_json(objects.MAX_DEPTH), "thing", 1000) == json.loads(deep_json(64))
    # brackets inside strings do not count, escaped quotes do not end a string
    text = json.dumps({"s": "[" * 1000 + '\\"{' * 500, "t": [[1], {"u": "]]]"}]}).encode()
    assert objects.parse_json(text, "thing", 1 << 20)["t"][1]["u"] == "]]]"
    with pytest.raises(IntegrityError, match="more than 100 digits"):
        objects.parse_json(b'{"n":' + b"9" * 5000 + b"}", "thing", 1 << 20)  # json.loads: ValueError, not JSONDecode
    for bad, why in (
        (b'{"a":1,"a":2}', "appears twice"),
        (b'{"a":NaN}', "not a JSON number"),
        (b"\xff{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[}", "not JSON"),
        (b"[" * 64 + b"}", "not JSON"),
    ):
        with pytest.raises(IntegrityError, match=why):
            objects.parse_json(bad, "thing", 100)
    with pytest.raises(IntegrityError, match="larger than 100 bytes"):
        objects.parse_json(b" " * 101, "thing", 100)


def test_strict_types():
    assert objects.integer(3, "n") == 3
    for v in (True, 1.0, "1", None, -1):
        with pytest.raises(objects.Invalid, match="n is"):
            objects.integer(v, "n")
    with pytest.raises(objects.Invalid, match="not 64 lowercase hex"):
        objects.hex_id("A" * 64, "id")
    with pytest.raises(objects.Invalid, match="slot is not an object"):
        objects.key_slot(True, "slot")
    with pytest.raises(objects.Invalid, match="slot.wrapped is not a string"):
        objects.key_slot({"type": "age", "wrapped": 5}, "slot")


def test_reads_are_bounded_before_the_object_is_fetched(archive, world):
    sink = CountingSink(archive)
    repo = Repository(sink)
    ref = repo.refs("ORDERS")[0]
    huge = archive / ref.key
    huge.write_bytes(b"0" * (50 << 20))  # a 50 MB "ref"
    with pytest.raises(IntegrityError, match=rf"{ref.key} in .* is larger than 4 KiB"):
        repo.load_ref(ref)
    manifest_key = f"manifests/{world.enc}"
    with (archive / manifest_key).open("ab") as f:
        f.truncate(objects.MAX_MANIFEST + 5)  # sparse: costs no disk
    with pytest.raises(IntegrityError, match=rf"{manifest_key} in .* is larger than 64 MiB"):
        repo.load_manifest(world.enc)
    assert all(n != -1 for _, n in sink.asked), sink.asked
    assert max(n for k, n in sink.asked if k == ref.key) == objects.MAX_REF + 1
    assert sum(n for k, n in sink.asked if k == manifest_key) == objects.MAX_MANIFEST + 1
    # an ordinary object is read in one request of FIRST_READ bytes at most
    sink.asked.clear()
    repo.load_set(world.set_id)
    assert sink.asked == [(f"sets/{world.set_id}", objects.FIRST_READ)]


# -- planted objects against every reader ---------------------------------------------------------------------------


def test_deep_manifest_is_one_integrity_error(archive, world):
    key = plant(archive, "manifests/", deep_json(200_000))
    mid = key.split("/")[1]
    code, out, err = cli("show", archive, mid, "--json")
    assert code == 4, (out, err)
    assert "nests deeper than 64 levels" in err and mid[:12] in err
    entries = list_backups(str(archive))  # the planted manifest has no ref: ls is unaffected
    assert {e.manifest_id for e in entries} == {world.enc, world.plain, world.v1} and not any(
        e.problem for e in entries
    )


def test_wrong_types_in_a_manifest(archive, world):
    raw = (archive / "manifests" / world.plain).read_bytes()
    env = json.loads(raw)
    cases = {
        "summary.messages is not an integer": lambda e: e["summary"].__setitem__("messages", "many"),
        "blocks[0] is not [offset, length, sha256]": lambda e: e["blocks"].__setitem__(0, {"o": 0}),
        "data.size is not an integer": lambda e: e["data"].__setitem__("size", True),
        "encryption.key_slots[0] is not an object": lambda e: e["encryption"].__setitem__("key_slots", [True]),
        "body.plain_blocks has 0 entries": lambda e: e["body"].__setitem__("plain_blocks", []),
        "body.compression is not an object": lambda e: e["body"].__setitem__("compression", "zstd"),
        "body.state.consumer_count is not an integer": lambda e: e["body"]["state"].__setitem__("consumer_count", []),
    }
    for why, change in cases.items():
        doc = json.loads(raw)
        change(doc)
        mid = plant(archive, "manifests/", canonical(doc)).split("/")[1]
        with pytest.raises(IntegrityError, match=rf"manifest {mid[:12]} \(manifests/{mid}\) .*{re.escape(why)}"):
            Repository.open(str(archive)).load_manifest(mid)
    assert env["encryption"]["scheme"] == "none"


def test_planted_ref_and_manifest_in_ls_verify_and_restore(archive, world):
    """A ref pointing at a hostile manifest: ls shows the problem, verify reports it, restore refuses (exit 4)."""
    # 200,000 levels: far over Python's recursion limit; every reader (verify's best-effort look at a manifest that
    # failed to parse too) checks the depth before json.loads recurses
    bad = plant(archive, "manifests/", b'{"format":"jsarchive.manifest","version":1,"blocks":' + b"[" * 200_000)
    ref = archive / "refs" / "ORDERS" / f"29991231T000000.000000Z-{'ab' * 16}"
    ref.write_text(bad.split("/")[1] + "\n")
    entries = list_backups(str(archive), "ORDERS")
    assert "nests deeper than 64 levels" in (entries[0].problem or "") and entries[0].created.startswith("2999")
    report = verify_archive(VerifyOptions(url=str(archive)))
    assert not report.ok
    assert any(not link.ok for link in report.links)
    code, out, err = cli("stream", "restore", archive, "ORDERS", "-s", "nats://127.0.0.1:1", "--json")
    assert code in (4, 7), (out, err)  # refused as hostile, or (newest usable backup found) no server to restore to


def test_planted_sets(archive, world):
    raw = (archive / "sets" / world.set_id).read_bytes()
    doc = json.loads(raw)
    doc["streams"][0]["messages"] = {"lots": 1}  # summaries used to int() it: a TypeError traceback
    for planted, why in ((canonical(doc), r"streams\[0\].messages is not an integer"), (deep_json(100_000), "nests")):
        key = plant(archive, "sets/", planted)
        sid = key.split("/")[1]
        with pytest.raises(IntegrityError, match=rf"set {sid[:12]} .*{why}"):
            parse_set(Repository.open(str(archive)).load_set(sid), sid)
        with pytest.raises(IntegrityError):
            list_sets(str(archive))
        code, _, err = cli("account", "ls", archive, "--json")
        assert code == 4 and sid[:12] in err
        (archive / key).unlink()
    huge = archive / "sets" / ("f" * 64)
    with huge.open("wb") as f:
        f.truncate(objects.MAX_SET + 1)
    with pytest.raises(IntegrityError, match="larger than 64 MiB"):
        Repository.open(str(archive)).load_set("f" * 64)


def _slot_object(m, slot: object) -> bytes:
    return canonical(
        {"format": KEYSLOT_FORMAT, "version": 1, "backup_id": m.backup_id, "manifest_id": m.id, "slot": slot}
    )


def test_invalid_key_slot_objects_are_skipped_with_a_warning(archive, world):
    repo = Repository.open(str(archive))
    m = repo.load_manifest(world.enc)
    prefix = repo.keyslot_prefix(m.id)
    planted = {
        plant(archive, prefix, _slot_object(m, True)): "slot is not an object",
        plant(archive, prefix, _slot_object(m, {"type": "age", "wrapped": ["x"]})): "slot.wrapped is not a string",
        plant(archive, prefix, deep_json(30_000)): "nests deeper than 64 levels",
        plant(archive, prefix, b"{" + b" " * (70 * 1024) + b"}"): "larger than 64 KiB",
    }
    for key, why in list(planted.items())[:3]:
        with pytest.raises(ValueError, match=why):
            parse_extra_slot((archive / key).read_bytes(), key, m)
    slots = repo.key_slots(m)  # the manifest's own and the one valid added slot
    assert len(slots) == len(m.key_slots) + 1
    assert len(repo.warnings) == len(planted)
    for key, why in planted.items():
        assert any(key in w and why in w for w in repo.warnings), (key, repo.warnings)
    repo.key_slots(m)
    assert len(repo.warnings) == len(planted)  # each is reported once
    # key list names each of them; inspect with the key still opens the backup and says what it skipped
    code, out, err = cli("key", "list", archive, m.id, "--json")
    assert code == 0, err
    invalid = {i["object"]: i["problem"] for i in json.loads(out)["key_slots"]["invalid"]}
    assert set(invalid) == set(planted)
    # a real process, so the warnings reach stderr as a user sees them (pytest captures logging in-process)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.entry.cli", "inspect", str(archive), m.id, "-i", str(world.key), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inspect"]["messages"] == 1998
    for key in planted:
        assert f"warning: added key slot {key}" in proc.stderr
    assert "Traceback" not in proc.stderr
    details = show_backup(str(archive), m.id, world.keys)
    assert details.body is not None and sum("problem" in s for s in details.added_slots) == len(planted)


def test_planted_run_records(archive, world):
    repo = Repository.open(str(archive))
    assert seal_run_in(repo, world.run).streams == ["ORDERS"]
    done = archive / "runs" / world.run / "done" / "ORDERS"
    doc = json.loads(done.read_bytes())
    for change, why in (
        (lambda d: d.__setitem__("warnings", {"a": 1}), "warnings is not an array"),
        (lambda d: d.__setitem__("manifest_id", 7), "manifest_id is not 64 lowercase hex"),
        (lambda d: d.__setitem__("shard", {"index": 3, "count": 1}), "not below its count"),
    ):
        d = json.loads(json.dumps(doc))
        change(d)
        done.write_bytes(canonical(d))
        with pytest.raises(IntegrityError, match=rf"runs/r1/done/ORDERS in .* is not a valid run record: .*{why}"):
            seal_run_in(repo, world.run)
    done.write_bytes(deep_json(200_000))
    code, _, err = cli("account", "seal", archive, "--run", world.run, "--json")
    assert code == 4 and "runs/r1/done/ORDERS" in err and "nests deeper" in err
    done.write_bytes(b" " * (objects.MAX_RUN_RECORD + 1))
    with pytest.raises(IntegrityError, match="larger than 1 MiB"):
        seal_run_in(repo, world.run)


def test_natscli_backup_json(tmp_path, world):
    src = tmp_path / "ORDERS"
    code, _, err = cli("export", world.archive, world.plain, src)
    assert code == 0, err
    for raw, why in (
        (deep_json(200_000), "nests deeper than 64 levels"),
        (b" " * (objects.MAX_BACKUP_JSON + 1), "larger than 16 MiB"),
        (b'{"config":{"name":"X","n":' + b"1" * 5000 + b"}}", "more than 100 digits"),
    ):
        (src / "backup.json").write_bytes(raw)
        code, out, err = cli("import", src, tmp_path / "dest", "--no-encrypt", "--json")
        # pipeline/ops/natscli/reading.py reports it as a usage error (not a natscli backup); either way one clean error
        assert code in (2, 4) and "backup.json" in err and why in err, (code, out, err)


# -- zstd -------------------------------------------------------------------------------------------------------------


def rle_frame(produces: int, declares: int | None) -> bytes:
    """A valid zstd frame of RLE blocks that decodes to ``produces`` zero bytes (4 bytes per 128 KiB of output),
    declaring ``declares`` as its content size (None: no size in the header)."""
    block = 128 * 1024
    head = b"\x28\xb5\x2f\xfd"
    head += bytes([0x80, 7 << 3]) + struct.pack("<I", declares) if declares is not None else bytes([0x00, 7 << 3])
    n = produces // block
    return head + b"".join(((block << 3) | 2 | (i == n - 1)).to_bytes(3, "little") + b"\x00" for i in range(n))


def test_zstd_frames_are_checked_before_and_bounded_while_decoding():
    dec = BlockCompressor(Compression("zstd", 3))
    bomb = rle_frame(1 << 30, 1 << 30)
    assert len(bomb) < 33 * 1024
    with pytest.raises(IntegrityError, match="declares 1073741824 bytes, the manifest 8388608"):
        dec.decompress(bomb, 8 << 20)
    with pytest.raises(IntegrityError, match="does not decode to 8388608 bytes"):
        dec.decompress(rle_frame(1 << 30, 8 << 20), 8 << 20)  # lies about its size
    with pytest.raises(IntegrityError, match="does not decode to 8388608 bytes"):
        dec.decompress(rle_frame(1 << 30, None), 8 << 20)  # declares nothing
    assert dec.decompress(rle_frame(8 << 20, None), 8 << 20) == bytes(8 << 20)
    good = dec.compress(b"abc" * 1000)
    assert dec.decompress(good, 3000) == b"abc" * 1000
    for bad, why in (
        (good + good, "unused data"),
        (good + b"\0", "unused data"),
        (good[:-1], "did not decompress full frame"),
        (b"junk", "not a zstd frame"),
        (b"", "not a zstd frame"),
    ):
        with pytest.raises(IntegrityError, match=why):
            dec.decompress(bad, 3000)
    with pytest.raises(IntegrityError, match="declares 3000 bytes"):
        dec.decompress(good, 2999)
    assert dec.decompress(dec.compress(b""), 0) == b""
    with pytest.raises(IntegrityError):
        BlockCompressor(Compression("none", 0)).decompress(b"abc", 4)


def plant_bomb_backup(archive: Path, world: World) -> str:
    """A copy of the plain backup whose first block is a 32 KB frame declaring 1 GB, its hashes forged to match
    (an unencrypted backup can be planted whole). The new manifest id."""
    repo = Repository.open(str(archive))
    m = repo.load_manifest(world.plain)
    env = json.loads(m.raw)
    bomb = rle_frame(1 << 30, 1 << 30)
    backup_id = os.urandom(16).hex()
    data = bytearray(bomb)
    table = [[0, len(bomb), hashlib.sha256(bomb).hexdigest()]]
    for b in m.blocks[1:]:
        chunk = (archive / m.data_object).read_bytes()[b.offset : b.offset + b.length]
        table.append([len(data), len(chunk), b.sha256])
        data += chunk
    (archive / "data" / backup_id).write_bytes(bytes(data))
    env.update(backup_id=backup_id, blocks=table)
    env["data"] = {**env["data"], "key": f"data/{backup_id}", "size": len(data)}
    return plant(archive, "manifests/", canonical(env)).split("/")[1]


def test_planted_zstd_bomb_in_inspect_and_verify(archive, world):
    mid = plant_bomb_backup(archive, world)
    code, out, err = cli("inspect", archive, mid, "--json")
    assert code == 4 and "declares 1073741824 bytes" in err, (out, err)
    code, out, err = cli("cat", archive, mid)
    assert code == 4 and "declares 1073741824 bytes" in err
    report = verify_archive(VerifyOptions(url=str(archive), backup=mid, deep=True))
    (check,) = report.backups
    assert not report.ok and any("declares 1073741824 bytes" in p for p in check.problems), check.problems


PEAK_SCRIPT = """
import json, resource, sys
from pipeline.base.errors import IntegrityError
from pipeline.archive.inspect import inspect_backup
from pipeline.ops.listing import show_backup
archive, bomb, deep = sys.argv[1:4]
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
for call in (lambda: inspect_backup(archive, bomb), lambda: show_backup(archive, deep)):
    try:
        call()
        raise SystemExit("no error")
    except IntegrityError as e:
        print(str(e)[:200], file=sys.stderr)
print(json.dumps({"before": before, "after": peak()}))
"""


def test_peak_memory_of_a_zstd_bomb_and_a_deep_manifest(archive, world):
    """Measured in a fresh process (ru_maxrss is a high-water mark, and this one's is polluted by other tests)."""
    bomb = plant_bomb_backup(archive, world)
    deep = plant(archive, "manifests/", deep_json(200_000)).split("/")[1]
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK_SCRIPT), str(archive), bomb, deep],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "declares 1073741824 bytes" in proc.stderr and "nests deeper than 64 levels" in proc.stderr
    peak = json.loads(proc.stdout)
    grew = peak["after"] - peak["before"]
    assert grew < 100 << 20, f"peak RSS grew by {grew >> 20} MiB"


# -- JSON inside archive payloads and beside them: bounded like every archive object -------------------------------

DEEP = b"[" * 200_000


def test_deep_json_in_a_natsarc_entry_is_an_archive_error_not_a_recursion() -> None:
    from pipeline.format import natsarc

    for name in ("state.json", "consumers/c"):
        archive = natsarc.MAGIC + natsarc.encode_entry(name, 0, 0, b"", DEEP) + natsarc.END_MARKER
        with pytest.raises(natsarc.ArchiveError, match="is not JSON"):
            natsarc.count_archive([archive])
        with pytest.raises(natsarc.ArchiveError, match="is not JSON"):
            natsarc.ArchiveReader([archive])


def test_deep_json_in_a_v1_meta_inf_is_an_archive_error() -> None:
    from pipeline.format import natsarc

    contents = natsarc.V1Contents(files={"meta.inf": DEEP})
    with pytest.raises(natsarc.ArchiveError, match="meta.inf is not JSON"):
        contents.config  # noqa: B018 - the property parses


def test_planted_signature_and_drill_report_objects_are_bounded(tmp_path: Path) -> None:
    from pipeline.archive import signing
    from pipeline.ops.drill import list_reports

    repo = Repository.open(str(tmp_path / "a"))
    mid = "ab" * 32
    repo.put_small(f"signatures/{mid}/deep", DEEP)
    repo.put_small(f"signatures/{mid}/big", b" " * (objects.MAX_SIGNATURE + 1))
    status = signing.signature_status(repo, "manifest", mid, [])
    assert len(status.invalid) == 2 and not status.trusted and not status.others, status.invalid
    assert any("larger than" in p for p in status.invalid)
    repo.put_small("drills/2026-12-01T00-00-00Z.json", DEEP)
    repo.put_small("drills/2026-12-02T00-00-00Z.json", b"[1, 2]")  # JSON, but not an object
    reports = list_reports(str(tmp_path / "a"))
    assert len(reports) == 2 and all(r.problem for r in reports), reports
