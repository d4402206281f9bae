"""The local-directory sink: atomic, create-only, ordered multipart assembly."""

from __future__ import annotations

import hashlib
import random
import threading

import pytest

from sinks import ObjectExists, ObjectNotFound, SinkError, open_sink
from sinks.local import INCOMPLETE_DIR, LocalSink


def test_open_sink_urls(tmp_path):
    assert isinstance(open_sink(str(tmp_path)), LocalSink)
    assert open_sink(f"file://{tmp_path}").root == tmp_path
    with pytest.raises(SinkError, match="scheme"):
        open_sink("ftp://x/y")


def test_put_is_create_only_and_atomic(tmp_path):
    s = LocalSink(tmp_path)
    info = s.put("manifests/abc", b"hello")
    assert info.size == 5 and s.get("manifests/abc") == b"hello"
    with pytest.raises(ObjectExists):
        s.put("manifests/abc", b"other")
    assert s.get("manifests/abc") == b"hello"
    assert list((tmp_path / INCOMPLETE_DIR).iterdir()) == []
    with pytest.raises(ObjectNotFound):
        s.get("manifests/nope")
    assert s.head("manifests/nope") is None
    assert s.get_range("manifests/abc", 1, 3) == b"ell"


@pytest.mark.parametrize("key", ["", "../x", "a//b", "a/./b", ".incomplete/x", "/abs"])
def test_keys_cannot_escape_the_archive(tmp_path, key):
    with pytest.raises(SinkError):
        LocalSink(tmp_path).put(key, b"x")


def test_parts_in_any_order_from_threads(tmp_path):
    s = LocalSink(tmp_path)
    parts = [bytes([i]) * random.randint(1, 5000) for i in range(1, 41)]
    w = s.open_writer("data/x", part_size=5000)
    order = list(range(1, 41))
    random.shuffle(order)
    threads = [
        threading.Thread(target=w.write_part, args=(n, parts[n - 1], hashlib.sha256(parts[n - 1]).digest()))
        for n in order
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.head("data/x") is None  # invisible until complete
    info = w.complete()
    assert info.size == sum(map(len, parts)) and s.get("data/x") == b"".join(parts)
    assert list((tmp_path / INCOMPLETE_DIR).iterdir()) == []


def test_incomplete_and_aborted_uploads_leave_nothing(tmp_path):
    s = LocalSink(tmp_path)
    w = s.open_writer("data/y", part_size=10)
    w.write_part(2, b"second", b"")
    with pytest.raises(SinkError, match="part 1"):
        w.complete()
    w.abort()
    w.abort()  # idempotent
    assert s.head("data/y") is None and list((tmp_path / INCOMPLETE_DIR).iterdir()) == []
    w = s.open_writer("data/y", part_size=10)
    w.write_part(1, b"a", b"")
    with pytest.raises(SinkError, match="twice"):
        w.write_part(1, b"a", b"")
    w.abort()


def test_writer_never_replaces_an_object(tmp_path):
    s = LocalSink(tmp_path)
    s.put("data/z", b"original")
    with pytest.raises(ObjectExists):
        s.open_writer("data/z", part_size=10)


def test_list_by_prefix_skips_temp_files(tmp_path):
    s = LocalSink(tmp_path)
    for k in ("refs/A/1", "refs/A/2", "refs/AB/1", "manifests/m"):
        s.put(k, b"x")
    s.open_writer("data/pending", part_size=1).write_part(1, b"x", b"")
    assert [i.key for i in s.list("refs/A/")] == ["refs/A/1", "refs/A/2"]
    assert sorted(i.key for i in s.list("")) == ["manifests/m", "refs/A/1", "refs/A/2", "refs/AB/1"]
    assert list(s.list("nothing/")) == []


def test_id_resolution_for_backups_and_sets(tmp_path):
    """One rule for manifest and set ids: a full id, or a unique prefix of at least six hex digits."""
    from pipeline.archive.repository import Repository
    from pipeline.base.errors import NotFoundError, UsageError

    repo = Repository.open(str(tmp_path))
    first, second = "ab12cd0" + "0" * 57, "ab12cd1" + "1" * 57
    for key in ("manifests/" + first, "manifests/" + second, "sets/" + "ff" * 32):
        repo.sink.put(key, b"x")
    assert repo.resolve("AB12CD0") == first
    assert repo.resolve_set("ffffff") == "ff" * 32
    with pytest.raises(UsageError, match="ambiguous"):
        repo.resolve("ab12cd")
    for bad, msg in (("ab12c", "too short"), ("xyz123", "not a backup id")):
        with pytest.raises(UsageError, match=msg):
            repo.resolve(bad)
    with pytest.raises(UsageError, match="not a set id"):
        repo.resolve_set("set-1")
    with pytest.raises(NotFoundError, match="no set with id"):
        repo.resolve_set("abcdef")
    full = "9" * 64
    assert repo.resolve(full) == full  # a full id is taken as it is ...
    with pytest.raises(NotFoundError):
        repo.load_manifest(full)  # ... and loading it says it is missing
    assert repo.resolve_set(full) == full
    with pytest.raises(NotFoundError):
        repo.load_set(full)
