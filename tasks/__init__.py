"""Celery app and tasks: `celery -A tasks worker` / `celery -A tasks beat`."""

from tasks import invalidation  # noqa: F401  (registers the task)
from tasks.app import app

__all__ = ["app"]
