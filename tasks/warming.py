"""The warm-queue tasks: warm one pattern, warm every configured pattern, refresh the hot keys
an invalidation deleted (tasks.work.warming, tasks.work.refresh)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from adapters.broker import REFRESH_TASK, WARM, WARM_ALL_TASK, WARM_TASK, queue_name
from config.query import Query
from tasks.app import app, runtime
from tasks.work.refresh import refresh_and_record
from tasks.work.retry import CONNECTION_ERRORS, retry_on
from tasks.work.runtime import Runtime
from tasks.work.warming import WarmResult, warm_query

log = logging.getLogger(__name__)

ABORT_RETRIES = 100  # Celery retries of a warm that kept aborting (generous: writes settle)


class WarmAborted(Exception):
    """A warm's writes kept being refused (its key invalidated meanwhile): it runs again later.
    Carries the result, which the warm metrics count (tasks.task_metrics)."""

    def __init__(self, result: WarmResult) -> None:
        super().__init__(f"warm of {result.key} aborted")
        self.result = result


@app.task(
    bind=True,
    name=WARM_TASK,
    **retry_on(*CONNECTION_ERRORS),
    max_retries=ABORT_RETRIES,
)
def warm(self: Any, params: dict) -> dict:
    """Warm one pattern (the primer server's parameter names). Retries itself while its
    writes abort."""
    query = Query.from_params(params)
    result = warm_query(runtime(), query)
    if result.status == "aborted":
        if self.request.retries < ABORT_RETRIES:
            raise self.retry(exc=WarmAborted(result), countdown=random.uniform(0.05, 0.5))
        log.error("gave up warming %s after %d retries", result.key, self.request.retries)
    return result.to_json()


@app.task(
    name=WARM_ALL_TASK,
    **retry_on(*CONNECTION_ERRORS, BrokerError),
    max_retries=ABORT_RETRIES,
)
def warm_all() -> list[dict]:
    """Enqueue one warm task per configured pattern (each retries and collapses on its own)."""
    rt = runtime()
    return enqueue_warms(rt, rt.settings.warm.patterns)


def enqueue_warms(rt: Runtime, queries: Iterable[Query]) -> list[dict]:
    """Send one warm task per query; [{"key", "task_id"}] in the same order."""
    sent = []
    for query in queries:
        result = app.send_task(
            WARM_TASK, args=[query.to_params()], queue=queue_name(rt.settings, WARM)
        )
        sent.append({"key": rt.keys.build(query), "task_id": result.id})
    return sent


@app.task(name=REFRESH_TASK, ignore_result=True, **retry_on(*CONNECTION_ERRORS), max_retries=5)
def refresh(keys: list[str], held: dict[str, str] | None = None) -> dict:
    return refresh_and_record(runtime(), [str(key) for key in keys], held).to_json()
