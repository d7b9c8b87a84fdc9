"""The passes of a listener batch, and the tasks' side of the completion protocol
(adapters.redis.completion): each pass is one invalidation (tasks.work.invalidation).

A listener batch is done once every pass has run: with `cache.second_pass_ms` > 0 the first
pass queues the delayed second pass and reports progress, and the second pass reports done;
with 0 the first pass reports done. Where read replicas are configured, the first pass waits
for them before it sweeps (tasks.work.replica_wait); a replica late beyond `replicas.max_wait_s`
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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from adapters.broker import INVALIDATE, INVALIDATE_TASK
from adapters.redis import stats
from adapters.redis.completion import Completion
from core.batch import Batch
from tasks.work import metrics
from tasks.work.invalidation import run_invalidation
from tasks.work.replica_wait import poll_late, send_followup, wait_before_sweep
from tasks.work.retry import CONNECTION_ERRORS
from tasks.work.runtime import Runtime
from tasks.work.sweep import SweepResult
from tasks.work.visibility import CommitsPending, wait_for_commits

log = logging.getLogger(__name__)


# A batch whose rows were still locked was swept, and is retried until they are committed.
INVALIDATE_RETRIES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, CommitsPending)


def batch_pass(rt: Runtime, payload: Any) -> dict[str, Any]:
    """The invalidate task: a batch's first pass, or its delayed second. Raises what the
    task retries (INVALIDATE_RETRIES); anything else falls back to a flush."""
    completion = Completion(rt.redis, rt.settings.cache.state_prefix)
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
    except INVALIDATE_RETRIES:
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


def followup_pass(rt: Runtime, payload: Any, late: list[str], attempt: int) -> None:
    """The replica follow-up task: sweep a batch again once late read replicas have applied
    it; poll again (backing off) while any of them has not, reporting progress. Never blocks
    the batches behind it. The last of these passes finishes the batch (its second pass,
    then done). Raises CONNECTION_ERRORS for the task to retry."""
    completion = Completion(rt.redis, rt.settings.cache.state_prefix)
    batch = _identity(payload)
    try:
        batch = Batch.from_json(payload)
        still = _poll_and_sweep(rt, batch, late, attempt)
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


def _poll_and_sweep(rt: Runtime, batch: Batch, late: list[str], attempt: int) -> list[str]:
    """Sweep again if a late replica caught up; queue the next poll of those still late
    (returned)."""
    caught_up, still = poll_late(rt, batch, late)
    if caught_up:
        result = run_invalidation(rt, batch)
        metrics.record_replica_followup_sweep(rt.redis, rt.settings.cache.state_prefix)
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
    return still


def queue_second_pass(rt: Runtime, batch: Batch) -> bool:
    """Queue the batch's delayed second pass (the guard against stale read-through fills);
    True once the broker holds it."""
    try:
        rt.send(
            INVALIDATE_TASK,
            [replace(batch, second_pass=True).to_json()],
            INVALIDATE,
            countdown=rt.settings.cache.second_pass_ms / 1000,
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
        rt.settings.cache.state_prefix,
        fallback_flushes=1,
        **{f"fallback_flushes:{reason}": 1},
    )
    if late:
        send_followup(rt, flush, late, attempt=1)
    return result, late


def finish(rt: Runtime, completion: Completion, batch: Batch) -> None:
    """After a pass ran: report the batch done, or its second pass queued (which then
    completes it)."""
    if batch.second_pass or rt.settings.cache.second_pass_ms <= 0:
        report_done(rt, completion, batch)
    elif queue_second_pass(rt, batch):
        completion.progress(batch)


def report_done(rt: Runtime, completion: Completion, batch: Batch) -> None:
    """Report the batch done, once the cache Redis's replicas have its deletes
    (cache.wait_replicas; adapters.redis.replica_ack): the listener may then checkpoint past it,
    and a failover of the cache Redis must not undo it."""
    short = rt.replica_ack.confirm()
    if short:
        metrics.REPLICA_ACK_SHORT.inc(short)
    completion.done(batch)
    metrics.record_end_to_end(batch.first_commit)


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


def _name(batch: Batch) -> str:
    where = f" up to {batch.upto}" if batch.upto else ""
    return f"{batch.term or '-'}/{batch.seq}{where}"
