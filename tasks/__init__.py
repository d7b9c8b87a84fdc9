"""Celery app and tasks: `celery -A tasks worker` / `celery -A tasks beat`."""

from tasks import invalidation, partitions, warming  # noqa: F401  (registers the tasks)
from tasks.app import app

__all__ = ["app"]
