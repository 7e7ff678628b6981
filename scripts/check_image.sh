#!/usr/bin/env bash
# Build the AWS Batch image and run it, with no Docker daemon and no container registry:
#   1. a stand-in for python:3.11-slim-bookworm (debootstrap minbase bookworm + python3.11, a venv at /usr/local,
#      `podman import`), made once and kept, unless BASE_IMAGE names an image already in the storage;
#   2. `buildah bud --isolation chroot` of the Dockerfile, pip reaching this machine's local wheels, local
#      indexes and CA bundle through read-only mounts and the PIP_EXTRA_ARGS / TORCH_INDEX_URL build arguments;
#   3. `podman run` of the image's own ENTRYPOINT and USER (uid 10001), each check against moto's S3 server
#      and the oracle LLM server started here on the host (the container shares the host network):
#      a bad config exits 2; a small real job exits 0 with its outputs in the bucket; a job sent SIGTERM while
#      it labels exits 3 within 30 s and a new container of the same job resumes it to exit 0.
#
#   bash scripts/check_image.sh           run everything (about 10 minutes on 2 cores, peak 4.5 GB under CHECK_IMAGE_ROOT)
#   bash scripts/check_image.sh --clean   delete CHECK_IMAGE_ROOT (the base stand-in, the image, the storage)
#
# Needs root, buildah, podman, runc, debootstrap (Debian: apt-get install buildah podman runc debootstrap), the
# Debian mirror (for the base) and PyPI (for the build), and .venv (scripts/setup.sh makes it).
# Environment: CHECK_IMAGE_ROOT (default /var/tmp/bootstrapper-containers), CHECK_IMAGE_STORAGE_DRIVER (default
# vfs, which works everywhere; only vfs was measured), BASE_IMAGE (default: the stand-in), DEBIAN_MIRROR.
# Idempotent: a rerun reuses the base, rebuilds the image (replacing the last one) and starts from empty buckets.
# The last image is kept for poking at by hand; its name and storage flags are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${CHECK_IMAGE_ROOT:-/var/tmp/bootstrapper-containers}
DRIVER=${CHECK_IMAGE_STORAGE_DRIVER:-vfs}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STAND_IN=localhost/bootstrapper-base:bookworm-python3.11
IMAGE=localhost/classifier-bootstrapper:check
ROWS=150            # chunks in the small real job: 40 test labels, 40 training labels, 70 predicted
LATENCY_MS=600      # per oracle call: the test-set labeling lasts about 6 s, the window the SIGTERM aims at
STOP_LIMIT_S=30     # AWS Batch's SIGTERM-to-SIGKILL grace
NEED_FREE_GB=8      # measured peak 4.5 GB with vfs
PREFIX=bootstrapper-check  # every container this script makes is named $PREFIX-*, and only those are removed

T0=$(date +%s)
phase_start=$T0
fail() { echo "check_image: FAILED: $*" >&2; exit 1; }
step() { echo "check_image: $*" >&2; }
phase() {  # end the current phase, with its wall time, and name the next
  local now; now=$(date +%s)
  [ -z "${PHASE:-}" ] || TIMINGS+=("$(printf '%-28s %4d s' "$PHASE" $((now - phase_start)))")
  PHASE=$1; phase_start=$now
  [ "$1" = end ] || step "== $1"
}
TIMINGS=()

