"""The invalidate task: one SCAN sweep per batch, deleting exactly the affected keys; and the
task's side of the completion protocol (adapters.redis.completion).

A listener batch is done once every pass has run: with `cache.second_pass_ms` > 0 the first
pass queues the delayed second pass and reports progress, and the second pass reports done;
with 0 the first pass reports done. Where read replicas are configured, the first pass waits
for them before it sweeps (tasks/replica_wait.py); a replica late beyond `replicas.max_wait_s`
gets follow-up passes, and the batch is only done after the last of them (and its second
pass): it reports `swept` meanwhile, so it holds the checkpoint but not the backpressure.
A batch that fails for anything but a connection fault
(a bug, a value the code cannot handle) falls back to a flush of the primer prefix, logged
at ERROR and counted: never retried forever, never forgotten. The flush carries the batch's
position (GTID), so it waits for the read replicas and gets follow-up passes like any batch
(a flush without it would be done at once, and a reader could refill a key from a late
replica with the old rows for good: issue 22, item 3); it is done once they ran. Connection
faults, the broker's included (a follow-up that cannot be queued), retry (with backoff)
until the servers are back; a retry the broker refuses too is dropped by Celery, and the
listener publishes the batch again at its deadline, since it was never reported done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from adapters.redis import stats
from adapters.redis.completion import Completion
from core.batch import Batch
from core.keys import KeyFilter
from core.predicate import ChangeIndex
from tasks import metrics, refresh, warming
from tasks.app import INVALIDATE_TASK, REPLICA_FOLLOWUP_TASK, app, queue_name, send
from tasks.elements import chunk_images
from tasks.known_keys import known_for
from tasks.replica_wait import poll_late, send_followup, wait_before_sweep
from tasks.retry import CONNECTION_ERRORS, retry_on
from tasks.runtime import Runtime, runtime
from tasks.sweep import SweepResult, delete_keys, sweep
from tasks.visibility import CommitsPending, wait_for_commits

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
        images = set(batch.images)
        if batch.chunk_refs:
            images.update(
                chunk_images(rt.db(), rt.settings, batch.chunk_refs, batch.collations.realm)
            )
        index = ChangeIndex(images, batch.collations)
        if not index:
            return SweepResult()
    heat = None if dry_run or index is None else refresh.heat_probe(rt)
    started = time.perf_counter()
    # The keys the last sweep left that this batch affects go first (one UNLINK); the sweep
    # below stays the ground truth and finds the rest.
    known = (
        known_for(rt.settings.redis_url, rt.keys)
        if not dry_run and index is not None and doomed is None
        else None
    )
    early, ahead = SweepResult(), []
    if known is not None and index is not None:
        ahead = known.affected(rt.keys, index.affects, index.categories)
        early = delete_keys(rt.redis, ahead, heat)
    if index is None:
        result = sweep(rt.redis, rt.keys, lambda key_filter: True, dry_run=dry_run)
        if not dry_run:
            metrics.FALLBACK_FLUSHES.labels(metrics.flush_reason(batch.reason)).inc()
        log.warning(
            "%s %d primer keys under %r (%s) up to %s",
            "WOULD FLUSH" if dry_run else "FLUSHED",
            result.deleted,
            rt.keys.head,
            batch.reason or "flush requested",
            batch.upto or "-",
            extra=_fields(batch, result),
        )
    else:
        seen = known.start(rt.keys, ahead) if known is not None else None
        try:
            result = sweep(
                rt.redis, rt.keys, doomed or index.affects, dry_run=dry_run, heat=heat, seen=seen
            )
        except BaseException:
            if known is not None:
                known.abandon()
            raise
        if known is not None:
            known.finish()
        early.add(result)  # the sweep's leases on hot keys are newer than the early ones
        result = early
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
    if result.unparseable:
        log.warning(
            "%s %d keys under %r that do not parse as cache keys (safe side), e.g. %s",
            "would delete" if dry_run else "deleted",
            result.unparseable,
            rt.keys.head,
            ", ".join(repr(key) for key in result.unparseable_sample),
        )
    if not dry_run:
        metrics.record_sweep(
            rt.redis, rt.settings.state_prefix, result, time.perf_counter() - started
        )
        warming.after_invalidation(rt, index, behind=batch.behind)
        if heat is not None:
            warm_keys = {rt.keys.build(q) for q in warming.affected_patterns(rt.settings, index)}
            chosen = refresh.hottest(result, heat, rt.settings.refresh_max_keys, warm_keys)
            # The warm task fills the warm patterns' keys under its own lease (unless behind).
            warmed = set() if batch.behind else warm_keys
            refresh.schedule(rt, chosen, result.held, warmed=warmed)
    return result


def queue_second_pass(rt: Runtime, batch: Batch) -> bool:
    """Queue the batch's delayed second pass (the guard against stale read-through fills);
    True once the broker holds it."""
    try:
        send(
            INVALIDATE_TASK,
            [replace(batch, second_pass=True).to_json()],
            queue_name(rt.settings, "invalidate"),
            countdown=rt.settings.second_pass_ms / 1000,
        )
    except BrokerError as exc:
        # Not done, so not reported: the listener publishes the batch again at its deadline.
        log.error("could not queue the second pass of batch %s: %s", _name(batch), exc)
        return False
    return True


def fallback_flush(rt: Runtime, batch: Batch, exc: BaseException) -> tuple[SweepResult, list[str]]:
    """The batch cannot be processed: flush every primer key instead (safe side), loudly.
    The flush is the batch under another name (its term, seq and GTID): it waits for the
    read replicas first and queues a follow-up flush for those late. Returns the flush's
    result and the ids of the late replicas (the follow-ups then finish the batch). A
    connection fault during the flush, or a follow-up the broker refuses, propagates, and
    the task retries."""
    reason = type(exc).__name__
    log.error(
        "invalidation of batch %s failed (%s: %s): FLUSHING every primer key instead",
        _name(batch),
        reason,
        exc,
        exc_info=exc,
    )
    flush = replace(
        batch,
        images=frozenset(),
        chunk_refs=frozenset(),
        flush=True,
        reason=f"fallback after {reason}",
    )
    late = wait_before_sweep(rt, flush)
    result = run_invalidation(rt, flush)
    stats.add(
        rt.redis,
        rt.settings.state_prefix,
        fallback_flushes=1,
        **{f"fallback_flushes:{reason}": 1},
    )
    if late:
        send_followup(rt, flush, late, attempt=1)
    return result, late


def finish(rt: Runtime, completion: Completion, batch: Batch) -> None:
    """After a pass ran: report the batch done, or its second pass queued (which then
    completes it)."""
    if batch.second_pass or rt.settings.second_pass_ms <= 0:
        report_done(rt, completion, batch)
    elif queue_second_pass(rt, batch):
        completion.progress(batch)


# A batch whose rows were still locked was swept, and is retried until they are committed.
_INVALIDATE_RETRIES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, CommitsPending)


def report_done(rt: Runtime, completion: Completion, batch: Batch) -> None:
    """Report the batch done, once the cache Redis's replicas have its deletes
    (cache.wait_replicas; adapters.redis.replica_ack): the listener may then checkpoint past it,
    and a failover of the cache Redis must not undo it."""
    short = rt.replica_ack.confirm()
    if short:
        metrics.REPLICA_ACK_SHORT.inc(short)
    completion.done(batch)
    metrics.record_end_to_end(batch.first_commit)


@app.task(
    name=INVALIDATE_TASK,
    ignore_result=True,
    **retry_on(*_INVALIDATE_RETRIES),
    max_retries=None,  # an invalidation must not be dropped while the servers are away
)
def invalidate(payload: dict) -> dict:
    rt = runtime()
    completion = Completion(rt.redis, rt.settings.state_prefix)
    batch = _identity(payload)
    try:
        batch = Batch.from_json(payload)
        if not batch.second_pass:
            completion.progress(batch)  # started: its deadline runs from now
        visible = wait_for_commits(rt, batch)  # the binlog runs ahead of the engine commit
        late = wait_before_sweep(rt, batch)
        result = run_invalidation(rt, batch)
        if late:
            send_followup(rt, batch, late, attempt=1)
        if not visible:
            raise CommitsPending(f"batch {_name(batch)}: its rows are not committed yet")
    except _INVALIDATE_RETRIES:
        raise  # autoretry, with backoff: not finished
    except Exception as exc:
        result, late = fallback_flush(rt, batch, exc)
        if late:
            completion.swept(batch)  # its follow-up flushes finish it
        else:
            report_done(rt, completion, batch)
        return result.to_json()
    if late:
        completion.swept(batch)  # its follow-up passes finish it
    else:
        finish(rt, completion, batch)
    return result.to_json()


@app.task(
    name=REPLICA_FOLLOWUP_TASK,
    ignore_result=True,
    **retry_on(*CONNECTION_ERRORS),
    max_retries=None,  # a stale fill from a late replica is only removed by this pass
)
def replica_followup(payload: dict, late: list[str], attempt: int) -> None:
    """Sweep a batch again once late read replicas have applied it; poll again (backing
    off) while any of them has not, reporting progress. Never blocks the batches behind it.
    The last of these passes finishes the batch (its second pass, then done)."""
    rt = runtime()
    completion = Completion(rt.redis, rt.settings.state_prefix)
    batch = _identity(payload)
    try:
        batch = Batch.from_json(payload)
        caught_up, still = poll_late(rt, batch, late)
        if caught_up:
            result = run_invalidation(rt, batch)
            metrics.record_replica_followup_sweep(rt.redis, rt.settings.state_prefix)
            log.info(
                "follow-up pass %d of batch %s: read replicas %s have GTID %s; "
                "swept again (%d keys deleted)",
                attempt,
                _name(batch),
                ", ".join(caught_up),
                batch.gtid,
                result.deleted,
            )
        if still:
            if attempt % 20 == 0:
                log.warning(
                    "read replicas %s still lack GTID %s of batch %s after %d follow-up polls",
                    ", ".join(still),
                    batch.gtid,
                    _name(batch),
                    attempt,
                )
            send_followup(rt, batch, still, attempt + 1)
    except CONNECTION_ERRORS:
        raise  # autoretry, with backoff: not finished (the broker's faults included)
    except Exception as exc:
        if fallback_flush(rt, batch, exc)[1]:
            completion.progress(batch)  # the follow-up flushes finish it
        else:
            report_done(rt, completion, batch)
        return
    if still:
        completion.progress(batch)  # alive: no redelivery while it waits on the replica
    else:
        finish(rt, completion, batch)


def _identity(payload: Any) -> Batch:
    """What can be read of a payload's term, seq and positions even when the rest is bad."""
    if not isinstance(payload, Mapping):
        return Batch()
    try:
        seq = int(payload.get("seq", 0))
    except (TypeError, ValueError):
        seq = 0
    return Batch(
        term=str(payload.get("term", "")),
        seq=seq,
        upto=str(payload.get("upto", "")),
        # a fallback flush waits for the read replicas to reach it (fallback_flush)
        gtid=str(payload.get("gtid") or ""),
    )


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


def _name(batch: Batch) -> str:
    where = f" up to {batch.upto}" if batch.upto else ""
    return f"{batch.term or '-'}/{batch.seq}{where}"
