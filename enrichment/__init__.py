"""Lead enrichment: the domain core (no Flask, no Celery)."""
