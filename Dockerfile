# mpg-operator container image: docker build --build-arg VERSION=X.Y.Z -t mpg-operator:X.Y.Z .
# Published for linux/amd64 and linux/arm64 by .github/workflows/release.yml (ARG VERSION below is
# the release version: scripts/release_version.py checks it).
# Two stages: the builder turns the source into a wheel and installs it with its runtime
# dependencies into /opt/venv; the final stage gets only that virtualenv (no compiler, no wheels,
# no pip), runs as a non-root numeric UID and works with a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Same steps as tests/deploy/test_deploy_image_install.py: build the wheel (build dependencies come
# from pyproject's [build-system] in an isolated environment), then install it into a clean
# virtualenv with only its runtime dependencies, compiled to bytecode.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --compile /wheels/mpg_operator-*.whl \
 && /opt/venv/bin/pip uninstall --yes pip \
 && /opt/venv/bin/mpg-operator --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mpg-operator" \
      org.opencontainers.image.description="Kubernetes operator for ClickHouse Cloud Managed Postgres" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own pip is not needed at run time.
RUN python -m pip uninstall --yes pip setuptools wheel 2>/dev/null; \
    rm -rf /root/.cache
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["mpg-operator"]
CMD ["run", "--all-namespaces"]
