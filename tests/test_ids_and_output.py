"""One id everywhere, and output a script can use (issue 18 points 4 and 7).

Real nats-servers and local archives, the CLI as an operator runs it: every command that takes a backup ID accepts
the manifest id, the backup id `stream backup --json` prints, and unique prefixes of either; a prefix that names two
backups is ambiguous (exit 2); `keygen -o` prints the public key alone on stdout; `cat --json` prints JSON lines;
`ls` and `prune` of a missing path fail like `verify` (exit 3); `ls` orders by the manifest's `created`.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import nats
import pytest

from pipeline.format import manifest as mf
from tests.streams import fill_stream
from tests.test_bad_input import Run, cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)

STREAM = "ORDERS"
MESSAGES = 300


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"$ {' '.join(run.args)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr
    return run


def ok_json(run: Run) -> dict:
    return json.loads(ok(run).stdout)


def backup(url: str, archive: Path, env: dict[str, str], *extra: str | Path) -> dict:
    run = jsarchive("stream", "backup", STREAM, archive, "-s", url, "--no-progress", "--json", *extra, env=env)
    return ok_json(run)["backup"]


async def _other_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
        for i in range(20):
            await js.publish(f"{name.lower()}.x", f"m{i}".encode())
    finally:
        await nc.close()


def plant(archive: Path, key: str, data: bytes) -> None:
    path = archive / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def keygen(path: Path, env: dict[str, str]) -> str:
    """The public key `keygen -o` prints: stdout is that one line and nothing else."""
    run = ok(jsarchive("keygen", "-o", path, env=env))
    public = run.stdout.removesuffix("\n")
    assert re.fullmatch(r"age1[0-9a-z]+", public), run.stdout
    assert f"# public key: {public}\n" in path.read_text()
    assert public not in run.stderr and str(path) in run.stderr  # the message is for a person, on stderr
    return public


# -- keygen ----------------------------------------------------------------------------------------------------------


def test_keygen_prints_only_the_public_key_on_stdout(tmp_path: Path, env: dict[str, str]) -> None:
    public = keygen(tmp_path / "age.key", env)
    assert "AGE-SECRET-KEY-1" in (tmp_path / "age.key").read_text()
    assert "AGE-SECRET-KEY" not in public
    # A raw key has no public half: stdout stays empty, the secret only in the file.
    run = ok(jsarchive("keygen", "--raw", "-o", tmp_path / "raw.key", env=env))
    assert run.stdout == "" and "raw key" in run.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", (tmp_path / "raw.key").read_text())
    # --json and the secret on stdout without -o are unchanged.
    doc = ok_json(jsarchive("keygen", "-o", tmp_path / "j.key", "--json", env=env))
    assert doc["recipient"].startswith("age1") and doc["file"] == str(tmp_path / "j.key")
    run = ok(jsarchive("keygen", env=env))
    assert run.stdout.splitlines()[-1].startswith("AGE-SECRET-KEY-1")
    one_error(jsarchive("keygen", "-o", tmp_path / "age.key", env=env), 6, "never overwritten")


# -- one id ----------------------------------------------------------------------------------------------------------


def test_every_command_takes_the_backup_id_and_prefixes_of_either_id(
    nats_server, second_server, tmp_path: Path, env: dict[str, str]
) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=(), consumers=False))
    key = tmp_path / "age.key"
    keygen(key, env)
    new_public = keygen(tmp_path / "new.key", env)
    archive = tmp_path / "archive"
    b1 = backup(nats_server.url, archive, env, "-i", key)
    b2 = backup(nats_server.url, archive, env, "-i", key)
    mid, bid = b1["manifest_id"], b1["backup_id"]
    assert re.fullmatch(r"[0-9a-f]{64}", mid) and re.fullmatch(r"[0-9a-f]{32}", bid)
    assert mid == mf.manifest_id((archive / "manifests" / mid).read_bytes())

    names = {
        "backup id": bid,
        "backup id prefix": bid[:8],
        "backup id, upper case": bid.upper(),
        "manifest id prefix": mid[:10],
        "manifest id": mid,
    }
    for what, ident in names.items():
        where = f"{what} {ident}"
        shown = ok_json(jsarchive("show", archive, ident, "--json", env=env))["backup"]
        assert shown["manifest_id"] == mid and shown["envelope"]["backup_id"] == bid, where
        insp = ok_json(jsarchive("inspect", archive, ident, "-i", key, "--json", env=env))["inspect"]
        assert insp["manifest_id"] == mid and insp["messages"] == MESSAGES, where
        lines = ok(jsarchive("cat", archive, ident, "-i", key, "--json", "--seq", "5-9", env=env)).stdout
        assert [json.loads(x)["sequence"] for x in lines.splitlines()] == [5, 6, 7, 8, 9], where
        report = ok_json(jsarchive("verify", archive, ident, "--json", env=env))
        assert [b["manifest_id"] for b in report["backups"]] == [mid], where
        thawed = ok_json(jsarchive("thaw", archive, ident, "--json", env=env))["thaw"]
        assert thawed["manifest_id"] == mid and thawed["status"] == "available", where
        slots = ok_json(jsarchive("key", "list", archive, ident, "--json", env=env))["key_slots"]
        assert slots["manifest_id"] == mid, where
    added = ok_json(jsarchive("key", "add-slot", archive, bid[:8], "-i", key, "-r", new_public, "--json", env=env))
    assert [b["manifest_id"] for b in added["key_slots"]["backups"]] == [mid]
    # The new slot is usable through the same short backup id.
    assert ok_json(jsarchive("inspect", archive, bid[:8], "-i", tmp_path / "new.key", "--json", env=env))

    # restore --backup: the older backup by its backup id, under another name, onto another server.
    for as_name, ident in (("BY_BACKUP_ID", bid), ("BY_PREFIX", bid[:7])):
        run = jsarchive(
            "stream", "restore", archive, STREAM, "-s", second_server.url, "--backup", ident, "-i", key,
            "--as", as_name, "--subject-map", f"orders.>={as_name}.orders.>",
            "--subject-map", f"audit.>={as_name}.audit.>", "--no-progress", "--json", env=env,
        )  # fmt: skip
        res = ok_json(run)["restore"]
        assert res["manifest_id"] == mid and res["messages"] == MESSAGES and res["stream"] == as_name

    # The newer backup is a different one, by either of its ids.
    assert (
        ok_json(jsarchive("show", archive, b2["backup_id"][:8], "--json", env=env))["backup"]["manifest_id"]
        == (b2["manifest_id"])
    )
    # An id of nothing: exit 3, one line; not hex or too short: exit 2.
    one_error(jsarchive("show", archive, "0" * 32, env=env), 3, "no backup with id")
    one_error(jsarchive("inspect", archive, "abc", env=env), 2, "too short")
    one_error(jsarchive("verify", archive, "xyz123", env=env), 2, "not a backup id")


def test_show_text_and_json_name_the_backup_by_its_manifest_id(
    nats_server, tmp_path: Path, env: dict[str, str]
) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=(), consumers=False))
    archive = tmp_path / "archive"
    run = ok(jsarchive("stream", "backup", STREAM, archive, "-s", nats_server.url, "--no-encrypt", env=env))
    m = re.search(r"^Backed up stream ORDERS as ([0-9a-f]{64})$", run.stdout, re.M)
    assert m, run.stdout
    mid = m.group(1)
    (row,) = ok_json(jsarchive("ls", archive, "--json", env=env))["backups"]
    assert row["manifest_id"] == mid and re.fullmatch(r"[0-9a-f]{32}", row["backup_id"])
    # The ratio reads the right way round: stored/stream first, then stream:stored.
    m = re.search(r"stored .+ in \d+ block\(s\), (\d+\.\d\d)× of the stream \((\d+\.\d\d):1\)", run.stdout)
    assert m, run.stdout
    assert float(m.group(1)) == round(row["stored_bytes"] / row["bytes"], 2)
    assert float(m.group(2)) == round(row["bytes"] / row["stored_bytes"], 2)
    # show prints the backup id it is then given back.
    text = ok(jsarchive("show", archive, row["backup_id"], env=env)).stdout
    assert text.splitlines()[0] == f"Backup {mid}"
    assert re.search(rf"^  backup id +{row['backup_id']}$", text, re.M), text


def test_a_prefix_of_two_backups_is_ambiguous(nats_server, tmp_path: Path, env: dict[str, str]) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=(), consumers=False))
    archive = tmp_path / "archive"
    real = backup(nats_server.url, archive, env, "--no-encrypt")
    other = backup(nats_server.url, archive, env, "--no-encrypt")
    raw = json.loads((archive / "manifests" / real["manifest_id"]).read_bytes())

    def plant_backup(backup_id: str, created: str) -> str:
        """A manifest of ``backup_id`` (plaintext, so anyone with write access can make one) and its ref."""
        doc = {**raw, "backup_id": backup_id, "created": created}
        doc["data"] = {**doc["data"], "key": f"data/{backup_id}"}
        body = mf.canonical(doc)
        planted = mf.manifest_id(body)
        plant(archive, f"manifests/{planted}", body)
        t = created.replace("-", "").replace(":", "")
        plant(archive, f"refs/{STREAM}/{t}-{backup_id}", planted.encode() + b"\n")
        return planted

    # 1. a backup whose backup id begins like another backup's manifest id: that prefix names two backups
    planted = plant_backup(other["manifest_id"][:32], "2026-01-02T03:04:05.000006Z")
    prefix = other["manifest_id"][:8]
    for cmd in (("show", archive, prefix), ("inspect", archive, prefix), ("verify", archive, prefix)):
        one_error(jsarchive(*cmd, env=env), 2, "ambiguous", other["manifest_id"][:12], planted[:12])
    # the full ids still name each of them
    assert (
        ok_json(jsarchive("show", archive, other["manifest_id"], "--json", env=env))["backup"]["envelope"]["backup_id"]
        == (other["backup_id"])
    )
    # 32 digits: the whole planted backup id, and still only a prefix of the other's manifest id
    one_error(jsarchive("show", archive, other["manifest_id"][:32], env=env), 2, "ambiguous")
    # 2. a second manifest claiming the same backup id (a forgery of it): the backup id is ambiguous
    forged = plant_backup(real["backup_id"], "2026-01-03T00:00:00.000000Z")
    for ident in (real["backup_id"], real["backup_id"][:6]):
        message = one_error(jsarchive("cat", archive, ident, "--format", "raw", env=env), 2, "ambiguous")
        assert real["manifest_id"][:12] in message and forged[:12] in message
    doc = json.loads(jsarchive("cat", archive, real["backup_id"], "--json", env=env).stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2 and doc["error"]["kind"] == "usage"
    # 3. a ref that names the backup but points at another backup's manifest adds nothing: it is passed over
    plant(
        archive,
        f"refs/{STREAM}/20990101T000000.000000Z-{other['backup_id']}",
        real["manifest_id"].encode() + b"\n",
    )
    got = ok_json(jsarchive("show", archive, other["backup_id"], "--json", env=env))["backup"]
    assert got["manifest_id"] == other["manifest_id"]


# -- cat --json ------------------------------------------------------------------------------------------------------


def test_cat_json_prints_one_object_per_message(nats_server, tmp_path: Path, env: dict[str, str]) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=(7, 8), consumers=False))
    archive = tmp_path / "archive"
    b = backup(nats_server.url, archive, env, "--no-encrypt")
    run = ok(jsarchive("cat", archive, b["backup_id"], "--json", env=env))
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == MESSAGES - 2
    assert [r["sequence"] for r in rows] == [s for s in range(1, MESSAGES + 1) if s not in (7, 8)]
    for r in rows:
        assert r["subject"].startswith(("orders.", "audit.")) and isinstance(r["payload_base64"], bool)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", r["time"]), r["time"]
        assert "headers" in r and "payload" in r
    # the same lines as the documented jsonl format
    assert run.stdout == ok(jsarchive("cat", archive, b["manifest_id"][:9], env=env)).stdout
    assert run.stdout == ok(jsarchive("cat", archive, b["backup_id"], "--format", "jsonl", "--json", env=env)).stdout

    # A failure with --json is one more JSON line on stdout, and the one error line on stderr.
    for args, code in (((archive, "f" * 32), 3), ((archive, b["backup_id"], "--format", "raw"), 2)):
        run = jsarchive("cat", *args, "--json", env=env)
        assert run.returncode == code, run.stderr
        (line,) = run.stdout.splitlines()
        doc = json.loads(line)
        assert doc == {"ok": False, "error": {**doc["error"], "exit_code": code}}
        assert [ln for ln in run.stderr.splitlines() if ln.strip()] == [f"jsarchive: error: {doc['error']['message']}"]


# -- ls and prune ----------------------------------------------------------------------------------------------------


def test_ls_and_prune_of_a_missing_path_fail(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "no-such-archive"
    for cmd in (("ls", missing), ("prune", missing, "--keep-last", "1"), ("ls", f"file://{missing}")):
        one_error(jsarchive(*cmd, env=env), 3, "no archive at", "does not exist")
        run = jsarchive(*cmd, "--json", env=env)
        assert run.returncode == 3 and json.loads(run.stdout)["error"]["kind"] == "not_found"
    assert not missing.exists()  # looking created nothing
    # verify says the same kind of thing with the same code
    assert jsarchive("verify", missing, env=env).returncode == 3
    # An archive that exists but is empty is not an error.
    empty = tmp_path / "empty"
    empty.mkdir()
    run = ok(jsarchive("ls", empty, env=env))
    assert run.stdout == "" and "no backups" in run.stderr
    assert ok_json(jsarchive("ls", empty, "--json", env=env)) == {"ok": True, "backups": []}
    run = ok(jsarchive("prune", empty, "--keep-last", "1", env=env))
    assert "no backups" in run.stderr and "nothing was deleted" in run.stdout
    assert ok_json(jsarchive("prune", empty, "--keep-last", "1", "--json", env=env))["backups"] == []


def test_ls_orders_by_created_not_by_ref_name(nats_server, tmp_path: Path, env: dict[str, str]) -> None:
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=MESSAGES, deletes=(), consumers=False))
    asyncio.run(_other_stream(nats_server.url, "LEDGER"))
    archive = tmp_path / "archive"
    older = backup(nats_server.url, archive, env, "--no-encrypt")
    audit = ok_json(
        jsarchive("stream", "backup", "LEDGER", archive, "-s", nats_server.url, "--no-encrypt", "--json", env=env)
    )["backup"]
    newer = backup(nats_server.url, archive, env, "--no-encrypt")
    # A ref whose name claims the far future for the oldest backup (as a rollback would), and one whose name is
    # older than everything for the newest.
    plant(archive, f"refs/{STREAM}/20990101T000000.000000Z-{older['backup_id']}", older["manifest_id"].encode())
    plant(archive, f"refs/{STREAM}/20000101T000000.000000Z-{newer['backup_id']}", newer["manifest_id"].encode())
    rows = ok_json(jsarchive("ls", archive, "--json", env=env))["backups"]
    assert [r["manifest_id"] for r in rows] == [
        newer["manifest_id"],
        newer["manifest_id"],
        audit["manifest_id"],
        older["manifest_id"],
        older["manifest_id"],
    ]
    created = [r["created"] for r in rows]
    assert created == sorted(created, reverse=True)
    only = ok_json(jsarchive("ls", archive, "--stream", STREAM, "--json", env=env))["backups"]
    assert [r["manifest_id"] for r in only] == [newer["manifest_id"]] * 2 + [older["manifest_id"]] * 2
    # the text listing in the same order
    text = ok(jsarchive("ls", archive, env=env)).stdout
    ids = re.findall(r"^([0-9a-f]{12}) ", text, re.M)
    assert ids == [r["manifest_id"][:12] for r in rows], text
    # two refs of one backup are still one backup to every command
    assert ok_json(jsarchive("show", archive, older["backup_id"], "--json", env=env))["backup"]["refs"] == [
        f"refs/{STREAM}/20990101T000000.000000Z-{older['backup_id']}",
        older["ref"],
    ]
