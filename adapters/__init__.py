"""I/O that more than one entry point speaks, grouped by the service it talks to: redis/,
mysql/, broker (the Celery broker: task names, queues, the app publishers send through),
observability/ (what a process shows its operators), and unreachable (a failure of any of them
as one line). Imports run config <- core <- adapters <- worker, tasks <- cli, reference_server."""
