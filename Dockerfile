# xconsumer node image.
#
#   docker build -t xconsumer:local .
#   docker run --rm -e XCONSUMER_ZK=zk1:2181 -p 127.0.0.1:8001:8000 xconsumer:local
#
# The image ships the example app.toml and works/ under /app; mount your own over them:
#   -v "$PWD/app.toml:/app/app.toml:ro" -v "$PWD/works:/app/works:ro"
# The example app.toml points at 127.0.0.1:2181, which inside a container is the container
# itself, so set XCONSUMER_ZK (see docker-compose.yml for a complete three-node cluster).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user; /app stays root-owned and read-only for it.
RUN groupadd --system --gid 10001 xconsumer \
 && useradd --system --uid 10001 --gid xconsumer --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin xconsumer

# Install the package (and its kazoo/flask/loguru dependencies) into the system
# site-packages, then drop the sources.
COPY pyproject.toml README.md /tmp/xconsumer-src/
COPY xconsumer /tmp/xconsumer-src/xconsumer
RUN pip install --no-cache-dir /tmp/xconsumer-src \
 && rm -rf /tmp/xconsumer-src

# Example configuration and handler package; users mount their own over these paths.
COPY app.toml /app/app.toml
COPY works /app/works
WORKDIR /app

# Inside a container the admin HTTP must listen on all interfaces, or a published port
# (-p / compose "ports:") cannot reach it. Outside containers the default stays 127.0.0.1.
# Publish it on the host's loopback only (127.0.0.1:HOST:8000), or set XCONSUMER_ADMIN_TOKEN
# before exposing it any wider.
ENV XCONSUMER_ADMIN_HOST=0.0.0.0
EXPOSE 8000

USER xconsumer

# slim has no curl: probe /healthz (200 only while connected to ZooKeeper) with urllib.
# Follows XCONSUMER_ADMIN_PORT if that is overridden; 8000 otherwise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('XCONSUMER_ADMIN_PORT') or '8000'), timeout=4)" || exit 1

# SIGTERM makes a node leave the cluster gracefully (exit 0); give it time with
# `docker stop -t 30` / compose `stop_grace_period`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["xconsumer"]
CMD ["run", "--config", "/app/app.toml", "--works", "/app/works"]
