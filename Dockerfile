# syntax=docker/dockerfile:1
# One image for every role; the command picks it: agss-vos api | grpc | worker | serve.
# The PyTorch wheel is a CUDA build; the same image runs on CPU when no GPU is present.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, so that code changes do not re-download them.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

FROM deps AS build
# The package is built as a wheel (the gRPC stubs are generated from proto/ by the build) and installed
# like any user would install it: nothing of the source tree is needed at run time.
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY proto ./proto
COPY service ./service
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-deps /wheels/agss_vos_service-*.whl
# Outside the source tree: the installed package imports its stubs and finds its default model.
WORKDIR /
RUN python -c "import service.grpc.server, service.vos.checkpoint as c; assert (c.BUNDLED_MODELS / 'agss-lite').is_dir()"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGSS_HTTP_HOST=0.0.0.0 \
    AGSS_DATA_DIR=/data \
    AGSS_ROLE=api
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin agss \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 8000 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-m", "service.runtime.healthcheck"]
ENTRYPOINT ["agss-vos"]
CMD ["serve"]
