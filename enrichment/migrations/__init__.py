"""Ordered SQL migrations, applied by `enrichment db upgrade`."""
