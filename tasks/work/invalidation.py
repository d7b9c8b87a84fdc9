"""One invalidation: delete (or, dry, list) every cached key a batch affects, revoking the
leases on them, then re-warm the affected patterns and refresh the hot keys it deleted.

A flush batch deletes every key under the primer prefix. Otherwise the batch's row images
(and the current images of the chunks its metadata changes refer to) become a ChangeIndex,
and one SCAN sweep deletes exactly the keys it affects (tasks.work.sweep); the keys the last
sweep of this process saw that the batch affects are deleted first, in one round trip
(tasks.work.known_keys). The passes of a listener batch, and when each is done, are
tasks.work.passes'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from adapters.redis.unlink import Heat
from core.batch import Batch
from core.flush_reason import FlushReason
from core.keys import KeyFilter
from core.predicate import ChangeIndex
from tasks.work import metrics, refresh, warming
from tasks.work.elements import chunk_images
from tasks.work.known_keys import known_for
from tasks.work.runtime import Runtime
from tasks.work.sweep import SweepResult, delete_keys, sweep

log = logging.getLogger(__name__)


def run_invalidation(
    rt: Runtime,
    batch: Batch,
    *,
    dry_run: bool = False,
    doomed: Callable[[KeyFilter], bool] | None = None,
) -> SweepResult:
    """Delete (or, dry, list) every cached key the batch affects, and revoke the leases on
    them (present or not), so that no fill or warm that read before the change can write
    after it. Then re-warm the affected patterns and refresh the hot keys it deleted.
    `doomed` narrows the keys below what the batch's images affect (operator commands).
    """
    index: ChangeIndex | None = None
    if not batch.flush:
        index = change_index(rt, batch)
        if not index:
            return SweepResult()
    heat = None if dry_run or index is None else refresh.heat_probe(rt)
    started = time.perf_counter()
    if index is None:
        result = _flush(rt, batch, dry_run)
    else:
        result = _sweep_affected(rt, batch, index, dry_run, doomed, heat)
    _log_unparseable(rt, result, dry_run)
    if not dry_run:
        seconds = time.perf_counter() - started
        metrics.record_sweep(rt.redis, rt.settings.cache.state_prefix, result, seconds)
        _rewarm(rt, batch, index, result, heat)
    return result


def change_index(rt: Runtime, batch: Batch) -> ChangeIndex:
    """What the batch changed: its row images and the current images of the chunks its
    metadata changes refer to."""
    images = set(batch.images)
    if batch.chunk_refs:
        images.update(chunk_images(rt.db(), rt.settings, batch.chunk_refs, batch.collations.realm))
    return ChangeIndex(images, batch.collations)


def _flush(rt: Runtime, batch: Batch, dry_run: bool) -> SweepResult:
    result = sweep(rt.redis, rt.keys, lambda key_filter: True, dry_run=dry_run)
    if not dry_run:
        metrics.FALLBACK_FLUSHES.labels(FlushReason.of_text(batch.reason)).inc()
    log.warning(
        "%s %d primer keys under %r (%s) up to %s",
        "WOULD FLUSH" if dry_run else "FLUSHED",
        result.deleted,
        rt.keys.head,
        batch.reason or "flush requested",
        batch.upto or "-",
        extra=_fields(batch, result),
    )
    return result


def _sweep_affected(
    rt: Runtime,
    batch: Batch,
    index: ChangeIndex,
    dry_run: bool,
    doomed: Callable[[KeyFilter], bool] | None,
    heat: Heat | None,
) -> SweepResult:
    # The keys the last sweep left that this batch affects go first (one UNLINK); the sweep
    # below stays the ground truth and finds the rest.
    known = known_for(rt.settings.cache.url, rt.keys) if not dry_run and doomed is None else None
    result, ahead = SweepResult(), []
    if known is not None:
        ahead = known.affected(rt.keys, index.affects, index.categories)
        result = delete_keys(rt.redis, ahead, heat)
    seen = known.start(rt.keys, ahead) if known is not None else None
    try:
        swept = sweep(
            rt.redis, rt.keys, doomed or index.affects, dry_run=dry_run, heat=heat, seen=seen
        )
    except BaseException:
        if known is not None:
            known.abandon()
        raise
    if known is not None:
        known.finish()
    result.add(swept)  # the sweep's leases on hot keys are newer than the early ones
    log.info(
        "%s %d of %d keys (%d leases revoked) for %d images (%d transactions)%s up to %s",
        "would invalidate" if dry_run else "invalidated",
        result.deleted,
        result.scanned,
        result.leases_revoked,
        index.size,
        batch.transactions,
        " [second pass]" if batch.second_pass else "",
        batch.upto or "-",
        extra=_fields(batch, result),
    )
    return result


def _log_unparseable(rt: Runtime, result: SweepResult, dry_run: bool) -> None:
    if result.unparseable:
        log.warning(
            "%s %d keys under %r that do not parse as cache keys (safe side), e.g. %s",
            "would delete" if dry_run else "deleted",
            result.unparseable,
            rt.keys.head,
            ", ".join(repr(key) for key in result.unparseable_sample),
        )


def _rewarm(
    rt: Runtime,
    batch: Batch,
    index: ChangeIndex | None,
    result: SweepResult,
    heat: Heat | None,
) -> None:
    """Queue the warms of the affected patterns and the refresh of the hottest keys deleted."""
    warming.after_invalidation(rt, index, behind=batch.behind)
    if heat is not None:
        warm_keys = {rt.keys.build(q) for q in warming.affected_patterns(rt.settings, index)}
        chosen = refresh.hottest(result, heat, rt.settings.refresh.max_keys, warm_keys)
        # The warm task fills the warm patterns' keys under its own lease (unless behind).
        warmed = set() if batch.behind else warm_keys
        refresh.schedule(rt, chosen, result.held, warmed=warmed)


def _fields(batch: Batch, result: SweepResult) -> dict[str, Any]:
    """The fields a JSON log line of a sweep carries (adapters.observability.logs)."""
    return {
        "term": batch.term,
        "seq": batch.seq,
        "gtid": batch.gtid,
        "upto": batch.upto,
        "second_pass": batch.second_pass,
        "keys_scanned": result.scanned,
        "keys_deleted": result.deleted,
    }
