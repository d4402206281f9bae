"""`jsarchive verify`, `show` and `ls` on real and forged archives: a local directory, S3 (moto) and GCS (both
emulators). Keyless checks catch every changed stored byte, missing or truncated data, a tampered manifest and
broken refs and sets; --deep also catches a damaged payload whose hashes were forged to match."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.archive.repository import Repository, ref_time
from pipeline.archive.verify import FAILED, OK, UNVERIFIED, VerifyOptions, verify_archive
from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.jetstream.client import ConnectOptions
from pipeline.keys.keyring import KeyRing, generate_identity
from pipeline.ops.listing import list_backups, show_backup
from sinks import Retention, SinkOptions
from tests.conftest import make_server
from tests.streams import fill_stream, stream_state
from tests.test_inspect import END, archive_bytes, entry
from tests.test_prune import make_backup, write_set
from tests.test_s2 import frame

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 1, 12, tzinfo=UTC)


def cli(*args: object, env: dict | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r.exit_code, r.stdout, r.stderr


# -- real backups from real servers ----------------------------------------------------------------------------------


@dataclass
class Real:
    archive: Path
    key: Path
    keys: KeyRing
    v2: str
    v1: str
    v2_state: dict
    v1_state: dict


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Real:
    base = tmp_path_factory.mktemp("verify")
    ident, _ = generate_identity()
    key = base / "backup.key"
    key.write_text(ident + "\n")
    key.chmod(0o600)
    keys = KeyRing.load(identity_files=[str(key)], use_env=False)
    archive = base / "archive"
    ids, states = {}, {}
    for fmt, version in (("V2", None), ("V1", "2.14.6")):
        with make_server(version, base / f"nats-{fmt}") as srv:
            asyncio.run(fill_stream(srv.url, name=f"S{fmt}", messages=1500, deletes=(3, 1500)))
            states[fmt] = asyncio.run(stream_state(srv.url, f"S{fmt}"))
            ids[fmt] = backup_stream(
                BackupOptions(
                    stream=f"S{fmt}",
                    url=str(archive),
                    connect=ConnectOptions(servers=srv.url),
                    keys=keys,
                    transfer=TransferConfig(block_size=16 * 1024),
                )
            ).manifest_id
    return Real(archive, key, keys, ids["V2"], ids["V1"], states["V2"], states["V1"])


def test_real_archive_keyless_and_deep(real, tmp_path):
    code, out, err = cli("verify", real.archive, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["selection"] == "all" and report["failed"] == 0
    assert {b["manifest_id"]: b["status"] for b in report["backups"]} == {real.v2: OK, real.v1: OK}
    for b in report["backups"]:
        assert b["blocks"] > 3 and b["blocks_checked"] == b["blocks"] and not b["deep"]
    assert report["bytes_read"] == sum(b["stored_bytes"] for b in report["backups"])
    assert [x["kind"] for x in report["links"]] == ["ref", "ref"] and all(x["ok"] for x in report["links"])

    code, out, err = cli("verify", real.archive, "--deep", "-i", real.key, "--json")
    assert code == 0, err
    deep = {b["manifest_id"]: b for b in json.loads(out)["backups"]}
    assert all(b["deep"] and b["status"] == OK for b in deep.values())
    assert deep[real.v2]["messages"] == real.v2_state["messages"] == 1498  # two deleted, one of them the last
    assert deep[real.v2]["snapshot_bytes"] > 0 and deep[real.v1]["messages"] is None

    # --deep without the key: the keyless checks still run, the backups stay UNVERIFIED (exit 5)
    code, out, err = cli("verify", real.archive, "--deep", "--json")
    assert code == 5
    for b in json.loads(out)["backups"]:
        assert b["status"] == UNVERIFIED and b["blocks_checked"] == b["blocks"]
        assert "only the keyless checks were made" in b["problems"][0]

    # the text report, one backup by id prefix
    code, out, err = cli("verify", real.archive, real.v1[:10], "--deep", "-i", real.key)
    assert code == 0, err
    assert out.startswith(f"OK          {real.v1[:12]}  SV1") and "1 backup(s): 1 OK, 0 FAILED" in out


def test_real_archive_damage_is_found(real, tmp_path):
    archive = tmp_path / "copy"
    shutil.copytree(real.archive, archive)
    m = Repository.open(str(archive)).load_manifest(real.v2)
    data = archive / m.data_object
    raw = bytearray(data.read_bytes())
    blk = m.blocks[3]
    raw[blk.offset + blk.length // 2] ^= 0x10
    data.unlink()
    data.write_bytes(bytes(raw))
    for args in ((), ("--deep", "-i", real.key)):
        code, out, err = cli("verify", archive, *args, "--json")
        assert code == 4, err
        report = json.loads(out)
        status = {b["manifest_id"]: b for b in report["backups"]}
        assert status[real.v1]["status"] == OK and status[real.v2]["status"] == FAILED
        assert any("block 3" in p for p in status[real.v2]["problems"]), status[real.v2]["problems"]
    code, out, _ = cli("verify", archive)
    assert "FAILED" in out and "block 3" in out and "1 OK, 1 FAILED" in out


# -- damage on every store (synthetic backups, written through the API) ----------------------------------------------


DAMAGE = ("flipped-bit", "missing-data", "truncated-data", "tampered-manifest", "dangling-ref", "wrong-ref", "set")


def test_keyless_verify_finds_damage_local(tmp_path, keyring):
    _damage_scenario(str(tmp_path / "archive"), SinkOptions(), keyring)


def test_keyless_verify_finds_damage_s3(moto, bucket, keyring):
    _damage_scenario(f"s3://{bucket}/arch", SinkOptions(endpoint_url=moto.endpoint), keyring)


def test_keyless_verify_finds_damage_gcs(gcs_emulator, keyring):
    _damage_scenario(f"gs://{gcs_emulator.make_bucket()}/arch", SinkOptions(), keyring)


def _damage_scenario(url: str, opts: SinkOptions, keyring: KeyRing) -> None:
    repo = Repository.open(url, opts)
    victims = {}
    for i, kind in enumerate(DAMAGE):
        victims[kind] = make_backup(repo, f"S{i}", T0 + dt.timedelta(hours=i), keyring, payload=bytes(range(256)) * 60)
    healthy = make_backup(repo, "HEALTHY", T0, keyring)
    write_set(repo, [victims["set"], healthy], T0)
    before = verify_archive(VerifyOptions(url=url, sink=opts))
    assert before.ok and len(before.backups) == len(DAMAGE) + 1 and len(before.links) == len(DAMAGE) + 2

    sink = repo.sink
    m = victims["flipped-bit"]
    stored = bytearray(sink.get(m.data_object))
    stored[m.blocks[1].offset + 7] ^= 0x01
    sink.put(m.data_object, bytes(stored), if_absent=False)
    sink.delete(victims["missing-data"].data_object)
    m = victims["truncated-data"]
    sink.put(m.data_object, sink.get(m.data_object)[:-1], if_absent=False)
    m = victims["tampered-manifest"]
    sink.put(repo.manifest_key(m.id), m.raw.replace(b'"messages":10', b'"messages":99'), if_absent=False)
    sink.delete(repo.manifest_key(victims["dangling-ref"].id))
    [ref] = [r for r in repo.refs("S5")]
    sink.put(ref.key, (victims["flipped-bit"].id + "\n").encode(), if_absent=False)
    sink.delete(repo.manifest_key(victims["set"].id))

    report = verify_archive(VerifyOptions(url=url, sink=opts))
    assert report.exit_code == 4 and not report.ok
    by_id = {b.manifest_id: b for b in report.backups}
    assert by_id[healthy.id].status == OK
    assert by_id[victims["wrong-ref"].id].status == OK  # its bytes are fine; its ref is what is wrong
    problems = {kind: " ".join(by_id[victims[kind].id].problems) for kind in DAMAGE[:4]}
    assert "block 1" in problems["flipped-bit"] and "SHA-256" in problems["flipped-bit"]
    assert "missing" in problems["missing-data"]
    assert "truncated" in problems["truncated-data"]
    assert "altered" in problems["tampered-manifest"]
    assert all(by_id[victims[k].id].status == FAILED for k in DAMAGE[:4])
    assert victims["dangling-ref"].id not in by_id and victims["set"].id not in by_id
    bad = {x.key: " ".join(x.problems) for x in report.links if not x.ok}
    assert len(bad) == 5, bad
    assert "dangling ref" in bad[next(k for k in bad if "/S4/" in k)]
    assert "points to manifest" in bad[next(k for k in bad if "/S5/" in k)]
    assert "not valid" in bad[next(k for k in bad if "/S3/" in k)]  # the ref to the tampered manifest
    assert "does not exist" in bad[next(k for k in bad if k.startswith("sets/"))]
    assert "does not exist" in bad[next(k for k in bad if "/S6/" in k)]

    env = {"AWS_ENDPOINT_URL": opts.endpoint_url} if opts.endpoint_url else {}
    code, out, _ = cli("verify", url, env=env)
    assert code == 4 and sum(line.startswith("FAILED") for line in out.splitlines()) == 4 + 5
    assert "refs: 4 of 8 OK; sets: 0 of 1 OK" in out


def test_selection_and_usage(tmp_path, keyring):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    a_old = make_backup(repo, "A", T0, keyring)
    a_new = make_backup(repo, "A", T0 + dt.timedelta(days=1), keyring)
    b = make_backup(repo, "B", T0, keyring)
    latest = verify_archive(VerifyOptions(url=str(root), latest=True))
    assert sorted(x.manifest_id for x in latest.backups) == sorted([a_new.id, b.id])
    only_a = verify_archive(VerifyOptions(url=str(root), stream="A"))
    assert sorted(x.manifest_id for x in only_a.backups) == sorted([a_old.id, a_new.id])
    assert [x.key.split("/")[1] for x in only_a.links] == ["A", "A"]
    one = verify_archive(VerifyOptions(url=str(root), backup=a_old.id[:8]))
    assert [x.manifest_id for x in one.backups] == [a_old.id] and len(one.links) == 1
    # a manifest without a ref is still a backup; verify says ls cannot see it
    c = make_backup(repo, "C", T0, keyring, ref=False)
    report = verify_archive(VerifyOptions(url=str(root)))
    assert report.ok and any(c.id[:12] in w and "no ref" in w for w in report.warnings)
    assert cli("verify", root, "--latest", "--all")[0] == 2
    assert cli("verify", root, a_old.id[:8], "--latest")[0] == 2
    assert cli("verify", root, "ffffff")[0] == 3
    code, _, err = cli("verify", tmp_path / "empty")
    assert code == 3 and "no backups" in err
    assert cli("verify", root, "--latest", "--stream", "NOPE")[0] == 3


def test_block_reads_are_bounded_and_parallel(tmp_path, keyring, monkeypatch):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    m = make_backup(repo, "S", T0, keyring, payload=os.urandom(512 * 1024), block_size=64 * 1024)
    assert len(m.blocks) >= 8 and max(b.length for b in m.blocks) > 64 * 1024 - 1
    from sinks.local import LocalSink

    seen = {"max_len": 0, "in_flight": 0, "peak": 0}
    lock = threading.Lock()
    real_get_range = LocalSink.get_range

    def spy(self, key, start, length):
        if not key.startswith("data/"):  # small objects (manifests, refs) are read capped, not in pieces
            return real_get_range(self, key, start, length)
        with lock:
            seen["max_len"] = max(seen["max_len"], length)
            seen["in_flight"] += 1
            seen["peak"] = max(seen["peak"], seen["in_flight"])
        time.sleep(0.01)
        try:
            return real_get_range(self, key, start, length)
        finally:
            with lock:
                seen["in_flight"] -= 1

    monkeypatch.setattr(LocalSink, "get_range", spy)
    report = verify_archive(VerifyOptions(url=str(root), workers=3, piece_size=16 * 1024))
    assert report.ok and report.backups[0].blocks_checked == len(m.blocks)
    assert seen["max_len"] <= 16 * 1024 and 2 <= seen["peak"] <= 3, seen
    assert report.bytes_read == m.data_size


# -- deep verification of forged payloads ------------------------------------------------------------------------------


def _v2(n: int, *, state_json: dict | None = None, last: int | None = None, end: bool = True) -> bytes:
    """A NATSARC1 archive with messages 1..n (or the last one renumbered ``last``), S2-framed."""
    msgs = [entry(b"orders.new", 1_700_000_000_000_000_000 + i, i, b"", b"payload %d" % i) for i in range(1, n)]
    msgs.append(entry(b"orders.new", 1_700_000_000_000_000_000 + n, last or n, b"", b"payload"))
    state = state_json if state_json is not None else {"messages": n, "first_seq": 1, "last_seq": last or n}
    raw = archive_bytes(entry(b"state.json", 0, 0, b"", json.dumps(state).encode()), *msgs, *([END] if end else []))
    return frame(raw, block=4096)


def _v1(members: tuple[str, ...] = ("meta.inf", "msgs/1.blk", "msgs/index.db"), name: str = "V1") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            data = json.dumps({"name": name}).encode() if m == "meta.inf" else b"\x00" * 100
            info = tarfile.TarInfo(m)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return frame(buf.getvalue())


def _state(messages: int, last: int, deleted: int = 0) -> dict:
    return {"messages": messages, "bytes": 0, "first_seq": 1, "last_seq": last, "num_deleted": deleted}


FORGED = {
    # name: (payload, manifest state, format, expected status, words in the problem or note)
    "good-v2": (_v2(300), _state(300, 300), "V2", OK, ()),
    "tail-deleted": (_v2(300), _state(300, 305, deleted=5), "V2", OK, ()),
    "count-differs": (
        _v2(300, state_json={"messages": 301, "first_seq": 1, "last_seq": 301}),
        _state(301, 301),
        "V2",
        FAILED,
        ("300 messages", "301"),
    ),
    "last-seq-differs": (
        _v2(300, last=310, state_json={"messages": 300, "first_seq": 1, "last_seq": 300}),
        _state(300, 300),
        "V2",
        FAILED,
        ("up to sequence 310",),
    ),
    "changed-while-snapshot": (_v2(300), _state(290, 290), "V2", OK, ("changed while the snapshot",)),
    "no-end-marker": (_v2(300, end=False), _state(300, 300), "V2", FAILED, ("truncated",)),
    "s2-checksum": (None, _state(300, 300), "V2", FAILED, ("checksum mismatch",)),
    "not-s2": (b"PK\x03\x04" * 100, _state(0, 0), "V2", FAILED, ("not an S2",)),
    "good-v1": (_v1(), _state(0, 0), "V1", OK, ()),
    "v1-no-index": (_v1(("meta.inf", "msgs/1.blk")), _state(0, 0), "V1", FAILED, ("msgs/index.db",)),
    "v1-other-stream": (_v1(name="OTHER"), _state(0, 0), "V1", FAILED, ("'OTHER'",)),
}


def _bad_crc() -> bytes:
    good = bytearray(_v2(300))
    good[len(b"\xff\x06\x00\x00S2sTwO") + 4] ^= 0xFF  # the first chunk's stored CRC
    return bytes(good)


@pytest.mark.parametrize("encrypted", [True, False])
def test_deep_verify_parses_the_payload(tmp_path, keyring, identity_file, encrypted):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    ids = {}
    for name, (payload, state, fmt, _status, _words) in FORGED.items():
        stream = "V1" if fmt == "V1" else name
        payload = _bad_crc() if payload is None else payload
        m = make_backup(
            repo, stream, T0, keyring if encrypted else None, payload=payload, state=state, snapshot_format=fmt
        )
        ids[name] = m.id
    # every stored byte is what the manifest says: the keyless check cannot tell
    assert verify_archive(VerifyOptions(url=str(root))).ok
    keys = keyring if encrypted else KeyRing()
    report = verify_archive(VerifyOptions(url=str(root), deep=True, keys=keys))
    by_id = {b.manifest_id: b for b in report.backups}
    for name, (_p, _s, _f, status, words) in FORGED.items():
        b = by_id[ids[name]]
        assert b.status == status, (name, b.problems)
        text = " ".join(b.problems + b.notes)
        for w in words:
            assert w in text, (name, text)
        assert b.deep == (status == OK)
    assert by_id[ids["good-v2"]].messages == 300 and by_id[ids["good-v2"]].snapshot_bytes == len(FORGED["good-v2"][0])
    assert report.exit_code == 4
    code, out, _ = cli("verify", root, ids["good-v2"], "--deep", "-i", identity_file[0])
    assert code == 0 and "300 messages" in out


# -- cold data, ls and show ------------------------------------------------------------------------------------------


def test_cold_data_is_unverified_not_failed(moto, bucket, keyring):
    url = f"s3://{bucket}/arch"
    opts = SinkOptions(endpoint_url=moto.endpoint)
    repo = Repository.open(url, opts)
    cold = make_backup(repo, "S", T0, keyring, storage_class="GLACIER")
    warm = make_backup(repo, "S", T0 + dt.timedelta(hours=1), keyring, storage_class="STANDARD_IA")
    report = verify_archive(VerifyOptions(url=url, sink=opts))
    by_id = {b.manifest_id: b for b in report.backups}
    assert by_id[warm.id].status == OK
    assert by_id[cold.id].status == UNVERIFIED and "cold storage (GLACIER)" in by_id[cold.id].problems[0]
    assert by_id[cold.id].blocks_checked == 0 and report.exit_code == 11
    rows = {e.manifest_id: e for e in list_backups(url, sink=opts)}
    assert rows[cold.id].storage_class == "GLACIER" and rows[warm.id].storage_class == "STANDARD_IA"


def test_ls_shows_class_and_lock(moto, lock_bucket, keyring):
    url = f"s3://{lock_bucket}/arch"
    opts = SinkOptions(endpoint_url=moto.endpoint)
    repo = Repository.open(url, opts)
    until = dt.datetime.now(UTC) + dt.timedelta(days=3)
    locked = make_backup(repo, "S", T0, keyring, retention=Retention("COMPLIANCE", until, legal_hold=True))
    plain = make_backup(repo, "S", T0 + dt.timedelta(hours=1), keyring, storage_class="GLACIER_IR")
    env = {"AWS_ENDPOINT_URL": moto.endpoint}
    code, out, _ = cli("ls", url, env=env)
    assert code == 0
    header, *lines = out.splitlines()
    for col in ("MESSAGES", "STORED", "RATIO", "CLASS", "LOCK", "RETAIN UNTIL"):
        assert col in header
    assert "COMPLIANCE +hold" in lines[1] and until.strftime("%Y-%m-%d") in lines[1] and "GLACIER_IR" in lines[0]
    repo.write_ref("S", ref_time(T0 - dt.timedelta(days=1)), "ab" * 16, "cd" * 32)  # a ref to nothing
    code, out, err = cli("ls", url, "--json", env=env)
    assert code == 0, err
    rows = json.loads(out)["backups"]
    assert [r["manifest_id"] for r in rows[:2]] == [plain.id, locked.id]  # newest first
    assert rows[0]["storage_class"] == "GLACIER_IR" and rows[0]["lock_mode"] is None
    assert rows[1]["lock_mode"] == "COMPLIANCE" and rows[1]["legal_hold"] is True
    assert abs(dt.datetime.fromisoformat(rows[1]["retain_until"]) - until) < dt.timedelta(seconds=2)
    assert rows[1]["backup_id"] == locked.backup_id and rows[1]["stored_bytes"] == locked.data_size
    assert rows[2]["problem"] and rows[2]["storage_class"] is None


def test_show(tmp_path, keyring, identity_file):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    other, _ = generate_identity()
    ring = KeyRing.load(identity_files=[str(identity_file[0])], recipients=[_recipient(other)], use_env=False)
    m = make_backup(repo, "ORDERS", T0, ring)
    sid = write_set(repo, [m], T0)
    code, out, err = cli("show", root, m.id[:8], "--json")
    assert code == 0, err
    d = json.loads(out)["backup"]
    assert d["manifest_id"] == m.id and d["envelope"]["stream"] == "ORDERS" and d["refs"] and d["sets"] == [sid]
    slots = d["envelope"]["encryption"]["key_slots"]
    assert [s["type"] for s in slots] == ["age", "age"] and {s["recipient"] for s in slots} == set(ring.recipients) | {
        identity_file[1]
    }
    assert all("wrapped" not in s and s["wrapped_bytes"] > 100 for s in slots)
    assert "wrapped" not in out.replace("wrapped_bytes", "")  # no wrapped secret anywhere
    assert d["body"] is None and "sealed" in d["body_note"]
    assert d["data_object"]["size"] == m.data_size and d["data_object"]["storage_class"] == "LOCAL"

    code, out, err = cli("show", root, m.id, "-i", identity_file[0], "--json")
    assert code == 0, err
    body = json.loads(out)["backup"]["body"]
    assert body["config"]["name"] == "ORDERS" and body["state"]["messages"] == 10 and len(body["plain_blocks"]) == 2
    code, out, _ = cli("show", root, m.id, "-i", identity_file[0], "--blocks")
    assert code == 0 and "config" in out and m.blocks[1].sha256 in out and "age: recipient age1" in out
    code, out, _ = cli("show", root, m.id)
    assert code == 0 and "give a key" in out and "ORDERS" in out

    stranger = tmp_path / "stranger.key"
    stranger.write_text(generate_identity()[0] + "\n")
    stranger.chmod(0o600)
    code, _, err = cli("show", root, m.id, "-i", stranger)
    assert code == 5 and "none of the configured keys" in err
    api = show_backup(str(root), m.id, ring)
    assert api.body is not None and api.body["config"]["name"] == "ORDERS" and api.sets == [sid]
    assert show_backup(str(root), m.id).body is None
    (root / m.data_object).unlink()
    code, out, _ = cli("show", root, m.id)
    assert code == 0 and "MISSING" in out


def _recipient(identity: str) -> str:
    import pyrage

    return str(pyrage.x25519.Identity.from_str(identity).to_public())
