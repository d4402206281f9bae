"""natscli's connection semantics against real nats-servers: Go durations for --timeout ($NATS_TIMEOUT) as the wait
for responses, authentication failures as their own exit code, --token/--jwt/--seed/--connection-name/--no-context,
context fields (token, user_jwt, user_seed, nsc, ones jsarchive cannot honour), global flags before the subcommand,
and --trace."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nkeys
import pytest
from nats.aio.client import RawCredentials

from pipeline.base.errors import AuthFailed, TransferFailed, UsageError
from pipeline.base.units import parse_duration
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec

pytestmark = pytest.mark.timeout(300)

JSARCHIVE = str(Path(sys.executable).parent / "jsarchive")
CLI_TIMEOUT = 120.0
TOKEN = "s3cret"
AUTH_EXIT = 12


# -- servers ---------------------------------------------------------------------------------------------------


async def _add_stream(url: str, name: str = "ORDERS", **conn: object) -> None:
    nc = await nats.connect(url, **conn)
    try:
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
        for i in range(3):
            await js.publish(f"{name.lower()}.x", f"m{i}".encode())
    finally:
        await nc.close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    spec = ServerSpec(name="token", accounts=f"authorization {{ token: {TOKEN} }}")
    with EmbeddedServer(spec, workdir=tmp_path / "nats-token") as srv:
        asyncio.run(_add_stream(srv.url, token=TOKEN))
        yield srv


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    spec = ServerSpec(name="pw", accounts="authorization { users: [ { user: bob, password: right } ] }")
    with EmbeddedServer(spec, workdir=tmp_path / "nats-pw") as srv:
        yield srv


def _kp(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwt(claims: dict, signer: nkeys.KeyPair) -> str:
    claims = {"iat": int(time.time()), "iss": signer.public_key.decode(), **claims}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signer.sign(head.encode()))


def _creds(user_jwt: str, seed: str) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


@dataclass
class OperatorServer:
    server: EmbeddedServer
    user_jwt: str
    user_seed: str
    other_seed: str  # a valid user seed that is not the JWT's key
    stranger_creds: str  # a user of an account the server does not know

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def operator_server(tmp_path: Path) -> Iterator[OperatorServer]:
    """nats-server in operator mode: account APP with JetStream, one user (JWT and seed)."""
    op, app, sys_acct, stranger = (_kp(p) for p in [nkeys.PREFIX_BYTE_OPERATOR] + [nkeys.PREFIX_BYTE_ACCOUNT] * 3)
    user, other = _kp(nkeys.PREFIX_BYTE_USER), _kp(nkeys.PREFIX_BYTE_USER)
    base = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    js_limits = {**base, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    op_jwt = _jwt({"sub": op.public_key.decode(), "name": "op", "nats": {"type": "operator", "version": 2}}, op)

    def account(kp: nkeys.KeyPair, name: str, limits: dict) -> str:
        return _jwt(
            {"sub": kp.public_key.decode(), "name": name, "nats": {"limits": limits, "type": "account", "version": 2}},
            op,
        )

    claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    user_jwt = _jwt({"sub": user.public_key.decode(), "name": "backup", "nats": claims}, app)
    stranger_jwt = _jwt({"sub": other.public_key.decode(), "name": "x", "nats": claims}, stranger)
    conf = (
        f"operator: {op_jwt}\nsystem_account: {sys_acct.public_key.decode()}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {app.public_key.decode()}: {account(app, 'APP', js_limits)}\n"
        f"  {sys_acct.public_key.decode()}: {account(sys_acct, 'SYS', base)}\n}}"
    )
    with EmbeddedServer(ServerSpec(name="op", accounts=conf), workdir=tmp_path / "nats-op") as srv:
        asyncio.run(_add_stream(srv.url, user_credentials=RawCredentials(_creds(user_jwt, user.seed.decode()))))
        yield OperatorServer(
            srv, user_jwt, user.seed.decode(), other.seed.decode(), _creds(stranger_jwt, other.seed.decode())
        )


# -- the command line ------------------------------------------------------------------------------------------


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    d = tmp_path / "xdg"
    (d / "nats" / "context").mkdir(parents=True)
    return d


def _env(xdg: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JSARCHIVE_"))}
    env["XDG_CONFIG_HOME"] = str(xdg)
    env.update(extra)
    return env


def run(xdg: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [JSARCHIVE, *args],
        env=_env(xdg, **env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def write_context(xdg: Path, name: str, select: bool = False, **fields: object) -> None:
    (xdg / "nats" / "context" / f"{name}.json").write_text(json.dumps(fields))
    if select:
        (xdg / "nats" / "context.txt").write_text(name)


def status(xdg: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``dr status`` connects, lists the streams and their state: the cheapest command that needs a server."""
    return run(xdg, "dr", "status", "--json", *args, **env)


