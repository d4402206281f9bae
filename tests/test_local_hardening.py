"""Someone who can write into a local archive directory, or an odd export/import path, cannot turn jsarchive
against files outside it (issue 15).

- The local sink creates objects 0600 and directories 0700 whatever the umask, and follows no symlink below the
  archive root: a symlink (or FIFO, device) where an object or directory belongs is refused with
  ``ArchiveTampered``, an ``AccessDenied``, so the CLI exits 10 (the archive may not be used this way) with one
  error line naming the path.
- ``prune --confirm`` with a planted ``.incomplete``, ``refs`` or ``data`` symlink deletes nothing, inside or out.
- ``import`` checks ``backup.json`` whole (size, depth, types of what import and restore read) before it writes:
  exit 2, as for every other bad import input, and the archive is byte-for-byte unchanged.
- ``export`` onto a symlink, FIFO, file or non-empty directory: exit 6 (2 when the path cannot be a directory).
- A disk that fills during a backup: exit 7 (a storage failure, pipeline.archive.repository.storage_error), one line,
and
  no object or temporary file left in the archive. Tested on a 2 MiB tmpfs mounted here (root), else with
  RLIMIT_FSIZE (EFBIG instead of ENOSPC).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.base.errors import ConflictError
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec
from pipeline.ops.natscli import publish_target
from pipeline.ops.prune import PruneOptions, prune
from sinks import AccessDenied, ObjectNotFound
from sinks.base import IncompleteUpload
from sinks.local import INCOMPLETE_DIR, ArchiveTampered, LocalSink
from tests.streams import fill_stream
from tests.test_bad_input import JSARCHIVE, Run, archive_state, cli_env, fill_random, keygen, one_error

OLD = time.time() - 7 * 86400  # older than any grace period


# -- helpers ------------------------------------------------------------------------------------------------------


def run_cli(*args: str | Path, env: dict[str, str], umask: int | None = None, timeout: float = 120.0) -> Run:
    argv = [JSARCHIVE, *map(str, args)]

    def child() -> None:
        if umask is not None:
            os.umask(umask)

    t0 = time.monotonic()
    p = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        preexec_fn=child,
    )
    return Run(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def tree(root: Path) -> dict[str, str]:
    """Everything under ``root`` without following any symlink: files by SHA-256, links by target, dirs, modes."""
    out: dict[str, str] = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = f"link -> {os.readlink(p)}"
            elif stat.S_ISDIR(st.st_mode):
                out[rel + "/"] = f"dir {stat.S_IMODE(st.st_mode):o}"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = f"{stat.S_IMODE(st.st_mode):o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
            else:
                out[rel] = f"special {stat.S_IFMT(st.st_mode):o}"
    return out


def outside_files(base: Path, names: tuple[str, ...] = ("precious", "also-precious")) -> Path:
    """A directory outside every archive, holding files that look like old leftovers to a prune."""
    d = base / "outside"
    d.mkdir()
    for n in names:
        (d / n).write_bytes(b"not yours " + n.encode())
        os.utime(d / n, (OLD, OLD))
    return d


def modes(root: Path) -> tuple[set[str], set[str]]:
    files, dirs = set(), set()
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.add(f"{stat.S_IMODE(os.lstat(dirpath).st_mode):o}")
        files.update(f"{stat.S_IMODE(os.lstat(Path(dirpath) / f).st_mode):o}" for f in filenames)
    return files, dirs


# -- the sink: modes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_objects_are_0600_and_directories_0700_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        s = LocalSink(tmp_path / "new" / "archive")
        s.put("manifests/m", b"manifest")
        s.put("refs/ORDERS/t-1", b"ref")
        w = s.open_writer("data/d", part_size=4)
        pending = s.list_incomplete()
        w.write_part(1, b"data", b"")
        w.complete()
    finally:
        os.umask(old)
    assert len(pending) == 1 and pending[0].size == 0
    files, dirs = modes(tmp_path / "new" / "archive")
    assert files == {"600"} and dirs == {"700"}, (files, dirs)
    assert s.get("data/d") == b"data" and s.list_incomplete() == []


# -- the sink: no symlink is followed -----------------------------------------------------------------------------


@dataclass
class Planted:
    archive: Path
    outside: Path
    link: str  # the planted path, relative to the archive
    keys: list[str]  # keys whose operations must be refused


def _plant_incomplete(root: Path, out: Path) -> tuple[str, list[str]]:
    shutil.rmtree(root / INCOMPLETE_DIR, ignore_errors=True)
    os.symlink(out, root / INCOMPLETE_DIR)
    return INCOMPLETE_DIR, ["data/new"]


def _plant_refs_dir(root: Path, out: Path) -> tuple[str, list[str]]:
    os.symlink(out, root / "refs")
    return "refs", ["refs/precious", "refs/S/x"]


def _plant_nested_dir(root: Path, out: Path) -> tuple[str, list[str]]:
    (root / "refs").mkdir(mode=0o700)
    os.symlink(out, root / "refs" / "S")
    return "refs/S", ["refs/S/precious", "refs/S/new"]


def _plant_data_file(root: Path, out: Path) -> tuple[str, list[str]]:
    (root / "data").mkdir(mode=0o700)
    os.symlink(out / "precious", root / "data" / "precious")
    return "data/precious", ["data/precious"]


def _plant_data_dir(root: Path, out: Path) -> tuple[str, list[str]]:
    os.symlink(out, root / "data")
    return "data", ["data/precious", "data/new"]


PLANTS = {
    "incomplete-dir": _plant_incomplete,
    "refs-dir": _plant_refs_dir,
    "nested-prefix": _plant_nested_dir,
    "data-file": _plant_data_file,
    "data-dir": _plant_data_dir,
}


@pytest.fixture(params=sorted(PLANTS))
def planted(request, tmp_path) -> Planted:
    root = tmp_path / "archive"
    s = LocalSink(root)
    s.put("manifests/m", b"a manifest")
    out = outside_files(tmp_path)
    link, keys = PLANTS[request.param](root, out)
    return Planted(root, out, link, keys)


def _refused(op: Callable[[], object], link: str) -> ArchiveTampered:
    with pytest.raises(ArchiveTampered) as info:
        op()
    assert link in str(info.value) and "symbolic link" in str(info.value)
    return info.value


def test_no_operation_follows_a_planted_symlink(planted: Planted):
    s = LocalSink(planted.archive)
    before_out, before_in = tree(planted.outside), tree(planted.archive)
    for key in planted.keys:
        if planted.link == INCOMPLETE_DIR:
            # Only writes and the temp-file listing go through .incomplete/.
            _refused(lambda key=key: s.put(key, b"x"), planted.link)
            _refused(lambda key=key: s.open_writer(key, part_size=1), planted.link)
            _refused(s.list_incomplete, planted.link)
            _refused(lambda: s.abort_incomplete(IncompleteUpload("", "precious")), planted.link)
            continue
        for op in (
            lambda key=key: s.get(key),
            lambda key=key: s.get_range(key, 0, 4),
            lambda key=key: s.head(key),
            lambda key=key: s.delete(key),
            lambda key=key: s.purge(key),
            lambda key=key: s.put(key, b"x"),
            lambda key=key: s.put(key, b"x", if_absent=False),
            lambda key=key: s.open_writer(key, part_size=1),
            lambda key=key: list(s.list(key.rpartition("/")[0] + "/")),
        ):
            _refused(op, planted.link)
    if planted.link != INCOMPLETE_DIR:
        _refused(lambda: list(s.list("")), planted.link)  # listing never descends into it
    assert isinstance(ArchiveTampered("x"), AccessDenied)  # exit 10 through storage_error
    assert tree(planted.outside) == before_out
    assert tree(planted.archive) == before_in
    assert s.get("manifests/m") == b"a manifest"  # the rest of the archive still works


def test_a_symlink_swapped_in_mid_upload_receives_nothing(tmp_path):
    """The writer holds .incomplete/ open: replacing it by a symlink afterwards cannot redirect the upload."""
    root, out = tmp_path / "archive", outside_files(tmp_path)
    s = LocalSink(root)
    w = s.open_writer("data/one", part_size=3)
    w.write_part(1, b"abc", b"")
    os.rename(root / INCOMPLETE_DIR, root / "moved-away")
    os.symlink(out, root / INCOMPLETE_DIR)
    w.complete()
    assert s.get("data/one") == b"abc"
    w2 = LocalSink(root)
    with pytest.raises(ArchiveTampered, match=INCOMPLETE_DIR):
        w2.open_writer("data/two", part_size=3)
    assert sorted(p.name for p in out.iterdir()) == ["also-precious", "precious"]


def test_keys_that_leave_the_root_are_refused_before_any_io(tmp_path):
    out = outside_files(tmp_path)
    s = LocalSink(tmp_path / "archive")
    rel = os.path.relpath(out / "precious", tmp_path / "archive")
    for key in (rel, str(out / "precious"), "data/../../outside/precious", "data/\x00x", ".incomplete/x"):
        for op in (s.delete, s.get, s.head):
            with pytest.raises(Exception) as info:
                op(key)
            assert "invalid object key" in str(info.value)
    with pytest.raises(Exception, match="invalid"):
        s.abort_incomplete(IncompleteUpload("", "../outside/precious"))
    with pytest.raises(Exception, match="invalid"):
        list(s.list("../outside/"))
    assert sorted(p.name for p in out.iterdir()) == ["also-precious", "precious"]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    s = LocalSink(tmp_path / "archive")
    s.put("data/real", b"x")
    os.mkfifo(tmp_path / "archive" / "data" / "pipe")
    result: list[BaseException] = []

    def read() -> None:
        try:
            s.get("data/pipe")
        except ArchiveTampered as e:
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a planted FIFO blocked"
    assert len(result) == 1 and "a FIFO" in str(result[0])
    with pytest.raises(ArchiveTampered, match="FIFO"):
        list(s.list("data/"))
    assert s.head("data/real") is not None
    with pytest.raises(ObjectNotFound):
        s.get("data/none")


# -- prune ----------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    url: str
    archive: Path  # one encrypted backup of ORDERS
    manifest_id: str
    backup_id: str
    key: Path
    base: Path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    base = tmp_path_factory.mktemp("hardening")
    env = cli_env(base)
    key = keygen(base / "a.key", env)
    with EmbeddedServer(ServerSpec(name="source"), workdir=base / "nats") as srv:
        asyncio.run(fill_stream(srv.url, "ORDERS", messages=1200, deletes=(7,)))
        asyncio.run(fill_random(srv.url, "BIG", messages=500, size=10_000))  # ~5 MB that does not compress
        archive = base / "archive"
        # umask 0: the archive a real backup writes is still private
        args = ["stream", "backup", "ORDERS", archive, "-s", srv.url, "-i", key.path, "--no-progress", "--json"]
        run = run_cli(*args, env=env, umask=0)
        assert run.returncode == 0, run.stderr
        res = json.loads(run.stdout)["backup"]
        yield Source(srv.url, archive, res["manifest_id"], res["backup_id"], key.path, base)


def test_a_real_backup_is_private_under_umask_0(source: Source):
    files, dirs = modes(source.archive)
    assert files == {"600"} and dirs == {"700"}, (files, dirs)


@pytest.fixture
def archive(source: Source, tmp_path: Path) -> Path:
    dest = tmp_path / "archive"
    shutil.copytree(source.archive, dest, symlinks=True)
    return dest


def _plant_refs_tree(archive: Path, out: Path) -> str:
    """refs/ replaced by a symlink to an outside directory that holds the real refs and a stale-looking one."""
    shutil.copytree(archive / "refs", out / "refs-copy")
    stale = out / "refs-copy" / "ORDERS" / f"20200101T000000.000000Z-{'ab' * 16}"
    stale.write_bytes(b"0" * 64 + b"\n")
    os.utime(stale, (OLD, OLD))
    shutil.rmtree(archive / "refs")
    os.symlink(out / "refs-copy", archive / "refs")
    return "refs"


def _plant_incomplete_link(archive: Path, out: Path) -> str:
    shutil.rmtree(archive / INCOMPLETE_DIR, ignore_errors=True)
    os.symlink(out, archive / INCOMPLETE_DIR)
    return INCOMPLETE_DIR


def _plant_data_link(archive: Path, out: Path) -> str:
    os.symlink(out / "precious", archive / "data" / ("cd" * 16))  # an "abandoned upload" no manifest names
    return f"data/{'cd' * 16}"


def _plant_ref_link(archive: Path, out: Path) -> str:
    name = f"refs/ORDERS/20200101T000000.000000Z-{'ef' * 16}"  # a "dangling ref"
    os.symlink(out / "precious", archive / name)
    return name


def _plant_data_dir_link(archive: Path, out: Path) -> str:
    shutil.copytree(archive / "data", out / "data-copy")  # the real data object and an abandoned-looking one
    abandoned = out / "data-copy" / ("aa" * 16)
    abandoned.write_bytes(b"x" * 100)
    os.utime(abandoned, (OLD, OLD))
    shutil.rmtree(archive / "data")
    os.symlink(out / "data-copy", archive / "data")
    return "data"


@pytest.mark.parametrize(
    "plant",
    [_plant_incomplete_link, _plant_refs_tree, _plant_data_dir_link, _plant_data_link, _plant_ref_link],
    ids=["incomplete-dir", "refs-dir", "data-dir", "data-object", "ref-object"],
)
def test_prune_with_a_planted_symlink_deletes_nothing(source: Source, archive: Path, tmp_path: Path, plant):
    out = outside_files(tmp_path)
    link = plant(archive, out)
    before_out, before_in = tree(out), tree(archive)
    env = cli_env(tmp_path)
    for args in ((), ("--confirm",)):
        run = run_cli("prune", archive, "--grace", "0h", "--keep-last", "1", *args, env=env)
        msg = one_error(run, 10, f"{archive}/{link}", "symbolic link")
        assert "refusing" in msg
    assert tree(out) == before_out, "prune touched files outside the archive"
    assert tree(archive) == before_in, "prune changed the archive"


def test_prune_stops_deleting_at_a_symlink_planted_mid_run(source: Source, tmp_path: Path):
    """A symlink swapped in after the plan was made: the delete is refused and no further delete happens."""
    archive, out = tmp_path / "archive", outside_files(tmp_path)
    shutil.copytree(source.archive, archive, symlinks=True)
    s = LocalSink(archive)
    for i in range(3):  # three abandoned uploads, deleted one after another (workers=1)
        s.put(f"data/{i:032x}", b"abandoned")
        os.utime(archive / "data" / f"{i:032x}", (OLD, OLD))

    def swap(message: str) -> None:
        if message.startswith("deleted abandoned-data"):
            for i in range(3):
                p = archive / "data" / f"{i:032x}"
                if p.exists() and not p.is_symlink():
                    p.unlink()
                    os.symlink(out / "precious", p)
                    return

    report = prune(PruneOptions(url=str(archive), confirm=True, grace=dt.timedelta(0), workers=1), say=swap)
    data = [o for o in report.objects if o.kind == "abandoned-data"]
    assert [o.deleted for o in data] == [True, False, False], [o.to_json() for o in data]
    assert "symbolic link" in data[1].error and "prune stopped" in data[2].error
    assert report.exit_code == 10 and len(report.errors) == 1
    assert (archive / "data" / f"{1:032x}").is_symlink() and (archive / "data" / f"{2:032x}").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["also-precious", "precious"]


# -- export ---------------------------------------------------------------------------------------------------------


def _symlink_to_empty_dir(target: Path, out: Path) -> None:
    (out / "empty").mkdir()
    os.symlink(out / "empty", target)


def _dangling_symlink(target: Path, out: Path) -> None:
    os.symlink(out / "not-yet", target)


def _inner_link(name: str) -> Callable[[Path, Path], None]:
    def make(target: Path, out: Path) -> None:
        target.mkdir()
        os.symlink(out / "precious", target / name)

    return make


EXPORT_TARGETS = {
    "symlink-to-empty-dir": (_symlink_to_empty_dir, 6, ["is a symbolic link"]),
    "dangling-symlink": (_dangling_symlink, 6, ["is a symbolic link"]),
    "backup-json-symlink-inside": (_inner_link("backup.json"), 6, ["not an empty directory"]),
    "stream-tar-symlink-inside": (_inner_link("stream.tar.s2"), 6, ["not an empty directory"]),
    "fifo": (lambda t, o: os.mkfifo(t), 6, ["is a FIFO"]),
    "regular-file": (lambda t, o: t.write_bytes(b"x"), 6, ["is a regular file"]),
    "non-empty-dir": (lambda t, o: [t.mkdir(), (t / "notes").write_bytes(b"x")], 6, ["not an empty directory"]),
}


@pytest.mark.parametrize("case", sorted(EXPORT_TARGETS))
def test_export_refuses_an_odd_target(source: Source, tmp_path: Path, case: str):
    make, code, needles = EXPORT_TARGETS[case]
    out = outside_files(tmp_path)
    where = tmp_path / "exports"
    where.mkdir()
    target = where / "ORDERS"
    make(target, out)
    before_out, before_where = tree(out), tree(where)
    before_archive = archive_state(source.archive)
    run = run_cli("export", source.archive, source.manifest_id[:12], target, "-i", source.key, env=cli_env(tmp_path))
    one_error(run, code, str(target), *needles)
    assert tree(out) == before_out, "export wrote outside"
    assert tree(where) == before_where, "export left something next to the target"
    assert archive_state(source.archive) == before_archive


def test_export_below_a_file_is_a_usage_error(source: Source, tmp_path: Path):
    (tmp_path / "plain").write_bytes(b"x")
    target = tmp_path / "plain" / "ORDERS"
    run = run_cli("export", source.archive, source.manifest_id[:12], target, "-i", source.key, env=cli_env(tmp_path))
    one_error(run, 2, str(target), "not a directory")
    assert (tmp_path / "plain").read_bytes() == b"x"


def test_export_target_swapped_for_a_symlink_at_the_end_is_left_alone(tmp_path: Path):
    out = outside_files(tmp_path)
    tmp = tmp_path / ".ORDERS.partial-1"
    tmp.mkdir()
    (tmp / "backup.json").write_bytes(b"{}")
    os.symlink(out, tmp_path / "ORDERS")
    with pytest.raises(ConflictError, match="symbolic link"):
        publish_target(tmp, tmp_path / "ORDERS")
    assert sorted(p.name for p in out.iterdir()) == ["also-precious", "precious"]


def test_export_still_writes_a_fresh_directory(source: Source, tmp_path: Path):
    (tmp_path / "empty").mkdir()  # an empty directory may stand where the export goes
    for target in (tmp_path / "new" / "ORDERS", tmp_path / "empty"):
        run = run_cli(
            "export", source.archive, source.manifest_id[:12], target, "-i", source.key, env=cli_env(tmp_path)
        )
        assert run.returncode == 0, run.stderr
        assert sorted(p.name for p in target.iterdir()) == ["backup.json", "stream.tar.s2"]
        assert not [p for p in target.parent.iterdir() if ".partial-" in p.name]


# -- import ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def natscli_dir(source: Source) -> Path:
    d = source.base / "natscli" / "ORDERS"
    run = run_cli("export", source.archive, source.manifest_id[:12], d, "-i", source.key, env=cli_env(source.base))
    assert run.returncode == 0, run.stderr
    return d


def _edit(path: str, value: object) -> Callable[[dict], None]:
    """Set ``config.x`` / ``state.y`` to ``value``."""

    def change(doc: dict) -> None:
        section, _, field = path.partition(".")
        doc[section][field] = value

    return change


BAD_BACKUP_JSON: dict[str, tuple[Callable[[dict], None] | bytes, list[str]]] = {
    "name-not-a-string": (_edit("config.name", 7), ["no config with a stream name"]),
    "name-with-a-slash": (_edit("config.name", "etc/passwd"), ["config.name", "'/'"]),
    "name-with-a-dot": (_edit("config.name", "ORD.ERS"), ["config.name", "'.'"]),
    "name-too-long": (_edit("config.name", "N" * 256), ["config.name", "at most 255"]),
    "subjects-a-string": (_edit("config.subjects", "orders.>"), ["config.subjects is not an array"]),
    "subjects-of-numbers": (_edit("config.subjects", ["orders.>", 5]), ["config.subjects[1]"]),
    "replicas-zero": (_edit("config.num_replicas", 0), ["config.num_replicas is 0"]),
    "replicas-a-string": (_edit("config.num_replicas", "3"), ["config.num_replicas is not an integer"]),
    "storage-unknown": (_edit("config.storage", "tape"), ["config.storage", "'tape'"]),
    "sources-not-objects": (_edit("config.sources", ["A"]), ["config.sources[0] is not an object"]),
    "metadata-not-strings": (_edit("config.metadata", {"k": 1}), ["config.metadata"]),
    "messages-a-string": (_edit("state.messages", "lots"), ["state.messages is not an integer"]),
    "messages-negative": (_edit("state.messages", -5), ["state.messages is -5"]),
    "consumers-a-float": (_edit("state.consumer_count", 1.5), ["state.consumer_count is not an integer"]),
    "last-seq-a-bool": (_edit("state.last_seq", True), ["state.last_seq is not an integer"]),
    "state-a-list": (lambda doc: doc.update(state=[]), ["state that is not an object"]),
    "nan": (b'{"config": {"name": "ORDERS"}, "state": {"messages": NaN}}', ["NaN"]),
    "duplicate-field": (b'{"config": {"name": "ORDERS", "name": "OTHER"}, "state": {}}', ["appears twice"]),
    "too-deep": (b'{"config": {"name": "ORDERS", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}}", ["nests deeper"]),
    "not-json": (b"{not json", ["not valid JSON"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BACKUP_JSON))
def test_import_refuses_a_bad_backup_json_before_writing(source: Source, natscli_dir: Path, archive, tmp_path, case):
    change, needles = BAD_BACKUP_JSON[case]
    d = tmp_path / "in" / "ORDERS"
    shutil.copytree(natscli_dir, d)
    if isinstance(change, bytes):
        (d / "backup.json").write_bytes(change)
    else:
        doc = json.loads((d / "backup.json").read_bytes())
        change(doc)
        (d / "backup.json").write_text(json.dumps(doc))
    before = tree(archive)
    run = run_cli("import", d, archive, "-i", source.key, env=cli_env(tmp_path))
    one_error(run, 2, "backup.json", *needles)
    assert tree(archive) == before


def test_import_refuses_a_huge_or_special_backup_json(source: Source, natscli_dir: Path, archive, tmp_path):
    d = tmp_path / "in" / "ORDERS"
    shutil.copytree(natscli_dir, d)
    doc = json.loads((d / "backup.json").read_bytes())
    doc["config"]["description"] = "x" * (16 * 1024 * 1024)
    (d / "backup.json").write_text(json.dumps(doc))
    before = tree(archive)
    one_error(run_cli("import", d, archive, "-i", source.key, env=cli_env(tmp_path)), 2, "larger than 16 MiB")
    (d / "backup.json").unlink()
    os.mkfifo(d / "backup.json")
    run = run_cli("import", d, archive, "-i", source.key, env=cli_env(tmp_path), timeout=30)
    one_error(run, 2, "backup.json", "a FIFO")
    assert tree(archive) == before


def test_account_import_refuses_a_directory_named_after_another_stream(source, natscli_dir, archive, tmp_path):
    account = tmp_path / "account"
    shutil.copytree(natscli_dir, account / "PAYMENTS")  # its backup.json says ORDERS
    before = tree(archive)
    run = run_cli("import", account, archive, "-i", source.key, env=cli_env(tmp_path))
    one_error(run, 2, "PAYMENTS", "'ORDERS'", "named after its stream")
    assert tree(archive) == before


def test_import_of_the_good_directory_still_works(source: Source, natscli_dir: Path, archive, tmp_path):
    run = run_cli("import", natscli_dir, archive, "-i", source.key, "--json", env=cli_env(tmp_path), umask=0)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["import"]["streams"][0]["stream"] == "ORDERS"
    files, dirs = modes(archive)
    assert files == {"600"} and dirs == {"700"}


# -- a full disk ----------------------------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, 2 * 1024 * 1024))


def test_a_full_disk_during_backup_leaves_nothing(source: Source, tmp_path: Path):
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "2m")
    try:
        archive = disk / "archive"
        args = [JSARCHIVE, "stream", "backup", "BIG", str(archive), "-s", source.url, "-i", str(source.key)]
        args += ["--no-progress", "--block-size", "256KiB", "--compression", "none"]
        p = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=cli_env(tmp_path),
            timeout=120,
            stdin=subprocess.DEVNULL,
            preexec_fn=None if mounted else _limit_file_size,
        )
        run = Run(args, p.returncode, p.stdout, p.stderr, 0.0)
        one_error(run, 7, str(archive), "no space left" if mounted else "file size limit")
        left = tree(archive)
        assert left == {".incomplete/": "dir 700"}, f"left in the archive: {left}"
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
