"""Hands batches to Celery; returns only once the broker has the message."""

from __future__ import annotations

from typing import Any

from adapters import broker
from config import Settings, load_settings
from core.batch import Batch

# Retry the publish itself a little (broker blips: a restart takes a second or two); past that
# (about 4 s) the listener reconnects and replays from its checkpoint, so nothing is lost either
# way. Tries close together (0.1 s growing to 0.5 s): the loop, its fast lane included, waits
# on the publish, so a broker back is used within half a second.
RETRY_POLICY = {"max_retries": 10, "interval_start": 0.1, "interval_step": 0.1, "interval_max": 0.5}


class Publisher:
    def __init__(self, settings: Settings | None = None) -> None:
        """Publish to the broker of `settings` (default: loaded from the environment, as the
        listener's own)."""
        settings = settings or load_settings()
        self._app = broker.celery_app(settings)
        self._invalidate = (broker.INVALIDATE_TASK, broker.queue_name(settings, broker.INVALIDATE))
        self._warm_all = (broker.WARM_ALL_TASK, broker.queue_name(settings, broker.WARM))

    def connect(self) -> None:
        """Publish an empty batch (the task ignores it) before streaming: the first send pays
        for Celery's lazy imports, queue declarations and connections (over a second, holding
        the GIL the binlog reader needs), and a broker that is down should fail the start."""
        self.invalidate(Batch(reason="listener start-up"))

    def invalidate(self, batch: Batch) -> None:
        self._send(*self._invalidate, args=[batch.to_json()])

    def warm_all(self) -> None:
        self._send(*self._warm_all, args=[])

    def _send(self, name: str, queue: str, args: list[Any]) -> None:
        # Nobody waits for these results: without ignore_result every send would also
        # subscribe to a result channel on the backend.
        self._app.send_task(
            name, args=args, queue=queue, retry=True, retry_policy=RETRY_POLICY, ignore_result=True
        )
