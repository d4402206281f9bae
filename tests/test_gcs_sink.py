"""The GCS sink against two real emulators (fake-gcs-server and gcp-storage-emulator), plus its offline parts, beyond
the shared contract (tests/test_sink_contract.py).

What the emulators do not enforce (retention, holds, some preconditions, resumable status queries on fake-gcs-server)
is checked here from what the sink *sent*, and each known gap is pinned so a change in an emulator shows up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import google.auth.exceptions
import pytest
import requests

import sinks.gcs as gcs
import sinks.gcs.checksums as gcs_checksums
from sinks import (
    AccessDenied,
    ObjectExists,
    ObjectNotFound,
    Retention,
    RetryingSink,
    RetryPolicy,
    SinkError,
    SinkOptions,
    TransientError,
    open_sink,
)
from sinks.gcs import CHUNK_QUANTUM, GCSSink
from tests.gcs_fixtures import (  # noqa: F401
    FAKE_GCS,
    GCP_EMULATOR,
    Emulator,
    fixture_fake_gcs_server,
    fixture_gcp_storage_emulator,
    fixture_gcs_emulator,
    fixture_gcs_sink,
    fixture_no_google_env,
)

KIB = 1024
pytestmark = pytest.mark.timeout(120)  # a stuck writer fails its test instead of the whole run


# -- a fault-injecting, recording wrapper around the sink's HTTP session ------------------------------------------
def _response(url: str, status: int, message: str = "injected") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = url
    r.reason = message
    r._content = json.dumps({"error": {"code": status, "message": message}}).encode()
    r.headers["Content-Type"] = "application/json"
    return r


class Wire:
    """Records every request the sink makes and lets a test break chosen ones.

    ``fail(predicate, action)``: the first request for which ``predicate(method, url, headers)`` holds gets
    ``action``: "refuse" (a connection error before anything is sent), "lose" (sent, then the answer is lost),
    an HTTP status to answer with instead of sending, or a callable run just before the request is sent.
    """

    def __init__(self, sink: GCSSink) -> None:
        self.session = sink._http()
        self._real = self.session.request
        self.calls: list[dict] = []
        self._faults: list[tuple[Callable[[str, str, dict], bool], str | int | Callable[[], None]]] = []
        self._lock = threading.Lock()
        self.session.request = self._request  # type: ignore[method-assign]

    def fail(self, predicate: Callable[[str, str, dict], bool], action: str | int | Callable[[], None]) -> None:
        self._faults.append((predicate, action))

    def _request(self, method: str, url: str, **kwargs):
        headers = dict(kwargs.get("headers") or {})
        body = kwargs.get("data")
        call = {"method": method, "url": url, "headers": headers, "body": body, "status": None}
        with self._lock:
            self.calls.append(call)
            action = None
            for i, (predicate, act) in enumerate(self._faults):
                if predicate(method, url, headers):
                    action = act
                    del self._faults[i]
                    break
        if action == "refuse":
            call["status"] = "refused"
            raise requests.ConnectionError("injected: connection refused")
        if isinstance(action, int):
            call["status"] = action
            return _response(url, action)
        if callable(action):
            action()
        response = self._real(method, url, **kwargs)
        call["status"] = response.status_code
        if action == "lose":
            call["status"] = f"lost {response.status_code}"
            raise requests.ConnectionError("injected: connection reset before the answer arrived")
        return response

    def ranges(self, uri: str) -> list[str]:
        return [c["headers"].get("Content-Range") for c in self.calls if c["method"] == "PUT" and c["url"] == uri]

    def json_sent(self, method: str, path_part: str) -> list[dict]:
        """The JSON object resources sent (resumable init bodies, and the metadata part of multipart uploads)."""
        out = []
        for c in self.calls:
            if c["method"] != method or path_part not in c["url"] or c["body"] is None:
                continue
            body = c["body"] if isinstance(c["body"], bytes) else c["body"].encode()
            m = re.search(rb"\{.*?\}(?=\r\n--)", body, re.S) if b"multipart" in str(c["headers"]).encode() else None
            out.append(json.loads(m.group(0) if m else body))
        return out


def chunk_put(uri: str, nth: int) -> Callable[[str, str, dict], bool]:
    """Matches the ``nth`` (1-based) non-final chunk PUT to the session ``uri``."""
    seen = [0]

    def predicate(method: str, url: str, headers: dict) -> bool:
        if method == "PUT" and url == uri and re.fullmatch(r"bytes \d+-\d+/\*", headers.get("Content-Range", "")):
            seen[0] += 1
            return seen[0] == nth
        return False

    return predicate


def final_put(uri: str) -> Callable[[str, str, dict], bool]:
    return lambda method, url, headers: (
        method == "PUT" and url == uri and re.fullmatch(r"bytes (\d+-\d+|\*)/\d+", headers.get("Content-Range", ""))
    )


def make_parts(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    parts = []
    for _ in range(n):
        size = rnd.randint(1, 90 * KIB)
        if size % CHUNK_QUANTUM == 0:
            size += 1
        parts.append(rnd.randbytes(size))
    return parts


def write_in_order(writer, parts: list[bytes]) -> None:
    for n, p in enumerate(parts, 1):
        writer.write_part(n, p, hashlib.sha256(p).digest())


# -- offline ------------------------------------------------------------------------------------------------------
def test_urls_endpoints_and_keys(monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    s = open_sink("gs://bkt/some/prefix/").inner
    assert isinstance(s, GCSSink) and (s.bucket, s.prefix, s.url) == ("bkt", "some/prefix", "gs://bkt/some/prefix")
    assert s.endpoint == gcs.DEFAULT_ENDPOINT and not s.anonymous and not s.precheck_create
    assert s._name("data/x") == "some/prefix/data/x"
    root = GCSSink.from_url("gs://bkt")
    assert (root.prefix, root.url, root._name("refs/a")) == ("", "gs://bkt", "refs/a")
    for bad in ("gs://", "gs:///x", "s3://b/p"):
        with pytest.raises(SinkError):
            GCSSink.from_url(bad)
    for key in ("", "a//b", "../x", "a/./b", "x\n"):
        with pytest.raises(SinkError, match="invalid object key"):
            s._name(key)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    emu = GCSSink.from_url("gs://bkt/p")
    assert emu.endpoint == "http://127.0.0.1:4443" and emu.anonymous and emu.precheck_create
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    explicit = GCSSink.from_url("gs://bkt/p", SinkOptions(endpoint_url="https://storage.example.internal/"))
    assert explicit.endpoint == "https://storage.example.internal" and not explicit.anonymous
    assert GCSSink.from_url("gs://b", SinkOptions(endpoint_url="http://127.0.0.1:9")).anonymous


def test_retention_mapping_both_ways():
    until = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    sent = gcs._retention_fields(Retention("COMPLIANCE", until, legal_hold=True))
    assert sent == {
        "retention": {"mode": "Locked", "retainUntilTime": "2031-05-06T07:08:09.000000Z"},
        "temporaryHold": True,
    }
    assert gcs._retention_fields(Retention("GOVERNANCE", until))["retention"]["mode"] == "Unlocked"
    assert gcs._retention_fields(None) == {}
    with pytest.raises(SinkError, match="retention mode"):
        gcs._retention_fields(Retention("FOREVER", until))
    assert gcs._retention_of({"retention": {"mode": "Locked", "retainUntilTime": "2031-05-06T07:08:09Z"}}) == Retention(
        "COMPLIANCE", until
    )
    assert gcs._retention_of(
        {"retention": {"mode": "Unlocked", "retainUntilTime": "2031-05-06T07:08:09.5Z"}, "temporaryHold": True}
    ) == Retention("GOVERNANCE", until.replace(microsecond=500000), legal_hold=True)
    assert gcs._retention_of({"retentionExpirationTime": "2031-05-06T09:08:09+02:00"}) == Retention("BUCKET", until)
    assert gcs._retention_of({"temporaryHold": False}) is None
    assert gcs._parse_time("2026-11-23T22:18:42.123456789Z") == dt.datetime(
        2026, 11, 23, 22, 18, 42, 123456, tzinfo=dt.timezone.utc
    )


def test_transient_classification():
    assert all(gcs.transient(gcs._HTTPStatus(_response("u", s))) for s in (408, 429, 500, 502, 503, 504))
    assert not any(gcs.transient(gcs._HTTPStatus(_response("u", s))) for s in (400, 401, 403, 404, 412))
    assert gcs.transient(requests.ConnectionError()) and gcs.transient(requests.ReadTimeout())
    assert gcs.transient(requests.exceptions.ChunkedEncodingError())
    # google-auth's own exceptions are all that can come from the auth layer (no google-cloud library is used)
    assert gcs.transient(google.auth.exceptions.TransportError("x"))
    assert gcs.transient(google.auth.exceptions.RefreshError("x", retryable=True))
    assert not gcs.transient(google.auth.exceptions.RefreshError("x"))
    assert not gcs.transient(ValueError()) and not gcs.transient(ObjectNotFound("x"))
    # the sink's predicate, for RetryingSink, takes what its calls raise: translated errors
    sink = GCSSink.from_url("gs://b", SinkOptions(endpoint_url="http://127.0.0.1:9"))
    assert sink.is_transient(TransientError("x")) and not sink.is_transient(AccessDenied("x"))


@pytest.mark.parametrize("variant", ["key file missing", "no ADC at all"])
def test_missing_credentials_fail_fast_and_explain(no_google_env: Path, monkeypatch, variant):
    if variant == "key file missing":
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(no_google_env / "nope.json"))
    sink = GCSSink.from_url("gs://some-bucket/prefix")  # opening needs no credentials
    started = time.monotonic()
    with pytest.raises(SinkError) as err:
        sink.head("manifests/x")
    elapsed = time.monotonic() - started
    assert type(err.value) is SinkError
    msg = str(err.value)
    assert "gs://some-bucket/prefix" in msg and "gcloud auth application-default login" in msg
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and "workload identity" in msg
    if variant == "key file missing":
        assert "nope.json" in msg
    assert elapsed < 10, f"credential lookup took {elapsed:.1f} s"


# -- parity with the local sink ---------------------------------------------------------------------------------
def test_objects_live_under_the_prefix_with_the_crc32c_gcs_computed(gcs_sink: GCSSink, gcs_emulator: Emulator):
    gcs_sink.put("manifests/m1", b"manifest one")
    gcs_sink.put("refs/A/2", b"a2")
    assert gcs_emulator.raw_names(gcs_sink.bucket) == ["repo/manifests/m1", "repo/refs/A/2"]
    raw = gcs_emulator.raw_object(gcs_sink.bucket, "repo/manifests/m1")
    assert raw["storageClass"] == "STANDARD" and raw["crc32c"] == gcs._crc32c_of(b"manifest one")
    assert gcs_sink.head("manifests/m1").storage_class == "STANDARD"


def test_list_pages_and_prefix_boundaries(gcs_sink: GCSSink, gcs_emulator: Emulator, monkeypatch):
    other = GCSSink.from_url(f"gs://{gcs_sink.bucket}/repo2")
    other.put("refs/A/1", b"not ours")
    keys = [f"refs/S/{i:03d}" for i in range(7)]
    for k in reversed(keys):
        gcs_sink.put(k, k.encode())
    wire = Wire(gcs_sink)
    real = gcs_sink._request

    def small_pages(method, url, **kw):
        if "params" in kw:
            kw["params"] = {**kw["params"], "maxResults": "3"}
        return real(method, url, **kw)

    monkeypatch.setattr(gcs_sink, "_request", small_pages)
    listed = [i.key for i in gcs_sink.list("refs/")]
    assert listed == keys
    list_calls = [c for c in wire.calls if c["method"] == "GET" and c["url"].endswith("/o")]
    if gcs_emulator.name == FAKE_GCS:
        assert len(list_calls) == 3  # pages of 3 followed by their tokens
    else:
        assert len(list_calls) >= 1  # gcp-storage-emulator ignores maxResults and answers in one page
    assert [i.key for i in other.list("")] == ["refs/A/1"]


# -- create-only writes ------------------------------------------------------------------------------------------
def test_create_only_put_relies_on_the_precondition(fake_gcs_server: Emulator, monkeypatch, tmp_path):
    """fake-gcs-server honours ifGenerationMatch=0 on simple uploads: without the pre-check, 412 still refuses."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.url)
    sink = GCSSink.from_url(f"gs://{fake_gcs_server.make_bucket()}/p")
    sink.precheck_create = False
    sink.put("manifests/m", b"first")
    wire = Wire(sink)
    with pytest.raises(ObjectExists, match=r"gs://.*/p/manifests/m already exists"):
        sink.put("manifests/m", b"second")
    assert [c["status"] for c in wire.calls] == [412]
    assert "ifGenerationMatch=0" in wire.calls[0]["url"]
    assert sink.get("manifests/m") == b"first"
    sink.put("manifests/m", b"replaced", if_absent=False)  # only when asked
    assert sink.get("manifests/m") == b"replaced"


