"""What the CLI prints: no credentials from server URLs, and names from archives and servers that cannot drive the
terminal (pipeline/base/display.py and its use in pipeline/cli)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from pipeline.archive.repository import Repository
from pipeline.base.display import escape_control, json_safe, redact_servers, redact_text, redact_url, safe
from pipeline.entry.cli import main
from pipeline.format import manifest as mf

# What a terminal acts on: ESC (CSI/OSC sequences), CR (overwrite the line), BEL, DEL, and C1 CSI/OSC as UTF-8.
RAW_CONTROLS = (b"\x1b", b"\r", b"\x07", b"\x7f", b"\xc2\x9b", b"\xc2\x9d")

# Accepted by nats-server 2.15 as stream names (probed in test_what_nats_server_accepts_as_a_stream_name).
ESC_NAME = "\x1b[2J\x1b[31mX"
MARKUP_NAME = "[bold]Y"
# Not accepted by any server or client, so only a planted manifest carries it: clear the screen, go back to the
# start of the line, and print a line that looks like jsarchive's own.
EVIL = "EVIL\n\x1b[2J\rjsarchive: error: spoofed\x9b31m"
GHOST = "GHOST\r\n\x1b[1Ajsarchive: OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict | None = None) -> tuple[int, bytes, bytes]:
    r = CliRunner().invoke(main, list(args), env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout_bytes, r.stderr_bytes


def assert_terminal_safe(out: bytes) -> None:
    for raw in RAW_CONTROLS:
        assert raw not in out, f"raw {raw!r} in output: {out[:2000]!r}"
    for line in out.decode("utf-8").splitlines():
        assert not line.startswith(("jsarchive: OK", "jsarchive: error: spoofed")), line


# -- the helpers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://alice:s3cret@127.0.0.1:4222", "nats://alice:***@127.0.0.1:4222"),
        ("tls://t0ken@nats.example:4443", "tls://***@nats.example:4443"),
        ("alice:s3cret@host:4222", "alice:***@host:4222"),  # nats-py adds nats:// to a bare host
        ("nats://alice:p@ss@host", "nats://alice:***@host"),  # nats-py splits at the last @
        ("nats://:pw@host", "nats://:***@host"),
        ("nats://host:4222", "nats://host:4222"),
        ("host", "host"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"cannot connect to NATS at {url}: refused") == f"cannot connect to NATS at {shown}: refused"


def test_redact_servers_and_text_keep_every_url_of_a_list() -> None:
    servers = "nats://a:pw1@h1:4222, nats://h2:4222,tls://tok@h3"
    assert redact_servers(servers) == "nats://a:***@h1:4222,nats://h2:4222,tls://***@h3"
    text = "at nats://a:pw1@h1:4222,nats://h2:4222,tls://tok@h3: no server; push to https://u:pw2@gw/metrics failed"
    assert redact_text(text) == (
        "at nats://a:***@h1:4222,nats://h2:4222,tls://***@h3: no server; push to https://u:***@gw/metrics failed"
    )
    assert redact_text(redact_text(text)) == redact_text(text)
    assert redact_servers(None) == ""
    assert (
        redact_text("mail ops@example.com about s3://bucket/prefix") == "mail ops@example.com about s3://bucket/prefix"
    )


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (ESC_NAME, "\\x1b[2J\\x1b[31mX"),
        ("A\nB\rC\tD", "A\\nB\\rC\\tD"),
        ("bell\x07 del\x7f nul\x00", "bell\\x07 del\\x7f nul\\x00"),
        ("c1\x9b31m", "c1\\x9b31m"),  # C1 CSI: some terminals take it for ESC [
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override: shows the rest backwards
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("ORDERS ÄÖ ✓ 注文 [bold]x \\n", "ORDERS ÄÖ ✓ 注文 [bold]x \\n"),  # printable text stays exactly as it was
    ],
)
def test_escape_control(name: str, shown: str) -> None:
    assert escape_control(name) == shown
    assert escape_control(shown) == shown
    assert shown.isprintable()


def test_safe_does_both() -> None:
    assert safe("cannot connect to nats://u:pw@h\x1b[2J") == "cannot connect to nats://u:***@h\\x1b[2J"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_json_safe_keeps_the_value_and_prints_nothing_a_terminal_acts_on(value: object) -> None:
    for doc in (json.dumps(value, ensure_ascii=False), json.dumps(value, indent=2, ensure_ascii=False)):
        out = json_safe(doc)
        assert json.loads(out) == value
        assert all(ch in " \n" or ch.isprintable() for ch in out)


def test_json_dumps_without_ensure_ascii_leaves_del_and_c1_raw() -> None:
    """--json output (ensure_ascii) escapes everything; cat's jsonl keeps UTF-8 text (ensure_ascii=False), where
    json.dumps escapes C0 controls but leaves DEL, C1 controls and bidi overrides raw: hence json_safe."""
    assert json.dumps("a\x1b\x7f\x9b\u202e") == '"a\\u001b\\u007f\\u009b\\u202e"'
    assert "\x1b" not in json.dumps("a\x1bb", ensure_ascii=False)
    for raw in ("\x7f", "\x9b", "\u202e"):
        assert raw in json.dumps(f"a{raw}b", ensure_ascii=False)
    assert json_safe(json.dumps("a\x7fb\x9b")) == '"a\\u007fb\\u009b"'


# -- credentials in server URLs -----------------------------------------------------------------------------------


@pytest.fixture
def dead_url() -> str:
    port = free_port()  # nobody listens there
    return f"nats://alice:s3cret@127.0.0.1:{port},tls://t0ken@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def restorable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive with a stream backup and an account set, so restores get as far as connecting."""
    from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec

    archive = tmp_path_factory.mktemp("restorable")
    with EmbeddedServer(ServerSpec(name="src"), workdir=tmp_path_factory.mktemp("nats-src")) as srv:
        asyncio.run(_make_stream(srv.url, "ORDERS", "orders.>"))
        code, _, err = run("account", "backup", str(archive), "-s", srv.url, "--no-encrypt", "--no-progress")
        assert code == 0, err
    return archive


