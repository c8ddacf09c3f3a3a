# syntax=docker/dockerfile:1
# The eddy worker image (`eddy run SPEC... --port 9400`). CPU by default; the CUDA variant only changes the index
# torch is installed from, because CUDA wheels bring their own CUDA runtime (the host needs the NVIDIA driver and
# container toolkit, nothing else):
#
#   docker build -t eddy:0.1.0 .
#   docker build --build-arg TORCH_VARIANT=cu128 -t eddy:0.1.0-cuda .
#
# TORCH_VARIANT is a wheel index of download.pytorch.org/whl/: cpu, or a CUDA build torch is published for
# (cu126, cu128, ...). The torch version is the one pyproject.toml pins. docs/deploy.md has the details.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment in /opt/eddy with the project and its dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eddy
ENV PATH=/opt/eddy/bin:$PATH
WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml changes, not on every code change.
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
RUN python deploy/docker/requirements.py pyproject.toml --torch torch.txt --rest rest.txt \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" -r torch.txt \
    && pip install -r rest.txt

# The project itself (the packages pyproject.toml's [tool.setuptools.packages.find] includes).
COPY connectors connectors
COPY pipelines pipelines
COPY learners learners
COPY inference inference
COPY kernels kernels
RUN pip install --no-deps . && pip check

# -- runtime: the environment, a non-root user, no compilers ----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="eddy" \
      org.opencontainers.image.description="Eddy worker: streaming ML pipelines on Kafka topics" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.eddy.torch-variant="${TORCH_VARIANT}"

RUN groupadd --system --gid 10001 eddy \
    && useradd --system --uid 10001 --gid eddy --home-dir /home/eddy --create-home --shell /usr/sbin/nologin eddy
COPY --from=build /opt/eddy /opt/eddy

# EDDY_HOME holds the worker's local files (Faust's data directory); it and HOME (torch/triton caches) are the only
# places the worker writes besides /tmp, so Kubernetes can run it with a read-only root filesystem.
ENV PATH=/opt/eddy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/eddy \
    EDDY_HOME=/home/eddy/.eddy
WORKDIR /home/eddy
USER 10001:10001

# /metrics, /healthz, /readyz and /status of `eddy run --port 9400`.
EXPOSE 9400
# urllib, not curl: the slim image has no curl. urlopen raises (exit 1) on refusal, timeout or an HTTP error.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=4)"]

ENTRYPOINT ["eddy"]
# Every spec mounted at /specs in one worker; compose and the Helm chart pass one spec per worker instead.
CMD ["run", "/specs", "--port", "9400"]
