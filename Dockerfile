# syntax=docker/dockerfile:1
#
# The jsarchive image. One image, two ways to run it (docs/cloud.md):
#   - a container job (Cloud Run job, ECS/Batch task, Kubernetes job): arguments are a jsarchive command line,
#     e.g. `account backup gs://bucket/prefix --log-json`; Cloud Run's task index shards it;
#   - an AWS Lambda container image: Lambda sets AWS_LAMBDA_RUNTIME_API, and the entry starts the Lambda runtime
#     interface client (awslambdaric) with pipeline.entry.handlers.lambda_handler.
# Build: docker build -t jsarchive .   Try: docker run --rm jsarchive --version

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A compiler for the optional S2 C accelerator (setup.py); only the built package reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY sinks ./sinks
# all: S3, GCS and both KMS clients; lambda: awslambdaric (ships a manylinux wheel: no build tools needed for it).
RUN python -m venv /opt/jsarchive \
    && /opt/jsarchive/bin/pip install --no-cache-dir --disable-pip-version-check ".[all,lambda]" \
    && /opt/jsarchive/bin/python -c "import pipeline.entry.handlers, awslambdaric, boto3, google.auth, requests, google_crc32c"

FROM ${PYTHON_IMAGE}
# Non-root. Lambda runs images read-only (only /tmp is writable) and jsarchive writes nothing: the pipeline
# streams without temporary files, so no writable directory is needed here.
RUN groupadd --system --gid 10001 jsarchive \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/jsarchive --create-home \
        --shell /usr/sbin/nologin jsarchive
COPY --from=build /opt/jsarchive /opt/jsarchive
ENV PATH=/opt/jsarchive/bin:$PATH \
    HOME=/home/jsarchive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/jsarchive
# Under Lambda the arguments (CMD) are ignored unless they name a handler; elsewhere they are the command line.
ENTRYPOINT ["python", "-m", "pipeline.entry.handlers"]
CMD ["--help"]
