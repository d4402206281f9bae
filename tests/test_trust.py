"""What someone with write access to the archive cannot make a restore accept (issue 15 point 5).

Real nats-servers, real backups into a local archive, the CLI as an operator runs it: signed backups and sets
(``--sign-key`` / ``--trust-key``), unencrypted backups refused when a key is configured, "latest" decided by the
manifest's ``created`` rather than the ref's name, ``verify`` flagging refs whose time disagrees with their manifest,
and ``account restore`` refusing a set recorded for another account. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from pipeline.archive import signing
from pipeline.archive.repository import Repository
from pipeline.base.errors import UsageError
from pipeline.format import manifest as mf
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec
from tests.streams import fill_stream
from tests.test_bad_input import Run, cli_env, jsarchive, keygen, one_error, stream_exists

pytestmark = pytest.mark.timeout(300)

STREAM = "ORDERS"
MESSAGES = 1200  # eu-audit (a third of the subjects) acks 300 of them
ACCOUNTS = """accounts {
  SYS: { users: [ { user: sys, password: sys } ] }
  APP: { jetstream: enabled, users: [ { user: app, password: app } ] }
  OTHER: { jetstream: enabled, users: [ { user: other, password: other } ] }
}
system_account: SYS
"""
APP = ("--user", "app", "--password", "app")
OTHER = ("--user", "other", "--password", "other")


class SignKey:
    """An Ed25519 key pair on disk, as `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write it."""

    def __init__(self, directory: Path, name: str) -> None:
        key = Ed25519PrivateKey.generate()
        self.private = directory / f"{name}.pem"
        fd = os.open(self.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        self.public = directory / f"{name}.pub.pem"
        self.public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        self.fingerprint = signing.fingerprint(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"$ {' '.join(run.args)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr
    return run


def backup(url: str, archive: Path, env: dict[str, str], *extra: str | Path, stream: str = STREAM) -> dict:
    run = ok(jsarchive("stream", "backup", stream, archive, "-s", url, "--no-progress", "--json", *extra, env=env))
    return json.loads(run.stdout)["backup"]


def restore(archive: Path, url: str, env: dict[str, str], *extra: str | Path) -> Run:
    return jsarchive("stream", "restore", archive, STREAM, "-s", url, "--no-progress", *extra, env=env)


async def _messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


def messages(url: str, stream: str = STREAM) -> int:
    return asyncio.run(_messages(url, stream))


async def _replace_content(url: str, count: int) -> None:
    """What an attacker's server holds: the same stream name, other messages."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        await js.purge_stream(STREAM)
        for i in range(count):
            await js.publish("orders.evil", f"forged {i}".encode())
    finally:
        await nc.close()


def plant(archive: Path, key: str, data: bytes) -> None:
    path = archive / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- signatures without a server -------------------------------------------------------------------------------------


def test_signature_objects_bind_key_kind_and_id(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    mid, other = "ab" * 32, "cd" * 32
    raw = signing.encode_signature("manifest", mid, key)
    fp = signing.fingerprint(signing.raw_public(key))
    name = signing.signature_key(mid, fp)
    assert name == f"signatures/{mid}/{fp}"
    assert signing.parse_signature(raw, name, "manifest", mid) == signing.raw_public(key)
    assert raw == signing.encode_signature("manifest", mid, key)  # deterministic: re-signing writes the same bytes
    with pytest.raises(ValueError, match="signs manifest"):
        signing.parse_signature(raw, signing.signature_key(other, fp), "manifest", other)  # moved to another id
    with pytest.raises(ValueError, match="not set"):
        signing.parse_signature(raw, name, "set", mid)  # a manifest signature is no set signature
    with pytest.raises(ValueError, match="fingerprint"):
        signing.parse_signature(raw, signing.signature_key(mid, "0" * 64), "manifest", mid)
    doc = json.loads(raw)
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[5] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(ValueError, match="does not verify"):
        signing.parse_signature(mf.canonical(doc), name, "manifest", mid)
    # a public key file must not hold the secret, and a private key file must be private
    pair = SignKey(tmp_path, "k")
    assert signing.load_public_key(pair.public).fingerprint == pair.fingerprint
    with pytest.raises(UsageError, match="private key"):
        signing.load_public_key(pair.private)
    pair.private.chmod(0o644)
    with pytest.raises(UsageError, match="readable by other users"):
        signing.load_private_key(pair.private)


# -- stream backups: --sign-key, --trust-key ------------------------------------------------------------------------


def test_only_backups_signed_by_a_trusted_key_restore(nats_server, second_server, tmp_path, env) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=()))
    ident = keygen(tmp_path / "age.key", env).path
    k1, k2 = SignKey(tmp_path, "k1"), SignKey(tmp_path, "k2")
    archive = tmp_path / "archive"
    unsigned = backup(nats_server.url, archive, env, "-i", ident)
    by_other = backup(nats_server.url, archive, env, "-i", ident, "--sign-key", k2.private)
    signed = backup(nats_server.url, archive, env, "-i", ident, "--sign-key", k1.private)
    assert (archive / "signatures" / signed["manifest_id"] / k1.fingerprint).is_file()
    assert not (archive / "signatures" / unsigned["manifest_id"]).exists()

    trust = ("-i", ident, "--trust-key", k1.public)
    target = second_server.url
    msg = one_error(restore(archive, target, env, *trust, "--backup", unsigned["manifest_id"]), 4, "not signed")
    assert f"signatures/{unsigned['manifest_id']}/{k1.fingerprint}" in msg  # names the signature that is missing
    one_error(restore(archive, target, env, *trust, "--backup", by_other["manifest_id"]), 4, "not signed")
    # A signature object moved under another backup's id does not count for it (and is reported as invalid).
    plant(
        archive,
        f"signatures/{unsigned['manifest_id']}/{k1.fingerprint}",
        (archive / "signatures" / signed["manifest_id"] / k1.fingerprint).read_bytes(),
    )
    one_error(restore(archive, target, env, *trust, "--backup", unsigned["manifest_id"]), 4, "invalid")
    assert not stream_exists(target, STREAM)

    # A newer unsigned backup is passed over by "latest": the newest signed one is restored, with a warning.
    newest_unsigned = backup(nats_server.url, archive, env, "-i", ident)
    run = ok(restore(archive, target, env, *trust, "--json"))
    res = json.loads(run.stdout)["restore"]
    assert res["manifest_id"] == signed["manifest_id"]
    assert any(newest_unsigned["manifest_id"][:12] in w and "not signed" in w for w in res["warnings"])
    assert messages(target) == MESSAGES

    # verify reports who signed each backup; with --trust-key the others FAIL
    run = jsarchive("verify", archive, "--json", "--trust-key", k1.public, "--no-progress", env=env)
    assert run.returncode == 4, run.stderr
    report = {b["manifest_id"]: b for b in json.loads(run.stdout)["backups"]}
    assert report[signed["manifest_id"]]["status"] == "OK"
    assert report[signed["manifest_id"]]["signature"].startswith("signed by trusted key " + k1.fingerprint[:16])
    assert report[by_other["manifest_id"]]["status"] == "FAILED"
    assert "signed by untrusted key " + k2.fingerprint[:16] in report[by_other["manifest_id"]]["signature"]
    assert any("invalid signature object" in p for p in report[unsigned["manifest_id"]]["problems"])
    assert report[newest_unsigned["manifest_id"]]["signature"] == "unsigned"


# -- forged "latest" and unencrypted backups ------------------------------------------------------------------------


def test_a_forged_latest_is_not_restored(nats_server, second_server, tmp_path, env) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=()))
    ident = keygen(tmp_path / "age.key", env).path
    archive = tmp_path / "archive"
    older = backup(nats_server.url, archive, env, "-i", ident)
    genuine = backup(nats_server.url, archive, env, "-i", ident)

    # The attacker: a plaintext backup with no key at all, of other content under the same stream name.
    asyncio.run(_replace_content(nats_server.url, 7))
    evil_archive = tmp_path / "evil"
    evil = backup(nats_server.url, evil_archive, env, "--no-encrypt")
    bid = evil["backup_id"]
    plant(archive, f"data/{bid}", (evil_archive / "data" / bid).read_bytes())
    # 1. its own manifest, under a ref whose name claims a later time than the manifest says
    raw = (evil_archive / "manifests" / evil["manifest_id"]).read_bytes()
    plant(archive, f"manifests/{evil['manifest_id']}", raw)
    lying_ref = f"refs/{STREAM}/20990101T000000.000000Z-{bid}"
    plant(archive, lying_ref, evil["manifest_id"].encode() + b"\n")
    # 2. the same manifest with "created" moved to match an even later ref: plaintext, so nothing stops that edit
    env_ = json.loads(raw)
    env_["created"] = "2099-06-01T00:00:00.000000Z"
    forged = mf.canonical(env_)
    forged_id = mf.manifest_id(forged)
    plant(archive, f"manifests/{forged_id}", forged)
    plant(archive, f"refs/{STREAM}/20990601T000000.000000Z-{bid}", forged_id.encode() + b"\n")
    # 3. an old genuine backup passed off as the newest by a ref with a later name (a rollback)
    rollback_ref = f"refs/{STREAM}/20990701T000000.000000Z-{older['backup_id']}"
    plant(archive, rollback_ref, older["manifest_id"].encode() + b"\n")
    assert [r.key for r in Repository.open(str(archive)).refs(STREAM)][:3] == [
        rollback_ref,
        f"refs/{STREAM}/20990601T000000.000000Z-{bid}",
        lying_ref,
    ]

    target = second_server.url
    # Named explicitly, the plaintext forgery is refused because a key is configured; nothing reaches the server.
    one_error(
        restore(archive, target, env, "-i", ident, "--backup", forged_id), 4, "not encrypted", "--allow-unencrypted"
    )
    assert not stream_exists(target, STREAM)
    # "latest" is the genuine newest backup: the lying refs are skipped, the forgery is not eligible.
    run = ok(restore(archive, target, env, "-i", ident, "--json"))
    res = json.loads(run.stdout)["restore"]
    assert res["manifest_id"] == genuine["manifest_id"]
    warnings = "\n".join(res["warnings"])
    assert rollback_ref in warnings and lying_ref in warnings and forged_id[:12] in warnings
    assert messages(target) == MESSAGES  # not the attacker's 7

    # verify flags both refs whose name disagrees with their manifest's created time
    run = jsarchive("verify", archive, "--json", "--no-progress", env=env)
    assert run.returncode == 4, run.stderr
    bad = {x["key"]: x["problems"] for x in json.loads(run.stdout)["links"] if not x["ok"]}
    assert set(bad) == {lying_ref, rollback_ref}, bad
    assert "disagrees with its manifest" in bad[lying_ref][0] and "20990101T000000.000000Z" in bad[lying_ref][0]
    run = jsarchive("verify", archive, "--latest", "--json", "--no-progress", env=env)
    assert run.returncode == 4, run.stderr
    latest = json.loads(run.stdout)
    assert [b["manifest_id"] for b in latest["backups"]] == [forged_id]  # consistent and newest: what a keyless
    assert {x["key"] for x in latest["links"] if not x["ok"]} == {rollback_ref}  # restore would take; flagged ref


def test_unencrypted_backups_need_allow_unencrypted_with_a_key(nats_server, second_server, tmp_path, env) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=()))
    ident = keygen(tmp_path / "age.key", env).path
    archive = tmp_path / "archive"
    plain = backup(nats_server.url, archive, env, "--no-encrypt")
    run = ok(jsarchive("account", "backup", archive, "-s", nats_server.url, "--no-encrypt", "--json", env=env))
    set_id = json.loads(run.stdout)["account"]["set_id"]
    target = second_server.url

    # "latest" (the account backup's ORDERS) and the older one: both refused
    one_error(restore(archive, target, env, "-i", ident), 4, "not encrypted", "--allow-unencrypted", "1 more skipped")
    one_error(restore(archive, target, env, "-i", ident, "--backup", plain["manifest_id"]), 4, "not encrypted")
    one_error(
        jsarchive("account", "restore", archive, "-s", target, "-i", ident, "--no-progress", env=env),
        4,
        "not encrypted",
        "nothing was restored",
    )
    one_error(jsarchive("drill", archive, "--tag", "drill", "-s", target, "-i", ident, env=env), 4, "not encrypted")
    one_error(jsarchive("export", archive, set_id, tmp_path / "out", "-i", ident, env=env), 4, "not encrypted")
    assert not stream_exists(target, STREAM) and not (tmp_path / "out").exists()

    ok(
        jsarchive(
            "export", archive, plain["manifest_id"], tmp_path / "out", "-i", ident, "--allow-unencrypted", env=env
        )
    )
    run = ok(restore(archive, target, env, "-i", ident, "--allow-unencrypted", "--json"))
    assert any("not encrypted" in w for w in json.loads(run.stdout)["restore"]["warnings"])
    assert messages(target) == MESSAGES


# -- accounts ---------------------------------------------------------------------------------------------------------


def test_account_restore_into_another_account_needs_the_flag(tmp_path, env) -> None:
    ident = keygen(tmp_path / "age.key", env).path
    k1, k2 = SignKey(tmp_path, "k1"), SignKey(tmp_path, "k2")
    archive = tmp_path / "archive"
    with EmbeddedServer(ServerSpec(name="accounts", accounts=ACCOUNTS), workdir=tmp_path / "nats") as srv:
        app_url = srv.url.replace("nats://", "nats://app:app@")
        other_url = srv.url.replace("nats://", "nats://other:other@")
        asyncio.run(fill_stream(app_url, STREAM, messages=MESSAGES, deletes=()))
        run = ok(
            jsarchive(
                "account",
                "backup",
                archive,
                "-s",
                srv.url,
                *APP,
                "-i",
                ident,
                "--sign-key",
                k1.private,
                "--json",
                env=env,
            )
        )
        out = json.loads(run.stdout)
        set_id = out["account"]["set_id"]
        assert out["account"]["account"]["name"] == "APP"
        assert out["set_signature"] == f"signatures/{set_id}/{k1.fingerprint}"
        assert (archive / out["set_signature"]).is_file()

        restore_ = ("account", "restore", archive, "-s", srv.url, *OTHER, "-i", ident, "--no-progress")
        one_error(jsarchive(*restore_, env=env), 2, "'APP'", "'OTHER'", "--allow-other-account", "nothing was restored")
        assert not stream_exists(other_url, STREAM)
        # the right account is no excuse for a set no trusted key signed
        one_error(jsarchive(*restore_, "--allow-other-account", "--trust-key", k2.public, env=env), 4, "not signed")
        assert not stream_exists(other_url, STREAM)

        run = ok(jsarchive(*restore_, "--allow-other-account", "--trust-key", k1.public, env=env))
        assert "restoring it into account 'OTHER'" in run.stderr
        assert messages(other_url) == MESSAGES
        # into the account it was recorded for, no flag is needed (the stream is still there: --on-exists skip)
        run = ok(
            jsarchive(
                "account",
                "restore",
                archive,
                "-s",
                srv.url,
                *APP,
                "-i",
                ident,
                "--on-exists",
                "skip",
                "--trust-key",
                k1.public,
                "--no-progress",
                env=env,
            )
        )
        assert "warning" not in run.stderr


def test_prune_removes_a_backups_signatures_with_it(nats_server, tmp_path, env) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=()))
    ident = keygen(tmp_path / "age.key", env).path
    k1 = SignKey(tmp_path, "k1")
    archive = tmp_path / "archive"
    old = backup(nats_server.url, archive, env, "-i", ident, "--sign-key", k1.private)
    new = backup(nats_server.url, archive, env, "-i", ident, "--sign-key", k1.private)
    ok(jsarchive("prune", archive, "--keep-last", "1", "--grace", "0h", "--confirm", env=env))
    assert not (archive / "signatures" / old["manifest_id"] / k1.fingerprint).exists()
    assert (archive / "signatures" / new["manifest_id"] / k1.fingerprint).is_file()
