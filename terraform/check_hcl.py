"""Offline checks of the Terraform code that `terraform validate` cannot do here (run by terraform/check.sh).

The Google provider cannot be installed on this machine, so the GCP module and examples are never validated by
Terraform itself. This script parses every ``.tf`` file with python-hcl2 and checks, for every configuration
(module or example directory):

- every ``var.X``, ``local.X``, ``module.X``, ``data.T.N`` and resource reference names something declared;
- every ``module`` block with a local source passes only variables the module declares, and every variable the
  module requires; every ``module.M.O`` is an output of it;

and then the properties the modules promise (least privilege, lock, encryption, lifecycle, sharding), so that a
change that breaks them fails CI even where no provider can run.

Usage: python check_hcl.py TERRAFORM_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def unq(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def labelled(doc: dict, kind: str) -> list[tuple[list[str], dict]]:
    """Blocks of one kind as (labels, body); handles one and two labels."""
    out = []
    for entry in doc.get(kind, []):
        for k1, v1 in entry.items():
            if isinstance(v1, dict) and not v1.get("__is_block__"):
                for k2, body in v1.items():
                    out.append(([unq(k1), unq(k2)], body))
            else:
                out.append(([unq(k1)], v1))
    return out


class Config:
    """One directory of .tf files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = sorted(path.glob("*.tf"))
        self.text = ""
        self.docs: list[dict] = []
        for f in self.files:
            raw = f.read_text()
            self.text += raw + "\n"
            try:
                self.docs.append(hcl2.loads(raw))
            except Exception as e:  # noqa: BLE001 - any parse error is a failure to report
                fail(str(f), f"does not parse as HCL2: {e}")

    def blocks(self, kind: str) -> list[tuple[list[str], dict]]:
        return [b for d in self.docs for b in labelled(d, kind)]

    def variables(self) -> dict[str, dict]:
        return {labels[0]: body for labels, body in self.blocks("variable")}

    def outputs(self) -> set[str]:
        return {labels[0] for labels, _ in self.blocks("output")}

    def locals(self) -> set[str]:
        names = set()
        for d in self.docs:
            for entry in d.get("locals", []):
                names.update(k for k in entry if not k.startswith("__"))
        return names

    def resources(self) -> dict[str, dict]:
        return {".".join(labels): body for labels, body in self.blocks("resource")}

    def data(self) -> dict[str, dict]:
        return {".".join(labels): body for labels, body in self.blocks("data")}

    def modules(self) -> dict[str, dict]:
        return {labels[0]: body for labels, body in self.blocks("module")}


def code_only(text: str) -> str:
    """The text without comments (references in comments are prose)."""
    return "\n".join(re.sub(r"(^|\s)(#|//).*$", "", line) for line in text.splitlines())


def check_references(cfg: Config, root: Path) -> None:
    where = str(cfg.path.relative_to(root))
    text = code_only(cfg.text)
    declared_vars, declared_locals = set(cfg.variables()), cfg.locals()
    resources, data, modules = set(cfg.resources()), set(cfg.data()), cfg.modules()
    for name in sorted(set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", text)) - declared_vars):
        fail(where, f"var.{name} is not declared")
    for name in sorted(set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_-]*)", text)) - declared_locals):
        fail(where, f"local.{name} is not declared")
    for t, n in sorted(set(re.findall(r"\bdata\.([a-z0-9_]+)\.([A-Za-z0-9_-]+)", text))):
        if f"{t}.{n}" not in data:
            fail(where, f"data.{t}.{n} is not declared")
    for t, n in sorted(set(re.findall(r"(?<![.\w])((?:aws|google)_[a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_-]*)", text))):
        if f"{t}.{n}" not in resources:
            fail(where, f"{t}.{n} is not declared")
    for name, attr in sorted(set(re.findall(r"\bmodule\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_]+)", text))):
        if name not in modules:
            fail(where, f"module.{name} is not declared")
            continue
        source = unq(modules[name].get("source", ""))
        target = (cfg.path / source).resolve()
        if source.startswith(".") and target.is_dir() and attr not in Config(target).outputs():
            fail(where, f"module.{name}.{attr}: the module {source} has no output {attr!r}")
    meta = {"source", "version", "providers", "count", "for_each", "depends_on", "__is_block__", "__comments__"}
    for name, body in modules.items():
        source = unq(body.get("source", ""))
        if not source.startswith("."):
            continue
        target = (cfg.path / source).resolve()
        if not target.is_dir():
            fail(where, f"module {name}: source {source} does not exist")
            continue
        params = Config(target).variables()
        given = set(body) - meta
        for extra in sorted(given - set(params)):
            fail(where, f"module {name} passes {extra!r}, which {source} does not declare")
        for req in sorted(p for p, spec in params.items() if "default" not in spec and p not in given):
            fail(where, f"module {name} does not pass {req!r}, which {source} requires")


