"""The listener's fast lane: delete the known cache keys a change affects as soon as the
change is read, ahead of its batch's sweep.

A batch waits for its sweep: for the pacer, for room in the ledger (`listener.max_in_flight`),
for the broker, for a free worker process and, under load, for CPU the sweeps of earlier
batches hold. The fast lane skips all of that for the keys whose names it knows: the listener
judges its snapshot of key names (core.known_keys, grouped by filter: one predicate call per
distinct filter) against the change's images and UNLINKs the affected ones with their leases
(adapters.redis.unlink) in one round trip, right after reading the transaction; with refresh on,
through primer_cache_invalidate, holding the hot keys' leases as the sweep does (readers are
told `busy`; the batch's sweep finds each held lease and takes it over for its refresh, or
releases it). The snapshot comes
from a background SCAN of the cache keys, repeated every RESCAN_MIN_S or, for large
keyspaces, so that scanning takes at most 1/RESCAN_COST of the time; a keyspace above
`listener.fast_lane_max_keys` names is not kept (the sweeps alone then). A standby scans too,
so that the moment it leads its snapshot is as fresh as the leader's (docs/takeover.md).

Nothing rests on it but speed: every batch is still published and swept (SCAN, the ground
truth), which finds the names the snapshot lacks, waits for read replicas, runs the second
pass, and decides completion and the checkpoint. A failed fast-lane delete is logged,
counted, and owed: tried again until made or too old (worker.fast_lane_feed); the sweep
follows either way. While the stream reads changes older than
FAST_LANE_MAX_AGE_S (a long catch-up), the fast lane stands aside: latency
is spent already, and throughput needs the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis

from adapters.redis.connection import connect_redis
from adapters.redis.unlink import Heat, heat_of, lfu_policy, unlink_with_leases
from config import Settings
from core.collation import DEFAULT, Collations
from core.keys import KeyFormat
from core.known_keys import KnownNames
from core.predicate import ChangeIndex, ElementImage
from worker import metrics

log = logging.getLogger(__name__)

RETAIN = 3  # a name stays known while one of the last 3 scans saw it (refills: same name)
RESCAN_MIN_S = 1.0
RESCAN_COST = 20.0  # wait this many times a scan's duration before the next: <= 5% of a core
RETRY_S = 5.0  # after a failed scan
SCAN_COUNT = 1000
LOG_EVERY_S = 60.0  # failed deletes are logged at most this often (counted always)
POLICY_EVERY_S = 60.0  # the eviction policy (IDLETIME or FREQ tells a hot key) is read this often
# Changes read this long after their commit (a long catch-up): the fast lane stands aside, the
# latency is spent and throughput needs the CPU. A shorter backlog (a takeover, a reconnect
# after a failover: a second or a few) still gains from it: those changes are late already.
FAST_LANE_MAX_AGE_S = 10.0


class FastLane:
    def __init__(self, settings: Settings) -> None:
        self.keys = KeyFormat(settings.cache.key_prefix, settings.cache.key_template)
        self.limit = settings.listener.fast_lane_max_keys
        # With refresh on, hot keys are deleted holding their leases, as the sweep does.
        self.settings = settings
        # With refresh on, hot keys are deleted holding their leases, as the sweep does; the
        # scans look up the eviction policy (IDLETIME or FREQ tells a hot key).
        self.heat: Heat | None = heat_of(settings, lfu=False)
        self._policy_at = float("-inf")
        # One client for the term's deletes (its feed thread: worker.fast_lane_feed), one for
        # the scans (their own): a cluster client is not shared across threads here. Quick to
        # give up: a delete that fails is owed and tried again.
        self.redis = connect_redis(settings.cache.url, socket_timeout=2, socket_connect_timeout=1)
        self._scanner = connect_redis(
            settings.cache.url, socket_timeout=10, socket_connect_timeout=5
        )
        # The snapshot: replaced whole by each scan (never changed once built), so the
        # listener's thread judges it without waiting for a scan.
        self._names = KnownNames(self.keys, self.limit, RETAIN)
        self._deleted: set[bytes] = set()  # deleted since the scan began: kept known
        self._lock = threading.Lock()  # guards _deleted only
        self._stopping = threading.Event()
        self._leading = False  # for the log only: a standby scans as the leader does
        self._thread: threading.Thread | None = None
        self._logged_at = float("-inf")
        self.scans = 0  # complete scans so far
        self._over = False  # the last scan found more than `limit` names
        self._announce = True

    # ---- the snapshot -----------------------------------------------------------------

    def start(self) -> None:
        """This listener leads (the background scans start once, if they have not)."""
        self._leading = True
        self._announce = True  # the first scan of a lead says what it knows
        self._scan_in_background()

    def stand_by(self) -> None:
        """This listener does not lead: the scans go on, so that its snapshot is warm the
        moment it does (a leader dead is replaced within a poll: docs/takeover.md)."""
        self._leading = False
        self._announce = True
        self._scan_in_background()

    def _scan_in_background(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fast-lane", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        delay = RESCAN_MIN_S if self.scans else 0.0  # the warm-up scanned once already
        while not self._stopping.wait(delay):
            started = time.monotonic()
            try:
                self.scan()
            except Exception as exc:  # never let the thread die: the sweeps carry on alone
                metrics.FAST_LANE_ERRORS.inc()
                log.warning(
                    "fast lane: scanning the key names failed (%s); again in %gs", exc, RETRY_S
                )
                delay = RETRY_S
                continue
            delay = max(RESCAN_MIN_S, RESCAN_COST * (time.monotonic() - started))

    def scan(self) -> None:
        """One complete SCAN of the cache keys, the snapshot's next generation."""
        if self.heat is not None and time.monotonic() - self._policy_at >= POLICY_EVERY_S:
            self.heat = heat_of(self.settings, lfu_policy(self._scanner))
            self._policy_at = time.monotonic()
        with self._lock:
            deleted, self._deleted = self._deleted, set()
        found: list[bytes] = []
        for raw in self._scanner.scan_iter(match=self.keys.scan_pattern(), count=SCAN_COUNT):
            found.append(raw)
            if len(found) > self.limit:
                break  # too many to keep: rebuilt() keeps none
        with self._lock:
            deleted |= self._deleted
        self._names = names = self._names.rebuilt(found, deleted)
        known = len(names)
        metrics.FAST_LANE_KNOWN.set(known)
        over = len(found) > self.limit
        if self._announce or over != self._over:
            self._announce = False
            if over:
                log.warning(
                    "fast lane: more than %d key names under %r (listener.fast_lane_max_keys): "
                    "it stands aside, the sweeps alone delete",
                    self.limit,
                    self.keys.head,
                )
            else:
                log.info(
                    "fast lane: knows %d key names under %r%s",
                    known,
                    self.keys.head,
                    "" if self._leading else " (standing by)",
                )
        self._over = over
        self.scans += 1

    def __len__(self) -> int:
        return len(self._names)

    # ---- the delete ---------------------------------------------------------------------

    def delete(
        self,
        images: Iterable[ElementImage],
        collations: Collations = DEFAULT,
        client: redis.Redis | None = None,
    ) -> int | None:
        """Delete the known keys `images` affect and revoke their leases; with refresh on, take
        the leases of the hot ones as the sweep does (the batch's sweep finds each held lease,
        a lease that stood, and takes it over for the refresh). `collations`: how the images'
        texts compare (the batch's); `client`: another thread's own (default: the term's).
        Returns how many were deleted; None when the delete failed (logged, counted)."""
        index = ChangeIndex(images, collations)
        if not index:
            return 0
        doomed = self._names.affected(index.affects, index.categories)
        if not doomed:
            return 0
        try:
            done = unlink_with_leases(client or self.redis, doomed, heat=self.heat)
        except redis.RedisError as exc:
            metrics.FAST_LANE_ERRORS.inc()
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY_S:
                self._logged_at = now
                log.warning("fast lane: delete failed (%s); owed, and the sweep follows", exc)
            return None
        metrics.FAST_LANE_DELETED.inc(done.deleted)
        with self._lock:
            self._deleted.update(doomed)  # likely refilled under the same names: keep them known
        return done.deleted
