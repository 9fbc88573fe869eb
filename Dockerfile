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
COPY README.md ./
COPY proto ./proto
COPY service ./service
# Editable install keeps proto/ and models/ beside the package, where the code looks for them.
RUN pip install --no-cache-dir --no-deps -e . \
    && python -m service.grpc.stubs \
    && python -c "import service.grpc.server"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGSS_HTTP_HOST=0.0.0.0 \
    AGSS_DATA_DIR=/data \
    AGSS_ROLE=api
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin agss \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /app /app
COPY --chown=10001:10001 models /app/models
WORKDIR /app
USER 10001:10001
EXPOSE 8000 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-m", "service.healthcheck"]
ENTRYPOINT ["agss-vos"]
CMD ["serve"]
