"""One contract for every sink: a local directory, memory, S3 (moto) and GCS (fake-gcs-server and gcp-storage-emulator).

Each test runs against each store as :func:`sinks.open_sink` returns it (the adapter inside RetryingSink), so what the
pipeline relies on holds the same everywhere. Capabilities are part of the contract: what a sink declares is
exercised, and what it does not declare must be refused cleanly. Adapter details (S3 part coalescing and Object
Lock, GCS resumable sessions and CRC32C, local symlink hardening, the memory store registry) stay in the adapters' own
test modules.

What the emulators cannot show: neither GCS emulator has buckets with object retention enabled or enforces a lock
(gcp-storage-emulator even drops the retention fields), so for GCS the declaration, the request being accepted and the
pipeline's per-bucket check are tested, not that a locked object resists deletion. moto applies S3 Object Lock, and
the memory store enforces retention on stores created with ``object_lock``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.archive.repository import Repository
from pipeline.base.errors import UsageError
from pipeline.flows.backup import check_writable
from pipeline.keys.keyring import KeyRing
from sinks import (
    AccessDenied,
    Capabilities,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    Retention,
    RetryingSink,
    RetryPolicy,
    Sink,
    SinkError,
    SinkOptions,
    TransientError,
    Unsupported,
    open_sink,
    require,
)
from sinks.local import LocalSink
from sinks.memory import MemorySink
from sinks.parts import OrderedParts
from tests.gcs_fixtures import FAKE_GCS, GCP_EMULATOR, Emulator

KIB = 1024
MIB = 1024 * KIB
pytestmark = pytest.mark.timeout(180)  # a stuck writer fails its test instead of the whole run

EXPECTED = {
    "local": Capabilities(incomplete_uploads=True),
    "memory": Capabilities(retention_lock=True, incomplete_uploads=True),
    "s3": Capabilities(retention_lock=True, cold_storage=True, versions=True, incomplete_uploads=True),
    "gcs": Capabilities(retention_lock=True),
}


@dataclass
class Store:
    """A sink under test plus what the test needs to look behind it."""

    kind: str  # local | memory | s3 | gcs
    name: str  # the parameter: local, memory, s3, fake-gcs-server, gcp-storage-emulator
    sink: Sink
    sibling: Sink  # the same bucket (or parent directory) under a neighbouring prefix: "arch2" next to "arch"
    locked: Callable[[], Sink] | None  # a store configured for retention (S3: an Object Lock bucket)
    versions: Callable[[str], list[str]] | None = None  # version ids of an object of ``locked()`` (S3)
    keeps_retention: bool = True  # whether the store reports the retention it was sent (gcp-storage-emulator: no)
    enforces_lock: bool = False  # whether ``locked()`` refuses to destroy a locked object (S3 on moto, memory)


def _local(tmp_path: Path) -> Store:
    return Store("local", "local", open_sink(str(tmp_path / "arch")), open_sink(str(tmp_path / "arch2")), None)


def _memory(request: pytest.FixtureRequest) -> Store:
    plain = MemorySink.create()
    lock = MemorySink.create(object_lock=True)
    for url in (plain, lock):
        request.addfinalizer(lambda url=url: MemorySink.forget(url.removeprefix("mem://")))
    return Store(
        "memory",
        "memory",
        open_sink(f"{plain}/arch"),
        open_sink(f"{plain}/arch2"),
        lambda: open_sink(f"{lock}/arch"),
        enforces_lock=True,
    )


def _s3(request: pytest.FixtureRequest) -> Store:
    moto = request.getfixturevalue("moto")
    client = request.getfixturevalue("s3")
    options = SinkOptions(endpoint_url=moto.endpoint)
    plain = f"plain-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=plain)
    lock = f"locked-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=lock, ObjectLockEnabledForBucket=True)

    def versions(key: str) -> list[str]:
        page = client.list_object_versions(Bucket=lock, Prefix=f"arch/{key}")
        return [v["VersionId"] for kind in ("Versions", "DeleteMarkers") for v in page.get(kind) or []]

    return Store(
        "s3",
        "s3",
        open_sink(f"s3://{plain}/arch", options),
        open_sink(f"s3://{plain}/arch2", options),
        lambda: open_sink(f"s3://{lock}/arch", options),
        versions,
        enforces_lock=True,
    )


def _gcs(request: pytest.FixtureRequest, which: str) -> Store:
    emu: Emulator = request.getfixturevalue("fake_gcs_server" if which == FAKE_GCS else "gcp_storage_emulator")
    bucket = emu.make_bucket()
    # A plain-http endpoint: the sink goes there without credentials, as with $STORAGE_EMULATOR_HOST.
    options = SinkOptions(endpoint_url=emu.url)
    return Store(
        "gcs",
        which,
        open_sink(f"gs://{bucket}/arch", options),
        open_sink(f"gs://{bucket}/arch2", options),
        lambda: open_sink(f"gs://{bucket}/arch", options),
        keeps_retention=which == FAKE_GCS,
    )


def _open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return _local(tmp_path)
    if request.param == "memory":
        return _memory(request)
    if request.param == "s3":
        return _s3(request)
    return _gcs(request, request.param)


@pytest.fixture(params=["local", "memory", "s3", FAKE_GCS, GCP_EMULATOR])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return _open_store(request, tmp_path)


@pytest.fixture(params=["memory", "s3"])
def enforcing_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The stores that can show a lock holding here: local declares none, and neither GCS emulator enforces one
    (see the module doc)."""
    return _open_store(request, tmp_path)


