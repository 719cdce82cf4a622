# One image for api / worker / beat / flower / migrate, selected by the first argument.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY setup.cfg pyproject.toml README.md beat_schedule.py constraints.txt ./
COPY enrichment ./enrichment
COPY api ./api
COPY workers ./workers
COPY simulators ./simulators
RUN pip install -c constraints.txt .
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER app
EXPOSE 8000 5555
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["api"]
