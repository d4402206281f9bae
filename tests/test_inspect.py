"""`jsarchive inspect` and `jsarchive cat` (pipeline.archive.inspect): real backups read without a server and compared
with what the server held; the NATSARC1 reader; corrupt and forged backups fail cleanly."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from pipeline.archive.inspect import inspect_backup, iter_messages
from pipeline.base.errors import IntegrityError, UsageError
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.format import natsarc, s2
from pipeline.format.compress import Compression
from pipeline.format.manifest import canonical
from pipeline.format.selection import MessageFilter, format_ns, parse_seq_range, parse_time, subject_matches
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing, generate_identity
from tests.conftest import make_server
from tests.streams import fill_stream, read_messages, stream_state
from tests.test_s2 import frame

MESSAGES = 2000
BINARY = [b"\xff\xfe\x00 not utf-8", b"", "h\u00e9llo w\u00f6rld \u2713".encode(), bytes(range(256))]


@dataclass
class Source:
    """One server's stream as it was when it was backed up, and its backups."""

    fmt: str
    version: str
    messages: list  # (seq, subject, headers, payload) from the server
    state: dict
    consumers: dict[str, dict]  # consumer info from the server, by name
    encrypted_id: str  # encrypted, zstd, 64 KiB blocks
    plain_id: str  # --no-encrypt, --compression none, one block


@dataclass
class World:
    archive: Path
    key: Path
    keys: KeyRing
    v2: Source
    v1: Source
    binary_id: str  # V2 stream BIN with binary payloads, unencrypted
    binary_messages: list