def _leaks(out: bytes, err: bytes) -> None:
    text = (out + err).decode()
    assert "s3cret" not in text and "t0ken" not in text, text
    assert "alice:***@127.0.0.1" in err.decode() and "tls://***@127.0.0.1" in err.decode(), err


@pytest.mark.parametrize(
    "command",
    [
        ["stream", "backup", "ORDERS", "{archive}", "--no-encrypt"],
        ["stream", "restore", "{archive}", "ORDERS"],
        ["account", "backup", "{archive}", "--no-encrypt"],
        ["account", "restore", "{archive}"],
        ["dr", "status"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_unreachable_server_with_credentials(command, as_json, dead_url, restorable) -> None:
    args = [a.format(archive=restorable) for a in command] + ["-s", dead_url] + (["--json"] if as_json else [])
    code, out, err = run(*args)
    assert code == 7, (out, err)
    _leaks(out, err)
    assert err.decode().startswith("jsarchive: error: cannot connect to NATS at nats://alice:***@127.0.0.1:")
    if as_json:
        message = json.loads(out)["error"]["message"]
        assert "nats://alice:***@127.0.0.1" in message and "s3cret" not in message


def test_credentials_from_env_context_logs_and_metrics_push(dead_url, tmp_path) -> None:
    """$NATS_URL, a natscli context's url, --log-json lines and a failed --metrics-push all stay clean."""
    code, out, err = run("dr", "status", env={"NATS_URL": dead_url})
    assert code == 7
    _leaks(out, err)

    ctx_dir = tmp_path / "cfg" / "nats" / "context"
    ctx_dir.mkdir(parents=True)
    (ctx_dir / "leaky.json").write_text(json.dumps({"url": dead_url}))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    code, out, err = run(
        "stream", "backup", "ORDERS", str(tmp_path / "a"), "--context", "leaky", "--json", "--no-encrypt", env=env
    )
    assert code == 7
    _leaks(out, err)

    code, out, err = run("account", "backup", str(tmp_path / "a"), "-s", dead_url, "--no-encrypt", "--log-json")
    assert code == 7
    _leaks(out, err)
    summary = json.loads(out.decode().splitlines()[-1])
    assert summary["ok"] is False and "alice:***@" in summary["message"]

    push = "ftp://pusher:pushpw@127.0.0.1:1/"  # refused before anything is sent: not an http(s) URL
    args = ("stream", "backup", "ORDERS", str(tmp_path / "a"), "-s", dead_url, "--no-encrypt", "--metrics-push", push)
    code, out, err = run(*args)
    assert code == 7
    _leaks(out, err)
    assert "pushpw" not in err.decode() and "jsarchive: warning: --metrics-push 'ftp://pusher:***@" in err.decode()


# -- hostile names ------------------------------------------------------------------------------------------------


async def _make_stream(url: str, name: str, subject: str, consumer: str | None = None, payloads=()) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name=name, subjects=[subject]))
        base = subject.rstrip(">").rstrip(".")
        # Core publishes: nats-server 2.15.1 quotes the stream name Go-style in its publish ack, so an ESC becomes
        # the four characters \x1b ('{"stream":"\\x1b[2J…","seq":1}'), not a JSON escape: nats-py cannot parse it.
        for i in range(5):
            await nc.publish(f"{base}.m{i}", f"message {i}".encode())
        for i, p in enumerate(payloads):
            await nc.publish(f"{base}.\x1b[7m{i}", p, headers={"X-Note": "hdr\x1b[31m\x9b"})
        await nc.flush()
        want = 5 + len(payloads)
        for _ in range(100):  # stored asynchronously
            if (await js.stream_info(name)).state.messages == want:
                break
            await asyncio.sleep(0.05)
        assert (await js.stream_info(name)).state.messages == want
        if consumer:
            await js.add_consumer(name, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT))
    finally:
        await nc.close()


