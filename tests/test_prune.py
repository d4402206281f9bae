"""Retention and prune: the policy engine against an independent reference, and prune on real archives (a local
directory, S3 through moto, GCS through both emulators): exactly the policy's survivors, locks respected,
leftovers collected only after their grace period."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive.repository import Repository, ref_time
from pipeline.archive.retention import Duration, Item, Policy, apply_policy, parse_created
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import UsageError
from pipeline.entry.cli import main
from pipeline.format import manifest as mf
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.sets import build_set, set_entry
from pipeline.keys import crypto
from pipeline.keys.keyring import KeyRing
from pipeline.ops.listing import list_backups
from pipeline.ops.prune import DELETE, KEEP, LOCKED, PruneOptions, prune
from sinks import Retention, SinkOptions

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


# -- building backups with chosen times, without a NATS server -------------------------------------------------------


def make_backup(
    repo: Repository,
    stream: str,
    created: dt.datetime,
    keys: KeyRing | None = None,
    *,
    payload: bytes | None = None,
    retention: Retention | None = None,
    block_size: int = 4096,
    storage_class: str | None = None,
    ref: bool = True,
    state: dict | None = None,
    snapshot_format: str = "V2",
) -> mf.Manifest:
    """A backup written the way pipeline.flows.backup writes one (data object, manifest, ref), with ``created`` chosen.

    ``payload`` is the "snapshot stream" (any bytes: prune and keyless checks never decode it). Encrypted with a
    fresh data key wrapped for ``keys`` when given, else stored in the clear.
    """
    backup_id = os.urandom(16).hex()
    payload = os.urandom(5000) if payload is None else payload
    data_key = crypto.new_data_key() if keys is not None else None
    compressor = BlockCompressor(Compression("zstd", 3))
    plain_blocks = [payload[i : i + block_size] for i in range(0, len(payload), block_size)] or [b""]
    writer = repo.sink.open_writer(
        repo.data_object(backup_id), part_size=block_size, storage_class=storage_class, retention=retention
    )
    table, plain, off = [], [], 0
    for i, block in enumerate(plain_blocks):
        stored = compressor.compress(block)
        if data_key is not None:
            stored = bytes(crypto.seal(data_key, stored, crypto.block_aad(backup_id, i, i == len(plain_blocks) - 1)))
        writer.write_part(i + 1, stored, crypto.sha256(stored))
        table.append([off, len(stored), crypto.sha256(stored).hex()])
        plain.append([len(block), crypto.sha256(block).hex()])
        off += len(stored)
    writer.complete()
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = state or {"messages": 10, "bytes": 1000, "first_seq": 1, "last_seq": 10, "consumer_count": 0}
    slots = keys.wrap(data_key, backup_id) if keys is not None and data_key is not None else []
    envelope = {
        "backup_id": backup_id,
        "stream": stream,
        "created": stamp,
        "tool": {"name": "jsarchive", "version": "test"},
        "server": {"version": "2.15.1", "name": "t", "cluster": None, "api_level": None},
        "snapshot_format": snapshot_format,
        "data": {"key": repo.data_object(backup_id), "size": off, "block_size": block_size},
        "blocks": table,
        "summary": {
            "messages": state["messages"],
            "bytes": state["bytes"],
            "first_seq": state["first_seq"],
            "last_seq": state["last_seq"],
            "consumers": 0,
            "snapshot_bytes": len(payload),
            "storage": "file",
            "replicas": 1,
        },
        "encryption": {
            "scheme": mf.SCHEME_AES if data_key is not None else mf.SCHEME_NONE,
            "key_slots": [s.to_json() for s in slots],
        },
    }
    body = {
        "config": {"name": stream, "subjects": [f"{stream.lower()}.>"], "storage": "file", "num_replicas": 1},
        "state": state,
        "consumers": [],
        "snapshot": {
            "format": snapshot_format,
            "inner_encoding": "s2-stream",
            "no_consumers": True,
            "jsck": False,
            "chunk_size": None,
            "window_size": None,
            "chunks": 1,
            "bytes": len(payload),
        },
        "compression": {"algorithm": "zstd", "level": 3},
        "plain_blocks": plain,
        "timings": {"started": stamp, "seconds": 0.1},
    }
    raw = mf.build(envelope, body, data_key)
    mid = repo.write_manifest(raw, retention)
    if ref:
        repo.write_ref(stream, ref_time(created), backup_id, mid, retention)
    return mf.parse(raw, mid)


def write_set(repo: Repository, members: list[mf.Manifest], finished: dt.datetime) -> str:
    stamp = finished.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raw = build_set(
        account={"name": "A", "domain": None, "server": None},
        started=stamp,
        finished=stamp,
        entries=[set_entry(m) for m in members],
        skipped=[],
        warnings=[],
        options={"consumers": True, "check": False, "include": [], "exclude": []},
    )
    return repo.write_set(raw)


def objects(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".incomplete" not in p.parts}


# -- the policy engine -----------------------------------------------------------------------------------------------


def reference_keep(items: list[Item], policy: Policy, now: dt.datetime) -> dict[str, list[str]]:
    """An independent statement of restic's rules: for each rule, the newest backup of each of its first N periods
    (newest periods first; periods without backups do not count), plus the oldest backup while fewer than N periods
    exist (or N is unlimited); ``within`` keeps everything newer than (newest backup not in the future) minus D."""
    if policy.empty():
        return {i.id: ["no policy"] for i in items}
    ordered = sorted(items, key=lambda i: (i.created, i.id), reverse=True)
    keys = {
        "last": lambda i, n: n,
        "hourly": lambda i, n: i.created.strftime("%Y%m%d%H"),
        "daily": lambda i, n: i.created.strftime("%Y%m%d"),
        "weekly": lambda i, n: i.created.strftime("%G-%V"),
        "monthly": lambda i, n: i.created.strftime("%Y%m"),
        "yearly": lambda i, n: i.created.strftime("%Y"),
    }
    reasons: dict[str, list[str]] = {i.id: [] for i in ordered}
    if policy.within is not None and not policy.within.zero():
        assert not policy.within.years and not policy.within.months  # the property test uses plain time spans
        span = dt.timedelta(days=policy.within.days, hours=policy.within.hours)
        past = [i.created for i in ordered if i.created < now]
        for i in ordered:
            if not past or i.created > max(past) - span:
                reasons[i.id].append("within")
    for rule, key in keys.items():
        count = getattr(policy, rule)
        if count == 0:
            continue
        newest_of: dict[object, Item] = {}
        for n, i in enumerate(ordered):
            newest_of.setdefault(key(i, n), i)
        periods = list(newest_of)  # in order of first appearance: newest period first
        chosen = periods if count == -1 else periods[:count]
        kept = {newest_of[p].id for p in chosen}
        if ordered and (count == -1 or len(periods) < count):
            kept.add(ordered[-1].id)
        for i in ordered:
            if i.id in kept:
                reasons[i.id].append(rule)
    return reasons


def _order(reasons: list[str]) -> list[str]:
    rank = ["no policy", "within", "last", "hourly", "daily", "weekly", "monthly", "yearly"]
    return sorted(reasons, key=rank.index)


counts = st.sampled_from([0, 0, 1, 2, 3, 5, -1])


@st.composite
def timelines(draw: st.DrawFn) -> list[Item]:
    """Backups with gaps from minutes to months, bursts within one hour, equal times and a few in the future."""
    n = draw(st.integers(0, 40))
    t = NOW + dt.timedelta(hours=draw(st.integers(-2, 30)))
    out = []
    for k in range(n):
        out.append(Item(f"{k:04x}" + "0" * 60, t))
        gap = draw(
            st.one_of(
                st.just(dt.timedelta(0)),
                st.integers(1, 59).map(lambda m: dt.timedelta(minutes=m)),
                st.integers(1, 72).map(lambda h: dt.timedelta(hours=h)),
                st.integers(1, 120).map(lambda d: dt.timedelta(days=d)),
            )
        )
        t -= gap
    return out


policies = st.builds(
    Policy,
    last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    within=st.one_of(
        st.none(), st.builds(Duration, days=st.integers(0, 60), hours=st.integers(0, 48)).filter(lambda d: not d.zero())
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=timelines(), policy=policies)
def test_policy_matches_the_reference(items, policy):
    decisions = apply_policy(items, policy, now=NOW)
    want = reference_keep(items, policy, NOW)
    assert [d.id for d in decisions] == [i.id for i in sorted(items, key=lambda i: (i.created, i.id), reverse=True)]
    for d in decisions:
        assert d.keep == bool(want[d.id]), (d, want[d.id])
        assert _order(d.reasons) == _order(want[d.id]), d
    if items and any(getattr(policy, r) for r in ("last", "hourly", "daily", "weekly", "monthly", "yearly")):
        assert decisions[0].keep  # any count rule keeps the newest backup


@given(items=timelines(), policy=policies)
@settings(max_examples=100, deadline=None)
def test_more_generous_policies_keep_a_superset(items, policy):
    base = {d.id for d in apply_policy(items, policy, now=NOW) if d.keep}
    bigger = Policy(
        last=policy.last + 1 if policy.last >= 0 else -1,
        hourly=policy.hourly,
        daily=policy.daily,
        weekly=policy.weekly,
        monthly=policy.monthly,
        yearly=policy.yearly,
        within=policy.within,
    )
    more = {d.id for d in apply_policy(items, bigger, now=NOW) if d.keep}
    if not policy.empty():
        assert base <= more


def _items(*times: str) -> list[Item]:
    return [Item(f"{k:02d}" + "a" * 62, parse_created(t)) for k, t in enumerate(times)]


def test_policy_examples():
    items = _items(
        "2026-06-15T10:00:00.000000Z",  # 0 newest
        "2026-06-15T09:00:00.000000Z",  # 1 same day
        "2026-06-14T23:00:00.000000Z",  # 2
        "2026-06-10T12:00:00.000000Z",  # 3
        "2026-05-31T12:00:00.000000Z",  # 4 previous month
        "2025-12-29T12:00:00.000000Z",  # 5 ISO week 1 of 2026, year 2025
    )
    keep = lambda p: {d.id[:2]: d.reasons for d in apply_policy(items, p, now=NOW) if d.keep}  # noqa: E731
    assert keep(Policy(last=2)) == {"00": ["last"], "01": ["last"]}
    assert keep(Policy(daily=3)) == {"00": ["daily"], "02": ["daily"], "03": ["daily"]}
    # more periods asked for than exist: the oldest backup is kept too (restic)
    assert keep(Policy(monthly=10)) == {"00": ["monthly"], "04": ["monthly"], "05": ["monthly"]}
    assert keep(Policy(yearly=1)) == {"00": ["yearly"]}
    # weeks are ISO weeks (Monday to Sunday): 2026-06-14 is a Sunday, 2026-06-15 a Monday
    assert set(keep(Policy(weekly=-1))) == {"00", "02", "04", "05"}
    # ... of ISO years: 2025-12-29 is in week 1 of 2026, together with 2026-01-02
    new_year = _items("2026-01-02T08:00:00.000000Z", "2025-12-29T08:00:00.000000Z", "2025-12-27T08:00:00.000000Z")
    assert [d.keep for d in apply_policy(new_year, Policy(weekly=2), now=NOW)] == [True, False, True]
    # within is measured from the newest backup, not from now
    far = [Item(i.id, i.created - dt.timedelta(days=400)) for i in items]
    assert {d.id[:2] for d in apply_policy(far, Policy(within=Duration.parse("1d")), now=NOW) if d.keep} == {
        "00",
        "01",
        "02",
    }
    assert all(d.keep and d.reasons == ["no policy"] for d in apply_policy(items, Policy(), now=NOW))
    assert apply_policy([], Policy(last=3), now=NOW) == []


def test_durations():
    assert Duration.parse("30d") == Duration(days=30)
    assert Duration.parse("12h") == Duration(hours=12)
    assert Duration.parse("2w1d") == Duration(days=15)
    assert Duration.parse("1y6m") == Duration(years=1, months=6)
    assert str(Duration.parse("1y2m3d4h")) == "1y2m3d4h"
    for bad in ("", "30", "d", "3x", "1.5d", "-1d", "12h 3d"):
        with pytest.raises(UsageError, match="not a duration"):
            Duration.parse(bad)
    t = dt.datetime(2024, 3, 31, 12, tzinfo=UTC)
    # Go's AddDate normalisation, as restic: 31 February 2024 is 2 March
    assert Duration(months=1).before(t) == dt.datetime(2024, 3, 2, 12, tzinfo=UTC)
    assert Duration(years=1, hours=13).before(t) == dt.datetime(2023, 3, 30, 23, tzinfo=UTC)
    assert Duration(years=5000).before(t).year == 1
    with pytest.raises(UsageError):
        Policy(last=-2)


# -- prune on a local archive ----------------------------------------------------------------------------------------


def _timeline(repo: Repository, stream: str, times: list[dt.datetime], keys: KeyRing | None = None) -> list:
    return [make_backup(repo, stream, t, keys) for t in times]


def _expected(ms: list[mf.Manifest], policy: Policy) -> set[str]:
    items = [Item(m.id, parse_created(m.created)) for m in ms]
    return {i for i, r in reference_keep(items, policy, NOW).items() if r}


def test_prune_local_end_to_end(tmp_path, keyring):
    root = tmp_path / "archive"
    repo = Repository.open(str(root))
    base = dt.datetime(2026, 6, 1, 6, tzinfo=UTC)
    orders = _timeline(
        repo,
        "ORDERS",
        [base - dt.timedelta(days=d, hours=h) for d in range(0, 40, 3) for h in (0, 5)],
        keyring,
    )
    audit = _timeline(repo, "AUDIT", [base - dt.timedelta(days=7 * w) for w in range(6)])
    policy = Policy(last=2, daily=4, monthly=2)
    before = objects(root)

    # a dry run reports and deletes nothing
    dry = prune(PruneOptions(url=str(root), policy=policy, now=NOW))
    assert dry.dry_run and objects(root) == before
    survivors = _expected(orders, policy) | _expected(audit, policy)
    assert {b.manifest_id for b in dry.backups if b.action == KEEP} == survivors
    assert {b.manifest_id for b in dry.backups if b.action == DELETE} == {m.id for m in orders + audit} - survivors
    for b in dry.backups:  # every survivor says which rule keeps it
        assert (b.action == KEEP) == bool(b.reasons)
        assert set(b.reasons) <= {"last", "daily", "monthly"}

    # the CLI with --confirm deletes exactly the others: ref, manifest and data object
    r = CliRunner().invoke(
        main,
        ["prune", str(root), "--keep-last", "2", "--keep-daily", "4", "--keep-monthly", "2", "--confirm", "--json"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["dry_run"] is False and out["ok"] is True
    assert {b["manifest_id"] for b in out["backups"] if b["deleted"]} == {m.id for m in orders + audit} - survivors
    assert {e.manifest_id for e in list_backups(str(root))} == survivors
    gone = [m for m in orders + audit if m.id not in survivors]
    for m in gone:
        assert not (root / "manifests" / m.id).exists() and not (root / m.data_object).exists()
        assert not list((root / "refs" / m.stream).glob(f"*-{m.backup_id}"))
    # what is left is a consistent archive
    report = verify_archive(VerifyOptions(url=str(root)))
    assert report.ok and len(report.backups) == len(survivors) and report.warnings == []
    # pruning again with the same policy finds nothing more to delete
    again = prune(PruneOptions(url=str(root), policy=policy, now=NOW, confirm=True))
    assert all(b.action == KEEP for b in again.backups) and len(again.backups) == len(survivors)


def test_prune_text_report(tmp_path):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    ms = _timeline(repo, "S", [NOW - dt.timedelta(days=d) for d in range(4)])
    r = CliRunner().invoke(main, ["prune", str(root), "--keep-last", "1"])
    assert r.exit_code == 0, r.output
    assert f"keep    {ms[0].id[:12]}" in r.stdout and "kept by last" in r.stdout
    assert sum(f"delete  {m.id[:12]}" in r.stdout for m in ms[1:]) == 3
    assert "dry run: nothing was deleted; --confirm would delete 3 backup(s)" in r.stdout
    assert len(list_backups(str(root))) == 4
    bad = CliRunner().invoke(main, ["prune", str(root), "--keep-within", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


def test_sets_protect_their_members_unless_prune_sets(tmp_path):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    a = _timeline(repo, "A", [NOW - dt.timedelta(days=d) for d in range(3)])
    b = _timeline(repo, "B", [NOW - dt.timedelta(days=d) for d in range(3)])
    old_set = write_set(repo, [a[2], b[2]], NOW - dt.timedelta(days=2))
    new_set = write_set(repo, [a[0], b[0]], NOW)
    policy = Policy(last=1)

    kept = prune(PruneOptions(url=str(root), policy=policy, now=NOW, confirm=True))
    plan = {p.manifest_id: p for p in kept.backups}
    assert plan[a[2].id].action == KEEP and plan[a[2].id].reasons == [f"set {old_set[:12]}"]
    assert plan[a[0].id].reasons == ["last", f"set {new_set[:12]}"]
    assert {p.manifest_id for p in kept.backups if p.deleted} == {a[1].id, b[1].id}
    assert sorted(repo.list_sets()) == sorted([old_set, new_set])

    dropped = prune(PruneOptions(url=str(root), policy=policy, now=NOW, confirm=True, prune_sets=True))
    sets = {s.set_id: s for s in dropped.sets}
    assert sets[old_set].action == DELETE and sets[old_set].deleted
    assert sorted(sets[old_set].pruned_members) == sorted([a[2].id, b[2].id])
    assert sets[new_set].action == KEEP and not sets[new_set].pruned_members
    assert repo.list_sets() == [new_set]
    assert {e.manifest_id for e in list_backups(str(root))} == {a[0].id, b[0].id}
    assert verify_archive(VerifyOptions(url=str(root))).ok  # no set names a missing manifest


def test_leftovers_are_collected_only_after_the_grace_period(tmp_path):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    kept = make_backup(repo, "S", NOW - dt.timedelta(days=1))
    # an upload that completed but never got its manifest, one that never completed, a ref without a manifest
    w = repo.sink.open_writer("data/" + "ab" * 16, part_size=1024)
    w.write_part(1, b"x" * 100, crypto.sha256(b"x" * 100))
    w.complete()
    stale = repo.sink.open_writer("data/" + "cd" * 16, part_size=1024)
    stale.write_part(1, b"y" * 300, crypto.sha256(b"y" * 300))
    repo.write_ref("S", ref_time(NOW), "ef" * 16, "00" * 32)
    [tmp] = repo.sink.list_incomplete()
    assert tmp.key == "" and (root / ".incomplete" / tmp.upload_id).is_file()

    real_now = dt.datetime.now(UTC)
    early = prune(PruneOptions(url=str(root), now=real_now, confirm=True))
    kinds = {(o.kind, o.key): o for o in early.objects}
    assert {k for k, _ in kinds} == {"abandoned-data", "dangling-ref", "unfinished-upload"}
    assert all(o.action == KEEP and "grace" in o.reason for o in early.objects), early.objects
    assert (root / "data" / ("ab" * 16)).exists() and len(repo.sink.list_incomplete()) == 1

    late = prune(PruneOptions(url=str(root), now=real_now + dt.timedelta(hours=25), confirm=True))
    assert {(o.kind, o.action, o.deleted) for o in late.objects} == {
        ("abandoned-data", DELETE, True),
        ("dangling-ref", DELETE, True),
        ("unfinished-upload", DELETE, True),
    }
    assert not (root / "data" / ("ab" * 16)).exists()
    assert repo.sink.list_incomplete() == [] and list((root / ".incomplete").iterdir()) == []
    assert [e.manifest_id for e in list_backups(str(root))] == [kept.id]  # the real backup is untouched
    assert [b.action for b in late.backups] == [KEEP]
    report = verify_archive(VerifyOptions(url=str(root)))
    assert report.ok and report.warnings == []
    # a longer grace keeps them again
    again = repo.sink.open_writer("data/" + "12" * 16, part_size=1024)
    again.write_part(1, b"z", crypto.sha256(b"z"))
    again.complete()
    long = prune(
        PruneOptions(url=str(root), now=real_now + dt.timedelta(hours=25), grace=dt.timedelta(days=2), confirm=True)
    )
    assert [o.action for o in long.objects] == [KEEP]


class _FailingManifestDeletes:
    """A sink whose purge of manifests fails: a prune interrupted between the ref and the manifest."""

    def __init__(self, sink):
        self._sink = sink

    def __getattr__(self, name):
        return getattr(self._sink, name)

    def purge(self, key: str) -> None:
        if key.startswith("manifests/"):
            from sinks import SinkError

            raise SinkError(f"simulated failure deleting {key}")
        self._sink.purge(key)


def test_a_half_pruned_backup_is_never_listed(tmp_path, monkeypatch):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    new, old = _timeline(repo, "S", [NOW, NOW - dt.timedelta(days=1)])
    real_open = Repository.open

    def failing_open(url, options=None):
        r = real_open(url, options)
        r.sink = _FailingManifestDeletes(r.sink)
        return r

    monkeypatch.setattr(Repository, "open", staticmethod(failing_open))
    report = prune(PruneOptions(url=str(root), policy=Policy(last=1), now=NOW, confirm=True))
    monkeypatch.undo()
    [failed] = [b for b in report.backups if b.action == DELETE]
    assert failed.manifest_id == old.id and not failed.deleted and "simulated failure" in failed.error
    assert report.exit_code == 7 and not report.ok
    # the ref went first, so the backup is no longer listed; its manifest and data are still whole
    assert [e.manifest_id for e in list_backups(str(root))] == [new.id]
    assert (root / "manifests" / old.id).exists() and (root / old.data_object).exists()
    # the next run finishes the job
    done = prune(PruneOptions(url=str(root), policy=Policy(last=1), now=NOW, confirm=True))
    assert [b.manifest_id for b in done.backups if b.deleted] == [old.id]
    assert not (root / old.data_object).exists()


# -- S3 (moto) -------------------------------------------------------------------------------------------------------


def _versions(s3, bucket: str, key: str) -> list:
    page = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if v["Key"] == key]


def test_prune_s3_respects_object_lock(moto, s3, lock_bucket, keyring):
    url = f"s3://{lock_bucket}/arch"
    sink = SinkOptions(endpoint_url=moto.endpoint)
    repo = Repository.open(url, sink)
    until = dt.datetime.now(UTC) + dt.timedelta(days=2)
    locked = make_backup(repo, "S", NOW - dt.timedelta(days=3), keyring, retention=Retention("COMPLIANCE", until))
    held = make_backup(repo, "S", NOW - dt.timedelta(days=2), retention=Retention("GOVERNANCE", until, legal_hold=True))
    free = make_backup(repo, "S", NOW - dt.timedelta(days=1), storage_class="STANDARD_IA")
    newest = make_backup(repo, "S", NOW)
    env = {"AWS_ENDPOINT_URL": moto.endpoint}

    r = CliRunner().invoke(main, ["prune", url, "--keep-last", "1", "--confirm", "--json"], env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    plan = {b["manifest_id"]: b for b in out["backups"]}
    assert plan[newest.id]["action"] == KEEP
    assert plan[free.id]["action"] == DELETE and plan[free.id]["deleted"]
    assert any("STANDARD_IA" in w and "30 days" in w for w in plan[free.id]["warnings"])
    for m, mode in ((locked, "COMPLIANCE"), (held, "GOVERNANCE")):
        assert plan[m.id]["action"] == LOCKED and not plan[m.id]["deleted"]
        locks = {lk["key"]: lk for lk in plan[m.id]["locks"]}
        assert {f"manifests/{m.id}", m.data_object} <= set(locks)
        for lk in locks.values():
            assert lk["mode"] == mode and abs(dt.datetime.fromisoformat(lk["retain_until"]) - until).total_seconds() < 2
    assert any(lk["legal_hold"] for lk in plan[held.id]["locks"])
    assert {lk["key"] for lk in out["locked"]} >= {locked.data_object, held.data_object}
    # the locked backups are whole and listed; the free one is gone for good: no version, no delete marker
    assert {e.manifest_id for e in list_backups(url, sink=sink)} == {newest.id, locked.id, held.id}
    for key in (f"arch/{free.data_object}", f"arch/manifests/{free.id}"):
        assert _versions(s3, lock_bucket, key) == []
    for key in (f"arch/{locked.data_object}", f"arch/manifests/{held.id}"):  # untouched: no delete marker on top
        [only] = _versions(s3, lock_bucket, key)
        assert "Size" in only and only["IsLatest"]
    assert verify_archive(VerifyOptions(url=url, sink=sink)).ok
    text = CliRunner().invoke(main, ["prune", url, "--keep-last", "1"], env=env)
    assert "left alone" in text.stdout and until.isoformat()[:10] in text.stdout


def test_prune_s3_leftovers(moto, s3, bucket):
    url = f"s3://{bucket}/arch"
    sink = SinkOptions(endpoint_url=moto.endpoint)
    repo = Repository.open(url, sink)
    keep = make_backup(repo, "S", NOW)
    s3.put_object(Bucket=bucket, Key="arch/data/" + "ab" * 16, Body=b"orphan")
    up = s3.create_multipart_upload(Bucket=bucket, Key="arch/data/" + "cd" * 16)
    s3.upload_part(Bucket=bucket, Key="arch/data/" + "cd" * 16, UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 10)
    outside = s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/data/x")  # not under the archive's prefix
    [item] = repo.sink.list_incomplete()
    assert item.key == "data/" + "cd" * 16 and item.upload_id == up["UploadId"] and item.size == 10

    real_now = dt.datetime.now(UTC)
    early = prune(PruneOptions(url=url, sink=sink, now=real_now, confirm=True))
    assert sorted((o.kind, o.action) for o in early.objects) == [("abandoned-data", KEEP), ("unfinished-upload", KEEP)]
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 2

    late = prune(PruneOptions(url=url, sink=sink, now=real_now + dt.timedelta(days=2), confirm=True))
    assert sorted((o.kind, o.deleted) for o in late.objects) == [("abandoned-data", True), ("unfinished-upload", True)]
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [outside["UploadId"]]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(
        [f"arch/{keep.data_object}", f"arch/manifests/{keep.id}", *(f"arch/{r}" for r in _refs(repo))]
    )


def _refs(repo: Repository) -> list[str]:
    return [r.key for r in repo.refs()]


# -- GCS (both emulators) --------------------------------------------------------------------------------------------


def test_prune_gcs(gcs_emulator):
    url = f"gs://{gcs_emulator.make_bucket()}/arch"
    repo = Repository.open(url)
    ms = _timeline(repo, "S", [NOW - dt.timedelta(days=d) for d in range(4)])
    orphan = repo.sink.put("data/" + "ab" * 16, b"orphan")
    assert orphan.size == 6
    assert repo.sink.list_incomplete() == []  # GCS cannot list resumable sessions

    policy = Policy(last=1, daily=2)
    dry = prune(PruneOptions(url=url, policy=policy, now=NOW))
    assert {b.manifest_id for b in dry.backups if b.action == KEEP} == _expected(ms, policy)
    assert len(gcs_emulator.raw_names(url[5:].split("/")[0])) == 4 * 3 + 1

    real_now = dt.datetime.now(UTC)
    done = prune(PruneOptions(url=url, policy=policy, now=real_now + dt.timedelta(days=2), confirm=True))
    assert [(o.kind, o.deleted) for o in done.objects] == [("abandoned-data", True)]
    survivors = _expected(ms, policy)
    assert {e.manifest_id for e in list_backups(url)} == survivors
    names = gcs_emulator.raw_names(url[5:].split("/")[0])
    assert len(names) == 3 * len(survivors)
    assert verify_archive(VerifyOptions(url=url)).ok


def test_s3_purge_removes_every_version_and_refuses_locks(moto, s3, lock_bucket):
    from sinks import AccessDenied
    from sinks.s3 import S3Sink

    sink = S3Sink.from_url(f"s3://{lock_bucket}/arch", SinkOptions(endpoint_url=moto.endpoint))
    sink.put("a", b"one")
    s3.put_object(Bucket=lock_bucket, Key="arch/a", Body=b"two", ChecksumAlgorithm="SHA256")
    s3.delete_object(Bucket=lock_bucket, Key="arch/a")  # a delete marker on top: the bytes are still there
    assert len(_versions(s3, lock_bucket, "arch/a")) == 3
    sink.put("ab", b"a neighbour whose key starts the same")
    sink.purge("a")
    assert _versions(s3, lock_bucket, "arch/a") == []
    assert sink.get("ab") == b"a neighbour whose key starts the same"

    until = dt.datetime.now(UTC) + dt.timedelta(days=1)
    sink.put("b", b"locked", retention=Retention("COMPLIANCE", until))
    s3.put_object(Bucket=lock_bucket, Key="arch/b", Body=b"newer, unlocked", ChecksumAlgorithm="SHA256")
    with pytest.raises(AccessDenied, match="version .* is under Object Lock"):
        sink.purge("b")
    assert len(_versions(s3, lock_bucket, "arch/b")) == 2  # refused before anything was deleted
    sink.purge("never-written")  # nothing there: nothing to do


def test_gcs_holds_alone_count_as_locks():
    from sinks import gcs

    for field in ("temporaryHold", "eventBasedHold"):
        r = gcs._retention_of({field: True})
        assert r is not None and r.legal_hold and r.mode == ""
    assert gcs._retention_of({"temporaryHold": False}) is None


def test_added_key_slots_go_with_their_backup(tmp_path):
    root = tmp_path / "a"
    repo = Repository.open(str(root))
    new, old = _timeline(repo, "S", [NOW, NOW - dt.timedelta(days=1)])
    slot_of_old = f"keyslots/{old.id}/{'1' * 64}"
    slot_of_new = f"keyslots/{new.id}/{'2' * 64}"
    stray = f"keyslots/{'f' * 64}/{'3' * 64}"  # its manifest is gone
    for key in (slot_of_old, slot_of_new, stray):
        repo.sink.put(key, b"{}")
    report = prune(
        PruneOptions(
            url=str(root), policy=Policy(last=1), now=dt.datetime.now(UTC) + dt.timedelta(days=2), confirm=True
        )
    )
    plan = {p.manifest_id: p for p in report.backups}
    assert plan[old.id].added_slots == [slot_of_old] and plan[old.id].deleted
    assert [(o.kind, o.key, o.deleted) for o in report.objects] == [("stray-key-slot", stray, True)]
    assert objects(root) & {slot_of_old, slot_of_new, stray} == {slot_of_new}