storage=(--root "$ROOT/storage" --runroot "$ROOT/runroot" --storage-driver "$DRIVER")
POD=(podman "${storage[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file)
bah() { buildah "${storage[@]}" "$@"; }
pod() { "${POD[@]}" "$@"; }

if [ "${1:-}" = "--clean" ]; then
  [ -d "$ROOT" ] || { step "nothing to clean: $ROOT does not exist"; exit 0; }
  pod rm --all --force >/dev/null 2>&1 || true
  bah rm --all >/dev/null 2>&1 || true
  rm -rf "$ROOT"
  step "removed $ROOT"
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [--clean]" >&2; exit 2; }

# --- preflight -----------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and buildah's chroot isolation need it)"
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: apt-get install -y buildah podman runc debootstrap"
done
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=$PWD/.venv/bin/python
HELP=(env PYTHONPATH="$PWD" "$PY" scripts/check_image_helpers.py)
mkdir -p "$ROOT/logs"
LOGS=$ROOT/logs
free_gb=$(df -P -BG "$ROOT" | awk 'NR==2 {sub("G", "", $4); print $4}')
[ "$free_gb" -ge "$NEED_FREE_GB" ] || fail "$free_gb GB free under $ROOT, need about $NEED_FREE_GB"
step "storage $ROOT ($DRIVER), $free_gb GB free; logs in $LOGS"

PIDS=()
cleanup() {
  local code=$?
  local name
  for name in $(pod ps --all --format '{{.Names}}' 2>/dev/null || true); do
    case "$name" in "$PREFIX"-*) pod rm --force "$name" >/dev/null 2>&1 || true ;; esac
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$code" -ne 0 ]; then step "failed after $(( $(date +%s) - T0 )) s; logs in $LOGS"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup  # containers left by an interrupted earlier run

# --- 1. the base image ---------------------------------------------------------------------------
phase "base image"
if [ -n "${BASE_IMAGE:-}" ]; then
  pod image exists "$BASE_IMAGE" || fail "BASE_IMAGE=$BASE_IMAGE is not in $ROOT/storage (podman import or pull it first)"
  base=$BASE_IMAGE
elif pod image exists "$STAND_IN"; then
  step "reusing $STAND_IN"
  base=$STAND_IN
else
  step "debootstrap bookworm (minbase + python3.11) from $DEBIAN_MIRROR -> $STAND_IN"
  rootfs=$ROOT/base-rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3 \
      bookworm "$rootfs" "$DEBIAN_MIRROR" >"$LOGS/debootstrap.log" 2>&1 \
    || { tail -n 20 "$LOGS/debootstrap.log" >&2; fail "debootstrap failed (log $LOGS/debootstrap.log)"; }
  # As in python:3.11-slim: python and pip in /usr/local/bin, first on PATH.
  chroot "$rootfs" /usr/bin/python3.11 -m venv /usr/local || fail "python3.11 -m venv /usr/local failed"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . \
    | pod import --change 'ENV=PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV=LANG=C.UTF-8' --change 'CMD=["python3"]' - "$STAND_IN" >"$LOGS/import.log" 2>&1 \
    || { cat "$LOGS/import.log" >&2; fail "podman import of the stand-in base failed"; }
  rm -rf "$rootfs"
  base=$STAND_IN
fi

# --- 2. the image --------------------------------------------------------------------------------
phase "build"
volumes=(); pip_args=()
while read -r kind value; do
  case "$kind" in
    volume) volumes+=(--volume "$value:$value:ro") ;;
    arg) pip_args+=("$value") ;;
  esac
done < <("${HELP[@]}" pip-build-args)
# torch from a local wheel directory when one holds the CPU build, else from the Dockerfile's default index.
torch_arg=()
for dir in $(printf '%s\n' "${pip_args[@]}" | sed -n 's/^--find-links //p'); do
  if compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then torch_arg=(--build-arg TORCH_INDEX_URL=); break; fi
done
step "buildah bud $IMAGE from $base; PIP_EXTRA_ARGS=${pip_args[*]:-(none)}; ${torch_arg[*]:-default TORCH_INDEX_URL}"
bah rm --all >/dev/null 2>&1 || true  # an interrupted build's working container (this storage is the script's own)
if pod image exists "$IMAGE"; then pod rmi --force "$IMAGE" >/dev/null; fi  # the last check's image: disk, not cache
# No per-step layers: with vfs every layer is a full copy of the tree (a cached build took 12 min and 11 GB).
bah bud --isolation chroot --network host --layers=false "${volumes[@]}" \
    --build-arg BASE_IMAGE="$base" "${torch_arg[@]}" --build-arg PIP_EXTRA_ARGS="${pip_args[*]}" \
    -t "$IMAGE" . >"$LOGS/build.log" 2>&1 \
  || { tail -n 30 "$LOGS/build.log" >&2; fail "buildah bud failed (log $LOGS/build.log)"; }
