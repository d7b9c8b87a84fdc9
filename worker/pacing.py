"""When the listener's waiting batch goes out. Pure: the loop tells it what it sees.

Each batch costs the workers a sweep of the keyspace, whatever its size, so:

- while the stream is caught up, a batch goes out as soon as nothing more is readable (one
  task per change when idle: latency); the ledger's in-flight limit, not a timer, makes
  batches grow under load;
- while the stream is behind (the backlog read after a start; or commits read long after
  they were made, say after a stall, with more still arriving), the batch grows for up to
  `catch_up_window`: few large batches catch up faster, and latency is spent already. Such
  batches are marked `behind`: their warms wait for the first batch caught up.

Binlog commit times have a resolution of one second, so "long after" is `behind_after`
seconds (2 s), and "more still arriving" is the last transaction being less than `gap`
old: the end of a backlog is where the stream goes quiet, whatever its commit times say.
"""

from __future__ import annotations

CATCH_UP_WINDOW = 1.0  # how long a batch may grow while the stream is behind
BEHIND_AFTER = 2.0  # commits read this many seconds after they were made: behind
GAP = 0.02  # nothing read for this long: the stream has caught up


class Pacer:
    def __init__(
        self,
        max_rows: int,
        live_window: float,
        *,
        catching_up: bool = True,
        catch_up_window: float = CATCH_UP_WINDOW,
        behind_after: float = BEHIND_AFTER,
        gap: float = GAP,
    ) -> None:
        self.max_rows = max_rows
        self.live_window = live_window
        self.catching_up = catching_up  # reading the backlog written before this start
        self.catch_up_window = catch_up_window
        self.behind_after = behind_after
        self.gap = gap
        self.started_at = 0.0  # when the waiting batch got its first transaction
        self.last_item_at = 0.0
        self.commit_time = 0.0  # binlog commit time (epoch s) of the last transaction read

    def took(self, now: float, commit_time: float, first: bool) -> None:
        """A transaction was read at `now` (monotonic); `first`: it starts a batch."""
        if first:
            self.started_at = now
        self.last_item_at = now
        self.commit_time = commit_time

    def backlog_read(self) -> None:
        """Everything written before this start has been read."""
        self.catching_up = False

    def behind(self, now: float, wall: float, readable: bool) -> bool:
        """Whether the stream is behind the server (`wall`: epoch seconds now)."""
        if self.catching_up:
            return True
        flowing = readable or now - self.last_item_at < self.gap
        return flowing and wall - self.commit_time >= self.behind_after

    def hold(self, now: float, wall: float, rows: int, readable: bool) -> bool:
        """Whether the waiting batch should go on growing rather than go out now."""
        if rows >= self.max_rows:
            return False
        if self.behind(now, wall, readable):
            return now < self.started_at + self.catch_up_window
        return readable and now < self.started_at + self.live_window
