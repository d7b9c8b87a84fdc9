"""The worker's per-task metrics, counted from Celery's task signals rather than in the task
bodies (as dramatiq's Prometheus middleware does for its actors): what a task returned is
what it did. The counts the work makes as it goes (keys deleted, sweep repeats, guard refusals
inside a warm) stay where the work counts them (tasks.work.metrics).

The handlers run in the process that ran the task (a pool child), like the counts they
replace: prometheus-client's multiprocess mode adds them up (tasks.work.multiprocess)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.signals import task_postrun, task_retry

from adapters.broker import CHECK_TASK, ENSURE_PARTITIONS_TASK, REFRESH_TASK, WARM_TASK
from core.partition_plan import Month, headroom_months
from tasks.warming import WarmAborted
from tasks.work import metrics
from tasks.work.warming import WarmResult


def count_warm(result: WarmResult) -> None:
    metrics.WARMS.labels(result.status).inc()
    metrics.WARM_SECONDS.observe(result.ms / 1000)


def _warm(done: Mapping[str, Any]) -> None:
    count_warm(WarmResult(done["key"], done["rows"], done["ms"], done["status"]))


def _refresh(done: Mapping[str, Any]) -> None:
    metrics.REFRESHES.inc(done["refreshed"])
    metrics.GUARD_REFUSALS.inc(done["refused"])


def _partitions(done: Mapping[str, Any]) -> None:
    if not done["dry_run"] and not done["skipped"] and done["through"]:
        now = datetime.now(UTC)
        headroom = headroom_months(Month.parse(done["through"]), now)
        metrics.PARTITIONS_HEADROOM.labels(done["table"]).set(headroom)
        metrics.PARTITIONS_LAST_SUCCESS.set(now.timestamp())


def _check(done: Mapping[str, Any]) -> None:
    for name in metrics.CHECK_RESULTS:
        metrics.CHECK_KEYS.labels(name).set(done[name])
    metrics.CHECK_LAST_RUN.set(time.time())


# What each task's return value counts, once it succeeded.
ON_SUCCESS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    WARM_TASK: _warm,
    REFRESH_TASK: _refresh,
    ENSURE_PARTITIONS_TASK: _partitions,
    CHECK_TASK: _check,
}


@task_postrun.connect
def _succeeded(sender: Any = None, retval: Any = None, state: str = "", **_: object) -> None:
    count = ON_SUCCESS.get(getattr(sender, "name", ""))
    if count is not None and state == states.SUCCESS and isinstance(retval, Mapping):
        count(retval)


@task_retry.connect
def _retried(reason: Any = None, **_: object) -> None:
    """A warm whose writes kept being refused runs again later: counted as aborted now."""
    aborted = getattr(reason, "exc", None)
    if isinstance(aborted, WarmAborted):
        count_warm(aborted.result)