def test_what_nats_server_accepts_as_a_stream_name(nats_server) -> None:
    """ESC, BEL, DEL, C1 and bidi controls pass; whitespace is refused by nats-py and the server, NUL by the server
    (it cannot create the store directory), path separators by the server (so "[bold]x[/bold]" cannot be a name)."""
    from pipeline.base.errors import JsArchiveError
    from pipeline.jetstream.client import ConnectOptions, connect

    async def probe() -> dict[str, bool]:
        got = {}
        async with await connect(ConnectOptions(servers=nats_server.url)) as js:
            for i, name in enumerate(
                [ESC_NAME, "A\x07B", "A\x7fB", "A\x9bB", "A\u202eB", "A\nB", "A\rB", "A\x00B", "[b]x[/b]"]
            ):
                try:
                    await js.create_stream({"name": name, "subjects": [f"probe.{i}"], "storage": "file"})
                    got[name] = True
                except (JsArchiveError, nats.errors.Error):
                    got[name] = False
        return got

    got = asyncio.run(probe())
    assert [n for n, ok in got.items() if ok] == [ESC_NAME, "A\x07B", "A\x7fB", "A\x9bB", "A\u202eB"]


@pytest.fixture
def hostile_archive(nats_server, tmp_path) -> tuple[Path, dict[str, str]]:
    """A local archive with real backups of streams named ESC_NAME (a subject and a consumer with controls too)
    and MARKUP_NAME, plus what a bucket writer can plant: a manifest and ref for a stream named EVIL (newline, CR,
    ESC, C1 CSI, a fake error line) from a server with a hostile name and version, a dangling ref named GHOST, and
    a set whose account and run names carry controls."""
    archive = tmp_path / "archive"
    payloads = [b"payload \x1b[2J raw", "text \x9b31m \u202e".encode()]
    asyncio.run(_make_stream(nats_server.url, ESC_NAME, "hostile.>", consumer="dur\x1b[5m", payloads=payloads))
    asyncio.run(_make_stream(nats_server.url, MARKUP_NAME, "markup.>"))
    ids = {}
    for name in (ESC_NAME, MARKUP_NAME):
        code, out, err = run("stream", "backup", name, str(archive), "-s", nats_server.url, "--no-encrypt", "--json")
        assert code == 0, err
        ids[name] = json.loads(out)["backup"]["manifest_id"]
    code, _, err = run("account", "backup", str(archive), "-s", nats_server.url, "--no-encrypt", "--json")
    assert code == 0, err

    repo = Repository.open(str(archive))
    m = repo.load_manifest(ids[ESC_NAME])
    bid = secrets.token_hex(16)
    env = {k: v for k, v in m.envelope.items() if k not in ("body", "format", "version")}
    env.update(backup_id=bid, stream=EVIL, data={**env["data"], "key": f"data/{bid}"})
    env["server"] = {**env["server"], "name": "srv\x1b]0;pwned\x07", "version": "2.15.1\x1b[8m"}
    body = m.open_body(None)
    body["config"]["name"] = EVIL
    for c in body.get("consumers") or []:
        c["name"] = "con\nsumer\x1b[1A"
    repo.sink.put(f"data/{bid}", repo.sink.get(m.data_object))
    ids[EVIL] = repo.write_manifest(mf.build(env, body, None))
    time = repo.refs(ESC_NAME)[0].time
    repo.write_ref(EVIL, time, bid, ids[EVIL])
    repo.write_ref(GHOST, time, secrets.token_hex(16), secrets.token_hex(32))  # a manifest that does not exist

    sid = repo.list_sets()[0]
    doc = json.loads(repo.load_set(sid))
    doc["account"] = {**doc["account"], "name": "$G\x1b[2J\nacct"}
    doc["run"] = "run\r\x1b[31m"
    repo.write_set(mf.canonical(doc))
    return archive, ids


