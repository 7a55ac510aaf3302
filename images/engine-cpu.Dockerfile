# syntax=docker/dockerfile:1.7
# Engines on CPU (audit, distill, generate; pull workers and operator Jobs):
# `docker build -f images/engine-cpu.Dockerfile .` from the repository root.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.10-slim-bookworm
ARG RUST_IMAGE=docker.io/library/rust:1.83.0-slim-bookworm

FROM ${RUST_IMAGE} AS rust

# The Rust kernels (rust/, PyO3 abi3 wheel) built against the runtime's Python.
FROM ${PYTHON_IMAGE} AS kernels
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
ENV PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
WORKDIR /src
COPY rust/Cargo.toml rust/Cargo.lock rust/pyproject.toml rust/
COPY rust/src rust/src
COPY rust/python rust/python
RUN pip wheel --no-deps --wheel-dir /wheels ./rust

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk/nexa sdk/nexa
COPY sdk/nexa_forge sdk/nexa_forge
COPY store/nexa_store store/nexa_store
COPY api-gateway/nexa_gateway api-gateway/nexa_gateway
COPY engines/nexa_engines engines/nexa_engines
COPY --from=kernels /wheels /wheels
RUN pip install ".[engines]" /wheels/*.whl

FROM ${PYTHON_IMAGE}
# Engines write only to /work and /tmp (emptyDirs in Kubernetes); the root stays read-only.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/work NEXA_KERNELS=native
RUN groupadd --gid 10001 nexa && useradd --uid 10001 --gid 10001 --home-dir /work --shell /usr/sbin/nologin nexa \
    && mkdir -p /work && chown 10001:10001 /work
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /work
CMD ["python", "-m", "nexa_engines.worker", "--help"]
