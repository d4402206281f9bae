"""`jsarchive --version` (what runs: the C decoders or their pure-Python fallback, the servers supported) and the
natscli name `snapshot` for `stream backup` / `account backup`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.entry.cli import main
from tests.test_bad_input import JSARCHIVE, cli_env, jsarchive

# What the root CLI must not load for --version / --help: the NATS client and the event loop behind it (tenacity
# imports asyncio too), the age and key code.
HEAVY = ("nats", "asyncio", "tenacity", "pyrage", "cryptography")


def _run_version(env: dict[str, str]) -> str:
    p = subprocess.run([JSARCHIVE, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and not p.stderr, p.stderr
    return p.stdout


def _library_choice(env: dict[str, str]) -> tuple[bool, bool]:
    """What pipeline.format.s2 and natsarc themselves decided in a process with ``env``."""
    code = (
        "import json; from pipeline.format import s2, natsarc\n"
        "print(json.dumps([s2.ACCELERATED, natsarc._walk is not None]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    s2_c, walk_c = json.loads(p.stdout)
    return s2_c, walk_c


@pytest.mark.parametrize("pure", [False, True], ids=["default", "JSARCHIVE_S2_PURE"])
def test_version_says_which_decoders_run_and_which_servers(tmp_path: Path, pure: bool) -> None:
    env = cli_env(tmp_path)
    env.pop("JSARCHIVE_S2_PURE", None)
    if pure:
        env["JSARCHIVE_S2_PURE"] = "1"
    lines = _run_version(env).splitlines()
    from pipeline import __version__

    assert lines[0] == f"jsarchive {__version__}"
    fields = dict(line.split(": ", 1) for line in lines[1:-1])
    s2_c, walk_c = _library_choice(env)
    assert fields["S2 block decoder"].startswith("C (" if s2_c else "pure Python"), fields
    assert fields["NATSARC walker"].startswith("C (" if walk_c else "pure Python"), fields
    if pure:
        assert not s2_c and fields["S2 block decoder"] == "pure Python (JSARCHIVE_S2_PURE is set)"
    assert fields["nats-server"] == "2.10 to 2.15 (snapshot format V1 for 2.14 and older, V2 for 2.15)"
    assert lines[-1].startswith(f"Python {'.'.join(map(str, sys.version_info[:3]))} ")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-s", "nats://127.0.0.1:1", "--version"]])
def test_root_cli_does_not_load_nats(argv: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from pipeline.entry.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stderr.strip().splitlines()[-1]) == []


def _options(help_text: str) -> str:
    return help_text[help_text.index("Options:") :]


@pytest.mark.parametrize("group", ["stream", "account"])
def test_snapshot_is_backup_under_natscli_name(group: str) -> None:
    snap = CliRunner().invoke(main, [group, "snapshot", "--help"])
    backup = CliRunner().invoke(main, [group, "backup", "--help"])
    assert snap.exit_code == 0 and backup.exit_code == 0, snap.output
    assert f"Usage: main {group} snapshot " in snap.output
    assert _options(snap.output) == _options(backup.output) and "--no-encrypt" in snap.output
    listing = CliRunner().invoke(main, [group, "--help"]).output
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in listing.split("Commands:")[1].splitlines() if line}
    assert rows["snapshot"] == "alias of backup" and rows["backup"].startswith("Back up ")


def test_snapshot_backs_up_for_real(nats_server, tmp_path: Path) -> None:
    from tests.streams import fill_stream

    asyncio.run(fill_stream(nats_server.url, "ORDERS", messages=300, consumers=False, deletes=()))
    env = cli_env(tmp_path)
    archive = tmp_path / "archive"
    run = jsarchive("stream", "snapshot", "ORDERS", archive, "-s", nats_server.url, "--no-encrypt", "--json", env=env)
    assert run.returncode == 0, run.stderr
    stream_id = json.loads(run.stdout)["backup"]["manifest_id"]
    run = jsarchive("account", "snapshot", archive, "-s", nats_server.url, "--no-encrypt", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["account"]["backed_up"] == 1
    listed = jsarchive("ls", archive, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    backups = json.loads(listed.stdout)["backups"]
    assert len(backups) == 2 and {b["stream"] for b in backups} == {"ORDERS"}
    assert stream_id in {b["manifest_id"] for b in backups}
    assert {b["messages"] for b in backups} == {300}
