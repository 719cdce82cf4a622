# One image for every role (api, worker, webhooks, beat, flower, migrate, simulator), selected
# by the first argument: docker-entrypoint.sh.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pg_restore and pg_dump for `enrichment db restore` and backups (Debian bookworm: 15, as the
# compose PostgreSQL).
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY setup.cfg pyproject.toml README.md LICENSE beat_schedule.py gunicorn.conf.py constraints.txt ./
COPY enrichment ./enrichment
COPY api ./api
COPY workers ./workers
COPY simulators ./simulators
RUN pip install -c constraints.txt .
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER app
# API, Flower, provider simulator, a worker's metrics (WORKER_METRICS_PORT in compose)
EXPOSE 8000 5555 8010 9808
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["api"]