# -- what the modules promise ----------------------------------------------------------------------------------------


def statements(doc_body: dict) -> list[dict]:
    out = list(doc_body.get("statement", []))
    for dyn in doc_body.get("dynamic", []):
        for label, spec in dyn.items():
            if unq(label) == "statement":
                out += spec.get("content", [])
    return out


def actions(stmt: dict) -> set[str]:
    raw = stmt.get("actions", [])
    if isinstance(raw, str):  # an expression such as concat(...): the literal strings in it
        return set(re.findall(r'"([a-z0-9]+:[A-Za-z*]+)"', raw)) | set()
    return {unq(a) for a in raw}


def effect(stmt: dict) -> str:
    return unq(stmt.get("effect", "Allow"))


def check_aws(cfg: Config, where: str) -> None:
    docs = cfg.data()
    text = code_only(cfg.text)

    def policy(name: str) -> list[dict]:
        body = docs.get(f"aws_iam_policy_document.{name}")
        if body is None:
            fail(where, f"no aws_iam_policy_document.{name}")
            return []
        return statements(body)

    def resources_of(stmt: dict) -> str:
        return " ".join(map(str, stmt.get("resources", [])))

    # The writer: put and multipart, read, no delete, no governance bypass; KMS Encrypt only on the archive key.
    writer = policy("writer")
    allowed = set().union(*(actions(s) for s in writer if effect(s) == "Allow")) if writer else set()
    expected = {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "secretsmanager:GetSecretValue",
    }
    if allowed != expected:
        fail(where, f"writer allows {sorted(allowed)}, expected exactly {sorted(expected)}")
    for s in writer:
        if effect(s) == "Allow" and any(a.startswith(("s3:Delete", "s3:Bypass", "s3:PutObjectRetention")) for a in actions(s)):
            fail(where, f"writer statement {unq(s.get('sid'))} allows deleting or unlocking")
        if effect(s) == "Allow" and "kms:Decrypt" in actions(s) and "aws_kms_key.archive" in resources_of(s):
            fail(where, "writer may decrypt with the archive key")
        if effect(s) == "Allow" and actions(s) & {"kms:GenerateDataKey", "kms:Decrypt"}:
            conds = s.get("condition", [])
            via = [c for c in conds if unq(c.get("variable")) == "kms:ViaService"]
            if "aws_kms_key.bucket" not in resources_of(s) or not via:
                fail(where, "writer's GenerateDataKey/Decrypt must be on the bucket key and only via S3")
        if effect(s) == "Allow" and "kms:Encrypt" in actions(s) and "aws_kms_key.archive" not in resources_of(s):
            fail(where, "writer's kms:Encrypt must be on the archive key only")
    denied = set().union(*(actions(s) for s in writer if effect(s) == "Deny")) if writer else set()
    never_unlock = re.search(r"never_unlock\s*=\s*\[(.*?)\]", text, re.S)
    denied |= set(re.findall(r'"(s3:[A-Za-z]+)"', never_unlock.group(1))) if never_unlock else set()
    for must in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention", "kms:Decrypt"):
        if must not in denied:
            fail(where, f"writer does not explicitly deny {must}")

    restorer = policy("restorer")
    allowed = set().union(*(actions(s) for s in restorer if effect(s) == "Allow")) if restorer else set()
    if allowed != {"s3:ListBucket", "s3:GetObject", "s3:RestoreObject", "kms:Decrypt"}:
        fail(where, f"restorer allows {sorted(allowed)}")

    pruner = policy("pruner")
    allowed = set().union(*(actions(s) for s in pruner if effect(s) == "Allow")) if pruner else set()
    if "s3:BypassGovernanceRetention" in allowed or "s3:PutObject" in allowed or "kms:Encrypt" in allowed:
        fail(where, f"pruner allows more than reading and deleting: {sorted(allowed)}")
    if "s3:BypassGovernanceRetention" not in denied:
        fail(where, "governance bypass is not denied")

    res = cfg.resources()
    bucket = res.get("aws_s3_bucket.archive", {})
    if str(bucket.get("object_lock_enabled")).lower() != "true":
        fail(where, "the bucket has no Object Lock")
    lifecycle = res.get("aws_s3_bucket_lifecycle_configuration.archive", {})
    rules = lifecycle.get("rule", [])
    if not any(r.get("abort_incomplete_multipart_upload") for r in rules):
        fail(where, "no lifecycle rule aborts incomplete multipart uploads")
    cold = [r for r in rules if r.get("transition")]
    if not cold or any("data/" not in str(r.get("filter")) for r in cold):
        fail(where, "only data/ may transition to cold storage (manifests and refs stay STANDARD)")
    if "aws_s3_bucket_public_access_block.archive" not in res:
        fail(where, "public access is not blocked")
    sse = str(res.get("aws_s3_bucket_server_side_encryption_configuration.archive"))
    if "aws:kms" not in sse:
        fail(where, "no SSE-KMS default encryption")
    if "aws_scheduler_schedule.backup" not in res or "aws_cloudwatch_metric_alarm.no_recent_backup" not in res:
        fail(where, "no schedule or no alarm")


