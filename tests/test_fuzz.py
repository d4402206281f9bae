"""Fuzzing every parser of archive bytes, and every command that reads an archive, with hypothesis.

Each target gets bytes derived from real objects (a real archive of real nats-servers, tests/test_hostile_objects)
by random edits, plus plain random bytes, and may fail only with a JsArchiveError (exit codes, never a
traceback); verify must report problems, not raise them. The budget is small inside ``make test``; ``make fuzz``
sets JSARCHIVE_FUZZ_EXAMPLES for a long run. Examples are derandomized in the suite (the same inputs every run)
and random under ``make fuzz``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive.inspect import inspect_backup, iter_messages
from pipeline.archive.reader import BlockReader
from pipeline.archive.repository import Ref, Repository, parse_extra_slot
from pipeline.archive.runs import seal_run_in
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import JsArchiveError
from pipeline.format import manifest as mf
from pipeline.format import natsarc, objects, payload, s2
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.filestore import V1Census
from pipeline.format.manifest import canonical
from pipeline.format.sets import parse_set
from pipeline.jetstream.placement import RestoreTarget
from pipeline.keys.keyring import KeyRing
from pipeline.ops.listing import list_backups, show_backup
from tests.test_hostile_objects import _WORLD, World, build_world

EXAMPLES = int(os.environ.get("JSARCHIVE_FUZZ_EXAMPLES", "0") or 0)
LONG = EXAMPLES > 0
THROUGHPUT: dict[str, tuple[int, float]] = {}  # target -> (examples, seconds), printed after the module


def budget(small: int) -> Callable:
    """hypothesis settings: ``small`` examples in the suite, JSARCHIVE_FUZZ_EXAMPLES under ``make fuzz``."""
    return settings(
        max_examples=EXAMPLES or small,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def contained(fn: Callable[[], object]) -> None:
    """Run ``fn``: it may succeed or raise a JsArchiveError, nothing else (a traceback is the bug)."""
    with contextlib.suppress(JsArchiveError):
        fn()


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Count one example of a fuzz target and its time (reported after the module)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        n, secs = THROUGHPUT.get(name, (0, 0.0))
        THROUGHPUT[name] = (n + 1, secs + time.perf_counter() - t0)


@pytest.fixture(scope="module", autouse=True)
def _report_throughput(request: pytest.FixtureRequest):
    yield
    # Straight to the terminal: pytest captures test output, and this is a measurement, not a result.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for name, (n, secs) in sorted(THROUGHPUT.items()):
            rate = n / secs if secs else 0.0
            print(f"\nfuzz {name:26s} {n:6d} examples {secs:7.2f} s {rate:8.1f} examples/s", end="", flush=True)
        print(flush=True)


# -- inputs -------------------------------------------------------------------------------------------------------

EDIT = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]),
    st.floats(0, 1, allow_nan=False),
    st.binary(min_size=1, max_size=8),
)
SPECIAL = st.sampled_from([b"[", b"{", b'"', b"\\", b"}", b"]", b",", b":", b"0", b"-1", b"true", b"null", b"1e999"])


def mutate(seed: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(seed)
    for kind, where, data in edits:
        at = int(where * len(out))
        if kind == "flip" and out:
            out[min(at, len(out) - 1)] ^= data[0] or 1
        elif kind == "set":
            out[at : at + len(data)] = data
        elif kind == "insert":
            out[at:at] = data
        elif kind == "delete":
            del out[at : at + len(data)]
        elif kind == "truncate":
            del out[at:]
        elif kind == "dup":
            out[at:at] = out[at : at + 64 * len(data)]
    return bytes(out)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a few random edits (mostly), or arbitrary bytes."""
    edit = st.one_of(EDIT, st.tuples(st.just("insert"), st.floats(0, 1, allow_nan=False), SPECIAL))
    return st.one_of(
        st.lists(edit, min_size=1, max_size=6).map(lambda e: mutate(seed, e)),
        st.binary(max_size=256),
    )


def json_mutated(doc: object) -> st.SearchStrategy[bytes]:
    """Structure-aware: one field of ``doc`` replaced by another JSON value, canonically encoded."""
    paths = list(_paths(doc))
    value = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )

    def apply(path: tuple, v: object) -> bytes:
        d = json.loads(json.dumps(doc))
        target = d
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = v
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    return st.builds(apply, st.sampled_from(paths), value)


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in list(items)[:40]:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


# -- the world ----------------------------------------------------------------------------------------------------