def test_backup_output_escapes_the_stream_name(nats_server, tmp_path) -> None:
    asyncio.run(_make_stream(nats_server.url, ESC_NAME, "hostile.>"))
    code, out, err = run("stream", "backup", ESC_NAME, str(tmp_path / "a"), "-s", nats_server.url, "--no-encrypt")
    assert code == 0, err
    assert_terminal_safe(out + err)
    assert out.decode().startswith("Backed up stream \\x1b[2J\\x1b[31mX as ")
    assert "backup \\x1b[2J\\x1b[31mX: started" in err.decode()  # the progress log line


def test_ls_show_verify_inspect_escape_names(hostile_archive) -> None:
    archive, ids = hostile_archive
    code, out, err = run("ls", str(archive))
    assert code == 0, err
    assert_terminal_safe(out + err)
    text = out.decode()
    # rich wraps the cell at its space; a continuation line starts with the column's indent
    assert "EVIL\\n\\x1b[2J\\rjsarchive: error:" in text and "spoofed\\x9b31m" in text
    assert "GHOST\\r\\n\\x1b[1Ajsarchive: OK" in text  # the problem row names the dangling ref
    assert "\\x1b[2J\\x1b[31mX" in text
    assert MARKUP_NAME in text  # printed, not read as rich markup

    code, out, err = run("show", str(archive), ids[EVIL], "--blocks")
    assert code == 0, err
    assert_terminal_safe(out + err)
    text = out.decode()
    assert "  stream         EVIL\\n\\x1b[2J\\rjsarchive: error: spoofed\\x9b31m\n" in text
    assert "nats-server 2.15.1\\x1b[8m (srv\\x1b]0;pwned\\x07)" in text
    assert "  consumers      con\\nsumer\\x1b[1A\n" in text

    code, out, err = run("verify", str(archive))
    assert code == 4, (out, err)  # the dangling ref
    assert_terminal_safe(out + err)
    assert "EVIL\\n\\x1b[2J" in out.decode() and "GHOST\\r\\n" in out.decode()

    code, out, err = run("inspect", str(archive), ids[ESC_NAME])
    assert code == 0, err
    assert_terminal_safe(out + err)
    text = out.decode()
    assert text.startswith(f"Backup {ids[ESC_NAME]} of stream \\x1b[2J\\x1b[31mX\n")
    assert "hostile.\\x1b[7m0" in text and "dur\\x1b[5m: durable" in text

    code, out, err = run("account", "ls", str(archive))
    assert code == 0, err
    assert_terminal_safe(out + err)
    assert "$G\\x1b[2J\\nacct" in out.decode() and "run\\r\\x1b[31m" in out.decode()


