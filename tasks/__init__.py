"""The Celery entry point: `celery -A tasks worker` / `celery -A tasks beat` load this package,
which registers the tasks (one module per family: invalidation, warming, partitions,
maintenance), the process hooks (lifecycle) and the per-task metrics (task_metrics) on the app
(app). What the tasks do lives below, in tasks.work, which imports none of these."""

from tasks.work import multiprocess

# Before anything imports prometheus_client: a worker's pool children must record into files.
multiprocess.prepare()

from tasks import (  # noqa: E402, F401  (registers the tasks and the signal handlers)
    invalidation,
    lifecycle,
    maintenance,
    partitions,
    task_metrics,
    warming,
)
from tasks.app import app  # noqa: E402

__all__ = ["app"]
