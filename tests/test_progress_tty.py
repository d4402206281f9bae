"""Progress as an operator sees it: the CLI run under a pseudo-terminal against real nats-servers, its output
replayed through a small terminal emulator, and the log lines it writes when stderr is not a terminal.

What must hold (issue 18, point 3): the total is known from the first frame (the stream's size, not ``?``), the bar
counts the stream's bytes in IEC units, an elapsed/ETA column, a closing line with the throughput, a bar per stream
in account runs with result lines never written into a bar, and a restore that stops short never drawn complete.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from pipeline.base.units import human_bytes
from pipeline.entry.cli.progress import LogProgress
from pipeline.format import s2
from pipeline.format.s2meter import DecodedLength
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec

JSARCHIVE = str(Path(sys.executable).parent / "jsarchive")
STREAM = "ORDERS"
MESSAGES = 30_000
COLUMNS = 120

SIZE = r"\d+(?:\.\d)? (?:B|KiB|MiB|GiB)"
CLOSING = re.compile(rf"^(backup|restore) (\S+): ({SIZE}) \(stream\) in \d+\.\d\d s, ({SIZE})/s(?:; (.*))?$")
DECIMAL_UNITS = re.compile(r"\d ?(?:kB|MB|GB)(?:/s)?\b")
CLOCK = re.compile(r"\b\d:\d\d:\d\d\b")


# -- a terminal ---------------------------------------------------------------------------------------------------

_CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows once ``raw`` was written to it: as much of a VT100 as rich's live display
    uses (carriage return, line feed, cursor up and down, erase in line); styles are dropped."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            m = _CSI.match(raw, i)
            if m is None:
                i += 1
                continue
            args, cmd = m.groups()
            n = int(args) if args.isdigit() else 1
            if cmd == "A":
                row = max(0, row - n)
            elif cmd == "B":
                row += n
            elif cmd == "K":
                while len(lines) <= row:
                    lines.append([])
                lines[row] = [] if args == "2" else lines[row][:col]
            elif cmd == "G":
                col = n - 1
            i = m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
        elif ch >= " ":
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]


def frames(raw: str) -> list[str]:
    """Every bar line rich drew, as text (each redraw starts with a carriage return)."""
    plain = _CSI.sub("", raw)
    return [f for chunk in plain.split("\r") for f in chunk.split("\n") if "━" in f]


@dataclass
class TtyRun:
    returncode: int
    raw: str

    @property
    def lines(self) -> list[str]:
        return [ln for ln in screen(self.raw) if ln]

    def where(self) -> str:
        return f"\nexit {self.returncode}; the screen:\n" + "\n".join(self.lines)


def tty_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NATS_", "JSARCHIVE_")) and k not in ("NO_COLOR", "FORCE_COLOR")
    }
    env.update(COLUMNS=str(COLUMNS), LINES="40", TERM="xterm-256color", XDG_CONFIG_HOME=str(home / "xdg"))
    return env


def run_tty(*args: str | Path, env: dict[str, str], timeout: float = 180.0) -> TtyRun:
    """Run the CLI with stdin, stdout and stderr on one pseudo-terminal, as in an operator's shell."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    try:
        proc = subprocess.Popen([JSARCHIVE, *map(str, args)], stdin=slave, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"jsarchive {args[:2]} did not end within {timeout} s:\n{out.decode()[-2000:]}")
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            out += data
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return TtyRun(code, out.decode(errors="replace"))


# -- servers and an archive ---------------------------------------------------------------------------------------