@dataclass(repr=False)  # hypothesis prints the arguments of a failing example: not megabytes of seeds
class Seeds:
    world: World
    manifest: bytes  # the plain V2 backup's manifest
    enc_manifest: bytes
    set: bytes
    slot: bytes  # the added key slot object of the encrypted backup
    slot_key: str
    plan: bytes
    done: bytes
    s2_v2: bytes  # the plain V2 backup's payload: an S2 stream
    natsarc: bytes  # ... decoded: a NATSARC1 archive
    s2_v1: bytes
    tar: bytes  # the V1 backup's decoded tar
    zstd_blocks: list[tuple[bytes, int]]  # stored (compressed) blocks and their plaintext lengths

    def __repr__(self) -> str:
        return f"Seeds({self.world.archive})"


def _payload(repo: Repository, mid: str) -> bytes:
    m = repo.load_manifest(mid)
    body = m.open_body(None)
    return b"".join(BlockReader(repo, m, body, None, 2, 1).blocks())


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    if "w" not in _WORLD:
        _WORLD["w"] = build_world(tmp_path_factory.mktemp("fuzz-world"))
    w = _WORLD["w"]
    repo = Repository.open(str(w.archive))
    (slot_key,) = repo.object_names(repo.keyslot_prefix(w.enc))
    s2_v2, s2_v1 = _payload(repo, w.plain), _payload(repo, w.v1)
    m = repo.load_manifest(w.plain)
    data = (w.archive / m.data_object).read_bytes()
    lengths = [n for n, _ in m.open_body(None)["plain_blocks"]]
    stored = [(data[b.offset : b.offset + b.length], n) for b, n in zip(m.blocks, lengths, strict=True)]
    return Seeds(
        world=w,
        manifest=m.raw,
        enc_manifest=repo.load_manifest(w.enc).raw,
        set=repo.load_set(w.set_id),
        slot=repo.get_small(slot_key) or b"",
        slot_key=slot_key,
        plan=repo.get_small(f"runs/{w.run}/plan/0-of-1") or b"",
        done=repo.get_small(f"runs/{w.run}/done/ORDERS") or b"",
        s2_v2=s2_v2,
        natsarc=b"".join(s2.iter_decode([s2_v2])),
        s2_v1=s2_v1,
        tar=b"".join(s2.iter_decode([s2_v1])),
        zstd_blocks=stored[:3],
    )


# -- parsers --------------------------------------------------------------------------------------------------------


def _parse_manifest(raw: bytes) -> None:
    m = mf.parse(raw, mf.manifest_id(raw))  # named by its own hash, as a planted one would be
    if not m.encrypted:  # a clear body must also satisfy what readers index in it
        body = m.open_body(None)
        payload.inner_encoding(body, m.snapshot_format, m.id)
        RestoreTarget().apply(body["config"])
        assert len(body["plain_blocks"]) == len(m.blocks) and int(body["snapshot"].get("bytes", -1)) >= 0


@budget(300)
@given(st.data())
def test_fuzz_manifest_parse(seeds, data):
    with timed("manifest parse"):
        seed = data.draw(st.sampled_from([seeds.manifest, seeds.enc_manifest]))
        raw = data.draw(st.one_of(mutated(seed), json_mutated(json.loads(seed))))
        contained(lambda: _parse_manifest(raw))


@budget(300)
@given(raw=st.one_of(mutated(b"a" * 64 + b"\n"), st.binary(max_size=80), st.text(max_size=70).map(str.encode)))
def test_fuzz_ref_parse(seeds, tmp_path_factory, raw):
    with timed("ref parse"):
        try:
            mid = objects.ref_target(raw)
            assert len(mid) == 64 and all(c in "0123456789abcdef" for c in mid)
        except objects.Invalid:
            pass
        root = tmp_path_factory.getbasetemp() / "fuzz-ref"
        key = f"refs/S/20260101T000000.000000Z-{'0' * 32}"
        (root / "refs" / "S").mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(raw)
        repo = Repository.open(str(root))
        contained(lambda: repo.load_ref(Ref("S", "20260101T000000.000000Z", "0" * 32, key)))


@budget(300)
@given(st.data())
def test_fuzz_set_parse(seeds, data):
    with timed("set parse"):
        raw = data.draw(st.one_of(mutated(seeds.set), json_mutated(json.loads(seeds.set))))

        def run() -> None:
            summary = parse_set(raw, mf.manifest_id(raw)).summary()
            json.dumps(summary)

        contained(run)


@budget(300)
@given(st.data())
def test_fuzz_keyslot_parse(seeds, data):
    with timed("key-slot parse"):
        raw = data.draw(st.one_of(mutated(seeds.slot), json_mutated(json.loads(seeds.slot))))
        m = mf.parse(seeds.enc_manifest, mf.manifest_id(seeds.enc_manifest))
        key = Repository.keyslot_prefix(m.id) + mf.manifest_id(raw)
        try:
            slot = parse_extra_slot(raw, key, m)
            slot.describe()
            slot.public()
        except ValueError:
            pass  # its contract: the reason the object is skipped