def test_create_only_put_on_an_emulator_without_preconditions(gcp_storage_emulator: Emulator, monkeypatch):
    """gcp-storage-emulator ignores ifGenerationMatch; the pre-check stops the plain case, the race stays open."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_storage_emulator.url)
    sink = GCSSink.from_url(f"gs://{gcp_storage_emulator.make_bucket()}/p")
    assert sink.precheck_create
    sink.put("refs/r", b"first")
    with pytest.raises(ObjectExists):
        sink.put("refs/r", b"second")
    assert sink.get("refs/r") == b"first"
    sink.precheck_create = False  # what a racing writer amounts to: the emulator overwrites (gap pinned)
    sink.put("refs/r", b"second")
    assert sink.get("refs/r") == b"second"


def retrying(sink: GCSSink) -> RetryingSink:
    """The sink as open_sink composes it: one attempt per call in the adapter, retries in the layer around it."""
    return RetryingSink(sink, RetryPolicy.from_options(sink.options))


def test_put_whose_answer_was_lost_is_not_reported_as_a_conflict(gcs_sink: GCSSink, gcs_emulator: Emulator):
    wire = Wire(gcs_sink)
    lose = (lambda m, u, h: m == "POST" and "uploadType=multipart" in u, "lose")
    wire.fail(*lose)
    info = retrying(gcs_sink).put("manifests/lost", b"payload")
    assert info.size == 7 and gcs_sink.get("manifests/lost") == b"payload"
    posts = [c["status"] for c in wire.calls if c["method"] == "POST"]
    assert posts == ["lost 200"]  # the retry's pre-check (emulators only) met the object: ours, by its bytes
    if gcs_emulator.name == FAKE_GCS:  # as on GCS, without the pre-check: the retried POST meets the precondition
        gcs_sink.precheck_create = False
        wire.fail(*lose)
        assert retrying(gcs_sink).put("manifests/lost2", b"payload2").size == 8
        posts = [c["status"] for c in wire.calls if c["method"] == "POST"]
        assert posts == ["lost 200", "lost 200", 412] and gcs_sink.get("manifests/lost2") == b"payload2"


def test_writer_race_is_decided_by_the_precondition_on_gcs_only(gcs_sink: GCSSink, monkeypatch):
    """Another writer creates the key after open_writer looked: GCS answers the last chunk with 412."""
    wire = Wire(gcs_sink)
    w = gcs_sink.open_writer("data/race", part_size=CHUNK_QUANTUM)
    init = [c["url"] for c in wire.calls if c["method"] == "POST"]
    assert len(init) == 1 and "uploadType=resumable" in init[0] and "ifGenerationMatch=0" in init[0]
    gcs_sink.put("data/race", b"the other writer")
    w.write_part(1, b"ours", b"")
    wire.fail(final_put(w._uri), 412)  # what GCS does with ifGenerationMatch=0
    with pytest.raises(ObjectExists, match="data/race already exists"):
        w.complete()
    assert gcs_sink.get("data/race") == b"the other writer"
    # Both emulators ignore the precondition on resumable uploads and would overwrite (gap pinned):
    w2 = GCSSink.from_url(gcs_sink.url)
    monkeypatch.setattr(w2, "_get_resource", lambda name: None)  # as if the other writer came after the check
    racing = w2.open_writer("data/race", part_size=CHUNK_QUANTUM)
    racing.write_part(1, b"overwritten", b"")
    assert racing.complete().size == 11 and gcs_sink.get("data/race") == b"overwritten"


# -- the resumable writer ----------------------------------------------------------------------------------------
def test_parts_in_any_order_from_threads(gcs_sink: GCSSink, gcs_emulator: Emulator, monkeypatch):
    parts = make_parts(34, seed=7)
    assert all(len(p) % CHUNK_QUANTUM for p in parts)
    total = b"".join(parts)
    buffered: list[int] = []
    real_append = gcs.GCSObjectWriter._append

    def spy(self, part):
        real_append(self, part)
        buffered.append(len(self._buf))

    monkeypatch.setattr(gcs.GCSObjectWriter, "_append", spy)
    w = gcs_sink.open_writer("data/x", part_size=64 * KIB, metadata={"jsarchive-stream": "ORDERS"})
    wire = Wire(gcs_sink)
    order = list(range(1, len(parts) + 1))
    random.Random(3).shuffle(order)
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            w.write_part(n, parts[n - 1], hashlib.sha256(parts[n - 1]).digest())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=put, args=(n,)) for n in order]
    for t in threads:
        t.start()
        time.sleep(0.001 * random.random())
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert gcs_sink.head("data/x") is None  # invisible until complete
    assert gcs_emulator.raw_names(gcs_sink.bucket) == []
    info = w.complete()
    assert info.key == "data/x" and info.size == len(total)
    assert info.metadata == {"jsarchive-stream": "ORDERS"}
    assert gcs_sink.get("data/x") == total
    assert gcs_sink.get_range("data/x", 300 * KIB, 5000) == total[300 * KIB : 300 * KIB + 5000]
    raw = gcs_emulator.raw_object(gcs_sink.bucket, "repo/data/x")
    assert raw["crc32c"] == gcs._crc32c_of(total)
    # one resumable session fed in order: every chunk but the last is a multiple of 256 KiB, offsets contiguous
    ranges = wire.ranges(w._uri)
    offset = 0
    for cr in ranges[:-1]:
        start, end = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/\*", cr).groups())
        assert start == offset and (end + 1 - start) % CHUNK_QUANTUM == 0
        offset = end + 1
    assert re.fullmatch(rf"bytes {offset}-{len(total) - 1}/{len(total)}", ranges[-1])
    assert len(ranges) >= 5 and w.resumed == 0
    # memory: the upload buffer never held more than one chunk plus one part
    assert len(buffered) == len(parts) and max(buffered) < CHUNK_QUANTUM + max(map(len, parts))
    with pytest.raises(SinkError, match="already finished"):
        w.write_part(99, b"late", b"")


def test_abort_leaves_nothing_and_is_idempotent(gcs_sink: GCSSink, gcs_emulator: Emulator):
    w = gcs_sink.open_writer("data/y", part_size=CHUNK_QUANTUM)
    wire = Wire(gcs_sink)
    parts = make_parts(12, seed=1)
    write_in_order(w, parts)
    assert any(cr.endswith("/*") for cr in wire.ranges(w._uri))  # chunks did reach the server
    w.abort()
    w.abort()
    deletes = [c for c in wire.calls if c["method"] == "DELETE" and c["url"] == w._uri]
    # GCS answers 499 to a cancelled session; fake-gcs-server does too, gcp-storage-emulator cannot cancel (501)
    assert len(deletes) == 1 and deletes[0]["status"] == (499 if gcs_emulator.name == FAKE_GCS else 501)
    assert gcs_sink.head("data/y") is None and gcs_emulator.raw_names(gcs_sink.bucket) == []
    with pytest.raises(SinkError, match="aborted"):
        w.write_part(13, b"x", b"")
    with pytest.raises(SinkError, match="aborted"):
        w.complete()
    assert gcs_emulator.raw_names(gcs_sink.bucket) == []


def test_abort_while_completing_still_leaves_nothing(gcs_sink: GCSSink, gcs_emulator: Emulator):
    w = gcs_sink.open_writer("data/late-abort", part_size=CHUNK_QUANTUM)
    write_in_order(w, make_parts(5, seed=8))
    wire = Wire(gcs_sink)
    wire.fail(final_put(w._uri), w.abort)  # abort() arrives while the last chunk is being sent
    with pytest.raises(SinkError, match="aborted while it completed; the object was deleted"):
        w.complete()
    assert gcs_sink.head("data/late-abort") is None and gcs_emulator.raw_names(gcs_sink.bucket) == []


def test_a_missing_part_holds_the_later_ones_back(gcs_sink: GCSSink):
    w = gcs_sink.open_writer("data/gap", part_size=CHUNK_QUANTUM)
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            w.write_part(2, b"second", b"")
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    writer = threading.Thread(target=second)
    writer.start()  # part 2 waits for part 1, which never comes: write_part holds on to it (back-pressure)
    time.sleep(0.2)
    assert writer.is_alive() and not outcome and w._parts.waiting() == [2]
    with pytest.raises(SinkError, match="part 1 was never written"):
        w.complete()
    writer.join(timeout=10)
    assert not writer.is_alive()  # the waiting writer was released with the same error
    assert isinstance(outcome[0], SinkError) and "part 1 was never written" in str(outcome[0])
    w.abort()
    assert gcs_sink.head("data/gap") is None  # repeated and zero part numbers: the contract suite, on every store


def test_crc_mismatch_is_detected_and_the_object_removed(gcs_sink: GCSSink, gcs_emulator: Emulator, monkeypatch):
    real = gcs_checksums._update_crc
    monkeypatch.setattr(gcs_checksums, "_update_crc", lambda c, data: real(c, data[:-1] + bytes([data[-1] ^ 1])))
    w = gcs_sink.open_writer("data/bad", part_size=CHUNK_QUANTUM)
    write_in_order(w, make_parts(8, seed=2))
    with pytest.raises(SinkError, match=r"data/bad arrived damaged: .* CRC32C .*the damaged object was deleted"):
        w.complete()
    assert gcs_sink.head("data/bad") is None and gcs_emulator.raw_names(gcs_sink.bucket) == []
    with pytest.raises(SinkError, match="damaged"):
        w.complete()  # the writer stays failed


def test_put_with_a_wrong_checksum_is_refused(gcs_sink: GCSSink, gcs_emulator: Emulator, monkeypatch):
    monkeypatch.setattr(gcs_checksums, "_crc32c_of", lambda data: "AAAAAA==")
    with pytest.raises(SinkError, match="CRC32C") as err:
        gcs_sink.put("manifests/bad", b"manifest bytes")
    if gcs_emulator.name == GCP_EMULATOR:
        assert "refused" in str(err.value)  # the server checked the CRC32C we sent (as GCS does)
    else:
        assert "was deleted" in str(err.value)  # fake-gcs-server ignores it; our check of its answer caught it
    assert gcs_emulator.raw_names(gcs_sink.bucket) == []


def test_damaged_download_is_retried_then_reported(gcs_sink: GCSSink, monkeypatch):
    gcs_sink.put("manifests/m", b"good bytes")
    sink = GCSSink.from_url(gcs_sink.url, SinkOptions(retry_budget=0.3))
    wire = Wire(sink)
    sink = retrying(sink)
    real = wire._real

    def corrupt(method, url, **kw):
        r = real(method, url, **kw)
        if "alt=media" in url:
            r._content = b"evil bytes"
        return r

    wire._real = corrupt
    with pytest.raises(SinkError, match="do not match the stored CRC32C"):
        sink.get("manifests/m")
    assert sum("alt=media" in c["url"] for c in wire.calls) >= 2  # retried before giving up
    wire._real = real
    assert sink.get("manifests/m") == b"good bytes"


# -- failures in the middle of an upload --------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["refuse", "lose", 503, 429])
def test_chunk_failure_resumes_from_the_committed_offset(gcp_storage_emulator: Emulator, monkeypatch, fault):
    """gcp-storage-emulator answers status queries like GCS (308 + Range), so uploads resume there."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_storage_emulator.url)
    sink = GCSSink.from_url(f"gs://{gcp_storage_emulator.make_bucket()}/p")
    parts = make_parts(30, seed=11)
    w = sink.open_writer("data/r", part_size=CHUNK_QUANTUM)
    wire = Wire(sink)
    wire.fail(chunk_put(w._uri, 2), fault)
    write_in_order(w, parts)
    info = w.complete()
    total = b"".join(parts)
    assert info.size == len(total) and sink.get("data/r") == total and w.resumed == 1
    ranges = wire.ranges(w._uri)
    status = ranges.index("bytes */*")
    failed = re.fullmatch(r"bytes (\d+)-(\d+)/\*", ranges[status - 1])
    resumed_at = int(re.fullmatch(r"bytes (\d+)-\d+/.*", ranges[status + 1]).group(1))
    if fault == "lose":  # the server kept the chunk whose answer was lost: it is not sent again
        assert resumed_at == int(failed.group(2)) + 1
    else:
        assert resumed_at == int(failed.group(1))