def _until(days: float = 1) -> dt.datetime:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).replace(microsecond=0)


def _write_threaded(writer: Any, parts: list[bytes], order: list[int]) -> None:
    """One thread per part: a writer may hold a part back until its predecessors arrive (GCS does)."""
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            writer.write_part(n, parts[n - 1], hashlib.sha256(parts[n - 1]).digest())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- composition ---------------------------------------------------------------------------------------------------
def test_open_sink_wraps_the_adapter_in_retries(store: Store):
    assert isinstance(store.sink, RetryingSink)
    assert store.sink.policy == RetryPolicy(budget=SinkOptions().retry_budget)
    assert store.sink.url == store.sink.inner.url
    assert not store.sink.is_transient(ObjectNotFound("x")) and not store.sink.is_transient(ValueError())


# -- small objects -------------------------------------------------------------------------------------------------
def test_put_is_create_only_unless_asked(store: Store):
    s = store.sink
    info = s.put("manifests/abc", b"hello")
    assert (info.key, info.size) == ("manifests/abc", 5)
    with pytest.raises(ObjectExists, match="manifests/abc already exists"):
        s.put("manifests/abc", b"other")
    with pytest.raises(ObjectExists):
        s.put("manifests/abc", b"hello")  # the same bytes are still a conflict
    assert s.get("manifests/abc") == b"hello"
    assert s.put("manifests/abc", b"replaced", if_absent=False).size == 8
    assert s.get("manifests/abc") == b"replaced"


def test_get_head_and_missing_objects(store: Store):
    s = store.sink
    s.put("refs/A/1", b"x" * 10)
    head = s.head("refs/A/1")
    assert head is not None and head.key == "refs/A/1" and head.size == 10
    assert head.archived is False and head.thaw is None and head.retention is None
    assert head.modified is not None and abs((dt.datetime.now(dt.timezone.utc) - head.modified).total_seconds()) < 300
    assert s.head("refs/A/nope") is None
    with pytest.raises(ObjectNotFound, match="refs/A/nope"):
        s.get("refs/A/nope")
    with pytest.raises(ObjectNotFound, match="refs/A/nope"):
        s.get_range("refs/A/nope", 0, 1)
    assert s.get("refs/A/1") == b"x" * 10


def test_get_range_edges(store: Store):
    s = store.sink
    s.put("manifests/r", b"hello")
    assert s.get_range("manifests/r", 1, 3) == b"ell"
    assert s.get_range("manifests/r", 0, 5) == b"hello"
    assert s.get_range("manifests/r", 3, 100) == b"lo"  # a short read is returned as is
    assert s.get_range("manifests/r", 4, 1) == b"o"  # the last byte
    assert s.get_range("manifests/r", 5, 10) == b""  # at the end
    assert s.get_range("manifests/r", 50, 10) == b""  # past the end
    assert s.get_range("manifests/r", 2, 0) == b""
    with pytest.raises(SinkError):
        s.get_range("manifests/r", -1, 2)


