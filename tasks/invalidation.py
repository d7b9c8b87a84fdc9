"""The invalidation tasks: a listener batch's passes (tasks.work.passes) on the invalidate
queue."""

from __future__ import annotations

from typing import Any

from adapters.broker import INVALIDATE_TASK, REPLICA_FOLLOWUP_TASK
from tasks.app import app, runtime
from tasks.work import passes
from tasks.work.invalidation import run_invalidation
from tasks.work.retry import CONNECTION_ERRORS, retry_promptly

__all__ = ["invalidate", "replica_followup", "run_invalidation"]


@app.task(
    name=INVALIDATE_TASK,
    ignore_result=True,
    **retry_promptly(*passes.INVALIDATE_RETRIES),
    max_retries=None,  # an invalidation must not be dropped while the servers are away
)
def invalidate(payload: dict) -> dict[str, Any]:
    return passes.batch_pass(runtime(), payload)


@app.task(
    name=REPLICA_FOLLOWUP_TASK,
    ignore_result=True,
    **retry_promptly(*CONNECTION_ERRORS),
    max_retries=None,  # a stale fill from a late replica is only removed by this pass
)
def replica_followup(payload: dict, late: list[str], attempt: int) -> None:
    passes.followup_pass(runtime(), payload, late, attempt)
