"""Coalesces the row changes of whole transactions into one invalidation batch (pure)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from core.batch import Batch
from core.predicate import ElementImage
from worker.changes import CHUNKS, ELEMENTS, OddRowError, Row, row_change

log = logging.getLogger(__name__)


class BatchBuilder:
    """Rows go into the open transaction; a transaction's end moves it into the batch.
    A batch is only ever cut at a transaction boundary, where its checkpoint lies."""

    def __init__(self, chunks_table: str, elements_table: str, ignored: Iterable[str]) -> None:
        self.roles = {chunks_table: CHUNKS, elements_table: ELEMENTS}
        self.ignored = frozenset(ignored)
        self._reset_open()
        self._reset_batch()

    def _reset_open(self) -> None:
        self._open_images: set[ElementImage] = set()
        self._open_refs: set[str] = set()
        self._open_flush = ""

    def _reset_batch(self) -> None:
        self.images: set[ElementImage] = set()
        self.refs: set[str] = set()
        self.flush_reason = ""
        self.transactions = 0
        self.rows = 0
        self.position: dict[str, Any] | None = None
        self.event_time = 0

    @property
    def has_work(self) -> bool:
        """Whether the complete transactions hold anything to publish."""
        return bool(self.images or self.refs or self.flush_reason)

    @property
    def complete(self) -> bool:
        """Whether at least one whole transaction is waiting to be published."""
        return self.position is not None

    def row(self, table: str, before: Row | None, after: Row | None) -> None:
        self.rows += 1
        try:
            change = row_change(self.roles[table], before, after, self.ignored)
        except OddRowError as exc:
            # Nothing lost: a row we cannot read flushes the whole cache (safe side).
            log.error(
                "odd row in %s (%s): flushing every primer key; row %r -> %r",
                table,
                exc,
                before,
                after,
            )
            self._open_flush = f"unreadable row in {table}: {exc}"
            return
        if change:
            self._open_images.update(change.images)
            self._open_refs.update(change.chunk_refs)

    def ddl(self, schema: str, query: str) -> None:
        log.warning("DDL on a watched table (%s): %s", schema, query[:200])
        self._open_flush = f"DDL: {query[:120]}"

    def end(self, position: dict[str, Any], event_time: int) -> None:
        self.images |= self._open_images
        self.refs |= self._open_refs
        self.flush_reason = self.flush_reason or self._open_flush
        self.transactions += 1
        self.position = position
        self.event_time = event_time
        self._reset_open()

    def take(self) -> tuple[Batch, dict[str, Any] | None, int]:
        """The batch of every complete transaction, its end position and event time."""
        upto = position_text(self.position)
        batch = Batch.of(
            self.images,
            self.refs,
            flush=bool(self.flush_reason),
            reason=self.flush_reason,
            upto=upto,
            transactions=self.transactions,
        )
        position, event_time = self.position, self.event_time
        self._reset_batch()
        return batch, position, event_time


def position_text(position: dict[str, Any] | None) -> str:
    if not position:
        return ""
    if "gtid" in position:
        return f"GTID {position['gtid']}"
    return f"{position.get('file')}:{position.get('pos')}"