def test_list_by_prefix(store: Store):
    s = store.sink
    store.sibling.put("refs/ORDERS/9", b"next door")  # shares the prefix string, not the folder
    keys = ["refs/ORDERS/2", "refs/ORDERS/1", "refs/ORDERS/10", "refs/OTHER/1", "refs/ORDERSX/1", "manifests/m"]
    for k in keys:
        s.put(k, k.encode())
    listed = {p: [(i.key, i.size) for i in s.list(p)] for p in ("refs/ORDERS/", "refs/ORD", "refs/", "", "nope/")}
    assert listed["refs/ORDERS/"] == [(k, len(k)) for k in ("refs/ORDERS/1", "refs/ORDERS/10", "refs/ORDERS/2")]
    assert [k for k, _ in listed["refs/ORD"]] == ["refs/ORDERS/1", "refs/ORDERS/10", "refs/ORDERS/2", "refs/ORDERSX/1"]
    assert [k for k, _ in listed["refs/"]] == sorted(k for k in keys if k.startswith("refs/"))
    assert [k for k, _ in listed[""]] == sorted(keys)  # plain key order, everything under the sink's prefix only
    assert listed["nope/"] == []
    assert [i.key for i in store.sibling.list("")] == ["refs/ORDERS/9"]


def test_delete(store: Store):
    s = store.sink
    s.put("refs/D/1", b"x")
    s.put("refs/D/2", b"y")
    s.delete("refs/D/1")
    assert s.head("refs/D/1") is None and [i.key for i in s.list("refs/D/")] == ["refs/D/2"]
    s.delete("refs/D/1")  # already gone: not an error
    s.delete("refs/never/there")
    with pytest.raises(ObjectNotFound):
        s.get("refs/D/1")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../x", "a/./b", "a/"])
def test_invalid_keys_are_refused(store: Store, key: str):
    with pytest.raises(SinkError, match="invalid object key"):
        store.sink.put(key, b"x")


# -- multipart writers ---------------------------------------------------------------------------------------------
def test_writer_takes_parts_in_any_order_from_threads(store: Store):
    s = store.sink
    rng = random.Random(11)
    parts = [rng.randbytes(rng.randint(100 * KIB, 300 * KIB)) for _ in range(36)]  # ~7 MiB: past S3's 5 MiB part
    order = list(range(1, len(parts) + 1))
    rng.shuffle(order)
    w = s.open_writer("data/b1", part_size=256 * KIB)
    _write_threaded(w, parts, order)
    assert s.head("data/b1") is None and list(s.list("data/")) == []  # invisible until complete
    info = w.complete()
    data = b"".join(parts)
    assert info.key == "data/b1" and info.size == len(data)
    assert s.get("data/b1") == data and s.head("data/b1").size == len(data)
    assert s.get_range("data/b1", 5 * MIB - 3, 6) == data[5 * MIB - 3 : 5 * MIB + 3]
    assert [i.key for i in s.list("data/")] == ["data/b1"]
    assert [u for u in s.list_incomplete() if u.key in ("data/b1", "")] == []


def test_empty_object_and_one_small_part(store: Store):
    s = store.sink
    assert s.open_writer("data/empty", part_size=256 * KIB).complete().size == 0
    assert s.get("data/empty") == b"" and s.head("data/empty").size == 0
    w = s.open_writer("data/one", part_size=8 * MIB)
    w.write_part(1, b"tiny", hashlib.sha256(b"tiny").digest())
    assert w.complete().size == 4 and s.get("data/one") == b"tiny"


def test_writer_never_replaces_an_object(store: Store):
    s = store.sink
    s.put("data/z", b"original")
    with pytest.raises(ObjectExists, match="data/z already exists"):
        s.open_writer("data/z", part_size=256 * KIB)
    assert s.get("data/z") == b"original"


