# syntax=docker/dockerfile:1
#
# chatbot: web UI and CLI in one image.
#
#   docker build -t chatbot .
#   docker run -it --rm -p 8080:8080 -v "$PWD/.env:/data/.env" chatbot             # web UI
#   docker run -it --rm --network host -v "$PWD/.env:/data/.env" chatbot cli       # terminal
#
# /data is the working directory and a volume: the settings file (/data/.env, read
# as ./.env) and the SQLite database (/data/chatbot.db) live there.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: the chatbot wheel plus wheels of all its dependencies -----------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chatbot ./chatbot
COPY web ./web
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- runtime: only the installed wheels, run as an unprivileged user -------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="chatbot" \
      org.opencontainers.image.description="Claude, OpenAI, Ollama and OpenRouter behind one streaming chat UI and CLI" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHATBOT_DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8080

# jemalloc hands the memory of a busy spell back to the system, which CPython's own
# allocator mostly keeps (docs/operations.md, "Memory"). The version is the base image's.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    PYTHONMALLOC=malloc \
    MALLOC_CONF=background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/chatbot-*.whl \
    && groupadd --system --gid 10001 chatbot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin chatbot \
    && mkdir -p /data \
    && chown 10001:10001 /data

WORKDIR /data
VOLUME /data
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

ENTRYPOINT ["chatbot"]
CMD ["web"]
