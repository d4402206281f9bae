#!/usr/bin/env bash
# Terraform checks (`make check-terraform`, run by .ci/run):
#   1. terraform fmt -check over everything;
#   2. terraform init -backend=false + validate of the AWS module and examples, offline: providers come only from
#      the filesystem mirror the machine image carries ($TF_PROVIDER_MIRROR, default /opt/tf-plugins);
#   3. the GCP module, whose provider cannot be installed here: every .tf parsed with python-hcl2 plus reference and
#      least-privilege checks (check_hcl.py), and a checkov scan offline (--skip-download).
# The Python tools get their own venvs under .cache/tfcheck (pinned in requirements-*.txt), not the project's.
# A missing tool is a failure, never a silent pass.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
mirror="${TF_PROVIDER_MIRROR:-/opt/tf-plugins}"
python="${PYTHON:-python3}"
tools="${JSARCHIVE_TFCHECK_DIR:-$repo/.cache/tfcheck}"
start=$SECONDS

say() { printf '%s check-terraform: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
    printf 'check-terraform: FAILED: %s\n' "$*" >&2
    exit 1
}

command -v terraform >/dev/null 2>&1 ||
    die "terraform is not on PATH: nothing was checked (install terraform >= 1.5)"
[ -d "$mirror/registry.terraform.io/hashicorp/aws" ] ||
    die "no hashicorp/aws provider in the mirror $mirror (set TF_PROVIDER_MIRROR to a filesystem mirror)"
command -v "$python" >/dev/null 2>&1 || die "$python is not on PATH (needed for python-hcl2 and checkov)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Our own CLI configuration: only the mirror, never the network.
cat >"$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
RC
export TF_CLI_CONFIG_FILE="$work/terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0

# 1. formatting
say "$(terraform version | head -n1): fmt -check"
terraform fmt -check -recursive -diff "$here" || die "terraform fmt: run 'terraform fmt -recursive terraform/'"

# 2. init + validate, in a copy so the work tree gets no .terraform/ or lock files
cp -R "$here" "$work/tf"
aws_dirs=(modules/aws-archive)
for d in "$here"/examples/aws-*/; do aws_dirs+=("examples/$(basename "$d")"); done
for d in "${aws_dirs[@]}"; do
    say "init + validate $d"
    (
        cd "$work/tf/$d"
        terraform init -backend=false -input=false -no-color >"$work/init.log" 2>&1 ||
            { cat "$work/init.log"; die "terraform init failed in $d"; }
        terraform validate -no-color || die "terraform validate failed in $d"
    )
done

# 3. the GCP side: python-hcl2 and checkov, each in its own venv
tool_venv() { # name requirements-file
    local dir="$tools/$1" req="$2"
    if [ ! -x "$dir/bin/python" ] || ! cmp -s "$req" "$dir/.requirements"; then
        local t0=$SECONDS
        say "installing $1 into $dir"
        rm -rf "$dir"
        "$python" -m venv "$dir" || die "cannot create a venv in $dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >"$work/pip-$1.log" 2>&1 ||
            { cat "$work/pip-$1.log"; die "cannot install $1 (from $req)"; }
        cp "$req" "$dir/.requirements"
        say "installed $1 in $((SECONDS - t0)) s"
    fi
}
tool_venv hcl2 "$here/requirements-hcl2.txt"
tool_venv checkov "$here/requirements-checkov.txt"

say "python-hcl2: parse every .tf, check references, module inputs and the modules' promises"
"$tools/hcl2/bin/python" "$here/check_hcl.py" "$here" || die "check_hcl.py found problems"

gcp_dirs=(modules/gcp-archive)
for d in "$here"/examples/gcp-*/; do gcp_dirs+=("examples/$(basename "$d")"); done
for d in "${gcp_dirs[@]}"; do
    say "checkov $d (offline)"
    "$tools/checkov/bin/checkov" -d "$here/$d" --framework terraform --skip-download --compact --quiet \
        --skip-resources-without-violations ||
        die "checkov found problems in $d (fix them, or skip one inline with a reason and list it in the module's README)"
done

say "all checks passed in $((SECONDS - start)) s (terraform validate: AWS module and examples; GCP: parsed and scanned, not validated: no Google provider here)"