@budget(150)
@given(st.data())
def test_fuzz_run_records(seeds, tmp_path_factory, data):
    with timed("run records"):
        which = data.draw(st.sampled_from(["plan/0-of-1", "done/ORDERS"]))
        seed = seeds.plan if which.startswith("plan") else seeds.done
        raw = data.draw(st.one_of(mutated(seed), json_mutated(json.loads(seed))))
        root = tmp_path_factory.getbasetemp() / "fuzz-runs"
        if not root.exists():
            shutil.copytree(seeds.world.archive, root)
        path = root / "runs" / seeds.world.run / which
        path.write_bytes(raw)
        try:
            contained(lambda: seal_run_in(Repository.open(str(root)), seeds.world.run))
        finally:
            path.write_bytes(seed)
            for p in (root / "sets").iterdir():  # a seal that succeeded wrote a set: keep the archive as it was
                if p.name != seeds.world.set_id:
                    p.unlink()


@budget(200)
@given(st.data())
def test_fuzz_natsarc(seeds, data):
    with timed("natsarc entries"):
        raw = data.draw(mutated(seeds.natsarc[:6000]) | mutated(seeds.natsarc))
        cut = data.draw(st.integers(1, max(1, len(raw))))

        def run() -> None:
            reader = natsarc.ArchiveReader([raw[:cut], raw[cut:]])
            for msg in reader.messages():
                msg.headers  # noqa: B018 - parsing headers is part of reading a message
            reader.close()

        contained(run)
        contained(lambda: list(natsarc.iter_entries([raw])))


def _small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("meta.inf", b'{"name":"X"}'), ("msgs/1.blk", b"\x00" * 40), ("msgs/index.db", b"\x01")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@budget(200)
@given(st.data())
def test_fuzz_v1_census(seeds, data):
    with timed("V1 tar census"):
        raw = data.draw(mutated(seeds.tar) | mutated(_small_tar()))
        pieces = data.draw(st.integers(1, 4))

        def run() -> None:
            census = V1Census()
            step = max(1, len(raw) // pieces)
            for i in range(0, len(raw), step):
                census.feed(raw[i : i + step])
            counts = census.finish()
            counts.shortfall()

        contained(run)


@budget(200)
@given(st.data())
def test_fuzz_s2_framed_decoder(seeds, data):
    with timed("S2 framing"):
        raw = data.draw(mutated(seeds.s2_v2[:20000]) | mutated(seeds.s2_v1[:20000]))
        cut = data.draw(st.integers(0, len(raw)))
        accelerated = data.draw(st.sampled_from([None, False]) if s2.ACCELERATED else st.just(False))

        def run() -> None:
            dec = s2.FramedDecoder(accelerated=accelerated)
            for piece in (raw[:cut], raw[cut:]):
                for _ in dec.feed(piece):
                    pass
            dec.finish()

        contained(run)


@budget(200)
@given(st.data())
def test_fuzz_zstd(seeds, data):
    with timed("zstd decompress"):
        stored, n = data.draw(st.sampled_from(seeds.zstd_blocks))
        raw = data.draw(mutated(stored))
        expected = data.draw(st.sampled_from([n, n - 1, n + 1, 0, 1 << 30]))
        dec = BlockCompressor(Compression("zstd", 3))
        try:
            out = dec.decompress(raw, expected)
            assert len(out) == expected
        except JsArchiveError:
            pass


# -- commands, end to end -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(seeds, tmp_path_factory) -> Path:
    """One copy of the world's archive that the end-to-end targets change and put back after each example."""
    root = tmp_path_factory.mktemp("fuzz-e2e") / "archive"
    shutil.copytree(seeds.world.archive, root)
    return root


def _commands(root: Path, seeds: Seeds, mid: str | None, keys: KeyRing | None) -> None:
    """What ls, show, verify, inspect, cat and the keyless part of a restore do with the archive at ``root``."""
    url = str(root)
    contained(lambda: [e.to_json() for e in list_backups(url)])
    report = verify_archive(VerifyOptions(url=url))  # never raises for what it finds
    json.dumps(report.to_json(), default=str)
    if mid is None:
        return
    report = verify_archive(VerifyOptions(url=url, backup=mid, deep=True, keys=keys or KeyRing()))
    json.dumps(report.to_json(), default=str)
    contained(lambda: show_backup(url, mid, keys))
    contained(lambda: inspect_backup(url, mid, keys=keys, workers=1, prefetch=2).to_json())
    contained(lambda: sum(1 for _ in iter_messages(url, mid, keys=keys, workers=1, prefetch=2)))

    def preflight() -> None:  # restore_stream_async up to its connect (pipeline/flows/restore.py)
        repo = Repository.open(url)
        m = repo.load_manifest(repo.resolve(mid))
        repo.check_data(m)
        data_key = (keys or KeyRing()).unwrap(repo.key_slots(m), m.backup_id, m.open_body) if m.encrypted else None
        body = m.open_body(data_key)
        payload.inner_encoding(body, m.snapshot_format, m.id)
        BlockReader(repo, m, body, data_key, 2, 1)
        RestoreTarget().apply(body["config"])

    contained(preflight)


def _replace(root: Path, key: str, raw: bytes) -> Callable[[], None]:
    """Write ``raw`` at ``key`` (keeping what was there); returns the undo."""
    path = root / key
    old = path.read_bytes() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)

    def undo() -> None:
        if old is None:
            path.unlink()
        else:
            path.write_bytes(old)

    return undo