def check_gcp(cfg: Config, where: str) -> None:
    res = cfg.resources()
    bucket = res.get("google_storage_bucket.archive")
    if bucket is None:
        fail(where, "no google_storage_bucket.archive")
        return
    if not bucket.get("retention_policy"):
        fail(where, "the bucket has no retention policy")
    if "crypto_key.bucket" not in str(bucket.get("encryption")):
        fail(where, "the bucket has no CMEK")
    if str(bucket.get("uniform_bucket_level_access")).lower() != "true":
        fail(where, "uniform bucket-level access is off")
    if unq(bucket.get("public_access_prevention")) != "enforced":
        fail(where, "public access prevention is not enforced")
    rules = bucket.get("lifecycle_rule", [])
    archive = [r for r in rules if "ARCHIVE" in str(r.get("action"))]
    if not archive or any("data/" not in str(r.get("condition")) for r in archive):
        fail(where, "no lifecycle rule moves data/ (and only data/) to ARCHIVE")

    writer = res.get("google_project_iam_custom_role.writer", {})
    perms = {unq(p) for p in writer.get("permissions", [])}
    if perms != {"storage.objects.create", "storage.objects.get", "storage.objects.list"}:
        fail(where, f"the writer role has {sorted(perms)}: it must create, read and list only (no delete)")
    pruner = res.get("google_project_iam_custom_role.pruner", {})
    if any(not p.startswith("storage.objects.") for p in map(unq, pruner.get("permissions", []))):
        fail(where, "the pruner role has more than object permissions")
    grants = {
        name: (unq(body.get("role")), unq(body.get("member")))
        for name, body in res.items()
        if name.startswith(("google_kms_crypto_key_iam_member.", "google_storage_bucket_iam_member."))
    }
    for name, (role, member) in grants.items():
        if "service_account.backup" in member and role not in (
            "roles/cloudkms.cryptoKeyEncrypter",
            "${google_project_iam_custom_role.writer.id}",
        ):
            fail(where, f"{name} gives the backup account {role}")
        if role.startswith("roles/storage.") and role not in ("roles/storage.objectViewer",):
            fail(where, f"{name} grants the broad role {role}")

    job = res.get("google_cloud_run_v2_job.backup", {})
    template = (job.get("template") or [{}])[0]
    if "task_count" not in template:
        fail(where, "the Cloud Run job does not set task_count")
    if '"account", "backup"' not in cfg.text.replace("\n", " "):
        fail(where, "the Cloud Run job does not run `jsarchive account backup`")
    sched = res.get("google_cloud_scheduler_job.backup", {})
    if ":run" not in str(sched.get("http_target")):
        fail(where, "the Cloud Scheduler job does not run the Cloud Run job")


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent).resolve()
    dirs = sorted({f.parent for f in root.rglob("*.tf") if ".terraform" not in f.parts})
    n_files = 0
    for d in dirs:
        cfg = Config(d)
        n_files += len(cfg.files)
        check_references(cfg, root)
        where = str(d.relative_to(root))
        if where == "modules/aws-archive":
            check_aws(cfg, where)
        elif where == "modules/gcp-archive":
            check_gcp(cfg, where)
    if not any(str(d).endswith("modules/gcp-archive") for d in dirs):
        fail(str(root), "no modules/gcp-archive")
    for f in failures:
        print(f"FAIL {f}")
    print(f"check_hcl: {n_files} files in {len(dirs)} configurations parsed; {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