def test_missing_and_repeated_parts(store: Store):
    s = store.sink
    w = s.open_writer("data/gap", part_size=256 * KIB)
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            w.write_part(2, b"second", b"")
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=second)
    t.start()  # may return at once, or wait for part 1 (which never comes)
    with pytest.raises(SinkError, match="part 1 was never written"):
        # The waiting writer must have deposited its part before complete() looks: wait until it is accepted.
        _complete_when_waiting(w)
    t.join(timeout=30)
    assert not t.is_alive() and len(outcome) == 1  # a waiting writer was released (with the same error)
    assert outcome[0] is None or "part 1 was never written" in str(outcome[0])
    w.abort()
    assert s.head("data/gap") is None

    w = s.open_writer("data/twice", part_size=256 * KIB)
    w.write_part(1, b"a", b"")
    with pytest.raises(SinkError, match="twice"):
        w.write_part(1, b"a", b"")
    with pytest.raises(SinkError, match="start at 1"):
        w.write_part(0, b"a", b"")
    w.abort()
    assert s.head("data/twice") is None


def _complete_when_waiting(writer: Any) -> None:
    """``complete()`` once the part written by the other thread has been accepted (it waits for part 1)."""
    parts = next(v for v in vars(writer).values() if isinstance(v, OrderedParts))
    deadline = time.monotonic() + 30
    while not parts.waiting() and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.complete()


def test_abort_leaves_nothing_and_is_idempotent(store: Store):
    s = store.sink
    w = s.open_writer("data/y", part_size=256 * KIB)
    rng = random.Random(5)
    for n in range(1, 25):  # 6 MiB: S3 has uploaded a part and GCS sent chunks before the abort
        w.write_part(n, rng.randbytes(256 * KIB), b"")
    w.abort()
    w.abort()
    assert s.head("data/y") is None and list(s.list("")) == []
    assert s.list_incomplete() == []
    with pytest.raises(SinkError, match="aborted|finished"):
        w.write_part(25, b"x", b"")
    with pytest.raises(SinkError, match="aborted|finished"):
        w.complete()
    assert s.head("data/y") is None


