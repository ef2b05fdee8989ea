# The sheet-bridge backend: gunicorn serving create_app() (docs/deploy.md).
# Configuration comes from the environment at run time, never from the image:
#   SHEET_BRIDGE_CONFIG   a bridge .toml or a folder of them (mount it; default /config)
#   SHEET_BRIDGE_LEDGER   postgresql://… (or an SQLite path on a mounted volume, one instance only)
#   META_CAPI_TOKEN, SHEET_BRIDGE_SECRET   secrets (Secret Manager as environment variables)
#   PORT                  set by Cloud Run; default 8080
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed from a copy of the source that is then removed: the image holds the package in
# site-packages, gunicorn and psycopg (binary wheel, libpq included), and no compiler or git.
# constraints.txt pins every dependency (and theirs) to the versions the tests ran against.
COPY pyproject.toml README.md constraints.txt /tmp/src/
COPY sheet_bridge /tmp/src/sheet_bridge
RUN pip install --constraint /tmp/src/constraints.txt '/tmp/src[server,postgres]' \
    && rm -rf /tmp/src \
    && groupadd --system --gid 10001 sheetbridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin sheetbridge \
    && mkdir -p /app /config /data \
    && chown sheetbridge:sheetbridge /data

WORKDIR /app
COPY gunicorn.conf.py /app/gunicorn.conf.py

USER 10001:10001
ENV PORT=8080 \
    SHEET_BRIDGE_CONFIG=/config
EXPOSE 8080

# The health check on its own port, answered by gunicorn's master from the workers' heartbeats:
# slow clients holding the request threads cannot make it fail (docs/operating.md). It answers
# without auth and touches neither the sheet nor Meta.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SHEET_BRIDGE_HEALTH_PORT', '8081'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "sheet_bridge.web.app:create_app()"]
