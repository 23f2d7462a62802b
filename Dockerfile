# fivestep API server. Build: `docker build -t fivestep .`; run with compose.yaml (PostgreSQL + MinIO).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system fivestep \
    && useradd --system --gid fivestep --home-dir /app --no-create-home --shell /usr/sbin/nologin fivestep

# Install the project from a throwaway copy of the sources; only the installed packages stay in the image.
# README.md is part of the package metadata (pyproject.toml's `readme`).
WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY server ./server
COPY schemas ./schemas
COPY sync ./sync
COPY media ./media
RUN pip install . \
    && rm -rf /tmp/src

# The working directory holds ./var, used only in the embedded mode (SQLite, local blobs, generated secret).
WORKDIR /app
RUN mkdir -p /app/var && chown -R fivestep:fivestep /app
USER fivestep

EXPOSE 8000

# /health answers 200 when the database and the blob store answer, else 503 (urlopen raises: unhealthy).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# No arguments: migrate, then replace the shell with the server (so it gets SIGTERM and stops gracefully).
# With arguments, run that fivestep command instead, e.g. `docker compose run --rm fivestep create-user ...`.
ENTRYPOINT ["/bin/sh", "-c", "[ $# -gt 0 ] && exec fivestep \"$@\"; fivestep migrate && exec fivestep serve --host 0.0.0.0 --port 8000", "fivestep"]
