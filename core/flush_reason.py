"""Why every primer key was flushed: the label of the fallback-flush counters.

The values are the label strings metrics, alerts, dashboards and docs already use. A flush
batch carries its reason as text for people (core.batch's `reason`: "DDL: ALTER TABLE ...");
`of_text` gives that text's label.
"""

from __future__ import annotations

from enum import StrEnum


class FlushReason(StrEnum):
    # The listener's own flushes.
    COLD_START = "cold_start"  # no checkpoint: first start, or the checkpoint was lost
    CHECKPOINT_UNRESUMABLE = "checkpoint_unresumable"  # the binlog at the checkpoint is gone
    DDL = "ddl"  # TRUNCATE, DROP, ALTER... of a watched table
    ODD_ROW = "odd_row"  # a row image the sidecar cannot read
    UNDECODABLE_EVENT = "undecodable_event"  # an event neither decoder reads (stepped past)
    SOURCE_LACKS_POSITION = "source_lacks_position"  # a failover's new primary lacks it
    # The invalidate task's (by the text of the flush batch it ran).
    FAILED_BATCH = "failed_batch"  # a batch the task could not process
    OPERATOR = "operator"  # primer-cache invalidate --all, or a flush without a reason
    OTHER = "other"  # a reason text none of the above starts with

    @classmethod
    def of_text(cls, reason: str) -> FlushReason:
        """The label of a flush batch's reason text, by how the text starts."""
        text = reason.lower()
        for prefix, label in _PREFIXES:
            if text.startswith(prefix):
                return label
        return cls.OTHER if text else cls.OPERATOR


# The beginnings of the reason texts the listener, the task and the CLI write.
_PREFIXES = (
    ("cold start", FlushReason.COLD_START),
    ("ddl", FlushReason.DDL),
    ("unreadable row", FlushReason.ODD_ROW),
    ("undecodable event", FlushReason.UNDECODABLE_EVENT),
    ("checkpoint", FlushReason.CHECKPOINT_UNRESUMABLE),
    ("fallback after", FlushReason.FAILED_BATCH),
    ("operator", FlushReason.OPERATOR),
)

# The labels each process exports from the start (a 0 before the first flush, for alerts).
LISTENER_FLUSHES = (
    FlushReason.COLD_START,
    FlushReason.CHECKPOINT_UNRESUMABLE,
    FlushReason.DDL,
    FlushReason.ODD_ROW,
    FlushReason.UNDECODABLE_EVENT,
    FlushReason.SOURCE_LACKS_POSITION,
)
TASK_FLUSHES = (
    FlushReason.COLD_START,
    FlushReason.DDL,
    FlushReason.ODD_ROW,
    FlushReason.UNDECODABLE_EVENT,
    FlushReason.CHECKPOINT_UNRESUMABLE,
    FlushReason.FAILED_BATCH,
    FlushReason.OPERATOR,
    FlushReason.OTHER,
)
