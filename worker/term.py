"""One leadership term: the stream a leader opens once it holds the lock (a new one after each
reconnect), with the ledger of the batches it published, and the listener's parts it works
with."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from adapters.mysql.sources import SourcePicker
from config import Settings
from worker.fast_lane import FastLane
from worker.fast_lane_stream import FastLaneStream
from worker.leader import Leadership
from worker.ledger import Ledger
from worker.publisher import Publisher


@dataclass(frozen=True)
class ListenerParts:
    """What every term of a listener process works with (made once per process)."""

    name: str  # the listener's, for logs: "listener[server_id=...]"
    settings: Settings
    redis: redis.Redis
    leadership: Leadership
    publisher: Publisher
    sources: SourcePicker  # the binlog's source: the primary among the configured ones
    fast_lane: FastLane | None  # deletes the known keys a change affects as soon as it is read
    # The fast lane's own binlog stream, read while no term of ours reads at the head
    follower: FastLaneStream | None
    stopping: threading.Event  # set by a stop signal: the term ends after its current batch


@dataclass(frozen=True)
class Term:
    id: str  # the lock token and the stream's number: "host:abcd1234.3"
    ledger: Ledger
    parts: ListenerParts
