"""Adapters shared by the listener (worker/) and the tasks (tasks/): Redis and MySQL I/O that
both sides speak. Imports run config <- core <- adapters <- worker, tasks, cli."""
