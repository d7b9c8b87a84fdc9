"""The worker's side of worker liveness (adapters.redis.liveness): a thread of the main process that
writes its heartbeat every BEAT_EVERY_S and, as soon as the main process receives a listener
batch from the broker, records the process as the batch's holder.

Recording goes through the thread, not the consumer's own loop: receiving a task costs a
queue put, not a Redis round trip on the way to the pool. A worker that dies between
receiving a batch and recording it leaves the batch to the listener's backstop
(`listener.redeliver_after_s`), as before.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import redis

from adapters.redis import liveness
from adapters.redis.completion import Completion
from adapters.redis.connection import RedisConnectError, connect_redis
from config import Settings
from core.batch import Batch

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # a heartbeat that cannot be written is logged at most this often


class WorkerBeat(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.state_prefix = settings.cache.state_prefix
        self.node = liveness.node_name()
        self.redis_url = settings.cache.url
        self.received: queue.Queue[Batch] = queue.Queue()
        self._logged_at = float("-inf")

    def hold(self, payload: Any) -> None:
        """The main process received a listener batch (its payload): record it as ours."""
        if isinstance(payload, dict) and payload.get("term") and payload.get("seq"):
            try:
                self.received.put(Batch(term=str(payload["term"]), seq=int(payload["seq"])))
            except (TypeError, ValueError):
                return  # not a listener batch: the task says what is wrong with it

    def run(self) -> None:
        timeout = max(0.1, liveness.BEAT_TTL_MS / 2000.0)
        client: redis.Redis | None = None
        beat_at = float("-inf")
        while True:
            if client is None:
                try:
                    client = connect_redis(
                        self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
                    )
                except (redis.RedisError, RedisConnectError) as exc:
                    self._log(f"could not reach Redis for the worker heartbeat ({exc})")
                    time.sleep(liveness.BEAT_EVERY_S)
                    continue
            wait = max(0.0, beat_at + liveness.BEAT_EVERY_S - time.monotonic())
            held = []
            try:
                held.append(self.received.get(timeout=wait))
                while True:
                    held.append(self.received.get_nowait())
            except queue.Empty:
                pass
            pipe = client.pipeline(transaction=False)
            liveness.beat(pipe, self.state_prefix, self.node)
            for batch in held:
                Completion.held(pipe, self.state_prefix, batch, self.node)
            try:
                pipe.execute()
            except redis.RedisError as exc:
                # The listener then sees no heartbeat: one duplicate publish, never a loss.
                self._log(f"could not write the worker heartbeat ({exc})")
            beat_at = time.monotonic()

    def _log(self, why: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("worker %s: %s", self.node, why)


_beat: WorkerBeat | None = None
_started = threading.Lock()


def worker_beat(settings: Settings) -> WorkerBeat:
    """This process's heartbeat thread, started on first use (in the main process only: the
    consumer receives the messages there)."""
    global _beat
    with _started:
        if _beat is None:
            _beat = WorkerBeat(settings)
            _beat.start()
        return _beat
