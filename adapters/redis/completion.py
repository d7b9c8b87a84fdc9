"""The completion protocol: which of a listener's batches are done, spoken by both sides.

A batch the listener publishes is named by (term, seq): the listener's term (one per
stream it opens) and the batch's number in it. A task reports

- `progress(batch)`: still at it (a first pass whose second pass is queued, a follow-up
  waiting on a replica); the listener then waits another `redeliver_after_s` before it
  publishes the batch again;
- `swept(batch)`: progress, and the batch's first sweep has run; what is left (read-replica
  follow-up passes, which may wait long on a replica that is down) does not load the
  workers, so the batch no longer counts against `max_in_flight`;
- `done(batch)`: every pass has run; the listener may checkpoint past the batch.

And a worker's main process, as it receives a batch from the broker, records itself as its
holder (`held`, adapters.redis.liveness): the listener publishes a batch again as soon as its
holder's heartbeat is gone.

The state is one Redis hash per term under the state prefix: field `d<seq>` once the batch
is done, `s<seq>` once it is swept, `p<seq>` counting its progress reports, `h<seq>` the
worker that received it last. The hash expires a day after its last write. If it is lost
(evicted, Redis restarted empty) the listener sees no progress and publishes its batches
again: the safe side. Batches with seq 0 (operators',
the cold-start warm-up) take no part: reports about them are no-ops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from core.batch import Batch

log = logging.getLogger(__name__)

STATE_TTL_S = 86_400  # a term's hash outlives any batch of it by far


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the tasks reported about one batch so far."""

    done: bool = False
    progress: int = 0  # progress reports; any change means "still alive"
    swept: bool = False  # first sweep run; only follow-up passes are left
    holder: str = ""  # the worker that received it last ("": none known)


def completion_key(state_prefix: str, term: str) -> str:
    return f"{state_prefix}completion:{term}"


class Completion:
    def __init__(self, client: redis.Redis, state_prefix: str) -> None:
        self.client = client
        self.state_prefix = state_prefix

    def progress(self, batch: Batch) -> None:
        """The batch is still being worked on: postpone its redelivery."""
        if _tracked(batch):
            self._write(batch.term, lambda pipe, key: pipe.hincrby(key, f"p{batch.seq}", 1))
            log.debug("batch %s/%d: progress reported", batch.term, batch.seq)

    def swept(self, batch: Batch) -> None:
        """The batch's first sweep ran; follow-up passes are still to come. Also progress."""
        if _tracked(batch):

            def op(pipe: redis.client.Pipeline, key: str) -> None:
                pipe.hset(key, f"s{batch.seq}", 1)
                pipe.hincrby(key, f"p{batch.seq}", 1)

            self._write(batch.term, op)
            log.debug("batch %s/%d: swept, follow-up passes pending", batch.term, batch.seq)

    def done(self, batch: Batch) -> None:
        """Every pass of the batch has run: the listener may checkpoint past it."""
        if _tracked(batch):
            self._write(batch.term, lambda pipe, key: pipe.hset(key, f"d{batch.seq}", 1))
            log.debug("batch %s/%d: done", batch.term, batch.seq)

    def states(self, term: str, seqs: Iterable[int]) -> dict[int, BatchState]:
        """The reported state of each of `seqs` in `term` (one HMGET)."""
        order = list(seqs)
        if not order:
            return {}
        fields = [f"{kind}{seq}" for seq in order for kind in ("d", "p", "s", "h")]
        values = self.client.hmget(completion_key(self.state_prefix, term), fields)
        return {
            seq: BatchState(
                done=values[4 * i] is not None,
                progress=int(values[4 * i + 1] or 0),
                swept=values[4 * i + 2] is not None,
                holder=_text(values[4 * i + 3]),
            )
            for i, seq in enumerate(order)
        }

    @staticmethod
    def held(pipe: redis.client.Pipeline, state_prefix: str, batch: Batch, holder: str) -> None:
        """Queue on `pipe` the record that worker `holder` received `batch`."""
        if _tracked(batch):
            key = completion_key(state_prefix, batch.term)
            pipe.hset(key, f"h{batch.seq}", holder)
            pipe.expire(key, STATE_TTL_S)

    def _write(self, term: str, op: Callable[[redis.client.Pipeline, str], object]) -> None:
        key = completion_key(self.state_prefix, term)
        pipe = self.client.pipeline(transaction=False)
        op(pipe, key)
        pipe.expire(key, STATE_TTL_S)
        pipe.execute()


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _tracked(batch: Batch) -> bool:
    return bool(batch.term) and batch.seq > 0
