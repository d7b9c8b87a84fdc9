"""The leader lock and the checkpoint it fences, against the real Redis."""

from __future__ import annotations

import redis

from tests.services import delete_prefix, unique
from worker.leader import Leadership, LeadershipLost


def test_checkpoint_is_fenced_by_the_leader_lock(redis_client: redis.Redis) -> None:
    prefix = unique("lead") + ":"
    try:
        first = Leadership(redis_client, prefix, ttl_ms=5000)
        second = Leadership(redis_client, prefix, ttl_ms=5000)
        assert first.try_acquire() and not second.try_acquire()
        first.save_checkpoint({"gtid": "0-1-5"})
        redis_client.delete(first.lock_key)  # the lock expired...
        assert second.try_acquire()  # ...and another replica took over
        try:
            first.save_checkpoint({"gtid": "0-1-9"})
        except LeadershipLost:
            pass
        else:
            raise AssertionError("a replica without the lock wrote a checkpoint")
        assert second.load_checkpoint() == {"gtid": "0-1-5"}
        second.renew()
        second.release()
        assert second.holder() is None
    finally:
        delete_prefix(redis_client, prefix)
