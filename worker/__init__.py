"""Celery workers: the app (``worker.celery_app``) and thin tasks whose logic lives in ``server``."""
