"""Celery app and tasks: `celery -A tasks worker` / `celery -A tasks beat`."""

from tasks import multiprocess

# Before anything imports prometheus_client: a worker's pool children must record into files.
multiprocess.prepare()

from tasks import (  # noqa: E402, F401  (registers the tasks)
    consistency,
    invalidation,
    partitions,
    refresh,
    warming,
)
from tasks.app import app  # noqa: E402

__all__ = ["app"]
