"""The invalidate task: one SCAN sweep per batch, deleting exactly the affected keys."""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.batch import Batch
from core.keys import KeyFilter
from core.predicate import ChangeIndex
from tasks import metrics, warming
from tasks.app import INVALIDATE_TASK, app
from tasks.elements import chunk_images
from tasks.retry import CONNECTION_ERRORS, retry_on
from tasks.runtime import Runtime, runtime
from tasks.sweep import SweepResult, sweep
from worker.flow import mark_completed

log = logging.getLogger(__name__)


def run_invalidation(
    rt: Runtime,
    batch: Batch,
    *,
    dry_run: bool = False,
    doomed: Callable[[KeyFilter], bool] | None = None,
) -> SweepResult:
    """Delete (or, dry, list) every cached key the batch affects.

    Order matters for race-free warming: warm generations are bumped before the sweep
    deletes, so a warm that read the database before the change cannot write after it.
    `doomed` narrows the keys below what the batch's images affect (operator commands).
    """
    index: ChangeIndex | None = None
    if not batch.flush:
        images = set(batch.images)
        if batch.chunk_refs:
            images.update(chunk_images(rt.db(), rt.settings, batch.chunk_refs))
        index = ChangeIndex(images)
        if not index:
            return SweepResult()
    if not dry_run:
        warming.before_delete(rt, index)
    if index is None:
        result = sweep(rt.redis, rt.keys, lambda key_filter: True, dry_run=dry_run)
        log.warning(
            "%s %d primer keys under %r (%s) up to %s",
            "WOULD FLUSH" if dry_run else "FLUSHED",
            result.deleted,
            rt.keys.head,
            batch.reason or "flush requested",
            batch.upto or "-",
        )
    else:
        result = sweep(rt.redis, rt.keys, doomed or index.affects, dry_run=dry_run)
        log.info(
            "%s %d of %d keys for %d images (%d transactions)%s up to %s",
            "would invalidate" if dry_run else "invalidated",
            result.deleted,
            result.scanned,
            index.size,
            batch.transactions,
            " [second pass]" if batch.second_pass else "",
            batch.upto or "-",
        )
    if result.unparseable:
        log.warning("deleted %d keys under %r that do not parse", result.unparseable, rt.keys.head)
    if not dry_run:
        metrics.record_sweep(rt.redis, rt.settings.state_prefix, result)
        warming.after_invalidation(rt, batch, index)
    return result


@app.task(
    name=INVALIDATE_TASK,
    ignore_result=True,
    **retry_on(*CONNECTION_ERRORS),
    max_retries=None,  # an invalidation must not be dropped while the servers are away
)
def invalidate(batch: dict) -> dict:
    rt, parsed = runtime(), Batch.from_json(batch)
    retried = False
    try:
        return run_invalidation(rt, parsed).to_json()
    except CONNECTION_ERRORS:
        retried = True  # autoretry runs it again: it is not finished
        raise
    finally:
        # Tell the publishing listener this batch is done (or failed for good), so its
        # backpressure does not wait on it.
        if parsed.term and not parsed.second_pass and not retried:
            mark_completed(rt.redis, rt.settings.state_prefix, parsed.term)
