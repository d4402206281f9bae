"""Slots added after the backup (`jsarchive key add-slot`, `key list`): separate immutable objects under keyslots/.

Backups are real ones (the pipeline against a nats-server); keys are age identities and raw keys. KMS slots added
to old backups are tested in tests/test_keys_kms.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from pathlib import Path

import pyrage
import pytest
from click.testing import CliRunner

from pipeline.archive.inspect import inspect_backup
from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError
from pipeline.entry.cli import main
from pipeline.format.manifest import canonical
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing, KeySlot, generate_identity, generate_raw_key
from tests.streams import fill_stream, read_messages


@pytest.fixture(autouse=True)
def _no_ambient_kms_config(monkeypatch):
    """Tests never pick up the developer's KMS keys or endpoint (tests/conftest.py clears the NATS ones)."""
    for var in ("JSARCHIVE_KMS_KEY", "JSARCHIVE_GCP_KMS_KEY", "JSARCHIVE_USE_KMS_SLOTS", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(var, raising=False)


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


@pytest.fixture
def new_identity(tmp_path: Path) -> tuple[Path, str]:
    ident, public = generate_identity()
    return secret_file(tmp_path / "new.key", ident), public


def backup(url: str, archive: Path, *keys) -> dict:
    r = cli("stream", "backup", "ORDERS", archive, "-s", url, "--no-progress", "--json", *keys)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["backup"]


async def _delete(url: str, name: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream(name)


async def _exists(url: str, name: str) -> bool:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name) is not None


def test_added_slot_opens_an_old_backup(nats_server, tmp_path, identity_file, new_identity):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    archive = tmp_path / "archive"
    old_key, old_public = identity_file
    new_key, new_public = new_identity
    res = backup(nats_server.url, archive, "-i", old_key)
    mid = res["manifest_id"]
    manifest_bytes = (archive / "manifests" / mid).read_bytes()

    r = cli("inspect", archive, mid, "-i", new_key)
    assert r.exit_code == 5, r.output

    r = cli("key", "add-slot", archive, mid[:10], "-i", old_key, "-r", new_public)
    assert r.exit_code == 0, r.output
    assert f"added age recipient {new_public} as keyslots/{mid}/" in r.stdout
    (obj,) = (archive / "keyslots" / mid).iterdir()
    raw = obj.read_bytes()
    assert obj.name == hashlib.sha256(raw).hexdigest()  # named by its content, like manifests
    doc = json.loads(raw)
    assert raw == canonical(doc)
    assert doc.keys() == {"format", "version", "backup_id", "manifest_id", "slot"}
    assert (doc["format"], doc["version"], doc["backup_id"], doc["manifest_id"]) == (
        "jsarchive.keyslot",
        1,
        res["backup_id"],
        mid,
    )
    assert doc["slot"]["type"] == "age" and doc["slot"]["recipient"] == new_public
    assert (archive / "manifests" / mid).read_bytes() == manifest_bytes  # never rewritten

    # Adding the same key again adds nothing.
    r = cli("key", "add-slot", archive, mid, "-i", old_key, "-r", new_public, "-r", old_public)
    assert r.exit_code == 0, r.output
    assert "added nothing new" in r.stdout
    assert f"already has age recipient {new_public} (added slot keyslots/{mid}/" in r.stdout
    assert f"already has age recipient {old_public}\n" in r.stdout
    assert len(list((archive / "keyslots" / mid).iterdir())) == 1

    r = cli("key", "list", archive, mid)
    assert r.exit_code == 0, r.output
    assert f"age      {old_public}  [manifest]" in r.stdout
    assert f"age      {new_public}  [added (keyslots/{mid}/{obj.name})]" in r.stdout

    # The new key alone now opens it: inspect, export and a full restore.
    r = cli("inspect", archive, mid, "-i", new_key, "--json")
    assert r.exit_code == 0, r.output
    r = cli("export", archive, mid, tmp_path / "natscli", "-i", new_key, "--json")
    assert r.exit_code == 0, r.output
    asyncio.run(_delete(nats_server.url, "ORDERS"))
    r = cli("stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--no-progress", "-i", new_key)
    assert r.exit_code == 0, r.output
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == before


def test_add_slot_all_over_several_backups(nats_server, tmp_path, identity_file):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    old_key, _ = identity_file
    raw_key = secret_file(tmp_path / "raw.key", generate_raw_key())
    other_ident, other_public = generate_identity()
    other_key = secret_file(tmp_path / "other.key", other_ident)
    b1 = backup(nats_server.url, archive, "-i", old_key)
    b2 = backup(nats_server.url, archive, "-i", old_key)
    b3 = backup(nats_server.url, archive, "-r", other_public)  # a backup the unlock key cannot open
    b4 = backup(nats_server.url, archive, "--no-encrypt")

    r = cli("key", "add-slot", archive, "--all", "-i", old_key, "--key-file", raw_key, "--json")
    assert r.exit_code == 5, r.output  # one backup could not be opened: its own exit code
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["key_slots"]["failed"] == 1
    by_id = {b["manifest_id"]: b for b in out["key_slots"]["backups"]}
    assert by_id.keys() == {b1["manifest_id"], b2["manifest_id"], b3["manifest_id"], b4["manifest_id"]}
    for b in (b1, b2):
        (added,) = by_id[b["manifest_id"]]["added"]
        assert added["type"] == "raw" and added["object"].startswith(f"keyslots/{b['manifest_id']}/")
    assert by_id[b3["manifest_id"]]["error"]["kind"] == "key"
    assert f"It can be opened by: age recipient {other_public}" in by_id[b3["manifest_id"]]["error"]["message"]
    assert by_id[b4["manifest_id"]]["skipped"] == "not encrypted"

    # The raw key alone opens the old backups now (inspect reads and checks every block).
    for b in (b1, b2):
        assert inspect_backup(str(archive), b["manifest_id"], keys=KeyRing.load(key_files=[str(raw_key)])).messages
    # A second run adds nothing; --stream narrows --all.
    r = cli(
        "key", "add-slot", archive, "--all", "--stream", "ORDERS", "-i", old_key, "-i", other_key, "--key-file", raw_key
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.count("added nothing new") == 2 and r.stdout.count("added raw key") == 1
    r = cli("key", "add-slot", archive, "--all", "--stream", "NOPE", "-i", old_key, "--key-file", raw_key)
    assert r.exit_code == 0 and "no backups" in r.output

    raw_key.chmod(0o644)  # key files are secrets, the new slot's key as much as the unlock key
    r = cli("key", "add-slot", archive, b1["manifest_id"], "-i", old_key, "--key-file", raw_key)
    assert r.exit_code == 2 and "readable by other users" in r.output
    r = cli("key", "add-slot", archive, b4["manifest_id"], "-i", old_key, "-r", other_public)
    assert r.exit_code == 2 and "not encrypted" in r.output
    r = cli("key", "add-slot", archive, b1["manifest_id"], "-i", old_key)
    assert r.exit_code == 2 and "name the key to add a slot for" in r.output
    r = cli("key", "add-slot", archive, b1["manifest_id"], "--all", "-i", old_key, "-r", other_public)
    assert r.exit_code == 2 and "either backup ids or --all" in r.output


def test_key_list_shows_no_secret_material(nats_server, tmp_path, identity_file, new_identity):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    old_key, old_public = identity_file
    raw_key = secret_file(tmp_path / "raw.key", generate_raw_key())
    res = backup(nats_server.url, archive, "-i", old_key, "--key-file", raw_key)
    mid = res["manifest_id"]
    r = cli("key", "add-slot", archive, mid, "-i", old_key, "-r", new_identity[1])
    assert r.exit_code == 0, r.output

    repo = Repository.open(str(archive))
    m = repo.load_manifest(mid)
    slots = repo.key_slots(m)
    assert [s.type for s in slots] == ["age", "raw", "age"]
    data_key = KeyRing.load(identity_files=[str(old_key)], use_env=False).unwrap(slots, m.backup_id, m.open_body)
    secrets = [base64.b64encode(s.wrapped).decode() for s in slots]
    secrets += [data_key.hex(), base64.b64encode(data_key).decode(), raw_key.read_text().strip()]
    secrets += [line for line in old_key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")]
    for args in (["--json"], []):
        r = cli("key", "list", archive, mid[:8], *args)
        assert r.exit_code == 0, r.output
        for s in secrets:
            assert s not in r.output
            assert s.lower() not in r.output.lower()
    listing = json.loads(cli("key", "list", archive, mid, "--json").stdout)["key_slots"]
    assert [(s["type"], s["source"]) for s in listing["slots"]] == [
        ("age", "manifest"),
        ("raw", "manifest"),
        ("age", "added"),
    ]
    assert listing["slots"][1]["key_id"] == slots[1].key_id  # the public fingerprint
    assert all("wrapped" not in s for s in listing["slots"])
    # The add-slot output holds nothing secret either.
    r = cli("key", "add-slot", archive, mid, "-i", old_key, "-r", generate_identity()[1], "--json")
    assert r.exit_code == 0 and not any(s in r.output for s in secrets)


def test_forged_added_slot_cannot_change_what_is_restored(nats_server, tmp_path, identity_file, new_identity):
    """Anyone who can write to the bucket can add a slot object. One that wraps another key must not open the
    backup to other data: the sealed body does not open with that key, so restore stops with an integrity error
    (before the server is touched), and a host with a genuine key still restores."""
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    archive = tmp_path / "archive"
    good_key, _ = identity_file
    forger_key, forger_public = new_identity
    res = backup(nats_server.url, archive, "-i", good_key)
    repo = Repository.open(str(archive))
    m = repo.load_manifest(res["manifest_id"])
    forged = KeySlot("age", pyrage.encrypt(os.urandom(32), [pyrage.x25519.Recipient.from_str(forger_public)]),
                     recipient=forger_public)  # fmt: skip
    forged_key = repo.write_extra_slot(m, forged)
    asyncio.run(_delete(nats_server.url, "ORDERS"))

    r = cli("stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--no-progress", "--json", "-i", forger_key)
    assert r.exit_code == 4, r.output
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == "integrity"
    want = f"the key from age recipient {forger_public} (added slot {forged_key}) does not open this backup"
    assert want in err["message"]
    assert not asyncio.run(_exists(nats_server.url, "ORDERS"))
    r = cli("inspect", archive, m.id, "-i", forger_key)
    assert r.exit_code == 4, r.output
    # add-slot checks the key it unwrapped before wrapping it again: a forged slot is never laundered.
    r = cli("key", "add-slot", archive, m.id, "-i", forger_key, "-r", generate_identity()[1])
    assert r.exit_code == 4, r.output
    assert len(list((archive / "keyslots" / m.id).iterdir())) == 1

    # A key whose slot comes after the forged one is still found: the wrong key is skipped, not used.
    ring = KeyRing.load(identity_files=[str(forger_key), str(good_key)], use_env=False)
    assert ring.unwrap([forged, *m.key_slots], m.backup_id, m.open_body)
    with pytest.raises(IntegrityError):
        KeyRing.load(identity_files=[str(forger_key)], use_env=False).unwrap([forged], m.backup_id, m.open_body)

    r = cli(
        "stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--no-progress", "-i", forger_key, "-i", good_key
    )
    assert r.exit_code == 0, r.output
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == before


def test_invalid_slot_objects_are_listed_and_ignored(nats_server, tmp_path, identity_file, new_identity):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    old_key, _ = identity_file
    new_key, new_public = new_identity
    b1 = backup(nats_server.url, archive, "-i", old_key)
    b2 = backup(nats_server.url, archive, "-i", old_key)
    r = cli("key", "add-slot", archive, b2["manifest_id"], "-i", old_key, "-r", new_public)
    assert r.exit_code == 0, r.output

    # b2's genuine added slot copied under b1 (it names another backup), and one with altered bytes.
    (genuine,) = (archive / "keyslots" / b2["manifest_id"]).iterdir()
    copied = archive / "keyslots" / b1["manifest_id"] / genuine.name
    copied.parent.mkdir(parents=True)
    copied.write_bytes(genuine.read_bytes())
    doc = json.loads(genuine.read_bytes())
    doc["backup_id"] = b1["backup_id"]
    doc["manifest_id"] = b1["manifest_id"]
    relabelled = canonical(doc)
    (copied.parent / hashlib.sha256(relabelled).hexdigest()).write_bytes(relabelled)  # right labels, b2's key
    (copied.parent / ("0" * 64)).write_bytes(relabelled)  # does not hash to its name

    listing = json.loads(cli("key", "list", archive, b1["manifest_id"], "--json").stdout)["key_slots"]
    problems = sorted(i["problem"] for i in listing["invalid"])
    assert problems == ["it belongs to another backup", "its bytes do not hash to its name (altered)"]
    assert [s["source"] for s in listing["slots"]] == ["manifest", "added"]  # the relabelled one parses...
    r = cli("inspect", archive, b1["manifest_id"], "-i", new_key, "--json")
    assert r.exit_code == 4, r.output  # ... but holds b2's data key, which does not open b1
    assert "forged or altered" in json.loads(r.stdout)["error"]["message"]
    r = cli("inspect", archive, b1["manifest_id"], "-i", old_key, "--json")
    assert r.exit_code == 0, r.output
