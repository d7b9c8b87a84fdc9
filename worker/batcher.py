"""Row changes to transactions (in the reader thread), transactions to batches (in the
listener loop). No I/O: only in-memory counters of the rows seen.

A batch is only ever cut at a transaction boundary, where its checkpoint lies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import NamedTuple

from core.batch import Batch
from core.changes import CHUNKS, ELEMENTS, OddRowError, Row, row_change
from core.collation import DEFAULT, Collations
from core.flush_reason import FlushReason
from core.position import Position, gtid_of, position_text
from core.predicate import ElementImage
from worker import metrics

log = logging.getLogger(__name__)


class Transaction(NamedTuple):
    """What one committed transaction changed, and where the binlog stands after it.
    (A NamedTuple: one is made per transaction read.)"""

    images: AbstractSet[ElementImage]
    refs: AbstractSet[str]
    chunk_ids: AbstractSet[str]  # chunk rows whose change it carries (tasks/visibility.py)
    flush_reason: str
    position: Position
    event_time: int
    rows: int
    collations: Collations = DEFAULT  # how its images' texts compare


class TransactionBuilder:
    """Collects the row changes of the open transaction."""

    def __init__(self, chunks_table: str, elements_table: str, ignored: Iterable[str]) -> None:
        self.roles = {chunks_table: CHUNKS, elements_table: ELEMENTS}
        self.ignored = frozenset(ignored)
        self.counts = metrics.RowCounts()
        self.collations = Collations()  # the chunks table's (the reader sets them)
        self._reset()

    def _reset(self) -> None:
        self._images: set[ElementImage] = set()
        self._refs: set[str] = set()
        self._chunk_ids: set[str] = set()
        self._flush = ""
        self._rows = 0

    def row(
        self, table: str, before: Row | None, after: Row | None, visible: bool | None = None
    ) -> None:
        """One row change; `visible` is whether a column outside the ignored ones changed,
        when the decoder already knows (None: judge from the images)."""
        self._rows += 1
        if visible is False:
            self.counts.add(table, "update", False)
            return  # read noise, e.g. the primer server bumping access_count
        try:
            change = row_change(
                self.roles[table],
                before,
                after,
                self.ignored,
                visible=visible,
                realm=self.collations.realm,
            )
        except OddRowError as exc:
            self.counts.add(table, metrics.operation(before, after), True)
            metrics.FALLBACK_FLUSHES.labels(FlushReason.ODD_ROW).inc()
            # Nothing lost: a row we cannot read flushes the whole cache (safe side).
            log.error(
                "odd row in %s (%s): flushing every primer key; row %r -> %r",
                table,
                exc,
                before,
                after,
            )
            self._flush = f"unreadable row in {table}: {exc}"
            return
        self.counts.add(table, metrics.operation(before, after), bool(change))
        if change:
            self._images.update(change.images)
            self._refs.update(change.chunk_refs)
            self._chunk_ids.update(change.chunk_ids)

    def ddl(self, schema: str, query: str) -> None:
        log.warning("DDL on a watched table (%s): %s", schema, query[:200])
        metrics.FALLBACK_FLUSHES.labels(FlushReason.DDL).inc()
        self._flush = f"DDL: {query[:120]}"

    def undecodable(self, where: str, error: str) -> None:
        """The transaction holds an event neither decoder reads: flush (worker.stream logs
        it, records it for `status` and steps past it)."""
        metrics.FALLBACK_FLUSHES.labels(FlushReason.UNDECODABLE_EVENT).inc()
        self._flush = f"undecodable event at {where}: {error[:120]}"

    def end(self, position: Position, event_time: int) -> Transaction:
        # The sets are handed over, not copied: _reset makes new ones.
        txn = Transaction(
            self._images,
            self._refs,
            self._chunk_ids,
            self._flush,
            position,
            event_time,
            self._rows,
            self.collations,
        )
        self._reset()
        self.counts.flush()
        return txn


class BatchBuilder:
    """Coalesces whole transactions into one invalidation batch."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.images: set[ElementImage] = set()
        self.refs: set[str] = set()
        self.chunk_ids: set[str] = set()
        self.flush_reason = ""
        self.transactions = 0
        self.rows = 0
        self.position: Position | None = None
        self._collations: Collations | None = None
        self.first_event_time = 0
        self.event_time = 0

    @property
    def complete(self) -> bool:
        """Whether at least one whole transaction is waiting."""
        return self.transactions > 0

    @property
    def has_work(self) -> bool:
        """Whether the waiting transactions hold anything to publish."""
        return bool(self.images or self.refs or self.flush_reason)

    @property
    def collations(self) -> Collations:
        """How the waiting images' texts compare (the widest, should a DDL lie between)."""
        return self._collations or DEFAULT

    def add(self, txn: Transaction) -> None:
        self.images |= txn.images
        self._collations = (
            txn.collations if self._collations is None else self._collations.widest(txn.collations)
        )
        self.refs |= txn.refs
        self.chunk_ids |= txn.chunk_ids
        self.flush_reason = self.flush_reason or txn.flush_reason
        self.transactions += 1
        self.rows += txn.rows
        self.position = txn.position
        if not self.first_event_time:
            self.first_event_time = txn.event_time
        self.event_time = txn.event_time

    def take(self) -> tuple[Batch, Position | None, int]:
        """The batch of every waiting transaction, its end position and event time."""
        batch = Batch.of(
            self.images,
            self.refs,
            changed=frozenset(self.chunk_ids),
            flush=bool(self.flush_reason),
            reason=self.flush_reason,
            upto=position_text(self.position),
            transactions=self.transactions,
            gtid=gtid_of(self.position),
            first_commit=float(self.first_event_time),
            last_commit=float(self.event_time),
            collations=self.collations,
        )
        position, event_time = self.position, self.event_time
        self._reset()
        return batch, position, event_time
