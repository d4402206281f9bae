"""The local-directory sink beyond the shared contract (tests/test_sink_contract.py): URLs, keys, temporary files."""

from __future__ import annotations

import pytest

from sinks import ObjectExists, SinkError, open_sink
from sinks.local import INCOMPLETE_DIR, LocalSink


def test_open_sink_urls(tmp_path):
    assert isinstance(open_sink(str(tmp_path)).inner, LocalSink)
    assert open_sink(f"file://{tmp_path}").root == tmp_path  # adapter attributes read through the retry layer
    with pytest.raises(SinkError, match="scheme"):
        open_sink("ftp://x/y")


def test_put_leaves_no_temporary_file(tmp_path):
    s = LocalSink(tmp_path)
    s.put("manifests/abc", b"hello")
    with pytest.raises(ObjectExists):
        s.put("manifests/abc", b"other")
    assert list((tmp_path / INCOMPLETE_DIR).iterdir()) == []


@pytest.mark.parametrize("key", ["", "../x", "a//b", "a/./b", ".incomplete/x", "/abs"])
def test_keys_cannot_escape_the_archive(tmp_path, key):
    with pytest.raises(SinkError):
        LocalSink(tmp_path).put(key, b"x")


def test_writer_files_live_under_incomplete_until_published(tmp_path):
    s = LocalSink(tmp_path)
    w = s.open_writer("data/x", part_size=10)
    w.write_part(2, b"world", b"")
    w.write_part(1, b"hello ", b"")
    (tmp,) = (tmp_path / INCOMPLETE_DIR).iterdir()
    assert tmp.read_bytes() == b"hello world" and [i.key for i in s.list("")] == []  # never listed
    assert w.complete().size == 11 and (tmp_path / "data" / "x").read_bytes() == b"hello world"
    assert list((tmp_path / INCOMPLETE_DIR).iterdir()) == []
    w = s.open_writer("data/y", part_size=10)
    w.write_part(1, b"a", b"")
    w.abort()
    assert list((tmp_path / INCOMPLETE_DIR).iterdir()) == []


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
