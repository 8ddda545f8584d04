"""Celery tasks, each a thin wrapper around library code in ``server``."""
