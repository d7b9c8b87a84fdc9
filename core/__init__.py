"""The pure core: key format, the affected-key predicate, row images to changes, partition plans.

Nothing here does I/O or imports Redis, MySQL or Celery.
"""