def test_errors_built_from_names_are_escaped(hostile_archive) -> None:
    """`jsarchive: error:` lines: the message that names a backup's stream (here: its data object is gone) is one
    line whose name is escaped, for inspect, cat and restore, and the JSON error holds the exact name."""
    archive, ids = hostile_archive
    repo = Repository.open(str(archive))
    (archive / repo.load_manifest(ids[EVIL]).data_object).unlink()
    for args in (["inspect", str(archive), ids[EVIL]], ["cat", str(archive), ids[EVIL]]):
        code, out, err = run(*args)
        assert code == 3, err
        assert_terminal_safe(out + err)
        assert err.startswith(b"jsarchive: error: the data object ") and err.count(b"\n") == 1
        assert b"(EVIL\\n\\x1b[2J\\rjsarchive: error: spoofed\\x9b31m) is missing" in err
    code, out, err = run("inspect", str(archive), ids[EVIL], "--json")
    assert code == 3
    assert_terminal_safe(out + err)
    assert f"({EVIL}) is missing" in json.loads(out)["error"]["message"]

    code, out, err = run("stream", "restore", str(archive), GHOST, "-s", "nats://127.0.0.1:1")
    assert code != 0
    assert_terminal_safe(out + err)
    assert err.startswith(b"jsarchive: error: ") and err.count(b"\n") == 1


def test_json_output_stays_exact_json(hostile_archive) -> None:
    archive, ids = hostile_archive
    code, out, _ = run("ls", str(archive), "--json")
    assert code == 0
    assert_terminal_safe(out)
    assert {EVIL, ESC_NAME, MARKUP_NAME} <= {b["stream"] for b in json.loads(out)["backups"]}

    code, out, _ = run("show", str(archive), ids[EVIL], "--json")
    assert code == 0
    assert_terminal_safe(out)
    backup = json.loads(out)["backup"]
    assert backup["envelope"]["stream"] == EVIL and backup["envelope"]["server"]["name"] == "srv\x1b]0;pwned\x07"

    code, out, _ = run("inspect", str(archive), ids[ESC_NAME], "--json")
    assert code == 0
    assert_terminal_safe(out)
    assert json.loads(out)["inspect"]["stream"] == ESC_NAME

    code, out, _ = run("verify", str(archive), "--json")
    assert code == 4
    assert_terminal_safe(out)
    json.loads(out)


def test_cat_keeps_payloads_and_escapes_jsonl(hostile_archive) -> None:
    """jsonl: the same values (subjects, headers, payloads), written so a terminal acts on none of them; raw: the
    payloads byte for byte, as documented."""
    archive, ids = hostile_archive
    code, out, err = run("cat", str(archive), ids[ESC_NAME], "--seq", "6-7")
    assert code == 0, err
    assert_terminal_safe(out)
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["subject"] for r in records] == ["hostile.\x1b[7m0", "hostile.\x1b[7m1"]
    assert [r["payload"] for r in records] == ["payload \x1b[2J raw", "text \x9b31m \u202e"]
    assert records[0]["headers"] == {"X-Note": ["hdr\x1b[31m\x9b"]}

    code, out, err = run("cat", str(archive), ids[ESC_NAME], "--seq", "6-7", "--format", "raw")
    assert code == 0, err
    assert out == b"payload \x1b[2J raw\n" + "text \x9b31m \u202e".encode() + b"\n"


def test_progress_bar_and_its_log_lines_show_names_as_text() -> None:
    """The bar's description column and console.print read rich markup; task names and log lines carry stream
    names."""
    import io

    from pipeline.entry.cli.common import RichProgress

    p = RichProgress()
    buf = io.StringIO()  # not a terminal: rich writes the final frame without styles of its own
    p.console.file = buf
    p.start(f"backup {MARKUP_NAME}{ESC_NAME}\n", 100)
    p.advance(50)
    p.log(f"restore [red]{ESC_NAME}: started")
    p.finish()
    out = buf.getvalue()
    assert_terminal_safe(out.encode())
    assert "restore [red]\\x1b[2J\\x1b[31mX: started\n" in out
    assert "backup [bold]Y\\x1b[2J\\x1b[31mX\\n " in out
