"""Flush reasons: the enum's values are the metric labels in use, and a flush batch's reason
text maps to its label."""

from __future__ import annotations

import pytest

from core.flush_reason import LISTENER_FLUSHES, TASK_FLUSHES, FlushReason
from worker import metrics


def test_the_values_are_the_labels_in_use() -> None:
    assert [str(reason) for reason in LISTENER_FLUSHES] == [
        "cold_start",
        "checkpoint_unresumable",
        "ddl",
        "odd_row",
        "undecodable_event",
        "source_lacks_position",
    ]
    assert [str(reason) for reason in TASK_FLUSHES] == [
        "cold_start",
        "ddl",
        "odd_row",
        "undecodable_event",
        "checkpoint_unresumable",
        "failed_batch",
        "operator",
        "other",
    ]


def test_the_listener_exports_its_labels_from_the_start() -> None:
    exported = metrics.REGISTRY.get_sample_value
    for reason in LISTENER_FLUSHES:
        value = exported("primer_cache_listener_fallback_flushes_total", {"reason": reason.value})
        assert value is not None, reason


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("cold start: no checkpoint (first start or lost)", FlushReason.COLD_START),
        ("DDL: ALTER TABLE megamind_chunks ...", FlushReason.DDL),
        ("unreadable row in megamind_chunks: x", FlushReason.ODD_ROW),
        ("undecodable event at GTID 0-1-5: x", FlushReason.UNDECODABLE_EVENT),
        ("fallback after TypeError", FlushReason.FAILED_BATCH),
        ("operator: invalidate --all", FlushReason.OPERATOR),
        ("", FlushReason.OPERATOR),
        ("something new", FlushReason.OTHER),
    ],
)
def test_a_reason_text_maps_to_its_label(reason: str, label: FlushReason) -> None:
    assert FlushReason.of_text(reason) is label