def _ref_of(root: Path, mid: str) -> str:
    repo = Repository.open(str(root))
    return next(r.key for r in repo.refs() if repo.ref_target(r) == mid)


@budget(60)
@given(st.data())
def test_fuzz_commands_on_mutated_small_objects(seeds, scratch, data):
    with timed("e2e: manifest, ref, set"):
        w = seeds.world
        what = data.draw(st.sampled_from(["manifest", "enc-manifest", "ref", "set", "keyslot"]))
        undo: list[Callable[[], None]] = []
        mid: str | None = None
        keys = None
        try:
            if what in ("manifest", "enc-manifest"):
                seed, old = (seeds.manifest, w.plain) if what == "manifest" else (seeds.enc_manifest, w.enc)
                raw = data.draw(st.one_of(mutated(seed), json_mutated(json.loads(seed))))
                mid = hashlib.sha256(raw).hexdigest()
                undo.append(_replace(scratch, f"manifests/{mid}", raw))
                undo.append(_replace(scratch, _ref_of(scratch, old), mid.encode() + b"\n"))  # the ref now leads to it
                keys = w.keys if what == "enc-manifest" else None
            elif what == "ref":
                key = _ref_of(scratch, w.plain)
                undo.append(_replace(scratch, key, data.draw(mutated(w.plain.encode() + b"\n"))))
                mid = w.plain
            elif what == "set":
                raw = data.draw(st.one_of(mutated(seeds.set), json_mutated(json.loads(seeds.set))))
                undo.append(_replace(scratch, f"sets/{hashlib.sha256(raw).hexdigest()}", raw))
            else:
                raw = data.draw(st.one_of(mutated(seeds.slot), json_mutated(json.loads(seeds.slot))))
                prefix = seeds.slot_key.rsplit("/", 1)[0]
                undo.append(_replace(scratch, f"{prefix}/{hashlib.sha256(raw).hexdigest()}", raw))
                mid, keys = w.enc, w.keys
            _commands(scratch, seeds, mid, keys)
        finally:
            for u in reversed(undo):
                u()


@budget(60)
@given(st.data())
def test_fuzz_commands_on_forged_payloads(seeds, scratch, data):
    """A planted unencrypted backup whose payload is mutated and whose hashes are forged to match, so the bytes
    reach zstd, S2, NATSARC1 and tar decoding in inspect, cat, verify --deep and a restore's preflight."""
    with timed("e2e: payload"):
        w = seeds.world
        source = data.draw(st.sampled_from([w.plain, w.v1]))
        repo = Repository.open(str(scratch))
        m = repo.load_manifest(source)
        env = json.loads(m.raw)
        body = env["body"]
        plain = _payload(repo, source)
        layer = data.draw(st.sampled_from(["plaintext", "stored"]))
        comp = BlockCompressor(Compression("zstd", 3))
        size = max(1, len(plain) // max(1, len(m.blocks)))
        if layer == "plaintext":
            new_plain = data.draw(mutated(plain))
            blocks = [new_plain[i : i + size] for i in range(0, len(new_plain), size)] or [b""]
            stored = [comp.compress(b) for b in blocks]
            body["plain_blocks"] = [[len(b), hashlib.sha256(b).hexdigest()] for b in blocks]
            body["snapshot"]["bytes"] = len(new_plain)
        else:
            datafile = (scratch / m.data_object).read_bytes()
            stored = [datafile[b.offset : b.offset + b.length] for b in m.blocks]
            i = data.draw(st.integers(0, len(stored) - 1))
            stored[i] = data.draw(mutated(stored[i]))
        backup_id = os.urandom(16).hex()
        table, off = [], 0
        for s in stored:
            table.append([off, len(s), hashlib.sha256(s).hexdigest()])
            off += len(s)
        env.update(backup_id=backup_id, blocks=table, body=body)
        env["data"] = {**env["data"], "key": f"data/{backup_id}", "size": off}
        raw = canonical(env)
        mid = hashlib.sha256(raw).hexdigest()
        undo = [_replace(scratch, f"data/{backup_id}", b"".join(stored)), _replace(scratch, f"manifests/{mid}", raw)]
        try:
            _commands(scratch, seeds, mid, None)
        finally:
            for u in reversed(undo):
                u()