def ok_streams(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    doc = json.loads(proc.stdout)
    return sorted(s["stream"] for s in doc["streams"])


def one_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jsarchive: error: "), proc.stderr
    return lines[0]


# -- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("2.5", 2.5), ("10", 10.0), ("1.5s", 1.5)],
)
def test_durations_as_natscli_takes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "s", "5 s", "-1s", "0", "0s", "1m30", "nan", "inf"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_nats_timeout_as_a_go_duration(token_server: EmbeddedServer, xdg: Path) -> None:
    proc = status(xdg, "-s", token_server.url, "--token", TOKEN, NATS_TIMEOUT="5s")
    assert ok_streams(proc) == ["ORDERS"]
    assert ok_streams(status(xdg, "-s", token_server.url, "--token", TOKEN, "--timeout", "1m30s")) == ["ORDERS"]
    bad = status(xdg, "-s", token_server.url, "--token", TOKEN, NATS_TIMEOUT="soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_timeout_is_the_wait_for_responses(tmp_path: Path, xdg: Path) -> None:
    """natscli's meaning: --timeout bounds every JetStream API request. A subscriber that never answers on the API
    prefix makes the request wait exactly that long."""
    with EmbeddedServer(ServerSpec(name="mute"), workdir=tmp_path / "nats-mute") as srv:

        async def scenario() -> tuple[float, str]:
            mute = await nats.connect(srv.url)
            await mute.subscribe("MUTE.API.>")  # interest, never an answer
            await mute.flush()
            try:
                t0 = time.monotonic()
                with pytest.raises(TransferFailed) as err:
                    async with await connect(
                        ConnectOptions(servers=srv.url, js_api_prefix="MUTE.API", timeout=0.5)
                    ) as js:
                        await js.stream_info("ORDERS")
                return time.monotonic() - t0, str(err.value)
            finally:
                await mute.close()

        took, message = asyncio.run(scenario())
        assert "within 0.5 s" in message and took < 5.0, (took, message)

        async def listen() -> None:
            mute = await nats.connect(srv.url)
            await mute.subscribe("MUTE.API.>")
            await mute.flush()
            try:
                args = ("stream", "backup", "ORDERS", str(tmp_path / "archive"), "--no-encrypt", "-s", srv.url)
                proc = await asyncio.to_thread(run, xdg, *args, "--js-api-prefix", "MUTE.API", "--timeout", "700ms")
            finally:
                await mute.close()
            line = one_error(proc, TransferFailed.exit_code)
            assert "within 0.7 s" in line, line

        asyncio.run(listen())


# -- authentication --------------------------------------------------------------------------------------------


def test_token_by_flag_environment_and_context(token_server: EmbeddedServer, xdg: Path) -> None:
    url = token_server.url
    assert ok_streams(status(xdg, "-s", url, "--token", TOKEN)) == ["ORDERS"]
    assert ok_streams(status(xdg, "-s", url, NATS_TOKEN=TOKEN)) == ["ORDERS"]
    assert ok_streams(status(xdg, "-s", url, "--user", TOKEN)) == ["ORDERS"]  # natscli: a user alone is a token
    write_context(xdg, "tok", url=url, token=TOKEN, description="token server", color_scheme="")
    assert ok_streams(status(xdg, "--context", "tok")) == ["ORDERS"]
    assert ok_streams(status(xdg, NATS_CONTEXT="tok")) == ["ORDERS"]
    # The flag wins over the context's token.
    line = one_error(status(xdg, "--context", "tok", "--token", "nope"), AUTH_EXIT)
    assert "refused the credentials" in line


def test_wrong_token_is_an_authentication_failure(token_server: EmbeddedServer, xdg: Path) -> None:
    line = one_error(status(xdg, "-s", token_server.url, "--token", "wrong"), AUTH_EXIT)
    assert token_server.url in line and "refused the credentials" in line and "--token" in line, line
    assert "no server answered" not in line
    # No credentials at all against a server that wants some: the same refusal, saying none were given.
    line = one_error(status(xdg, "-s", token_server.url), AUTH_EXIT)
    assert "none were given" in line, line
    # In the URL: the server is named, the token is not.
    host = token_server.url.removeprefix("nats://")
    line = one_error(status(xdg, "-s", f"nats://wrongtoken@{host}"), AUTH_EXIT)
    assert "wrongtoken" not in line and host in line, line
    # --json: the error object has the new kind and code.
    proc = run(xdg, "dr", "status", "--json", "-s", token_server.url, "--token", "wrong")
    assert proc.returncode == AUTH_EXIT
    assert json.loads(proc.stdout)["error"]["kind"] == AuthFailed.kind


def test_wrong_password_is_an_authentication_failure(password_server: EmbeddedServer, xdg: Path) -> None:
    url, host = password_server.url, password_server.url.removeprefix("nats://")
    line = one_error(status(xdg, "-s", url, "--user", "bob", "--password", "wrong"), AUTH_EXIT)
    assert "--user/--password" in line and url in line, line
    line = one_error(status(xdg, "-s", f"nats://bob:hunter2@{host}"), AUTH_EXIT)
    assert "hunter2" not in line and host in line, line
    # The right password connects (JetStream is off for this account: refused by the server, not an auth error).
    proc = status(xdg, "-s", url, "--user", "bob", "--password", "right")
    assert proc.returncode not in (AUTH_EXIT, 7), proc.stderr


def test_a_dead_server_is_still_a_connection_failure(xdg: Path) -> None:
    from pipeline.jetstream.embedded import free_port

    line = one_error(status(xdg, "-s", f"nats://127.0.0.1:{free_port()}", "--timeout", "1s"), 7)
    assert "no server answered" in line


def test_jwt_and_seed(operator_server: OperatorServer, xdg: Path, tmp_path: Path) -> None:
    srv = operator_server
    assert ok_streams(status(xdg, "-s", srv.url, "--jwt", srv.user_jwt, "--seed", srv.user_seed)) == ["ORDERS"]
    assert ok_streams(status(xdg, "-s", srv.url, NATS_JWT=srv.user_jwt, NATS_SEED=srv.user_seed)) == ["ORDERS"]
    write_context(xdg, "jwt", select=True, url=srv.url, user_jwt=srv.user_jwt, user_seed=srv.user_seed)
    assert ok_streams(status(xdg)) == ["ORDERS"]
    # Files holding them work too.
    (tmp_path / "u.jwt").write_text(srv.user_jwt + "\n")
    (tmp_path / "u.seed").write_text(srv.user_seed + "\n")
    proc = status(
        xdg, "--no-context", "-s", srv.url, "--jwt", str(tmp_path / "u.jwt"), "--seed", str(tmp_path / "u.seed")
    )
    assert ok_streams(proc) == ["ORDERS"]
    # A valid seed of another user cannot sign for this JWT.
    line = one_error(status(xdg, "--no-context", "-s", srv.url, "--jwt", srv.user_jwt, "--seed", srv.other_seed), 12)
    assert "--jwt/--seed" in line and srv.other_seed not in line, line
    # Half of the pair, or something that is not a seed, is refused before connecting.
    assert one_error(status(xdg, "--no-context", "-s", srv.url, "--jwt", srv.user_jwt), 2)
    line = one_error(status(xdg, "--no-context", "-s", srv.url, "--jwt", srv.user_jwt, "--seed", "SUnotaseed"), 2)
    assert "SUnotaseed" not in line


def test_wrong_creds_is_an_authentication_failure(operator_server: OperatorServer, xdg: Path, tmp_path: Path) -> None:
    creds = tmp_path / "stranger.creds"
    creds.write_text(operator_server.stranger_creds)
    line = one_error(status(xdg, "-s", operator_server.url, "--creds", str(creds)), AUTH_EXIT)
    assert "--creds" in line, line
    good = tmp_path / "good.creds"
    good.write_text(_creds(operator_server.user_jwt, operator_server.user_seed))
    assert ok_streams(status(xdg, "-s", operator_server.url, "--creds", str(good))) == ["ORDERS"]


# -- contexts --------------------------------------------------------------------------------------------------


def test_nsc_context_without_nsc_is_a_usage_error(token_server: EmbeddedServer, xdg: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin-without-nsc"
    empty.mkdir()
    write_context(xdg, "viansc", select=True, url=token_server.url, nsc="nsc://op/APP/backup")
    line = one_error(status(xdg, PATH=str(empty)), 2)
    assert "nsc is not installed" in line and "nsc://op/APP/backup" in line, line


def test_nsc_context_resolves_with_nsc_generate_profile(
    operator_server: OperatorServer, xdg: Path, tmp_path: Path
) -> None:
    """nsc cannot be installed here: a stand-in on $PATH answers ``nsc generate profile`` the way nsc documents
    (a JSON profile naming the user's creds file and the operator's service URLs); the server is real."""
    creds = tmp_path / "backup.creds"
    creds.write_text(_creds(operator_server.user_jwt, operator_server.user_seed))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_file = tmp_path / "nsc-argv"
    profile = json.dumps({"user_creds": str(creds), "operator": {"service": [operator_server.url]}})
    (bindir / "nsc").write_text(f"#!/bin/sh\necho \"$@\" > {argv_file}\necho '{profile}'\n")
    (bindir / "nsc").chmod(0o755)
    write_context(xdg, "viansc", select=True, nsc="nsc://op/APP/backup")
    assert ok_streams(status(xdg, PATH=str(bindir))) == ["ORDERS"]
    assert argv_file.read_text().split() == ["generate", "profile", "nsc://op/APP/backup"]
    # nsc failing is a clear error too, never a connection without credentials.
    (bindir / "nsc").write_text("#!/bin/sh\necho 'no such user' >&2\nexit 1\n")
    line = one_error(status(xdg, PATH=str(bindir)), 2)
    assert "nsc failed" in line and "no such user" in line, line


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("socks_proxy", "socks5://127.0.0.1:1080", "SOCKS proxy"),
        ("windows_cert_store", "user", "Windows certificate store"),
        ("future_dialer", "quic", "does not know"),
    ],
)
def test_context_fields_that_cannot_be_honoured(
    token_server: EmbeddedServer, xdg: Path, field: str, value: str, says: str
) -> None:
    write_context(xdg, "odd", select=True, url=token_server.url, token=TOKEN, **{field: value})
    line = one_error(status(xdg), 2)
    assert field in line and says in line, line
    # --no-context leaves the selected context out altogether.
    assert ok_streams(status(xdg, "--no-context", "-s", token_server.url, "--token", TOKEN)) == ["ORDERS"]


