"""The `primer-cache` command line.

The commands import tasks/ inside the functions that use it, never at the top: importing any
of tasks/ imports Celery and registers the tasks, about 0.16 s every command would pay.
Likewise `listen` alone imports worker/ (the binlog reader, about 0.1 s) and `warm` alone
Celery's result types. Measured with `python -X importtime`: `primer-cache --help` takes
about 0.3 s with them left out.
"""
