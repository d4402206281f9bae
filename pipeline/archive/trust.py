"""What a reader accepts from an archive that others can write to (docs/operations.md "Trusting what you restore").

Anyone with write access to the bucket can add objects: a plaintext manifest made with no key at all, a ref with
any name, a set naming any manifests. Encryption authenticates a manifest (the sealed body is bound to the clear
envelope), a signature authenticates a manifest or a set whatever its encryption. :class:`TrustPolicy` is what a
restore demands:

- with a key configured (an age identity, a raw key, a KMS key, or ``--use-kms-slots``), backups are expected to
  be encrypted: an unencrypted one is refused (exit 4) unless ``allow_unencrypted``;
- with trusted keys (``--trust-key``), a manifest or set must carry a valid signature by one of them (exit 4).

It also holds the account check of ``account restore`` and the preflight that account restores and drills run
before anything is sent to a server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.archive import signing
from pipeline.archive.repository import Repository
from pipeline.archive.sets import load_member, load_set, sets_at
from pipeline.base.errors import IntegrityError, UsageError, setting
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, select_streams
from pipeline.keys.keyring import KeyRing


def keys_configured(keys: KeyRing) -> bool:
    """Whether this invocation can open encrypted backups, and so expects them: then plaintext is suspicious."""
    return bool(keys.identities or keys.raw_keys or keys.aws_kms_keys or keys.gcp_kms_keys or keys.kms_config.use_slots)


@dataclass
class TrustPolicy:
    trusted: list[signing.TrustedKey] = field(default_factory=list)
    allow_unencrypted: bool = False
    keys_configured: bool = False

    @classmethod
    def of(cls, keys: KeyRing, trusted: list[signing.TrustedKey] = (), allow_unencrypted: bool = False) -> TrustPolicy:
        return cls(list(trusted), allow_unencrypted, keys_configured(keys))

    def manifest_problem(self, repo: Repository, m: Manifest) -> str | None:
        """Why ``m`` is not acceptable under this policy, or None."""
        if not m.encrypted and self.keys_configured and not self.allow_unencrypted:
            return (
                f"backup {m.id[:12]} ({m.stream}) is not encrypted, and a key is configured: anyone who can write to "
                "the archive can plant an unencrypted backup; if this one is yours, give --allow-unencrypted"
            )
        if self.trusted:
            try:
                signing.require_trusted(repo, "manifest", m.id, self.trusted, f"backup {m.id[:12]} ({m.stream})")
            except IntegrityError as e:
                return str(e)
        return None

    def check_manifest(self, repo: Repository, m: Manifest) -> None:
        why = self.manifest_problem(repo, m)
        if why:
            raise IntegrityError(why)

    def set_problem(self, repo: Repository, set_id: str) -> str | None:
        if not self.trusted:
            return None  # sets are never encrypted: only a signature authenticates one
        try:
            signing.require_trusted(repo, "set", set_id, self.trusted, f"set {set_id[:12]}")
        except IntegrityError as e:
            return str(e)
        return None


def choose_set(
    repo: Repository, set_id: str | None, policy: TrustPolicy, notes: list[str], at: dt.datetime | None = None
) -> BackupSet:
    """The set to restore: the one named, or the newest (by ``finished``; of those finished at or before ``at``
    when given) that the policy accepts; newer ones it does not accept are named in ``notes``. Raises
    IntegrityError if the chosen set is not acceptable."""
    if set_id:
        bset = load_set(repo, set_id, at)
        why = policy.set_problem(repo, bset.id)
        if why:
            raise IntegrityError(why)
        return bset
    for bset in sets_at(repo, at):
        why = policy.set_problem(repo, bset.id)
        if why is None:
            return bset
        notes.append(f"newer set {bset.id[:12]} (finished {bset.finished}) skipped: {why}")
    raise IntegrityError(f"no set in {repo.url} is signed by a trusted key: {notes[0]}")


def check_members(
    repo: Repository, bset: BackupSet, include: list[str], exclude: list[str], policy: TrustPolicy
) -> list[str]:
    """Every selected member of ``bset`` acceptable under ``policy`` (IntegrityError naming each that is not);
    the selected stream names."""
    label = f"set {bset.id[:12]}"
    entries = {e["stream"]: e for e in bset.streams}
    chosen = select_streams(sorted(entries), include, exclude, what=label)
    problems = []
    for name in chosen:
        why = policy.manifest_problem(repo, load_member(repo, label, name, entries[name]["manifest_id"]))
        if why:
            problems.append(why)
    if problems:
        raise IntegrityError(f"{label}: nothing was restored: " + "; ".join(problems))
    return chosen


def check_account(recorded: str | None, here: str | None, allow_other: bool, set_id: str) -> list[str]:
    """Refuse (exit 2) restoring a set into another account than the one it records, unless ``allow_other``;
    the warnings to show."""
    if recorded is None:
        return []  # natscli imports and servers that did not say: nothing to compare
    if here is None:
        return [
            f"set {set_id[:12]} was backed up from account {recorded!r}; this server did not say which account "
            "the connection is in, so that could not be checked"
        ]
    if here == recorded:
        return []
    if not allow_other:
        raise UsageError(
            f"set {set_id[:12]} was backed up from account {recorded!r}, but this connection is in account "
            f"{here!r}; nothing was restored (give {setting('allow-other-account')} to restore it into {here!r})"
        )
    return [f"set {set_id[:12]} was backed up from account {recorded!r}; restoring it into account {here!r}"]


def preflight_set(
    repo: Repository,
    set_id: str | None,
    include: list[str],
    exclude: list[str],
    policy: TrustPolicy,
    *,
    account_here: Callable[[], str | None] | None = None,
    allow_other_account: bool = False,
    at: dt.datetime | None = None,
) -> tuple[BackupSet, list[str]]:
    """Before an account restore or a drill sends anything: the set to use (pinned by its full id, which names its
    members' manifests by their hashes), every selected member acceptable, and (with ``account_here``, which
    asks the server which account the connection is in: account restore) the account the set records. Returns the
    set and the warnings to show. ``at``: the newest set finished at or before it (:func:`choose_set`)."""
    notes: list[str] = []
    bset = choose_set(repo, set_id, policy, notes, at)
    check_members(repo, bset, include, exclude, policy)
    if account_here is not None:
        notes += check_account(bset.account.get("name"), account_here(), allow_other_account, bset.id)
    return bset, notes
