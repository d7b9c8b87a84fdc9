"""Whether a server holds every transaction of a checkpoint: the test a binlog source passes
before the listener resumes on it (after a failover, a new primary may lack transactions the
old one had, or have a different history).

MariaDB positions are one GTID per replication domain (`0-1-42,1-5-7`: domain-server-seq);
within a domain sequence numbers only grow, whichever server wrote them. MySQL positions are
GTID sets (`uuid:1-5:7-9,uuid2:1-3`): a server holds a checkpoint when the checkpoint's set is
a subset of its gtid_executed.
"""

from __future__ import annotations

from dataclasses import dataclass


class GtidFormatError(ValueError):
    """Raised on a GTID position or set that does not parse."""


@dataclass(frozen=True)
class MariadbGtid:
    domain: int
    server: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


def parse_mariadb(position: str) -> dict[int, MariadbGtid]:
    """'0-1-42,1-5-7' -> {0: 0-1-42, 1: 1-5-7}; '' -> {}."""
    out: dict[int, MariadbGtid] = {}
    for part in filter(None, (piece.strip() for piece in position.split(","))):
        fields = part.split("-")
        if len(fields) != 3 or not all(field.isdigit() for field in fields):
            raise GtidFormatError(f"{part!r} is not a MariaDB GTID (domain-server-seq)")
        gtid = MariadbGtid(*(int(field) for field in fields))
        if gtid.domain in out:
            raise GtidFormatError(f"{position!r} names domain {gtid.domain} twice")
        out[gtid.domain] = gtid
    return out


def mariadb_lacking(checkpoint: str, server_pos: str) -> list[str]:
    """What a server whose @@gtid_binlog_pos is `server_pos` lacks of `checkpoint`, one line
    per domain ([] when it holds it all):

    - the domain is absent from the server: it never saw those transactions;
    - the server's last sequence number is below the checkpoint's: transactions missing (the
      old primary committed them, the promoted replica never received them);
    - the same sequence number from another server: the histories diverged (an errant
      transaction on the replica took the number).

    A server further ahead in a domain, from another server id, is the ordinary case of a
    promoted replica that took writes; whether the checkpoint's own GTID is in its binlog is
    the server's to say when the stream asks for it (gtid_strict_mode makes it refuse).
    """
    have = parse_mariadb(server_pos)
    lacking = []
    for domain, want in sorted(parse_mariadb(checkpoint).items()):
        got = have.get(domain)
        if got is None:
            lacking.append(f"domain {domain}: the server has none of it (checkpoint {want})")
        elif got.seq < want.seq:
            lacking.append(
                f"domain {domain}: the server ends at {got}, before the checkpoint's {want}"
            )
        elif got.seq == want.seq and got.server != want.server:
            lacking.append(
                f"domain {domain}: the server's {got} is not the checkpoint's {want} "
                "(diverged history)"
            )
    return lacking


def mariadb_gtids(position: str) -> dict[str, str]:
    """A MariaDB GTID position by domain, unparsed: '0-1-42,1-5-7' -> {'0': '0-1-42', '1':
    '1-5-7'} (the listener's per-transaction bookkeeping: no validation, no int conversion)."""
    return {
        gtid.split("-", 1)[0]: gtid
        for gtid in filter(None, (part.strip() for part in position.split(",")))
    }


# ---- MySQL GTID sets --------------------------------------------------------------------------

Intervals = list[tuple[int, int]]  # sorted, disjoint, inclusive [first, last]


def parse_mysql(gtid_set: str) -> dict[str, Intervals]:
    """'u1:1-5:7,u2:3' -> {'u1': [(1, 5), (7, 7)], 'u2': [(3, 3)]} (UUIDs lower-cased, intervals
    merged). Tagged GTIDs (MySQL 8.4's `uuid:tag:1-5`) keep the tag with the UUID."""
    out: dict[str, Intervals] = {}
    for part in filter(None, (piece.strip() for piece in gtid_set.replace("\n", "").split(","))):
        fields = part.split(":")
        source = fields[0].lower()
        intervals = out.setdefault(source, [])
        for field in fields[1:]:
            if field and not field[0].isdigit():  # a tag: the intervals after it are its own
                source = f"{fields[0].lower()}:{field.lower()}"
                intervals = out.setdefault(source, [])
                continue
            first, _, last = field.partition("-")
            if not first.isdigit() or (last and not last.isdigit()):
                raise GtidFormatError(f"{part!r}: {field!r} is not an interval (N or N-M)")
            low, high = int(first), int(last or first)
            if low < 1 or high < low:
                raise GtidFormatError(f"{part!r}: interval {field!r} is empty or starts at 0")
            intervals.append((low, high))
    return {source: _merged(intervals) for source, intervals in out.items() if intervals}


def _merged(intervals: Intervals) -> Intervals:
    out: Intervals = []
    for low, high in sorted(intervals):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _minus(want: Intervals, have: Intervals) -> Intervals:
    """The parts of `want` not covered by `have` (both sorted and disjoint)."""
    out: Intervals = []
    for low, high in want:
        cursor = low
        for h_low, h_high in have:
            if h_high < cursor or h_low > high:
                continue
            if h_low > cursor:
                out.append((cursor, h_low - 1))
            cursor = max(cursor, h_high + 1)
            if cursor > high:
                break
        if cursor <= high:
            out.append((cursor, high))
    return out


def mysql_missing(checkpoint: str, executed: str) -> str:
    """The transactions of GTID set `checkpoint` absent from `executed` (a server's
    @@gtid_executed), as a GTID set ('' when the checkpoint is a subset: the server holds it).
    The same answer as `GTID_SUBTRACT(checkpoint, executed)` on the server."""
    have = parse_mysql(executed)
    missing = []
    for source, want in sorted(parse_mysql(checkpoint).items()):
        left = _minus(want, have.get(source, []))
        if left:
            ranges = ":".join(f"{a}" if a == b else f"{a}-{b}" for a, b in left)
            missing.append(f"{source}:{ranges}")
    return ",".join(missing)


def lacking(checkpoint: str, server_position: str, *, is_mariadb: bool) -> list[str]:
    """What a server at `server_position` lacks of `checkpoint`: [] when it holds it all."""
    if is_mariadb:
        return mariadb_lacking(checkpoint, server_position)
    missing = mysql_missing(checkpoint, server_position)
    return [f"transactions {missing} are not in the server's gtid_executed"] if missing else []
