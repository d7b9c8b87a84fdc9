"""The invalidation batch: what the listener (or an operator) hands the invalidate task.

A batch is the union of the element images of many row changes: a key is affected by the
batch when any image matches it, so duplicates collapse and the payload stays small however
many transactions the batch covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.collation import DEFAULT, Collations
from core.predicate import ElementImage


@dataclass(frozen=True)
class Batch:
    images: frozenset[ElementImage] = frozenset()
    chunk_refs: frozenset[str] = frozenset()  # metadata changes: look these chunks up
    changed: frozenset[str] = frozenset()  # chunk_ids of the changed chunk rows (visibility)
    flush: bool = False  # drop every primer key (DDL, lost checkpoint, cold start)
    upto: str = ""  # the binlog position the batch ends at, for logs
    reason: str = ""
    transactions: int = 0
    term: str = ""  # the publishing listener's leadership term
    seq: int = 0  # the batch's number within its term (0: not the listener's, e.g. an operator's)
    gtid: str = ""  # the GTID position after the batch ("" on file+position servers)
    first_commit: float = 0.0  # binlog commit time (epoch s) of the batch's first transaction
    last_commit: float = 0.0  # and of its last
    second_pass: bool = False  # the delayed repeat sweep against stale read-through fills
    behind: bool = False  # published while the listener was behind: its warms wait
    # how the images' texts compare (the chunks table's collations when the listener read them)
    collations: Collations = DEFAULT

    def __bool__(self) -> bool:
        return bool(self.images or self.chunk_refs or self.flush)

    def to_json(self) -> dict[str, Any]:
        return {
            "images": [image.to_json() for image in self.images],
            "chunks": sorted(self.chunk_refs),
            "changed": sorted(self.changed),
            "flush": self.flush,
            "upto": self.upto,
            "reason": self.reason,
            "transactions": self.transactions,
            "second_pass": self.second_pass,
            "behind": self.behind,
            "term": self.term,
            "seq": self.seq,
            "gtid": self.gtid,
            "first_commit": self.first_commit,
            "last_commit": self.last_commit,
            "collations": self.collations.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Batch:
        return cls(
            images=frozenset(ElementImage.from_json(item) for item in data.get("images", ())),
            chunk_refs=frozenset(str(ref) for ref in data.get("chunks", ())),
            changed=frozenset(str(ref) for ref in data.get("changed", ())),
            flush=bool(data.get("flush", False)),
            upto=str(data.get("upto", "")),
            reason=str(data.get("reason", "")),
            transactions=int(data.get("transactions", 0)),
            second_pass=bool(data.get("second_pass", False)),
            behind=bool(data.get("behind", False)),
            term=str(data.get("term", "")),
            seq=int(data.get("seq", 0)),
            gtid=str(data.get("gtid", "")),
            first_commit=float(data.get("first_commit", 0.0)),
            last_commit=float(data.get("last_commit", 0.0)),
            collations=Collations.from_json(data.get("collations")),
        )

    @classmethod
    def of(
        cls, images: Iterable[ElementImage] = (), chunk_refs: Iterable[str] = (), **kw: Any
    ) -> Batch:
        return cls(images=frozenset(images), chunk_refs=frozenset(chunk_refs), **kw)
