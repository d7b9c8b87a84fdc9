"""What the tasks do, without Celery: invalidation passes and sweeps, warming and refresh,
partitions, the consistency check, start-up checks, the worker heartbeat, metrics, the
per-process connections. Nothing here imports the Celery app or the task modules above it
(tasks.app, tasks.invalidation, ...): they call in, never the other way."""
