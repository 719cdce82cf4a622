#!/bin/sh
# Selects the process this container runs.
set -e
# Multi-process metrics: every process of this container writes here; start it empty.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
role="${1:-api}"
[ "$#" -gt 0 ] && shift
case "$role" in
  api)     exec gunicorn -b 0.0.0.0:8000 -w "${WEB_CONCURRENCY:-4}" api.wsgi:app "$@" ;;
  worker)  exec celery -A workers.celery_app worker \
             -c "${WORKER_CONCURRENCY:-8}" --loglevel INFO "$@" ;;
  webhooks) exec celery -A workers.celery_app worker -Q webhooks -P threads \
             -c "${WEBHOOK_CONCURRENCY:-16}" --loglevel INFO "$@" ;;
  beat)    exec celery -A workers.celery_app beat --loglevel INFO \
             --schedule /tmp/celerybeat-schedule "$@" ;;
  flower)  # Flower shows task arguments and can control workers: never without credentials.
           if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
             echo "refusing to start Flower without FLOWER_BASIC_AUTH=user:password" >&2
             exit 64
           fi
           exec celery -A workers.celery_app flower --port=5555 "$@" ;;
  migrate) exec enrichment db upgrade ;;
  *)       exec "$role" "$@" ;;
esac
