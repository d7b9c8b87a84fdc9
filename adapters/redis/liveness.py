"""Worker liveness, spoken by both sides: each Celery worker's main process keeps a heartbeat
key with a short expiry, and the listener asks which of its batches' holders still have one.

The main process is the one that holds a batch's broker message (unacked, acks_late) from the
moment it receives it until the task ran: while it lives, a pool child that dies is noticed by
Celery itself (task_reject_on_worker_lost requeues the message at once). When the main process
dies, the Redis broker gives the message back only after its visibility timeout, and RabbitMQ
only once it notices the connection is gone (at once after a SIGKILL on the same host, minutes
later for a host that vanished). The heartbeat says it within BEAT_TTL_MS on either broker.

A heartbeat that expires under a stall (a frozen process, a lost network) costs one duplicate
publish per batch the worker held, never more: tasks are idempotent, and the listener publishes
a batch again for a given holder once (worker.ledger).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable

import redis

BEAT_EVERY_S = 0.25  # how often a worker writes its heartbeat
BEAT_TTL_MS = 1000  # and how long it lasts: four beats may be missed before it is dead


def node_name() -> str:
    """This process's name as a holder: host, PID and a token of its own (a restarted
    container may have the same host name and PID)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def heartbeat_key(state_prefix: str, node: str) -> str:
    return f"{state_prefix}worker:{node}"


def beat(pipe: redis.client.Pipeline, state_prefix: str, node: str) -> None:
    """Queue the heartbeat of `node` on `pipe`."""
    pipe.set(heartbeat_key(state_prefix, node), b"1", px=BEAT_TTL_MS)


def alive(client: redis.Redis, state_prefix: str, nodes: Iterable[str]) -> set[str]:
    """Which of `nodes` have a heartbeat now (one pipeline of EXISTS)."""
    order = sorted(set(nodes))
    if not order:
        return set()
    pipe = client.pipeline(transaction=False)
    for node in order:
        pipe.exists(heartbeat_key(state_prefix, node))
    return {node for node, there in zip(order, pipe.execute(), strict=True) if there}
