#!/bin/sh
# Selects the process this container runs: api | worker | webhooks | beat | flower | migrate |
# simulator, or any other command.
set -e
# Multi-process metrics: every process of this container writes here; start it empty.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
# No provider keys: use the provider simulator at PROVIDER_SIMULATOR_URL (compose sets it), the
# same rule as `make run`. A container with either key set calls the real providers.
if [ -n "${PROVIDER_SIMULATOR_URL:-}" ] \
   && [ -z "${PERPLEXITY_API_KEY:-}" ] && [ -z "${SOCIAL_LINKS_API_KEY:-}" ]; then
  export PERPLEXITY_API_KEY=simulator SOCIAL_LINKS_API_KEY=simulator \
         PERPLEXITY_API_BASE="$PROVIDER_SIMULATOR_URL" \
         SOCIAL_LINKS_API_BASE="$PROVIDER_SIMULATOR_URL"
fi
# .env.example's placeholders start the stack; say so until they are replaced.
case "${METRICS_TOKEN:-}" in change-me*)
  echo "warning: METRICS_TOKEN is the .env.example placeholder; set your own" >&2 ;; esac
case "${FLOWER_BASIC_AUTH:-}" in *change-me*)
  echo "warning: FLOWER_BASIC_AUTH is the .env.example placeholder; set your own" >&2 ;; esac
log_level="${LOG_LEVEL:-INFO}"  # gunicorn's own lines; the app, workers and beat read LOG_LEVEL
# --quiet: no start-up banner on stdout, so every line is a log line (JSON with LOG_FORMAT).
role="${1:-api}"
[ "$#" -gt 0 ] && shift
case "$role" in
  # gthread: the lowest tail latency near capacity of the classes measured (bench/PROFILES.md).
  api)     exec gunicorn -b 0.0.0.0:8000 -w "${WEB_CONCURRENCY:-4}" -k gthread \
             --threads "${WEB_THREADS:-4}" --log-level "$log_level" \
             api.wsgi:app "$@" ;;
  worker)  exec celery -A workers.celery_app --quiet worker \
             -c "${WORKER_CONCURRENCY:-8}" "$@" ;;
  webhooks) exec celery -A workers.celery_app --quiet worker -Q webhooks -P threads -n webhooks@%h \
             -c "${WEBHOOK_CONCURRENCY:-16}" "$@" ;;
  beat)    exec celery -A workers.celery_app --quiet beat \
             --schedule /tmp/celerybeat-schedule "$@" ;;
  flower)  # Flower shows task arguments and can control workers: never without credentials.
           if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
             echo "refusing to start Flower without FLOWER_BASIC_AUTH=user:password" >&2
             exit 64
           fi
           exec celery -A workers.celery_app --quiet flower --port=5555 "$@" ;;
  migrate) enrichment db upgrade
           # As `make run`: the Stripe catalog the workspaces subscribe to (idempotent). A
           # failure does not stop the stack: workspaces are attached to Stripe once a later
           # run succeeds (`docker compose run --rm migrate`).
           if [ -n "${STRIPE_API_KEY:-}" ]; then
             enrichment billing sync-catalog \
               || echo "warning: Stripe catalog not synced (enrichment billing sync-catalog)" >&2
           fi ;;
  simulator) exec python -m simulators.providers --host 0.0.0.0 --port 8010 \
               --perplexity-rps "${PERPLEXITY_PLAN_RPS:-2.0}" \
               --social-rps "${SOCIAL_LINKS_PLAN_RPS:-10}" "$@" ;;
  *)       exec "$role" "$@" ;;
esac
