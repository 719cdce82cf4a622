"""Celery adapter: the app, queues and routing, and thin tasks calling `enrichment`."""