pod image prune --force >/dev/null 2>&1 || true
user=$(pod image inspect "$IMAGE" --format '{{.Config.User}}')
entry=$(pod image inspect "$IMAGE" --format '{{json .Config.Entrypoint}}')
[ "$user" = 10001 ] || fail "the image's USER is '$user', expected 10001"
step "built $IMAGE: USER $user, ENTRYPOINT $entry, $(du -sh "$ROOT/storage" | cut -f1) in $ROOT/storage"

# --- host services -------------------------------------------------------------------------------
phase "services"
s3_port=$("${HELP[@]}" free-port)
S3=http://127.0.0.1:$s3_port
"$PY" -m moto.server -H 127.0.0.1 -p "$s3_port" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)
port_file=$LOGS/oracle.port
rm -f "$port_file"
PYTHONPATH=$PWD "$PY" -m oracle.server --data examples/sms/sms_spam.jsonl --port 0 --port-file "$port_file" \
    --latency-ms "$LATENCY_MS" --noise 0.1 --seed 4 >"$LOGS/oracle.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [ -s "$port_file" ] && break; sleep 0.1; done
[ -s "$port_file" ] || fail "the oracle server did not start (log $LOGS/oracle.log)"
ORACLE=http://127.0.0.1:$(cat "$port_file")
"${HELP[@]}" wait-http 30 "$ORACLE/health" "$S3" || fail "the S3 or oracle server did not answer (logs $LOGS/moto.log, oracle.log)"
step "S3 server $S3, oracle $ORACLE (latency $LATENCY_MS ms, 10% wrong labels)"
BUCKET=check-image-$(date +%s)

# The environment Batch would give the job, pointed at the host's servers (dummy credentials: moto takes any).
job_env=(--env AWS_ENDPOINT_URL="$S3" --env AWS_ACCESS_KEY_ID=testing --env AWS_SECRET_ACCESS_KEY=testing
         --env AWS_DEFAULT_REGION=us-east-1 --env AWS_EC2_METADATA_DISABLED=true
         --env BOOTSTRAPPER_API__LARGE_BASE_URL="$ORACLE/v1" --env BOOTSTRAPPER_API__SMALL_BASE_URL="$ORACLE/v1")
# start_job NAME ARGS...: a detached container of the image's entry point, as Batch would run it
start_job() {
  local name=$1; shift
  pod rm --force "$PREFIX-$name" >/dev/null 2>&1 || true
  pod run --detach --name "$PREFIX-$name" --network host --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
      "${job_env[@]}" --env AWS_BATCH_JOB_ID="check-$name" "$IMAGE" "$@" >/dev/null
}
# finish_job NAME: wait for the container, save its log, remove it; prints its exit code
finish_job() {
  local code
  code=$(pod wait "$PREFIX-$1")
  pod logs "$PREFIX-$1" >"$LOGS/job-$1.log" 2>&1 || true
  pod rm --force "$PREFIX-$1" >/dev/null 2>&1 || true
  echo "$code"
}
expect_exit() {  # expect_exit NAME WANTED GOT
  [ "$3" = "$2" ] || { tail -n 20 "$LOGS/job-$1.log" >&2; fail "job $1 exited $3, expected $2 (log $LOGS/job-$1.log)"; }
}

# --- 3a. a bad config: exit 2, before anything is spent ------------------------------------------
phase "bad config (exit 2)"
uri=$("${HELP[@]}" upload-bad "$S3" "$BUCKET" bad)
start_job bad run "$uri"
code=$(finish_job bad)
expect_exit bad 2 "$code"
grep -q 'config error' "$LOGS/job-bad.log" || fail "job bad exited 2 without a 'config error' log line"
step "bad config: exit 2, $(grep -o 'config error[^"]*' "$LOGS/job-bad.log" | head -n 1 | cut -c1-120)"