async def _lagging_consumer(url: str) -> None:
    """A consumer with 50 delivered and only the first 10 acked: delivered, ack floor and pending all differ."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_consumer("ORDERS", ConsumerConfig(durable_name="lagger", ack_policy=AckPolicy.EXPLICIT))
        sub = await js.pull_subscribe_bind("lagger", stream="ORDERS")
        got = await sub.fetch(50, timeout=10)
        assert len(got) == 50
        for m in got[:10]:
            await m.ack_sync()
        await nc.flush()
    finally:
        await nc.close()


async def _consumer_infos(url: str) -> dict[str, dict]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return {c["name"]: c for c in await js.consumers("ORDERS")}


async def _binary_stream(url: str) -> list:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(StreamConfig(name="BIN", subjects=["bin.>"]))
        for i, payload in enumerate(BINARY):
            await js.publish(f"bin.{i}", payload, headers={"X-N": str(i)} if i % 2 else None)
    finally:
        await nc.close()
    return await read_messages(url, "BIN")


def _backup(url: str, archive: Path, keys: KeyRing, stream: str = "ORDERS", plain: bool = False) -> str:
    opts = BackupOptions(stream=stream, url=str(archive), connect=ConnectOptions(servers=url), keys=keys)
    if plain:
        opts.encrypt = False
        opts.compression = Compression("none", 0)
    else:
        opts.block_size = 64 * 1024
    return backup_stream(opts).manifest_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("inspect")
    ident, _public = generate_identity()
    key = base / "backup.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ident + "\n")
    keys = KeyRing.load(identity_files=[str(key)], use_env=False)
    archive = base / "archive"
    sources = {}
    binary: tuple[str, list] = ("", [])
    for fmt, version in (("V2", None), ("V1", "2.14.6")):
        with make_server(version, base / f"nats-{fmt}") as srv:
            asyncio.run(fill_stream(srv.url, messages=MESSAGES))
            asyncio.run(_lagging_consumer(srv.url))
            msgs = asyncio.run(read_messages(srv.url, "ORDERS"))
            state = asyncio.run(stream_state(srv.url, "ORDERS"))
            infos = asyncio.run(_consumer_infos(srv.url))
            enc = _backup(srv.url, archive, keys)
            plain = _backup(srv.url, archive, keys, plain=True)
            sources[fmt] = Source(fmt, srv.varz()["version"], msgs, state, infos, enc, plain)
            if fmt == "V2":
                bmsgs = asyncio.run(_binary_stream(srv.url))
                binary = (_backup(srv.url, archive, keys, stream="BIN", plain=True), bmsgs)
    return World(archive, key, keys, sources["V2"], sources["V1"], binary[0], binary[1])


def cli(*args: str | Path) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def cat_lines(w: World, ident: str, *args: str) -> list[dict]:
    code, out, err = cli("cat", w.archive, ident, "-i", w.key, *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def as_server_tuple(rec: dict) -> tuple:
    hdrs = {k: v[-1] for k, v in rec["headers"].items()} if rec["headers"] else None
    data = base64.b64decode(rec["payload"]) if rec["payload_base64"] else rec["payload"].encode()
    return (rec["sequence"], rec["subject"], hdrs, data)


def position(info: dict) -> dict:
    return {
        "delivered_consumer_seq": info["delivered"]["consumer_seq"],
        "delivered_stream_seq": info["delivered"]["stream_seq"],
        "ack_floor_consumer_seq": info["ack_floor"]["consumer_seq"],
        "ack_floor_stream_seq": info["ack_floor"]["stream_seq"],
        "ack_pending": info["num_ack_pending"],
        "redelivered": info["num_redelivered"],
    }


# -- inspect ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["encrypted_id", "plain_id"])
def test_inspect_v2_backup_matches_the_stream(world, which):
    src = world.v2
    r = inspect_backup(str(world.archive), getattr(src, which)[:10], keys=world.keys)
    st = src.state
    assert (r.snapshot_format, r.counted, r.complete, r.server_version) == ("V2", True, True, src.version)
    assert r.messages == st["messages"] == len(src.messages) == MESSAGES - 3
    assert (r.first_seq, r.last_seq, r.deleted) == (st["first_seq"], st["last_seq"], st["num_deleted"])
    assert {s.subject: s.messages for s in r.subjects} == collections.Counter(m[1] for m in src.messages)
    assert sum(s.bytes for s in r.subjects) == r.message_bytes
    assert r.message_bytes == sum(len(m[3]) for m in src.messages) + sum(
        len("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in m[2].items()) + "\r\n") for m in src.messages
    )
    info = st["_info"]["state"]
    assert parse_time(r.first_time) == parse_time(info["first_ts"])
    assert parse_time(r.last_time) == parse_time(info["last_ts"])
    assert r.state["messages"] == r.messages and r.state["consumer_count"] == 3
    assert r.config["name"] == "ORDERS" and r.config["subjects"] == ["orders.>", "audit.>"]
    assert [c.name for c in r.consumers] == ["billing", "eu-audit", "lagger"]
    for c in r.consumers:
        assert c.position.__dict__ == position(src.consumers[c.name]), c.name
    assert next(c for c in r.consumers if c.name == "eu-audit").filter_subjects == ["orders.eu.>"]
    lag = next(c for c in r.consumers if c.name == "lagger").position
    assert (lag.delivered_consumer_seq, lag.ack_floor_consumer_seq, lag.ack_pending) == (50, 10, 40)
    assert r.encrypted == (which == "encrypted_id")
    assert r.decoded_bytes > r.snapshot_bytes > 0
    assert r.members == []


def test_inspect_v1_backup_lists_the_tar(world):
    src = world.v1
    r = inspect_backup(str(world.archive), src.encrypted_id, keys=world.keys)
    st = src.state
    assert (r.snapshot_format, r.counted, r.server_version) == ("V1", False, "2.14.6")
    assert (r.messages, r.first_seq, r.last_seq, r.deleted) == (
        st["messages"],
        st["first_seq"],
        st["last_seq"],
        st["num_deleted"],
    )
    names = [m.name for m in r.members]
    assert names[:2] == ["meta.inf", "meta.sum"]
    assert "msgs/index.db" in names and any(n.startswith("msgs/") and n.endswith(".blk") for n in names)
    for c in ("billing", "eu-audit", "lagger"):
        assert {f"obs/{c}/meta.inf", f"obs/{c}/meta.sum", f"obs/{c}/o.dat"} <= set(names)
    assert r.config["name"] == "ORDERS" and "Created" not in r.config
    assert r.subjects == [] and any("V1 backup" in w for w in r.warnings)
    assert [c.name for c in r.consumers] == ["billing", "eu-audit", "lagger"]
    for c in r.consumers:  # decoded from the binary o.dat files
        assert c.position.__dict__ == position(src.consumers[c.name]), c.name
        assert c.config["durable_name"] == c.name
    assert r.decoded_bytes > r.snapshot_bytes


def test_inspect_cli(world):
    code, out, err = cli("inspect", world.archive, world.v2.encrypted_id[:12], "-i", world.key, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True
    res = doc["inspect"]
    assert res["messages"] == MESSAGES - 3 and res["snapshot_format"] == "V2"
    assert {s["subject"]: s["messages"] for s in res["subjects"]} == collections.Counter(
        m[1] for m in world.v2.messages
    )
    assert res["consumers"][2]["position"]["ack_pending"] == 40

    code, out, err = cli("inspect", world.archive, world.v2.encrypted_id[:12], "-i", world.key, "--max-subjects", "2")
    assert code == 0, err
    assert f"messages     {MESSAGES - 3:,}" in out
    assert "… and 4 more" in out and "lagger" in out and "ack floor 10 (stream 12), 40 awaiting ack" in out

    code, out, err = cli("inspect", world.archive, world.v1.plain_id[:12])
    assert code == 0, err
    assert "V1 (file-store tar) from nats-server 2.14.6" in out and "obs/lagger/o.dat" in out
    assert "NOT encrypted" in out and "does not decode" in err


# -- cat ----------------------------------------------------------------------------------------------------------


def test_cat_everything_is_what_the_server_held(world):
    for ident in (world.v2.encrypted_id, world.v2.plain_id):
        recs = cat_lines(world, ident[:8])
        assert [as_server_tuple(r) for r in recs] == world.v2.messages
        times = [parse_time(r["time"]) for r in recs]
        assert times == sorted(times)


SUBJECT_FILTERS: list[tuple[list[str], object]] = [
    (["orders.*.new"], lambda s: s.startswith("orders.") and s.endswith(".new")),
    (["orders.eu.>"], lambda s: s.startswith("orders.eu.")),
    (["orders.>"], lambda s: s.startswith("orders.")),
    (["audit.log", "orders.us.*"], lambda s: s == "audit.log" or s.startswith("orders.us.")),
    ([">"], lambda s: True),
    (["*.log"], lambda s: s == "audit.log"),
    (["orders.*"], lambda s: False),
    (["orders.eu.new.>"], lambda s: False),
]


@pytest.mark.parametrize("subjects, want", SUBJECT_FILTERS, ids=[" ".join(f[0]) for f in SUBJECT_FILTERS])
def test_cat_subject_filters(world, subjects, want):
    args = [a for s in subjects for a in ("--subject", s)]
    got = [as_server_tuple(r) for r in cat_lines(world, world.v2.encrypted_id, *args)]
    assert got == [m for m in world.v2.messages if want(m[1])]


@pytest.mark.parametrize(
    "spec, lo, hi",
    [("10-20", 10, 20), ("1990-", 1990, 10**9), ("-5", 0, 5), ("1000", 1000, 1000), ("999", 999, 999)],
)
def test_cat_sequence_ranges(world, spec, lo, hi):
    got = [as_server_tuple(r) for r in cat_lines(world, world.v2.encrypted_id, "--seq", spec)]
    assert got == [m for m in world.v2.messages if lo <= m[0] <= hi]  # 1000 was deleted: nothing


def test_cat_time_filters(world):
    recs = cat_lines(world, world.v2.plain_id)
    by_seq = {r["sequence"]: parse_time(r["time"]) for r in recs}
    t1, t2 = by_seq[500], by_seq[1500]
    cases = [
        (["--since", format_ns(t1)], lambda t: t >= t1),
        (["--until", format_ns(t2)], lambda t: t < t2),
        (["--since", format_ns(t1), "--until", format_ns(t2)], lambda t: t1 <= t < t2),
        (["--since", "1d"], lambda t: True),  # all were written just now
        (["--until", "2000-01-01"], lambda t: False),
    ]
    for args, want in cases:
        got = [as_server_tuple(r) for r in cat_lines(world, world.v2.plain_id, *args)]
        assert got == [m for m in world.v2.messages if want(by_seq[m[0]])], args
    combined = cat_lines(world, world.v2.plain_id, "--since", format_ns(t1), "--subject", "audit.*", "--seq", "-1600")
    assert [as_server_tuple(r) for r in combined] == [
        m for m in world.v2.messages if by_seq[m[0]] >= t1 and m[1] == "audit.log" and m[0] <= 1600
    ]


def test_cat_raw_and_binary_payloads(world):
    r = CliRunner().invoke(main, ["cat", str(world.archive), world.v2.plain_id, "--format", "raw", "--seq", "-30"])
    assert r.exit_code == 0
    assert r.stdout_bytes == b"".join(m[3] + b"\n" for m in world.v2.messages if m[0] <= 30)
    r = CliRunner().invoke(main, ["cat", str(world.archive), world.binary_id, "--format", "raw"])
    assert r.exit_code == 0
    assert r.stdout_bytes == b"".join(p + b"\n" for p in BINARY)
    recs = cat_lines(world, world.binary_id)
    assert [as_server_tuple(x) for x in recs] == world.binary_messages
    assert [x["payload_base64"] for x in recs] == [True, False, False, True]
    assert recs[2]["payload"] == "h\u00e9llo w\u00f6rld \u2713"
    assert recs[1]["headers"] == {"X-N": ["1"]} and recs[0]["headers"] is None


def test_cat_api_stops_early_and_filters(world):
    flt = MessageFilter(subjects=("orders.eu.*",), first_seq=100, last_seq=130)
    got = list(iter_messages(str(world.archive), world.v2.encrypted_id, keys=world.keys, filter=flt))
    assert [(m.sequence, m.subject) for m in got] == [
        (m[0], m[1]) for m in world.v2.messages if 100 <= m[0] <= 130 and m[1].startswith("orders.eu.")
    ]
    assert got[0].headers.fields["Nats-Msg-Id"] == [f"m{got[0].sequence}"]


def test_cat_of_a_v1_backup_needs_v2(world):
    code, out, err = cli("cat", world.archive, world.v1.encrypted_id, "-i", world.key)
    assert code == 2 and out == ""
    assert "needs a V2 backup" in err and "2.14.6" in err


# -- parsing helpers ----------------------------------------------------------------------------------------------


def test_subject_matching():
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*.c", "a.b.c.d")
    assert subject_matches("a.>", "a.b") and subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    assert subject_matches(">", "a") and subject_matches("*", "a") and not subject_matches("*", "a.b")
    assert not subject_matches("a.b", "a.bc") and subject_matches("a.b", "a.b")
    for bad in ("", "a..b", "a.>.b", ".a", "a b"):
        with pytest.raises(UsageError):
            MessageFilter(subjects=(bad,))


def test_time_and_range_parsing():
    assert parse_time("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_time("1970-01-01 01:00:00+01:00") == 0
    assert parse_time("1970-01-02") == 86_400 * 10**9
    assert parse_time("2026-11-23T22:22:40.803875621Z") % 10**9 == 803875621
    assert parse_time(format_ns(1_795_472_561_169_070_898)) == 1_795_472_561_169_070_898
    assert parse_time("1h30m", now_ns=10**13) == 10**13 - 5400 * 10**9
    assert parse_time("2d", now_ns=10**15) == 10**15 - 2 * 86_400 * 10**9
    for bad in ("yesterday", "2026-13-01", "1x", "", "10"):
        with pytest.raises(UsageError):
            parse_time(bad)
    assert parse_seq_range("5-9") == (5, 9)
    assert parse_seq_range("5-") == (5, None)
    assert parse_seq_range("-9") == (None, 9)
    assert parse_seq_range("7") == (7, 7)
    for bad in ("", "-", "9-5", "a-b", "1-2-3"):
        with pytest.raises(UsageError):
            parse_seq_range(bad)
    code, _out, err = cli("cat", "/nonexistent", "abcdef", "--seq", "9-5")
    assert code == 2 and "empty" in err


def test_header_parsing():
    h = natsarc.parse_headers(b"NATS/1.0 503 No Responders\r\nA: 1\r\nA: 2\r\nB:x \r\nbad line\r\n\r\n")
    assert (h.status, h.description, h.fields) == ("503", "No Responders", {"A": ["1", "2"], "B": ["x"]})
    assert natsarc.parse_headers(b"") is None


# -- the NATSARC1 reader on its own -------------------------------------------------------------------------------


def entry(name: bytes, ts: int, seq: int, hdr: bytes = b"", payload: bytes = b"") -> bytes:
    def uv(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    zz = (ts << 1) ^ (ts >> 63)
    return uv(len(name)) + uv(zz) + uv(seq) + uv(len(hdr)) + uv(len(payload)) + name + hdr + payload


END = entry(b"", 0, 0)


def archive_bytes(*entries: bytes) -> bytes:
    return natsarc.MAGIC + b"".join(entries)


def test_archive_reader_incremental_and_negative_times():
    state = json.dumps({"messages": 2, "consumer_count": 1}).encode()
    cons = json.dumps({"config": {"durable_name": "c"}, "state": {"delivered": {"consumer_seq": 1}}}).encode()
    data = archive_bytes(
        entry(b"state.json", 5, 0, payload=state),
        entry(b"consumers/c", 5, 0, payload=cons),
        entry(b"a.b", -1_000_000_123, 3, b"NATS/1.0\r\nK: v\r\n\r\n", b"x" * 300),
        entry(b"a.c", 2**62, 9, payload=b""),
        END,
    )
    for step in (1, 2, 7, len(data)):  # any cut of the decoded blocks
        r = natsarc.ArchiveReader(data[i : i + step] for i in range(0, len(data), step))
        assert r.state == {"messages": 2, "consumer_count": 1}
        assert r.consumers[0].name == "c" and r.consumers[0].config == {"durable_name": "c"}
        msgs = list(r.messages())
        assert r.complete
        assert [(m.subject, m.sequence, m.timestamp, m.data) for m in msgs] == [
            ("a.b", 3, -1_000_000_123, b"x" * 300),
            ("a.c", 9, 2**62, b""),
        ]
        assert msgs[0].headers.fields == {"K": ["v"]} and msgs[1].headers is None


@pytest.mark.parametrize(
    "data, error, needle",
    [
        (b"NATSARC2" + END, natsarc.ArchiveError, "not a NATSARC1 archive"),
        (b"", natsarc.ArchiveError, "not a NATSARC1 archive"),
        (archive_bytes(entry(b"a", 1, 1)), natsarc.ArchiveTruncated, "without its end marker"),
        (archive_bytes(entry(b"a", 1, 1, payload=b"xyz"))[:-1], natsarc.ArchiveTruncated, "ends inside"),
        (archive_bytes(b"\x05\x80"), natsarc.ArchiveTruncated, "ends inside"),
        (archive_bytes(entry(b"a", 1, 5), entry(b"b", 1, 5), END), natsarc.ArchiveError, "follows sequence 5"),
        (archive_bytes(END, b"\x00"), natsarc.ArchiveError, "after the end marker"),
        (archive_bytes(entry(b"", 1, 0), END), natsarc.ArchiveError, "has no name"),
        (archive_bytes(b"\xff" * 11), natsarc.ArchiveError, "bad varint"),
        (archive_bytes(b"\x01\x00\x01\x00\xff\xff\xff\xff\x0f"), natsarc.ArchiveError, "impossible sizes"),
        (archive_bytes(entry(b"state.json", 1, 0, payload=b"{"), END), natsarc.ArchiveError, "not JSON"),
    ],
)
def test_archive_reader_rejects(data, error, needle):
    with pytest.raises(error, match=needle) as e:
        r = natsarc.ArchiveReader([data])
        list(r.messages())
    assert isinstance(e.value, IntegrityError)


# -- corrupt and forged backups -----------------------------------------------------------------------------------


def forge(world: World, tmp: Path, source_id: str, snapshot: bytes) -> tuple[Path, str]:
    """A copy of the archive with a backup whose snapshot is ``snapshot`` and whose hashes all match it.

    The source must be unencrypted with compression none, so the stored block is the snapshot itself: every
    check before the S2 decoder passes, and what the decoder and the archive reader find is all that is wrong.
    """
    archive = tmp / "forged"
    shutil.copytree(world.archive, archive)
    env = json.loads((archive / "manifests" / source_id).read_bytes())
    sha = hashlib.sha256(snapshot).hexdigest()
    data = archive / env["data"]["key"]
    data.unlink()
    data.write_bytes(snapshot)
    env["blocks"] = [[0, len(snapshot), sha]]
    env["data"]["size"] = len(snapshot)
    env["summary"]["snapshot_bytes"] = len(snapshot)
    env["body"]["plain_blocks"] = [[len(snapshot), sha]]
    env["body"]["snapshot"]["bytes"] = len(snapshot)
    raw = canonical(env)
    new_id = hashlib.sha256(raw).hexdigest()
    (archive / "manifests" / new_id).write_bytes(raw)
    return archive, new_id


def pristine_snapshot(world: World, source_id: str) -> bytes:
    env = json.loads((world.archive / "manifests" / source_id).read_bytes())
    assert env["body"]["compression"]["algorithm"] == "none" and len(env["blocks"]) == 1
    return (world.archive / env["data"]["key"]).read_bytes()


def test_forge_keeps_a_good_backup_good(world, tmp_path):
    archive, ident = forge(world, tmp_path, world.v2.plain_id, pristine_snapshot(world, world.v2.plain_id))
    assert inspect_backup(str(archive), ident).messages == MESSAGES - 3


def _first_compressed_chunk(snapshot: bytes) -> int:
    pos = len(s2.S2_STREAM_IDENTIFIER)
    assert snapshot[pos] == 0x00
    return pos


CORRUPTIONS = {
    # the S2 layer: a changed byte inside a compressed block, a changed stored checksum, a cut, no S2 at all
    "block-byte": (lambda s, d: s[:5000] + bytes([s[5000] ^ 0x40]) + s[5001:], ("s2:", "chunk at byte 10")),
    "stored-crc": (lambda s, d: s[:15] + bytes([s[15] ^ 1]) + s[16:], ("checksum mismatch",)),
    "cut-in-chunk": (lambda s, d: s[: len(s) // 2], ("s2: the stream ends inside",)),
    "not-s2": (lambda s, d: b"PK\x03\x04 not a snapshot", ("not an S2 or Snappy stream",)),
    # the archive layer, framed as valid S2: cut short, extra bytes after the end, a wrong magic
    "archive-cut": (lambda s, d: frame(d[: len(d) // 2]), ("truncated",)),
    "after-end": (lambda s, d: frame(d + b"\x00"), ("after the end marker",)),
    "bad-sequence-order": (lambda s, d: frame(_swap_first_two_messages(d)), ("follows sequence",)),
}


def _swap_first_two_messages(decoded: bytes) -> bytes:
    entries = list(natsarc.iter_entries([decoded]))
    msgs = [e for e in entries if e.sequence]
    order = [e for e in entries if not e.sequence] + [msgs[1], msgs[0]] + msgs[2:]
    return archive_bytes(*(entry(e.name.encode(), e.timestamp, e.sequence, e.header, e.payload) for e in order), END)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_snapshots_fail_cleanly(world, tmp_path, corruption):
    spoil, needles = CORRUPTIONS[corruption]
    snap = pristine_snapshot(world, world.v2.plain_id)
    _first_compressed_chunk(snap)
    archive, ident = forge(world, tmp_path, world.v2.plain_id, spoil(snap, s2.decompress(snap)))
    for command in ("inspect", "cat"):
        code, _out, err = cli(command, archive, ident)
        assert code == 4, (command, err)
        assert err.startswith("jsarchive: error: ") and err.count("\n") == 1, err
        for needle in needles:
            assert needle in err, (command, err)
        assert "Traceback" not in err


def test_damaged_data_object_and_missing_keys(world, tmp_path):
    archive = tmp_path / "damaged"
    shutil.copytree(world.archive, archive)
    env = json.loads((archive / "manifests" / world.v2.encrypted_id).read_bytes())
    data = archive / env["data"]["key"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.unlink()
    data.write_bytes(bytes(raw))
    for command in ("inspect", "cat"):
        code, _out, err = cli(command, archive, world.v2.encrypted_id, "-i", world.key)
        assert code == 4 and "SHA-256" in err, err
        code, _out, err = cli(command, world.archive, world.v2.encrypted_id)
        assert code == 5 and "age recipient" in err, err
        code, _out, err = cli(command, world.archive, "0123456789abcdef")
        assert code == 3 and "no backup with id" in err, err
        code, _out, err = cli(command, world.archive, "012")
        assert code == 2 and "too short" in err, err
    code, out, _err = cli("inspect", world.archive, "0123456789abcdef", "--json")
    assert json.loads(out)["error"]["exit_code"] == 3


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, list[tuple]]:
    entries, seq = [], 0
    for _ in range(draw(st.integers(0, 12))):
        seq += draw(st.integers(1, 70_000))
        ts = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(1_700_000_000 * 10**9, 2**61)))
        name = draw(st.binary(min_size=1, max_size=140))
        hdr = draw(st.binary(max_size=200))
        payload = draw(st.binary(max_size=300))
        entries.append((name, ts, seq, hdr, payload))
    return archive_bytes(*(entry(*e) for e in entries), END), entries


@settings(max_examples=300, deadline=None)
@given(archives(), st.integers(1, 64))
def test_archive_reader_property(arch, step):
    data, entries = arch
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    got = [(n, ts, seq, h, p) for n, ts, seq, h, p in natsarc._raw_entries(parts)]
    assert got == entries
    r = natsarc.ArchiveReader(parts)
    assert [(m.subject, m.timestamp, m.sequence, m.header, m.data) for m in r.messages()] == [
        (n.decode("utf-8", "replace"), ts, seq, h, p) for n, ts, seq, h, p in entries
    ]
    assert r.complete


@settings(max_examples=300, deadline=None)
@given(archives(), st.data())
def test_archive_reader_on_mutations_fails_cleanly(arch, data):
    raw = bytearray(arch[0])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        if not raw:
            break
    try:
        r = natsarc.ArchiveReader([bytes(raw)])
        for _ in r.messages():
            pass
    except natsarc.ArchiveError:
        pass