def test_incomplete_uploads_are_listed_and_aborted_as_declared(store: Store):
    s = store.sink
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    w = s.open_writer("data/left", part_size=256 * KIB)
    w.write_part(1, b"never completed", b"")  # the writer "dies": neither complete nor abort
    items = s.list_incomplete()
    if s.capabilities.incomplete_uploads:
        assert len(items) == 1 and items[0].key in ("data/left", "")  # a local temporary file has no key
        assert items[0].upload_id
        if store.kind in ("local", "memory"):  # moto dates every multipart upload 2010-11-10: only here is it recent
            assert s.list_incomplete(older_than=before) == []
        assert s.list_incomplete(older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == items
        s.abort_incomplete(items[0])
        assert s.list_incomplete() == []
        s.abort_incomplete(items[0])  # already gone: not an error
    else:
        assert items == []  # a store that cannot list unfinished uploads says so by listing none
    assert s.head("data/left") is None and list(s.list("")) == []
    w.abort()  # the dead writer's abort finds nothing left, and does not fail


# -- capabilities --------------------------------------------------------------------------------------------------
def test_capabilities_are_declared(store: Store):
    caps = store.sink.capabilities
    assert caps == EXPECTED[store.kind]
    assert caps == type(store.sink.inner).capabilities
    with pytest.raises(ValueError, match="unknown sink capability"):
        require(store.sink, "teleport", what="teleport")


def test_retention_lock_is_accepted_or_refused_as_declared(store: Store):
    lock = Retention("COMPLIANCE", _until(2))
    if not store.sink.capabilities.retention_lock:
        with pytest.raises(Unsupported, match="cannot enforce retention"):
            require(store.sink, "retention_lock", what="enforce retention (Object Lock)")
        with pytest.raises(SinkError, match="cannot enforce retention"):
            store.sink.put("manifests/locked", b"m", retention=lock)
        with pytest.raises(SinkError, match="cannot enforce retention"):
            store.sink.open_writer("data/locked", part_size=256 * KIB, retention=lock)
        assert list(store.sink.list("")) == []
        assert store.sink.retention_unsupported()
        return
    require(store.sink, "retention_lock", what="enforce retention (Object Lock)")
    assert store.locked is not None
    sink = store.locked()
    info = sink.put("manifests/locked", b"m", retention=lock)
    w = sink.open_writer("data/locked", part_size=256 * KIB, retention=Retention("GOVERNANCE", _until(3)))
    w.write_part(1, b"locked data", b"")
    written = w.complete()
    assert sink.get("manifests/locked") == b"m" and sink.get("data/locked") == b"locked data"
    if store.keeps_retention:
        for got, want in ((info.retention, lock), (sink.head("manifests/locked").retention, lock)):
            assert got is not None and got.mode == want.mode and abs((got.until - want.until).total_seconds()) <= 1
        assert written.retention is not None and written.retention.mode == "GOVERNANCE"
    with pytest.raises(SinkError, match="mode"):
        sink.put("manifests/bad", b"m", retention=Retention("FOREVER", _until()))


def test_the_pipeline_asks_the_bucket_only_where_retention_is_declared(store: Store):
    """check_writable: a store that cannot lock is refused by its declaration; one that can is asked per bucket."""
    keys = KeyRing.load(use_env=False)
    lock = Retention("GOVERNANCE", _until())
    check_writable(Repository(store.sink), False, keys, None)  # no lock asked: nothing to check
    with pytest.raises(UsageError) as refused:
        check_writable(Repository(store.sink), False, keys, lock)
    message = str(refused.value)
    if store.kind == "local":
        assert "cannot enforce retention (Object Lock); use an S3 or GCS archive" in message
        return
    assert "cannot enforce retention" not in message  # declared: the bucket's own settings decide
    if store.kind == "s3":
        assert "does not have Object Lock enabled" in message
        check_writable(Repository(store.locked()), False, keys, lock)  # an Object Lock bucket passes
    elif store.kind == "memory":
        assert "was created without object lock" in message
        check_writable(Repository(store.locked()), False, keys, lock)  # a store created with object lock passes
    else:
        # The emulators report no object retention on their buckets, as a real bucket without it would.
        assert "has neither object retention enabled nor a retention policy" in message


def test_a_locked_object_cannot_be_purged_before_it_expires(enforcing_store: Store):
    """Purge (the one call that destroys bytes on every store, versioned or not) is refused under retention."""
    store = enforcing_store
    assert store.sink.capabilities.retention_lock and store.enforces_lock and store.locked is not None
    sink = store.locked()
    sink.put("refs/L/1", b"kept", retention=Retention("GOVERNANCE", _until()))
    w = sink.open_writer("data/L", part_size=256 * KIB, retention=Retention("COMPLIANCE", _until()))
    w.write_part(1, b"locked data", b"")
    w.complete()
    for key in ("refs/L/1", "data/L"):
        with pytest.raises(AccessDenied, match="L"):
            sink.purge(key)
    assert sink.get("refs/L/1") == b"kept" and sink.get("data/L") == b"locked data"


def test_cold_storage_as_declared(store: Store):
    s = store.sink
    s.put("manifests/warm", b"m")
    assert s.thaw("manifests/warm", days=1, tier="Standard") == "available"
    with pytest.raises(ObjectNotFound):
        s.thaw("data/none", days=1, tier="Standard")
    if not s.capabilities.cold_storage:
        return
    w = s.open_writer("data/cold", part_size=256 * KIB, storage_class="GLACIER")
    w.write_part(1, b"frozen", b"")
    info = w.complete()
    assert info.archived and [(i.key, i.archived) for i in s.list("data/")] == [("data/cold", True)]
    with pytest.raises(ObjectArchived):
        s.get("data/cold")
    assert s.thaw("data/cold", days=1, tier="Bulk") == "started"


def test_purge_as_declared(store: Store):
    s = store.sink
    s.put("refs/P/1", b"x")
    s.purge("refs/P/1")
    assert s.head("refs/P/1") is None
    s.purge("refs/P/1")  # gone already
    if not s.capabilities.versions:
        return
    assert store.locked is not None and store.versions is not None
    versioned = store.locked()  # an Object Lock bucket is always versioned
    versioned.put("refs/P/2", b"one")
    versioned.put("refs/P/2", b"two", if_absent=False)
    versioned.delete("refs/P/2")
    assert len(store.versions("refs/P/2")) == 3  # two versions and a delete marker keep the bytes
    versioned.purge("refs/P/2")
    assert store.versions("refs/P/2") == [] and versioned.head("refs/P/2") is None


# -- the retry layer, against a fault-injecting sink ------------------------------------------------------------------
class FlakySink(LocalSink):
    """A real LocalSink whose chosen calls first fail: ``faults[name]`` lists what the next calls raise in turn
    (an exception), or "lost" (do the call, then raise a transient error as if its answer was lost)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.faults: dict[str, list[BaseException | str]] = {}
        self.calls: dict[str, int] = {}

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TransientError)

    def _fault(self, name: str, fn: Callable[[], Any]) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        queue = self.faults.get(name)
        fault = queue.pop(0) if queue else None
        if isinstance(fault, BaseException):
            raise fault
        result = fn()
        if fault == "lost":
            raise TransientError(f"injected: the answer to {name} was lost")
        return result

    def get(self, key: str) -> bytes:
        return self._fault("get", lambda: LocalSink.get(self, key))

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> Any:
        return self._fault("put", lambda: LocalSink.put(self, key, data, if_absent=if_absent, retention=retention))

    def list(self, prefix: str) -> Iterator[Any]:
        self.calls["list"] = self.calls.get("list", 0) + 1
        queue = self.faults.get("list")
        fail_after = queue.pop(0) if queue else None
        for n, info in enumerate(LocalSink.list(self, prefix)):
            if n == fail_after:
                raise TransientError("injected: the listing broke off")
            yield info


@pytest.fixture
def flaky(tmp_path: Path) -> tuple[FlakySink, RetryingSink]:
    inner = FlakySink(tmp_path / "arch")
    return inner, RetryingSink(inner, RetryPolicy(budget=5.0, multiplier=0.001, max_wait=0.01))


def test_transient_errors_are_retried_and_permanent_ones_are_not(flaky: tuple[FlakySink, RetryingSink]):
    inner, sink = flaky
    sink.put("refs/a", b"payload")
    inner.faults["get"] = [TransientError("injected 503")] * 3
    assert sink.get("refs/a") == b"payload"
    assert inner.calls["get"] == 4
    inner.faults["get"] = [AccessDenied("injected 403")]
    with pytest.raises(AccessDenied, match="injected 403"):
        sink.get("refs/a")
    assert inner.calls["get"] == 5  # one attempt only
    inner.faults["get"] = [ObjectNotFound("injected 404")]
    with pytest.raises(ObjectNotFound):
        sink.get("refs/a")
    assert inner.calls["get"] == 6


def test_retries_stop_at_the_budget(tmp_path: Path):
    inner = FlakySink(tmp_path / "arch")
    inner.put("refs/a", b"x")
    sink = RetryingSink(inner, RetryPolicy(budget=0.2, multiplier=0.001, max_wait=0.01))
    inner.faults["get"] = [TransientError("injected: still throttled")] * 100_000
    with pytest.raises(TransientError, match="still throttled"):
        sink.get("refs/a")
    assert 2 <= inner.calls["get"] < 100_000
    inner.faults.clear()
    assert sink.get("refs/a") == b"x"


def test_a_put_whose_answer_was_lost_is_not_a_conflict(flaky: tuple[FlakySink, RetryingSink]):
    inner, sink = flaky
    inner.faults["put"] = ["lost"]
    info = sink.put("manifests/m", b"manifest")
    assert info.size == 8 and sink.get("manifests/m") == b"manifest"
    assert inner.calls["put"] == 2  # the retry met its own object
    with pytest.raises(ObjectExists):  # a put that never failed still conflicts
        sink.put("manifests/m", b"manifest")
    inner.put("refs/r", b"someone else's")
    inner.faults["put"] = [TransientError("injected reset")]
    with pytest.raises(ObjectExists):  # after a failure, other bytes are a real conflict
        sink.put("refs/r", b"ours")
    assert sink.get("refs/r") == b"someone else's"


def test_a_broken_listing_resumes_after_what_was_yielded(flaky: tuple[FlakySink, RetryingSink]):
    inner, sink = flaky
    keys = [f"refs/S/{i}" for i in range(6)]
    for k in keys:
        inner.put(k, b"x")
    inner.faults["list"] = [2, 4]  # the first listing breaks after two items, the second after four
    assert [i.key for i in sink.list("refs/")] == keys
    assert inner.calls["list"] == 3
