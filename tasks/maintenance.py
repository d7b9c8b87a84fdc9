"""Periodic upkeep on the maintenance queue: the consistency check of a random sample of cached
keys (tasks.work.consistency). The worker's heartbeat and start-up checks are not tasks:
tasks.lifecycle runs them."""

from __future__ import annotations

import logging
from typing import Any

from adapters.broker import CHECK_TASK
from tasks.app import app, runtime
from tasks.work.consistency import check_cache

log = logging.getLogger(__name__)


@app.task(name=CHECK_TASK, ignore_result=True)
def check_sample(sample: int | None = None) -> dict[str, Any]:
    """Beat's periodic check of `check.sample` random keys; logs what it found (its gauges:
    tasks.task_metrics)."""
    rt = runtime()
    result = check_cache(rt, sample or rt.settings.check.sample or None)
    report = log.info if result.ok else log.error
    report(
        "consistency check of %d keys: %d stale, %d undecodable, %d warm keys missing%s",
        result.checked,
        len(result.stale),
        len(result.undecodable),
        len(result.missing),
        f" (stale: {', '.join(result.stale[:5])})" if result.stale else "",
    )
    return result.to_json()