@pytest.mark.parametrize("fault", ["refuse", "lose", 503])
def test_fake_gcs_server_cannot_resume_and_leaves_nothing(fake_gcs_server: Emulator, monkeypatch, fault):
    """fake-gcs-server finalises a session when asked for its status: the writer notices, cleans up, says so."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.url)
    bucket = fake_gcs_server.make_bucket()
    sink = GCSSink.from_url(f"gs://{bucket}/p")
    w = sink.open_writer("data/r", part_size=CHUNK_QUANTUM)
    wire = Wire(sink)
    wire.fail(chunk_put(w._uri, 2), fault)
    with pytest.raises(SinkError, match="finalised it at .* cannot be resumed; the partial object was deleted"):
        write_in_order(w, make_parts(30, seed=12))
    assert "bytes */*" in wire.ranges(w._uri)
    w.abort()
    assert sink.head("data/r") is None and fake_gcs_server.raw_names(bucket) == []


def test_lost_answer_to_the_last_chunk_still_completes(gcs_sink: GCSSink):
    parts = make_parts(10, seed=5)
    w = gcs_sink.open_writer("data/last", part_size=CHUNK_QUANTUM)
    wire = Wire(gcs_sink)
    wire.fail(final_put(w._uri), "lose")
    write_in_order(w, parts)
    info = w.complete()
    assert info.size == sum(map(len, parts)) and gcs_sink.get("data/last") == b"".join(parts)
    assert "bytes */*" in wire.ranges(w._uri)


def test_permanent_chunk_failure_is_access_denied(gcs_sink: GCSSink, gcs_emulator: Emulator):
    w = gcs_sink.open_writer("data/denied", part_size=CHUNK_QUANTUM)
    wire = Wire(gcs_sink)
    wire.fail(chunk_put(w._uri, 2), 403)
    with pytest.raises(AccessDenied, match=rf"gs://{gcs_sink.bucket}/repo/data/denied: access denied \(403"):
        write_in_order(w, make_parts(20, seed=4))
    assert sum(1 for c in wire.calls if c["status"] == 403) == 1  # never retried
    with pytest.raises(AccessDenied):
        w.complete()
    w.abort()
    assert gcs_sink.head("data/denied") is None and gcs_emulator.raw_names(gcs_sink.bucket) == []


def test_transient_errors_are_retried_within_the_budget(gcs_sink: GCSSink):
    gcs_sink.put("refs/x", b"x")
    wire = Wire(gcs_sink)
    gcs_sink = retrying(gcs_sink)
    wire.fail(lambda m, u, h: m == "GET", 503)
    wire.fail(lambda m, u, h: m == "GET", "refuse")
    wire.fail(lambda m, u, h: m == "GET", 429)
    assert gcs_sink.head("refs/x").size == 1
    assert [c["status"] for c in wire.calls] == [503, "refused", 429, 200]
    impatient = GCSSink.from_url(gcs_sink.url, SinkOptions(retry_budget=0.3))
    wire = Wire(impatient)
    impatient = retrying(impatient)
    for _ in range(100):
        wire.fail(lambda m, u, h: m == "GET", 500)
    started = time.monotonic()
    with pytest.raises(SinkError, match=r"refs/x: GCS kept failing for 0.3 s \(last: 500"):
        impatient.get("refs/x")
    assert time.monotonic() - started < 3 and len(wire.calls) >= 2


# -- storage class and retention ---------------------------------------------------------------------------------
def test_archive_storage_class(gcs_sink: GCSSink, gcs_emulator: Emulator):
    wire = Wire(gcs_sink)
    w = gcs_sink.open_writer("data/cold", part_size=CHUNK_QUANTUM, storage_class="archive")
    parts = make_parts(3, seed=9)
    write_in_order(w, parts)
    info = w.complete()
    assert wire.json_sent("POST", "uploadType=resumable")[0]["storageClass"] == "ARCHIVE"
    head = gcs_sink.head("data/cold")
    if gcs_emulator.name == GCP_EMULATOR:
        assert info.storage_class == head.storage_class == "ARCHIVE"
    else:
        assert head.storage_class == "STANDARD"  # gap pinned: fake-gcs-server drops storageClass on resumable uploads
    assert head.archived is False and head.thaw is None  # GCS reads ARCHIVE without a thaw
    assert gcs_sink.thaw("data/cold", days=1, tier="Bulk") == "available"
    assert gcs_sink.get("data/cold") == b"".join(parts)
    with pytest.raises(SinkError, match="no storage class 'GLACIER'"):
        gcs_sink.open_writer("data/glacier", part_size=CHUNK_QUANTUM, storage_class="GLACIER")


def test_retention_is_sent_and_reported_where_the_emulator_keeps_it(gcs_sink: GCSSink, gcs_emulator: Emulator):
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)).replace(microsecond=0)
    lock = Retention("COMPLIANCE", until, legal_hold=True)
    wire = Wire(gcs_sink)
    w = gcs_sink.open_writer("data/locked", part_size=CHUNK_QUANTUM, retention=lock)
    w.write_part(1, b"locked data", b"")
    w.complete()
    gcs_sink.put("manifests/locked", b"manifest", retention=Retention("GOVERNANCE", until))
    sent_writer = wire.json_sent("POST", "uploadType=resumable")[0]
    sent_put = wire.json_sent("POST", "uploadType=multipart")[0]
    stamp = until.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert sent_writer["retention"] == {"mode": "Locked", "retainUntilTime": stamp}
    assert sent_writer["temporaryHold"] is True
    assert sent_put["retention"] == {"mode": "Unlocked", "retainUntilTime": stamp} and "temporaryHold" not in sent_put
    assert sent_put["storageClass"] == "STANDARD"
    head_data, head_manifest = gcs_sink.head("data/locked"), gcs_sink.head("manifests/locked")
    if gcs_emulator.name == FAKE_GCS:
        # fake-gcs-server stores object retention (mode and time), but drops temporaryHold
        assert head_data.retention == Retention("COMPLIANCE", until, legal_hold=False)
        assert head_manifest.retention == Retention("GOVERNANCE", until)
    else:
        assert head_data.retention is None and head_manifest.retention is None  # gcp-storage-emulator drops both
    # Neither emulator enforces retention (gap pinned): a real locked object could not be deleted.
    gcs_sink.delete("data/locked")
    assert gcs_sink.head("data/locked") is None


def test_retention_refused_by_the_bucket_explains_the_setting(gcs_sink: GCSSink):
    wire = Wire(gcs_sink)
    wire.fail(lambda m, u, h: m == "POST" and "uploadType=resumable" in u, 400)
    until = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(SinkError, match="enable-per-object-retention"):
        gcs_sink.open_writer("data/r", part_size=CHUNK_QUANTUM, retention=Retention("GOVERNANCE", until))


# -- errors --------------------------------------------------------------------------------------------------------
def test_missing_bucket_is_named(gcs_emulator: Emulator):
    sink = GCSSink.from_url("gs://no-such-bucket-here/prefix")
    calls: list[Callable[[], object]] = [
        lambda: sink.head("refs/x"),
        lambda: sink.get("refs/x"),
        lambda: sink.get_range("refs/x", 0, 10),
        lambda: list(sink.list("refs/")),
        lambda: sink.put("refs/x", b"x"),
        lambda: sink.open_writer("data/x", part_size=CHUNK_QUANTUM),
        lambda: sink.delete("refs/x"),
        lambda: sink.thaw("refs/x", days=1, tier="Standard"),
    ]
    for call in calls:
        with pytest.raises(ObjectNotFound, match="bucket no-such-bucket-here does not exist"):
            call()


def test_missing_key_is_named(gcs_sink: GCSSink):
    with pytest.raises(ObjectNotFound, match=rf"gs://{gcs_sink.bucket}/repo/manifests/nope does not exist"):
        gcs_sink.get("manifests/nope")
    with pytest.raises(ObjectNotFound, match="manifests/nope"):
        gcs_sink.get_range("manifests/nope", 0, 5)
    assert gcs_sink.head("manifests/nope") is None
    gcs_sink.delete("manifests/nope")


def test_access_denied_is_permanent_and_clear(gcs_sink: GCSSink):
    wire = Wire(gcs_sink)
    for m in ("GET", "POST", "DELETE"):
        wire.fail(lambda method, u, h, m=m: method == m, 403)
    with pytest.raises(AccessDenied, match=rf"read metadata of gs://{gcs_sink.bucket}/repo/refs/x: access denied"):
        gcs_sink.head("refs/x")
    with pytest.raises(AccessDenied, match="write gs://"):
        gcs_sink.put("refs/x", b"x")
    with pytest.raises(AccessDenied, match="delete gs://"):
        gcs_sink.delete("refs/x")
    assert sum(c["status"] == 403 for c in wire.calls) == 3  # none retried
    assert [c["method"] for c in wire.calls if c["method"] in ("POST", "DELETE")] == ["POST", "DELETE"]


def test_explicit_endpoint_without_the_environment_variable(gcs_emulator: Emulator, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    bucket = gcs_emulator.make_bucket()
    sink = open_sink(f"gs://{bucket}/p", SinkOptions(endpoint_url=gcs_emulator.url))
    assert isinstance(sink.inner, GCSSink) and sink.anonymous
    sink.put("refs/x", b"via endpoint_url")
    assert sink.get("refs/x") == b"via endpoint_url" and sink.project == gcs.EMULATOR_PROJECT
    assert gcs_emulator.raw_names(bucket) == ["p/refs/x"]
