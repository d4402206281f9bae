"""The command line without servers: sizes, connection options and natscli contexts, keygen, ls."""

from __future__ import annotations

import json
import os
import stat

import click
import pytest
from click.testing import CliRunner

from pipeline.base.errors import UsageError
from pipeline.base.units import parse_size
from pipeline.entry.cli import main
from pipeline.entry.cli.common import SIZE
from pipeline.jetstream.client import ConnectOptions, load_context


@pytest.mark.parametrize(
    "text,value",
    [
        ("262144", 262144),
        ("256KiB", 262144),
        ("256KB", 262144),
        ("256k", 262144),
        ("1MiB", 1048576),
        ("1m", 1048576),
        ("2GiB", 2 * 1024**3),
    ],
)
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5MiB", "-1", "10TiB"])
def test_bad_sizes(text):
    with pytest.raises(UsageError):
        parse_size(text)
    with pytest.raises(click.BadParameter):  # the CLI's option type says it as click does
        SIZE.convert(text, None, None)


def _write_context(tmp_path, name, body, select=False):
    d = tmp_path / "xdg" / "nats" / "context"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(body))
    if select:
        (tmp_path / "xdg" / "nats" / "context.txt").write_text(name)


def test_natscli_context_fills_unset_options(tmp_path):
    _write_context(
        tmp_path,
        "prod",
        {"url": "nats://prod:4222", "user": "u", "password": "p", "jetstream_domain": "hub", "creds": "~/x.creds"},
        select=True,
    )
    o = ConnectOptions().resolved()
    assert (o.servers, o.user, o.password, o.api_prefix) == ("nats://prod:4222", "u", "p", "$JS.hub.API")
    assert o.creds == os.path.expanduser("~/x.creds")
    o = ConnectOptions(servers="nats://flag:1", js_api_prefix="$JS.custom.API.").resolved()
    assert o.servers == "nats://flag:1" and o.api_prefix == "$JS.custom.API"  # flags win over the context


def test_named_context_must_exist(tmp_path, monkeypatch):
    assert load_context(None) == {}
    monkeypatch.setenv("NATS_CONTEXT", "missing")
    r = CliRunner().invoke(main, ["stream", "backup", "S", str(tmp_path / "a"), "--no-encrypt"])
    assert r.exit_code == 2 and "context 'missing' does not exist" in r.output


def test_keygen_writes_private_files_once(tmp_path):
    out = tmp_path / "k"
    r = CliRunner().invoke(main, ["keygen", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["recipient"].startswith("age1") and "AGE-SECRET-KEY" not in r.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "AGE-SECRET-KEY-1" in out.read_text()
    r = CliRunner().invoke(main, ["keygen", "-o", str(out)])
    assert r.exit_code == 6 and "never overwritten" in r.output
    r = CliRunner().invoke(main, ["keygen", "--raw"])
    assert r.exit_code == 0 and len(r.output.strip()) == 64


def test_ls_of_an_empty_archive(tmp_path):
    r = CliRunner().invoke(main, ["ls", str(tmp_path), "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == {"ok": True, "backups": []}


def test_restore_from_an_empty_archive_says_so(tmp_path):
    r = CliRunner().invoke(main, ["stream", "restore", str(tmp_path), "ORDERS", "--json"])
    assert r.exit_code == 3
    assert json.loads(r.stdout)["error"]["kind"] == "not_found"
    assert "no backups of stream 'ORDERS'" in r.stderr


def test_lazy_commands_match_their_modules() -> None:
    """The root group loads a command's module only when it runs; its stored name and short help are the
    command's own, so `jsarchive --help` says what the command says of itself."""
    import importlib

    from pipeline.entry.cli import COMMANDS

    for name, (module, attr, short) in COMMANDS.items():
        cmd = getattr(importlib.import_module(f"pipeline.entry.cli.{module}"), attr)
        assert cmd.name == name
        assert cmd.get_short_help_str(90) == short, name


def test_help_loads_no_command_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom pipeline.entry.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.entry.cli.') and m.endswith('_cmd')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "[]", out
