# syntax=docker/dockerfile:1.7
# The Nexa gateway: `docker build -f images/gateway.Dockerfile .` from the repository root.
# Only the gateway extra is installed: no ML stack; numpy and pyarrow are its only numeric libraries.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.10-slim-bookworm

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
RUN pip install ".[gateway]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 NEXA_HOME=/tmp/nexa
RUN groupadd --gid 10001 nexa && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin nexa
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "nexa_gateway"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
