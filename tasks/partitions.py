"""The partitions task: keep the configured analytics table's monthly partitions ahead
(tasks.work.partitions), daily from beat."""

from __future__ import annotations

from typing import Any

from adapters.broker import ENSURE_PARTITIONS_TASK
from tasks.app import app, settings
from tasks.work.partitions import (
    DatabaseUnavailable,
    Result,
    ensure_from_settings,
    list_partitions,
    read_partitioning,
)

# Result, list_partitions and read_partitioning are imported from here by cli/.
__all__ = [
    "DatabaseUnavailable",
    "Result",
    "ensure_from_settings",
    "ensure_partitions_task",
    "list_partitions",
    "read_partitioning",
]


@app.task(
    name=ENSURE_PARTITIONS_TASK,
    # Only a lost or refused connection is transient here; an unsupported table or a metadata
    # lock held for all attempts needs an operator, and beat runs the task again tomorrow.
    autoretry_for=(DatabaseUnavailable,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def ensure_partitions_task(
    months_ahead: int | None = None, retain_months: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Celery entry point: the configured table; returns `Result.to_json()`."""
    result = ensure_from_settings(
        settings(), months_ahead=months_ahead, retain_months=retain_months, dry_run=dry_run
    )
    return result.to_json()
