"""KMS key slots: AWS KMS through moto's server, Google Cloud KMS through its client library's interface with a fake.

AWS: moto's standalone server (the session fixture of tests/s3_fixtures.py serves every service, KMS included) holds
the keys; jsarchive's KMS client reaches it through ``--kms-endpoint`` / ``$AWS_ENDPOINT_URL_KMS``. moto 5 keeps a
key's state and enforces the encryption context, but it neither refuses Encrypt/Decrypt on a disabled key nor
evaluates key policies for them (``test_moto_gaps`` pins that down). So the disabled-key and encrypt-only-host
tests add what KMS itself would answer through a botocore ``before-send`` event hook on jsarchive's own client
(injected with ``pipeline.keys.kms.aws_client_factory``): ``DisabledException`` when moto reports the key disabled, and
``AccessDeniedException`` for Decrypt as IAM answers a principal that has kms:Encrypt only.

Google: there is no Cloud KMS emulator. ``FakeKms`` is a ``KeyManagementServiceClient`` stand-in exposing
``encrypt``/``decrypt`` with the real request and response types (``google.cloud.kms_v1.EncryptRequest`` etc., so
the request shapes are checked by the library's own message classes), AES-GCM under per-version keys with the
additional authenticated data, the CRC32C fields, per-role permissions and version states, and the
``google.api_core`` exceptions the service raises. It is injected with ``pipeline.keys.kms.gcp_client_factory``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import google_crc32c
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.api_core import exceptions as gexc
from google.cloud import kms_v1

from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError, KeyUnavailable, UsageError
from pipeline.entry.cli import main
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing, kms
from tests.streams import fill_stream, read_messages

DATA_KEY = bytes(range(32))
BACKUP_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"


@pytest.fixture(autouse=True)
def _no_ambient_kms_config(monkeypatch):
    """Tests never pick up the developer's KMS keys or endpoint (tests/conftest.py clears the NATS ones)."""
    for var in ("JSARCHIVE_KMS_KEY", "JSARCHIVE_GCP_KMS_KEY", "JSARCHIVE_USE_KMS_SLOTS", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(var, raising=False)


# -- AWS fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture
def kms_admin(moto):
    """A plain boto3 KMS client against moto (the test's, not jsarchive's)."""
    return boto3.client("kms", endpoint_url=moto.endpoint, region_name="us-east-1")


@pytest.fixture
def aws_key(kms_admin) -> str:
    return kms_admin.create_key(Description="jsarchive test")["KeyMetadata"]["Arn"]


@pytest.fixture
def kms_endpoint(moto, monkeypatch) -> str:
    """jsarchive's KMS client finds moto through $AWS_ENDPOINT_URL_KMS (boto3 honours it natively too)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto.endpoint)
    return moto.endpoint


class KmsHooks:
    """Event handlers registered on every KMS client jsarchive creates (through ``kms.aws_client_factory``)."""

    def __init__(self) -> None:
        self.handlers: list[tuple[str, object]] = []
        self.calls: list[str] = []

    def factory(self, region, config):
        client = boto3.client("kms", region_name=region, endpoint_url=config.aws_endpoint)
        client.meta.events.register("before-send.kms", self._record)
        for event, fn in self.handlers:
            client.meta.events.register(event, fn)
        return client

    def _record(self, request, event_name: str = "", **_kw):
        self.calls.append(event_name.rsplit(".", 1)[-1])


@pytest.fixture
def kms_hooks(monkeypatch) -> KmsHooks:
    hooks = KmsHooks()
    monkeypatch.setattr(kms, "aws_client_factory", hooks.factory)
    return hooks


def kms_error(request, code: str, message: str) -> AWSResponse:
    """A response as KMS sends it for an error (JSON protocol)."""
    body = json.dumps({"__type": code, "message": message}).encode()

    class Raw:
        def stream(self, **_kw):
            yield body

    return AWSResponse(
        request.url, 400, {"x-amzn-RequestId": "test", "Content-Type": "application/x-amz-json-1.1"}, Raw()
    )


def deny_decrypt(request, **_kw):
    """What KMS answers a principal whose policy allows kms:Encrypt only."""
    return kms_error(
        request,
        "AccessDeniedException",
        "User: arn:aws:sts::123456789012:assumed-role/jsarchive-backup/host is not authorized to perform: "
        "kms:Decrypt on this resource because no identity-based policy allows the kms:Decrypt action",
    )


def enforce_disabled(admin):
    """KMS refuses Encrypt and Decrypt on a disabled key; moto records DisableKey but does not refuse."""

    def handler(request, **_kw):
        key_id = json.loads(request.body)["KeyId"]
        meta = admin.describe_key(KeyId=key_id)["KeyMetadata"]
        if meta["KeyState"] != "Enabled":
            return kms_error(request, "DisabledException", f"{meta['Arn']} is disabled.")
        return None

    return handler


def uuid_of(arn: str) -> str:
    """moto's DisableKey/EnableKey/PutKeyPolicy take the key id only (KMS itself also takes the ARN)."""
    return arn.rsplit("/", 1)[-1]


def ring(**kw) -> KeyRing:
    return KeyRing.load(use_env=False, **kw)


# -- AWS: the slot itself -----------------------------------------------------------------------------------------


def test_aws_slot_fields_context_binding_and_matching(kms_admin, aws_key, kms_endpoint):
    kms_admin.create_alias(AliasName="alias/jsarchive", TargetKeyId=aws_key)
    key_uuid = aws_key.rsplit("/", 1)[-1]
    for spec in (aws_key, "alias/jsarchive", key_uuid):
        (slot,) = ring(kms_keys=[spec]).wrap(DATA_KEY, BACKUP_ID)
        assert slot.to_json().keys() == {"type", "key_id", "region", "wrapped"}
        assert (slot.type, slot.key_id, slot.region) == ("aws-kms", aws_key, "us-east-1")  # the ARN KMS reported
        assert DATA_KEY not in slot.wrapped
        for opener in (aws_key, "alias/jsarchive", key_uuid):
            assert ring(kms_keys=[opener]).unwrap([slot], BACKUP_ID) == DATA_KEY
        assert ring(use_kms_slots=True).unwrap([slot], BACKUP_ID) == DATA_KEY  # the slot's own key, not named

    # The encryption context binds the slot to its backup: moved to another backup, KMS refuses it.
    with pytest.raises(KeyUnavailable, match="altered, or copied from another backup"):
        ring(kms_keys=[aws_key]).unwrap([slot], OTHER_ID)
    # Not named and no --use-kms-slots: no KMS call at all, and the error names the slot.
    with pytest.raises(KeyUnavailable, match=f"It can be opened by: aws-kms key {aws_key}") as e:
        ring().unwrap([slot], BACKUP_ID)
    assert "--use-kms-slots" in str(e.value)
    # Another key (that exists and works) does not match the slot's ARN: it is not even asked.
    other = kms_admin.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(KeyUnavailable, match=f"Given: aws-kms key {other}"):
        ring(kms_keys=[other]).unwrap([slot], BACKUP_ID)
    # The encryption context is really sent: the wrapped key does not decrypt without it.
    with pytest.raises(kms_admin.exceptions.InvalidCiphertextException):
        kms_admin.decrypt(CiphertextBlob=slot.wrapped, KeyId=aws_key)
    ctx = {"jsarchive:backup-id": BACKUP_ID}
    assert kms_admin.decrypt(CiphertextBlob=slot.wrapped, KeyId=aws_key, EncryptionContext=ctx)["Plaintext"] == DATA_KEY


@pytest.mark.parametrize(
    "spec,ok",
    [
        ("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab", True),
        ("arn:aws:kms:eu-west-1:123456789012:alias/backups", True),
        ("alias/backups", True),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("backups", False),
        ("arn:aws:s3:::bucket", False),
        ("arn:aws:kms:eu-west-1:123456789012:key/nope", False),
    ],
)
def test_aws_key_specs(spec, ok):
    if ok:
        assert kms.AwsKey.parse(spec).spec == spec
    else:
        with pytest.raises(UsageError, match="is not an AWS KMS key|does not end in key"):
            kms.AwsKey.parse(spec)


def test_multi_region_replica_opens_the_primary_slot():
    mrk = "mrk-1234abcd12ab34cd56ef1234567890ab"
    primary = f"arn:aws:kms:us-east-1:123456789012:key/{mrk}"
    replica = kms.AwsKey.parse(f"arn:aws:kms:eu-west-1:123456789012:key/{mrk}")
    assert replica.request_for(primary, "us-east-1") == (replica.spec, "eu-west-1")  # DR region asks its replica
    plain = kms.AwsKey.parse("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert plain.request_for(primary, "us-east-1") is None


def test_moto_gaps(kms_admin, aws_key):
    """What moto does not enforce, and the hooks in this module therefore add (see the module docstring)."""
    kms_admin.disable_key(KeyId=uuid_of(aws_key))
    assert kms_admin.describe_key(KeyId=aws_key)["KeyMetadata"]["KeyState"] == "Disabled"
    blob = kms_admin.encrypt(KeyId=aws_key, Plaintext=b"x")["CiphertextBlob"]  # real KMS: DisabledException
    assert kms_admin.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"}],
    }
    kms_admin.enable_key(KeyId=uuid_of(aws_key))
    kms_admin.put_key_policy(KeyId=uuid_of(aws_key), PolicyName="default", Policy=json.dumps(deny))
    assert kms_admin.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"  # real KMS: AccessDeniedException


def test_kms_calls_keep_key_material_out_of_debug_logs(kms_admin, aws_key, kms_endpoint, caplog):
    caplog.set_level(logging.DEBUG)
    secret_forms = (base64.b64encode(DATA_KEY).decode(), DATA_KEY.hex())
    # Without jsarchive's guard, botocore's DEBUG logs carry the plaintext (request params and response body)...
    kms_admin.encrypt(KeyId=aws_key, Plaintext=DATA_KEY)
    assert any(s in caplog.text for s in secret_forms)
    caplog.clear()
    # ... with it, nothing of a wrap or an unwrap reaches the logs, while other DEBUG logging goes on.
    r = ring(kms_keys=[aws_key])
    (slot,) = r.wrap(DATA_KEY, BACKUP_ID)
    assert r.unwrap([slot], BACKUP_ID) == DATA_KEY
    assert caplog.records, "botocore logged nothing at DEBUG: the test proves nothing"
    assert not any(s in caplog.text for s in secret_forms)
    assert base64.b64encode(slot.wrapped).decode() not in caplog.text


# -- AWS: through the pipeline and the command line --------------------------------------------------------------


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def backup(url, archive, *keys) -> dict:
    r = cli("stream", "backup", "ORDERS", archive, "-s", url, "--no-progress", "--json", *keys)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["backup"]


def error(r) -> dict:
    return json.loads(r.stdout)["error"]


async def _delete(url: str, name: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream(name)


async def _exists(url: str, name: str) -> bool:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name) is not None


def all_bytes(archive: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(archive.rglob("*")) if p.is_file())


def secret_forms(key: bytes) -> list[bytes]:
    return [key, key.hex().encode(), base64.b64encode(key)]


def test_kms_plus_offline_age_slot_backup_inspect_restore(nats_server, moto, aws_key, tmp_path, identity_file):
    """Daily restores through KMS, break-glass through an offline age identity: one backup, both slots."""
    filled = asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    archive = tmp_path / "archive"
    ident, public = identity_file
    endpoint = ["--kms-endpoint", moto.endpoint]  # the flag this time, not $AWS_ENDPOINT_URL_KMS
    r = cli(
        "stream", "backup", "ORDERS", archive, "-s", nats_server.url, "--no-progress", "--json",
        "--kms-key", aws_key, "-r", public, *endpoint,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["backup"]
    assert res["key_slots"] == [f"age recipient {public}", f"aws-kms key {aws_key}"]
    m = Repository.open(str(archive)).load_manifest(res["manifest_id"])
    assert [(s.type, s.key_id, s.region) for s in m.key_slots] == [
        ("age", None, None),
        ("aws-kms", aws_key, "us-east-1"),
    ]

    # Nothing the backup wrote or printed holds the data key.
    data_key = KeyRing.load(identity_files=[str(ident)], use_env=False).unwrap(m.key_slots, m.backup_id)
    for form in secret_forms(data_key):
        assert form not in all_bytes(archive)
        assert form.decode("latin-1") not in r.output

    for keys in (["--kms-key", aws_key, *endpoint], ["-i", ident], ["--use-kms-slots", *endpoint]):
        r = cli("inspect", archive, res["manifest_id"][:12], "--json", *keys)
        assert r.exit_code == 0, (keys, r.output)
        assert json.loads(r.stdout)["inspect"]["messages"] == filled.messages

    asyncio.run(_delete(nats_server.url, "ORDERS"))
    r = cli(
        "stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--no-progress", "--kms-key", aws_key, *endpoint
    )
    assert r.exit_code == 0, r.output
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == before


def test_encrypt_only_host_writes_but_cannot_read(nats_server, aws_key, tmp_path, kms_endpoint, kms_hooks):
    """The backup role has kms:Encrypt and no kms:Decrypt (simulated: a before-send hook answers Decrypt with the
    AccessDeniedException IAM gives; moto does not evaluate policies for Decrypt)."""
    kms_hooks.handlers.append(("before-send.kms.Decrypt", deny_decrypt))
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    res = backup(nats_server.url, archive, "--kms-key", aws_key)
    assert kms_hooks.calls == ["Encrypt"]  # never GenerateDataKey, never Decrypt
    for args in (
        ("inspect", archive, res["manifest_id"], "--json", "--kms-key", aws_key),
        ("stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--json", "--no-progress",
         "--use-kms-slots"),
    ):  # fmt: skip
        r = cli(*args)
        assert r.exit_code == 5, r.output
        err = error(r)
        assert err["kind"] == "key"
        assert f"It can be opened by: aws-kms key {aws_key}" in err["message"]
        assert "kms:Decrypt is not allowed (AccessDeniedException" in err["message"]


def test_disabled_key_fails_backup_and_restore_clearly(
    nats_server, kms_admin, aws_key, tmp_path, kms_endpoint, kms_hooks
):
    kms_hooks.handlers.append(("before-send.kms", enforce_disabled(kms_admin)))
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    res = backup(nats_server.url, archive, "--kms-key", aws_key)
    kms_admin.disable_key(KeyId=uuid_of(aws_key))

    r = cli("inspect", archive, res["manifest_id"], "--json", "--kms-key", aws_key)
    assert r.exit_code == 5, r.output
    assert f"{aws_key} is disabled" in error(r)["message"] and "DisabledException" in error(r)["message"]

    r = cli(
        "stream", "backup", "ORDERS", archive, "-s", nats_server.url, "--no-progress", "--json", "--kms-key", aws_key
    )
    assert r.exit_code == 5, r.output
    assert error(r)["message"].startswith(
        f"cannot wrap the data key with aws-kms key {aws_key}: the key cannot be used"
    )
    assert len(Repository.open(str(archive)).manifest_ids()) == 1  # no manifest for the failed backup

    kms_admin.enable_key(KeyId=uuid_of(aws_key))
    r = cli("inspect", archive, res["manifest_id"], "--json", "--kms-key", aws_key)
    assert r.exit_code == 0, r.output


def test_wrong_missing_and_malformed_kms_keys(nats_server, kms_admin, aws_key, tmp_path, kms_endpoint, identity_file):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    res = backup(nats_server.url, archive, "--kms-key", aws_key)
    other = kms_admin.create_key()["KeyMetadata"]["Arn"]
    r = cli(
        "stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--json", "--no-progress", "--kms-key", other
    )
    assert r.exit_code == 5, r.output
    assert f"It can be opened by: aws-kms key {aws_key}. Given: aws-kms key {other}" in error(r)["message"]
    assert asyncio.run(_exists(nats_server.url, "ORDERS"))  # the source stream; nothing was touched

    r = cli("inspect", archive, res["manifest_id"], "--json", "-i", identity_file[0])
    assert r.exit_code == 5 and "Given: 1 age identity" in error(r)["message"]

    r = cli(
        "stream", "backup", "ORDERS", archive, "-s", nats_server.url, "--json", "--no-progress",
        "--kms-key", "alias/does-not-exist",
    )  # fmt: skip
    assert r.exit_code == 5, r.output
    assert "alias/does-not-exist" in error(r)["message"] and "NotFoundException" in error(r)["message"]

    r = cli("stream", "backup", "ORDERS", archive, "-s", nats_server.url, "--json", "--kms-key", "my-key")
    assert r.exit_code == 2 and "is not an AWS KMS key" in error(r)["message"]


def test_recipient_only_host_cannot_restore(nats_server, tmp_path, identity_file):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    public = identity_file[1]
    res = backup(nats_server.url, archive, "-r", public)
    asyncio.run(_delete(nats_server.url, "ORDERS"))
    r = cli("stream", "restore", archive, "ORDERS", "-s", nats_server.url, "--json", "--no-progress")
    assert r.exit_code == 5, r.output
    assert f"It can be opened by: age recipient {public}. Given: no key" in error(r)["message"]
    assert not asyncio.run(_exists(nats_server.url, "ORDERS"))
    m = Repository.open(str(archive)).load_manifest(res["manifest_id"])
    with pytest.raises(KeyUnavailable, match="only age recipients \\(1\\), which can write backups but not open them"):
        ring(recipients=[public]).unwrap(m.key_slots, m.backup_id, m.open_body)


def test_add_kms_slot_to_an_age_backup(nats_server, kms_admin, aws_key, tmp_path, identity_file, kms_endpoint):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    res = backup(nats_server.url, archive, "-i", identity_file[0])
    r = cli("inspect", archive, res["manifest_id"], "--json", "--kms-key", aws_key)
    assert r.exit_code == 5
    r = cli("key", "add-slot", archive, res["manifest_id"][:8], "-i", identity_file[0], "--kms-key", aws_key, "--json")
    assert r.exit_code == 0, r.output
    (added,) = json.loads(r.stdout)["key_slots"]["backups"][0]["added"]
    assert (added["type"], added["key_id"], added["region"]) == ("aws-kms", aws_key, "us-east-1")
    r = cli("inspect", archive, res["manifest_id"], "--json", "--kms-key", aws_key)
    assert r.exit_code == 0, r.output
    r = cli("key", "list", archive, res["manifest_id"], "--json")
    slots = json.loads(r.stdout)["key_slots"]["slots"]
    assert [(s["type"], s["source"]) for s in slots] == [("age", "manifest"), ("aws-kms", "added")]


# -- Google Cloud KMS through a fake client ------------------------------------------------------------------------


def _crc(data: bytes) -> int:
    return google_crc32c.value(bytes(data))


class FakeKms:
    """A stand-in for ``kms_v1.KeyManagementServiceClient``: ``encrypt`` and ``decrypt`` only (see module docstring).

    ``keys[name] = {"versions": [aes keys], "state": [per version "ENABLED"/"DISABLED"], "roles": {"encrypt",
    "decrypt"}}``: roles model cloudkms.cryptoKeyEncrypter / cryptoKeyDecrypter granted to the caller.
    """

    def __init__(self) -> None:
        self.keys: dict[str, dict] = {}
        self.requests: list[object] = []

    def create(self, name: str, roles=("encrypt", "decrypt")) -> str:
        self.keys[name] = {"versions": [AESGCM.generate_key(256)], "state": ["ENABLED"], "roles": set(roles)}
        return name

    def _key(self, name: str, permission: str, role: str) -> dict:
        key = self.keys.get(name)
        if key is None or role not in key["roles"]:
            raise gexc.PermissionDenied(f"Permission '{permission}' denied on resource '{name}' (or it may not exist).")
        return key

    def encrypt(self, request=None, *, timeout=None, retry=None, metadata=()):
        req = kms_v1.EncryptRequest(request)  # the library's own message: unknown fields raise ValueError
        self.requests.append(req)
        key = self._key(req.name, "cloudkms.cryptoKeyVersions.useToEncrypt", "encrypt")
        if "plaintext_crc32c" in req and req.plaintext_crc32c != _crc(req.plaintext):
            raise gexc.InvalidArgument(
                "The checksum in field plaintext_crc32c did not match the data in field plaintext."
            )
        version = len(key["versions"])  # the primary: the newest
        if key["state"][version - 1] != "ENABLED":
            raise gexc.FailedPrecondition(
                f"The request cannot be fulfilled. Resource {req.name}/cryptoKeyVersions/{version} has value DISABLED "
                "in field crypto_key_version.state."
            )
        nonce = os.urandom(12)
        ct = (
            bytes([version])
            + nonce
            + AESGCM(key["versions"][version - 1]).encrypt(nonce, req.plaintext, req.additional_authenticated_data)
        )
        return kms_v1.EncryptResponse(
            name=f"{req.name}/cryptoKeyVersions/{version}",
            ciphertext=ct,
            ciphertext_crc32c=_crc(ct),
            verified_plaintext_crc32c="plaintext_crc32c" in req,
            verified_additional_authenticated_data_crc32c="additional_authenticated_data_crc32c" in req,
        )

    def decrypt(self, request=None, *, timeout=None, retry=None, metadata=()):
        req = kms_v1.DecryptRequest(request)
        self.requests.append(req)
        key = self._key(req.name, "cloudkms.cryptoKeyVersions.useToDecrypt", "decrypt")
        if "ciphertext_crc32c" in req and req.ciphertext_crc32c != _crc(req.ciphertext):
            raise gexc.InvalidArgument(
                "The checksum in field ciphertext_crc32c did not match the data in field ciphertext."
            )
        ct = bytes(req.ciphertext)
        version = ct[0] if ct else 0
        if not 1 <= version <= len(key["versions"]):
            raise gexc.InvalidArgument("Decryption failed: the ciphertext is invalid.")
        if key["state"][version - 1] != "ENABLED":
            raise gexc.FailedPrecondition(
                f"The request cannot be fulfilled. Resource {req.name}/cryptoKeyVersions/{version} has value DISABLED "
                "in field crypto_key_version.state."
            )
        try:
            plain = AESGCM(key["versions"][version - 1]).decrypt(ct[1:13], ct[13:], req.additional_authenticated_data)
        except InvalidTag:
            raise gexc.InvalidArgument("Decryption failed: the ciphertext is invalid.") from None
        return kms_v1.DecryptResponse(plaintext=plain, plaintext_crc32c=_crc(plain), used_primary=True)


GCP_KEY = "projects/acme/locations/europe-west1/keyRings/jsarchive/cryptoKeys/backups"


@pytest.fixture
def fake_gcp(monkeypatch) -> FakeKms:
    fake = FakeKms()
    fake.create(GCP_KEY)
    monkeypatch.setattr(kms, "gcp_client_factory", lambda config: fake)
    return fake


def test_gcp_slot_roundtrip_binding_and_request_shape(fake_gcp):
    (slot,) = ring(gcp_kms_keys=[GCP_KEY]).wrap(DATA_KEY, BACKUP_ID)
    assert slot.to_json().keys() == {"type", "key_name", "key_version", "wrapped"}
    assert (slot.type, slot.key_name, slot.key_version) == ("gcp-kms", GCP_KEY, f"{GCP_KEY}/cryptoKeyVersions/1")
    enc = fake_gcp.requests[0]
    assert enc.additional_authenticated_data == b"jsarchive/v1/key-slot\x00" + bytes.fromhex(BACKUP_ID)
    assert enc.plaintext_crc32c == _crc(DATA_KEY) and "additional_authenticated_data_crc32c" in enc
    assert ring(gcp_kms_keys=[GCP_KEY]).unwrap([slot], BACKUP_ID) == DATA_KEY
    assert ring(use_kms_slots=True).unwrap([slot], BACKUP_ID) == DATA_KEY
    dec = fake_gcp.requests[-1]
    assert dec.name == GCP_KEY and dec.ciphertext_crc32c == _crc(slot.wrapped)

    with pytest.raises(KeyUnavailable, match="altered, copied from another backup"):
        ring(gcp_kms_keys=[GCP_KEY]).unwrap([slot], OTHER_ID)
    with pytest.raises(KeyUnavailable, match=f"It can be opened by: gcp-kms key {GCP_KEY}. Given: no key"):
        ring().unwrap([slot], BACKUP_ID)
    with pytest.raises(UsageError, match="is not a Cloud KMS CryptoKey"):
        ring(gcp_kms_keys=[f"{GCP_KEY}/cryptoKeyVersions/1"])


def test_gcp_roles_and_disabled_versions(fake_gcp):
    writer_only = fake_gcp.create(GCP_KEY + "-w", roles=("encrypt",))
    (slot,) = ring(gcp_kms_keys=[writer_only]).wrap(DATA_KEY, BACKUP_ID)  # cryptoKeyEncrypter suffices to write
    with pytest.raises(KeyUnavailable, match="cloudkms decrypt is not allowed .*useToDecrypt"):
        ring(gcp_kms_keys=[writer_only]).unwrap([slot], BACKUP_ID)
    fake_gcp.keys[GCP_KEY]["state"][0] = "DISABLED"
    with pytest.raises(KeyUnavailable, match="cannot wrap the data key with gcp-kms key .*DISABLED"):
        ring(gcp_kms_keys=[GCP_KEY]).wrap(DATA_KEY, BACKUP_ID)
    with pytest.raises(KeyUnavailable, match="not allowed"):  # unknown key: Google says denied "or it may not exist"
        ring(gcp_kms_keys=[GCP_KEY + "-gone"]).wrap(DATA_KEY, BACKUP_ID)


def test_gcp_backup_and_inspect_through_the_cli(nats_server, fake_gcp, tmp_path, identity_file):
    filled = asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    archive = tmp_path / "archive"
    res = backup(nats_server.url, archive, "--gcp-kms-key", GCP_KEY, "-r", identity_file[1])
    assert res["key_slots"] == [f"age recipient {identity_file[1]}", f"gcp-kms key {GCP_KEY}"]
    r = cli("inspect", archive, res["manifest_id"], "--json", "--gcp-kms-key", GCP_KEY)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["inspect"]["messages"] == filled.messages
    fake_gcp.keys[GCP_KEY]["roles"] = {"encrypt"}  # the host is a writer only
    r = cli("inspect", archive, res["manifest_id"], "--json", "--gcp-kms-key", GCP_KEY)
    assert r.exit_code == 5, r.output
    assert "useToDecrypt" in error(r)["message"] and f"gcp-kms key {GCP_KEY}" in error(r)["message"]


def test_a_wrong_key_from_kms_is_an_integrity_error(fake_gcp):
    """Even a KMS slot that decrypts (to another key) cannot open a backup: the verify step catches it."""
    (slot,) = ring(gcp_kms_keys=[GCP_KEY]).wrap(os.urandom(32), BACKUP_ID)

    def verify(key: bytes) -> None:
        if key != DATA_KEY:
            raise IntegrityError("body does not open")

    with pytest.raises(IntegrityError, match=f"the key from gcp-kms key {GCP_KEY} does not open this backup"):
        ring(gcp_kms_keys=[GCP_KEY]).unwrap([slot], BACKUP_ID, verify)


def test_cloud_sdks_are_imported_lazily():
    """The dependency rule: a local-only install needs no cloud SDK; importing the CLI and key code loads none."""
    code = (
        "import sys, pipeline.entry.cli, pipeline.keys.keyring, pipeline.keys.kms, pipeline.ops.keyslots\n"
        "import pipeline.flows.restore\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')\n"
        "             or m.startswith('google.cloud.')))"  # the bare namespace may come from a .pth at startup
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