# -- global flags, --trace, --connection-name ------------------------------------------------------------------


def test_connection_flags_before_the_subcommand(token_server: EmbeddedServer, xdg: Path, tmp_path: Path) -> None:
    url = token_server.url
    assert ok_streams(run(xdg, "-s", url, "--token", TOKEN, "dr", "status", "--json")) == ["ORDERS"]
    archive = tmp_path / "archive"
    proc = run(
        xdg, "-s", url, "--token", TOKEN, "--timeout", "5s", "stream", "backup", "ORDERS", str(archive), "--no-encrypt"
    )
    assert proc.returncode == 0, proc.stderr
    # After the subcommand wins over before it; a flag before it wins over the environment.
    dead = "nats://127.0.0.1:1"
    assert ok_streams(run(xdg, "-s", dead, "--token", "wrong", "dr", "status", "--json", "-s", url, "--token", TOKEN))
    assert ok_streams(run(xdg, "-s", url, "dr", "status", "--json", NATS_URL=dead, NATS_TOKEN=TOKEN)) == ["ORDERS"]
    line = one_error(run(xdg, "--token", "wrong", "dr", "status", "-s", url), AUTH_EXIT)
    assert "--token" in line


def test_trace_prints_api_requests_and_replies(token_server: EmbeddedServer, xdg: Path, tmp_path: Path) -> None:
    host = token_server.url.removeprefix("nats://")
    proc = run(
        xdg,
        "--trace",
        "stream",
        "backup",
        "ORDERS",
        str(tmp_path / "archive"),
        "--no-encrypt",
        "-s",
        f"nats://{TOKEN}@{host}",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("jsarchive: trace: ")]
    requests = [ln for ln in lines if ln.startswith("jsarchive: trace: >>> $JS.API.STREAM.INFO.ORDERS")]
    replies = [ln for ln in lines if ln.startswith("jsarchive: trace: <<< $JS.API.STREAM.INFO.ORDERS {")]
    assert requests and replies, proc.stderr
    reply = json.loads(replies[0].split(" ", 4)[4])
    assert reply["config"]["name"] == "ORDERS" and reply["state"]["messages"] == 3
    assert any(">>> $JS.API.STREAM.SNAPSHOT.ORDERS {" in ln for ln in lines)
    assert TOKEN not in proc.stderr
    assert all(len(ln) < 2048 + 200 for ln in lines)
    # Without --trace: not a line of it.
    quiet = run(
        xdg,
        "stream",
        "backup",
        "ORDERS",
        str(tmp_path / "a2"),
        "--no-encrypt",
        "-s",
        token_server.url,
        "--token",
        TOKEN,
    )
    assert quiet.returncode == 0 and "trace:" not in quiet.stderr


def test_connection_name_reaches_the_server(nats_server: EmbeddedServer) -> None:
    async def scenario() -> list[str]:
        async with await connect(ConnectOptions(servers=nats_server.url, name="nightly-backup", no_context=True)):
            url = f"http://127.0.0.1:{nats_server.http_port}/connz"
            doc = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url, timeout=10).read()))
            return [c.get("name", "") for c in doc.get("connections", [])]

    assert "nightly-backup" in asyncio.run(scenario())