# --- 3b. a small real job: exit 0, outputs in the bucket -----------------------------------------
phase "small job (exit 0)"
uri=$("${HELP[@]}" upload "$S3" "$BUCKET" smoke "$ROWS")
start_job smoke run "$uri"
code=$(finish_job smoke)
expect_exit smoke 0 "$code"
"${HELP[@]}" check-done "$S3" "$BUCKET" smoke "$ROWS"

# --- 3c. SIGTERM while labeling: exit 3 within 30 s; a new container resumes to exit 0 ----------
phase "SIGTERM (exit 3)"
uri=$("${HELP[@]}" upload "$S3" "$BUCKET" sigterm "$ROWS")
"${HELP[@]}" oracle-reset "$ORACLE"
# The job definition's form: the URI as the Batch parameter, the command `run Ref::config_uri` (here from env).
job_env+=(--env BOOTSTRAPPER_CONFIG_URI="$uri")
start_job sigterm run Ref::config_uri
"${HELP[@]}" wait-labeling "$S3" "$BUCKET" sigterm 600 "${POD[@]}" inspect --format '{{.State.Running}}' "$PREFIX-sigterm" \
  || { pod logs "$PREFIX-sigterm" 2>&1 | tail -n 20 >&2; fail "no mid-run moment to signal"; }
# PID 1 is the image's ENTRYPOINT with the job's command, run as the image's USER (read from the image, so that
# the module path lives in the Dockerfile only).
want="$(pod image inspect "$IMAGE" --format '{{join .Config.Entrypoint " "}}') run Ref::config_uri "
pid1=$(pod exec "$PREFIX-sigterm" sh -c 'sed -n "s/^Uid:[[:space:]]*\([0-9]*\).*/\1/p" /proc/1/status; tr "\0" " " </proc/1/cmdline')
[ "$pid1" = "10001"$'\n'"$want" ] || fail "expected PID 1 to be '$want' as uid 10001, got: $pid1"
step "PID 1 in the container, uid 10001: ${want% }"
t_kill=$(date +%s%N)
pod kill --signal TERM "$PREFIX-sigterm" >/dev/null
code=$(timeout "$STOP_LIMIT_S" "${POD[@]}" wait "$PREFIX-sigterm") \
  || { pod kill --signal KILL "$PREFIX-sigterm" >/dev/null 2>&1 || true; fail "job sigterm still ran $STOP_LIMIT_S s after SIGTERM"; }
stop_ms=$(( ($(date +%s%N) - t_kill) / 1000000 ))
pod logs "$PREFIX-sigterm" >"$LOGS/job-sigterm.log" 2>&1 || true
pod rm --force "$PREFIX-sigterm" >/dev/null 2>&1 || true
expect_exit sigterm 3 "$code"
step "SIGTERM: exit 3 after $((stop_ms / 1000)).$((stop_ms % 1000 / 100)) s (limit $STOP_LIMIT_S s)"
"${HELP[@]}" check-stopped "$S3" "$BUCKET" sigterm

phase "resume (exit 0)"
start_job resume run Ref::config_uri  # Batch's retry: a new container, same job
code=$(finish_job resume)
expect_exit resume 0 "$code"
"${HELP[@]}" check-done "$S3" "$BUCKET" sigterm "$ROWS"
repeated=$("${HELP[@]}" oracle-repeated "$ORACLE")
[ "$repeated" -le 4 ] || fail "the resumed job paid for $repeated LLM calls twice (at most the 4 in flight at SIGTERM)"
step "resume: exit 0; LLM calls paid twice: $repeated (at most the 4 in flight at SIGTERM)"

phase end
step "all image checks passed in $(( $(date +%s) - T0 )) s:"
for line in "${TIMINGS[@]}"; do echo "    $line" >&2; done
step "disk: $(du -sh "$ROOT" | cut -f1) in $ROOT (kept: $base, $IMAGE; 'bash $0 --clean' removes it)"
step "run it by hand: ${POD[*]} run --rm --network host --ulimit nofile=20000:20000 $IMAGE --help"
