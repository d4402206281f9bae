"""The memory sink's own behaviour (what the contract suite does not cover): the registry of named stores behind
``mem://`` and retention enforcement without versions. Its Sink semantics are tested in tests/test_sink_contract.py."""

from __future__ import annotations

import datetime as dt

import pytest

import sinks.memory
from sinks import AccessDenied, ObjectExists, Retention, SinkError, open_sink
from sinks.memory import MemorySink

pytestmark = pytest.mark.unit


def _until(days: float = 1) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)


def test_every_open_of_a_url_sees_one_store_until_it_is_forgotten():
    with MemorySink.scratch() as url:
        open_sink(f"{url}/arch").put("refs/a", b"one")
        assert open_sink(f"{url}/arch").get("refs/a") == b"one"
        assert open_sink(f"{url}//arch/").get("refs/a") == b"one"  # the same prefix, spelt loosely
        assert [i.key for i in open_sink(url).list("")] == ["arch/refs/a"]
        with pytest.raises(SinkError, match="already exists"):
            MemorySink.create(url.removeprefix("mem://"))
        lingering = open_sink(f"{url}/arch")
    assert lingering.head("refs/a") is None  # forgotten: the memory is freed, even under a sink still held
    assert open_sink(f"{url}/arch").head("refs/a") is None
    MemorySink.forget(url.removeprefix("mem://"))  # a store that is gone already: not an error


@pytest.mark.parametrize("url", ["mem://", "mem:///x", "mem://a/../b", "mem://./x"])
def test_bad_urls_are_refused(url: str):
    with pytest.raises(SinkError, match="memory store"):
        open_sink(url)


def test_a_forgotten_store_fails_its_unfinished_uploads():
    with MemorySink.scratch() as url:
        w = open_sink(url).open_writer("data/x", part_size=1024)
        w.write_part(1, b"first", b"")
    with pytest.raises(SinkError, match="aborted"):
        w.write_part(2, b"second", b"")
    w.abort()


def test_head_reports_metadata_and_class_and_a_listing_does_not_carry_metadata():
    with MemorySink.scratch() as url:
        s = open_sink(url)
        w = s.open_writer("data/d", part_size=1024, metadata={"jsarchive-stream": "S"}, storage_class="STANDARD_IA")
        w.write_part(1, b"x", b"")
        info = w.complete()
        assert (info.storage_class, info.metadata) == ("STANDARD_IA", {"jsarchive-stream": "S"})
        assert s.head("data/d") == info
        assert [(i.storage_class, i.metadata) for i in s.list("data/")] == [("STANDARD_IA", {})]
        assert s.put("refs/r", b"r").storage_class == "MEMORY"


def test_retention_is_enforced_until_it_expires(monkeypatch: pytest.MonkeyPatch):
    with MemorySink.scratch(object_lock=True) as url:
        s = open_sink(url)
        until = _until(1)
        info = s.put("manifests/m", b"m", retention=Retention("GOVERNANCE", until))
        assert info.retention == Retention("GOVERNANCE", until)
        for refused in (
            lambda: s.delete("manifests/m"),
            lambda: s.purge("manifests/m"),
            lambda: s.put("manifests/m", b"other", if_absent=False),
        ):
            with pytest.raises(AccessDenied, match="under retention \\(GOVERNANCE until"):
                refused()
        with pytest.raises(ObjectExists):
            s.put("manifests/m", b"other")
        assert s.get("manifests/m") == b"m"

        later = until + dt.timedelta(seconds=1)
        monkeypatch.setattr(sinks.memory, "_now", lambda: later)
        s.put("manifests/m", b"replaced", if_absent=False)  # expired: an ordinary object again
        s.delete("manifests/m")
        assert s.head("manifests/m") is None


def test_a_legal_hold_outlasts_its_retain_until(monkeypatch: pytest.MonkeyPatch):
    with MemorySink.scratch(object_lock=True) as url:
        s = open_sink(url)
        until = _until(1)
        s.put("refs/h", b"h", retention=Retention("COMPLIANCE", until, legal_hold=True))
        monkeypatch.setattr(sinks.memory, "_now", lambda: until + dt.timedelta(days=365))
        with pytest.raises(AccessDenied, match="legal hold"):
            s.delete("refs/h")


def test_retention_asks_a_store_created_with_object_lock_and_a_future_date():
    with MemorySink.scratch() as plain, MemorySink.scratch(object_lock=True) as locked:
        lock = Retention("COMPLIANCE", _until())
        assert "without object lock" in (open_sink(plain).retention_unsupported() or "")
        with pytest.raises(SinkError, match="without object lock"):
            open_sink(plain).put("refs/x", b"x", retention=lock)
        with pytest.raises(SinkError, match="without object lock"):
            open_sink(plain).open_writer("data/x", part_size=1024, retention=lock)
        assert list(open_sink(plain).list("")) == []
        assert open_sink(locked).retention_unsupported() is None
        with pytest.raises(SinkError, match="not in the future"):
            open_sink(locked).put("refs/x", b"x", retention=Retention("COMPLIANCE", _until(-1)))


def test_the_front_ends_refuse_an_in_memory_archive() -> None:
    """A mem:// archive ends with the process: the CLI and the cloud functions refuse it before any work (exit 2)
    rather than report a backup that is already gone."""
    import subprocess
    import sys

    from pipeline.entry import handlers

    for args in (["ls", "mem://x"], ["stream", "backup", "S", "mem://x", "--no-encrypt"], ["stats", "mem://x"]):
        p = subprocess.run(
            [sys.executable, "-m", "pipeline.entry.cli", *args], capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 2 and "mem:// archives exist only inside one Python process" in p.stderr, p.stderr
    with pytest.raises(handlers.ConfigError, match="mem:// archives"):
        handlers._sink({}, "mem://x")