async def fill(url: str, name: str, messages: int, subject: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(name=name, subjects=[f"{subject}.>"])
        for i in range(messages):
            body = json.dumps({"id": i, "pad": os.urandom(40).hex()}).encode()
            await js.publish_async(f"{subject}.{i % 5}", body, headers={"Nats-Msg-Id": f"{name}-{i}"})
            if i % 2000 == 1999:
                await js.publish_async_completed()
        await asyncio.wait_for(js.publish_async_completed(), 60)
    finally:
        await nc.close()


async def stream_bytes(url: str, name: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(name)).state.bytes
    finally:
        await nc.close()


@dataclass
class Source:
    server: EmbeddedServer
    archive: Path
    backup: TtyRun
    size: int  # the stream's bytes
    home: Path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A 2.15 server holding ORDERS, and its backup made under a pseudo-terminal, in many blocks."""
    home = tmp_path_factory.mktemp("progress-tty")
    with EmbeddedServer(ServerSpec(name="source"), workdir=home / "nats") as srv:
        asyncio.run(fill(srv.url, STREAM, MESSAGES, "orders"))
        size = asyncio.run(stream_bytes(srv.url, STREAM))
        archive = home / "archive"
        run = run_tty(
            "stream", "backup", STREAM, archive, "-s", srv.url, "--no-encrypt", "--block-size", "64KiB",
            env=tty_env(home),
        )  # fmt: skip
        assert run.returncode == 0, run.where()
        yield Source(srv, archive, run, size, home)


def closing_line(run: TtyRun, verb: str, stream: str = STREAM) -> re.Match:
    found = [m for ln in run.lines if (m := CLOSING.match(ln)) and m.group(1) == verb and m.group(2) == stream]
    assert len(found) == 1, f"expected one closing line of {verb} {stream}{run.where()}"
    return found[0]


def assert_iec_only(run: TtyRun) -> None:
    text = "\n".join(run.lines)
    assert not DECIMAL_UNITS.search(text), f"decimal units (MB, MB/s){run.where()}"


# -- stream backup and restore -----------------------------------------------------------------------------------


def test_backup_bar_shows_the_stream_total_from_the_start(source: Source) -> None:
    run = source.backup
    drawn = [f for f in frames(run.raw) if f.startswith(f"backup {STREAM} ")]
    assert drawn, f"no bar was drawn{run.where()}"
    total = human_bytes(source.size)
    for f in drawn:  # the first frame on: the stream's size, never "?"
        assert f" / {total} " in f, f"a frame without the stream's size {total}: {f!r}"
        assert " / ?" not in f and "/?" not in f, f
        assert CLOCK.search(f), f"no elapsed/eta column: {f!r}"
    for f in drawn[:-1]:  # while it runs, time left; the last frame is the finished one
        assert " eta " in f, f
    final = [ln for ln in run.lines if ln.startswith(f"backup {STREAM} ")]
    assert len(final) == 1 and f"{total} / {total}" in final[0], run.where()
    m = closing_line(run, "backup")
    assert m.group(3) == total
    assert re.fullmatch(rf"{SIZE} stored in \d+ block\(s\)", m.group(5) or ""), m.group(0)
    assert int(m.group(5).rsplit(" in ", 1)[1].split()[0]) >= 8, "meant to be a many-block backup"
    assert_iec_only(run)


def test_restore_bar_and_closing_line(source: Source, tmp_path: Path) -> None:
    with EmbeddedServer(ServerSpec(name="target"), workdir=tmp_path / "nats") as target:
        run = run_tty("stream", "restore", source.archive, STREAM, "-s", target.url, env=tty_env(source.home))
        assert run.returncode == 0, run.where()
        assert asyncio.run(stream_bytes(target.url, STREAM)) == source.size
    total = human_bytes(source.size)
    drawn = [f for f in frames(run.raw) if f.startswith(f"restore {STREAM} ")]
    assert drawn and all(f" / {total} " in f and CLOCK.search(f) for f in drawn), run.where()
    final = [ln for ln in run.lines if ln.startswith(f"restore {STREAM} ")]
    assert len(final) == 1 and f"{total} / {total}" in final[0], run.where()
    m = closing_line(run, "restore")
    assert m.group(3) == total
    assert re.fullmatch(rf"{SIZE} read from \d+ block\(s\)", m.group(5) or ""), m.group(0)
    assert_iec_only(run)


def test_interrupted_restore_is_not_drawn_complete(source: Source, tmp_path: Path) -> None:
    """The last block is corrupt: every earlier block reaches the server, then the restore fails."""
    archive = tmp_path / "archive"
    shutil.copytree(source.archive, archive)
    [mpath] = (archive / "manifests").iterdir()
    manifest = json.loads(mpath.read_bytes())
    offset, length, _sha = manifest["blocks"][-1]
    data = archive / "data" / manifest["backup_id"]
    raw = bytearray(data.read_bytes())
    raw[offset + length // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with EmbeddedServer(ServerSpec(name="target"), workdir=tmp_path / "nats") as target:
        run = run_tty("stream", "restore", archive, STREAM, "-s", target.url, env=tty_env(source.home))
    assert run.returncode == 4, run.where()
    total = human_bytes(source.size)
    rows = [ln for ln in run.lines if ln.startswith(f"restore {STREAM}: interrupted ")]
    bar = [ln for ln in rows if "━" in ln]
    assert len(bar) == 1, f"the bar does not say it was interrupted{run.where()}"
    assert f" / {total} " in bar[0], bar[0]
    # a bar short of its end ends its filled part, or starts its empty part, with a half glyph; a full one has none
    # (the byte counts may round to the same 0.1 MiB when only the last block is missing)
    assert "╸" in bar[0] or "╺" in bar[0], f"the bar is drawn complete: {bar[0]!r}"
    said = [ln for ln in rows if "━" not in ln]
    assert len(said) == 1, run.where()
    stopped = rf"restore {STREAM}: interrupted at {SIZE} of {re.escape(total)} \((\d+\.\d)%\) after \d+\.\d\d s"
    pct = re.fullmatch(stopped, said[0])
    assert pct and float(pct.group(1)) < 100.0, said[0]
    assert not [ln for ln in run.lines if CLOSING.match(ln)], f"a completed closing line{run.where()}"
    assert run.lines[-1].startswith("jsarchive: error: ") and "block" in run.lines[-1], run.where()
    assert run.raw.rfind("\x1b[?25h") > run.raw.rfind("\x1b[?25l"), "the cursor was left hidden"


def test_log_lines_without_a_terminal(source: Source, tmp_path: Path) -> None:
    """Not a terminal: timestamped lines, parseable, in the same units, the same closing line."""
    env = tty_env(source.home)
    p = subprocess.run(
        [JSARCHIVE, "stream", "backup", STREAM, tmp_path / "a", "-s", source.server.url, "--no-encrypt"],
        capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines and all(re.match(r"^\d\d:\d\d:\d\d \S", ln) for ln in lines), p.stderr
    body = [ln[9:] for ln in lines]
    assert f"backup {STREAM}: started ({human_bytes(source.size)})" in body, p.stderr
    closing = [m for ln in body if (m := CLOSING.match(ln))]
    assert len(closing) == 1 and closing[0].group(3) == human_bytes(source.size), p.stderr
    assert not DECIMAL_UNITS.search(p.stderr), p.stderr


# -- account runs -------------------------------------------------------------------------------------------------


def test_account_backup_bars_and_result_lines_do_not_collide(tmp_path: Path) -> None:
    names = ("ALPHA", "BRAVO", "CHARLIE")
    with EmbeddedServer(ServerSpec(name="acct"), workdir=tmp_path / "nats") as srv:
        for n in names:
            asyncio.run(fill(srv.url, n, 8_000, n.lower()))
        run = run_tty(
            "account", "backup", tmp_path / "a", "-s", srv.url, "--no-encrypt", "--force", "--parallel", "3",
            env=tty_env(tmp_path),
        )  # fmt: skip
    assert run.returncode == 0, run.where()
    for n in names:
        closing_line(run, "backup", n)  # each stream's own closing line, on a line of its own
        results = [ln for ln in run.lines if ln.startswith(f"  {n}: ")]
        assert len(results) == 1 and "━" not in results[0], f"{n}'s result line is not on its own{run.where()}"
        assert any(f.startswith(f"backup {n} ") for f in frames(run.raw)), f"no bar of {n}{run.where()}"
    assert not [ln for ln in run.lines if "━" in ln and ("messages" in ln or "(stream)" in ln)], run.where()
    assert_iec_only(run)


# -- the pieces ---------------------------------------------------------------------------------------------------


def test_decoded_length_of_a_real_snapshot_matches_its_decoding(source: Source) -> None:
    """The bar's count read from chunk headers equals what decoding the snapshot gives, byte for byte."""

    async def take() -> tuple[int, list[bytes]]:
        meter, chunks = DecodedLength(), []

        async def on_chunk(chunk: bytes) -> None:
            chunks.append(chunk)
            meter.feed(chunk[:7])  # cut anywhere, headers split too
            meter.feed(chunk[7:])

        async with await connect(ConnectOptions(servers=source.server.url)) as js:
            await js.snapshot(STREAM, on_chunk)
        return meter.total, chunks

    counted, chunks = asyncio.run(take())
    decoded = sum(len(b) for b in s2.iter_decode(chunks))
    assert counted == decoded > 0
    assert 0.5 * source.size < counted < 1.5 * source.size  # the stream's bytes, not the compressed ones


def test_log_progress_running_and_interrupted_lines(capsys: pytest.CaptureFixture[str]) -> None:
    p = LogProgress(every=0.0)
    p.start(f"restore {STREAM}", 4 * 1024**2)
    p.advance(1024**2)
    p.abort()
    err = [ln[9:] for ln in capsys.readouterr().err.splitlines()]
    assert err[0] == f"restore {STREAM}: started (4.0 MiB)"
    assert re.fullmatch(rf"restore {STREAM}: 1\.0 MiB of 4\.0 MiB \(25\.0%\), {SIZE}/s, eta \d:\d\d:\d\d", err[1]), err[
        1
    ]
    assert re.fullmatch(rf"restore {STREAM}: interrupted at 1\.0 MiB of 4\.0 MiB \(25\.0%\) after \d+\.\d\d s", err[2])
    p.finish()  # after abort: nothing more, never a completed line
    assert capsys.readouterr().err == ""
