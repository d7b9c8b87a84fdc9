"""The invalidate task: one SCAN sweep per batch, deleting exactly the affected keys."""

from __future__ import annotations

import logging
import time

import pymysql
import redis

from core.batch import Batch
from core.predicate import ChangeIndex
from tasks import metrics
from tasks.app import INVALIDATE_TASK, app
from tasks.elements import chunk_images
from tasks.runtime import Runtime, runtime
from tasks.sweep import SweepResult, sweep

log = logging.getLogger(__name__)

# Faults worth retrying: the servers went away or timed out. Anything else is a bug or bad
# data and must surface, not loop.
TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
)


def run_invalidation(rt: Runtime, batch: Batch, *, dry_run: bool = False) -> SweepResult:
    """Delete (or, dry, list) every cached key the batch affects."""
    started = time.perf_counter()
    if batch.flush:
        result = sweep(rt.redis, rt.keys, lambda parsed: True, dry_run=dry_run)
        log.warning(
            "FLUSHED %d primer keys under %r (%s) up to %s",
            result.deleted,
            rt.keys.head,
            batch.reason or "flush requested",
            batch.upto or "-",
        )
    else:
        images = set(batch.images)
        if batch.chunk_refs:
            images.update(chunk_images(rt.db(), rt.settings, batch.chunk_refs))
        index = ChangeIndex(images)
        if not index:
            return SweepResult()
        result = sweep(
            rt.redis, rt.keys, lambda parsed: index.affects(parsed.filter), dry_run=dry_run
        )
        log.info(
            "invalidated %d of %d keys for %d images (%d transactions) up to %s",
            result.deleted,
            result.scanned,
            index.size,
            batch.transactions,
            batch.upto or "-",
        )
    if result.unparseable:
        log.warning("deleted %d keys under %r that do not parse", result.unparseable, rt.keys.head)
    if not dry_run:
        metrics.record_sweep(
            rt.redis, rt.settings.state_prefix, result, time.perf_counter() - started
        )
    return result


@app.task(
    name=INVALIDATE_TASK,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=0.5,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=None,  # an invalidation must not be dropped while the servers are away
)
def invalidate(batch: dict) -> dict:
    return run_invalidation(runtime(), Batch.from_json(batch)).to_json()
