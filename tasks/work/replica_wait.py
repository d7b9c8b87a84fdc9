"""Invalidate after the read replicas have the change (issue 8): a primer server that reads
from a replica must not refill a deleted key from a replica that has not applied the change.

A batch's first pass waits, up to `replicas.max_wait_s`, until every replica has applied the
batch's GTID, then sweeps. A replica late or down does not hold the pipeline: the sweep runs
all the same, and a follow-up pass for that batch polls the late replicas (backing off) and
sweeps again each time one of them has caught up, until none is left. The follow-up's sweep
removes what a primer server filled from the late replica meanwhile; warms read the primary,
so they never need it.

Timeline of the race this closes (replica 1.5 s behind):
  t0 primary commits -> t0+20ms sweep deletes K -> primer server misses K, reads the replica
  (old answer), fills K -> t0+1.5s replica applies: K holds the old answer until its TTL.
With the wait: t0 commit -> t0+1.5s replica applies -> sweep deletes K -> fills read the new
answer. The delayed second pass runs after the wait, so it still guards fills in flight.
"""

from __future__ import annotations

import logging

from adapters.broker import INVALIDATE, REPLICA_FOLLOWUP_TASK
from core.backoff import doubling
from core.batch import Batch
from tasks.work import metrics
from tasks.work.runtime import Runtime

log = logging.getLogger(__name__)

FOLLOWUP_FIRST_DELAY_S = 0.2
FOLLOWUP_MAX_DELAY_S = 5.0


def needs_wait(rt: Runtime, batch: Batch) -> bool:
    """A batch from the binlog (it has a GTID) with replicas configured; the second pass
    follows a wait already made."""
    return bool(rt.settings.replicas) and bool(batch.gtid) and not batch.second_pass


def wait_before_sweep(rt: Runtime, batch: Batch) -> list[str]:
    """Wait for every replica to apply the batch; the ids of those that did not in time."""
    if not needs_wait(rt, batch):
        return []
    late = rt.replicas.lagging(batch.gtid, rt.settings.replicas.max_wait_s)
    if late:
        log.warning(
            "read replicas %s have not applied GTID %s after %.1f s: sweeping now, "
            "and again once they have",
            ", ".join(late),
            batch.gtid,
            rt.settings.replicas.max_wait_s,
        )
    return late


def followup_delay(attempt: int) -> float:
    """Seconds before follow-up poll number `attempt` (1, 2, ...): doubling, capped."""
    return doubling(attempt, FOLLOWUP_FIRST_DELAY_S, FOLLOWUP_MAX_DELAY_S)


def send_followup(rt: Runtime, batch: Batch, late: list[str], attempt: int) -> None:
    """Schedule the next follow-up poll of `late` for `batch`. A broker error propagates: the
    task that calls this retries (the follow-up is the only thing that fixes later fills)."""
    if attempt == 1:
        metrics.record_replica_followup(rt.redis, rt.settings.cache.state_prefix)
    rt.send(
        REPLICA_FOLLOWUP_TASK,
        [batch.to_json(), late, attempt],
        INVALIDATE,
        countdown=followup_delay(attempt),
    )


def poll_late(rt: Runtime, batch: Batch, late: list[str]) -> tuple[list[str], list[str]]:
    """(caught up, still late) among `late`: a poll that does not block the worker."""
    still = rt.replicas.lagging(batch.gtid, 0.0, only=late)
    return [rid for rid in late if rid not in still], still
