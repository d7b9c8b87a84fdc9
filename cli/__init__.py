"""The `primer-cache` command line.

The commands import tasks/ inside the functions that use it, never at the top: importing any
of tasks/ builds the Celery app, which reads the settings when imported (a bad configuration
would then stop even `primer-cache --help`) and costs about 0.16 s. Likewise `listen` alone
imports worker/ (the binlog reader, about 0.1 s) and `warm` alone Celery's result types.
Measured with `python -X importtime`: `primer-cache --help` takes about 0.3 s with them left out.
"""
