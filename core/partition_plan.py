"""Monthly RANGE partitions: the supported forms, the planner and the DDL it renders.

Pure: no I/O. The adapter (tasks.partitions) reads a table's partitioning from
information_schema into a `Partitioning`, and this module decides what to add and drop:

- add: one partition per month, named pYYYYMM, from the month after the last bounded
  partition (the current month when there is none) through the current month + N, split off
  the MAXVALUE partition with REORGANIZE PARTITION. Months missed since the last run (a gap)
  are filled, one partition each.
- drop (opt-in retention): bounded partitions wholly before the current month - M. The
  current month and the MAXVALUE partition are never dropped.

Supported forms (anything else is refused with a PartitionError naming the table):

- RANGE (YEAR(c)*100+MONTH(c)) on DATETIME: bound = yyyymm of the next month, e.g. 202508
- RANGE (UNIX_TIMESTAMP(c)) on TIMESTAMP: bound = UTC epoch seconds of the next month's first
- RANGE COLUMNS(c) on DATE or DATETIME: bound = '2025-08-01' or '2025-08-01 00:00:00'

One module, over 300 lines, because it is one model: the months, the forms' bounds, reading a
table's partitioning and the plan all turn on the same Month and Form, and its users
(tasks.partitions, the CLI's `partitions` and `status`) take them together.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

MAXVALUE = "MAXVALUE"


class PartitionError(Exception):
    """Raised when a table's partitions cannot be maintained: its partitioning is not one of
    the supported monthly RANGE forms, or the change could not be applied (see subclasses)."""


# ---- months -----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """A calendar month; ordered, and `month + n` steps across year ends."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.year <= 9999:
            raise ValueError(f"no such month: {self.year!r}-{self.month!r}")

    @classmethod
    def of(cls, moment: date) -> Month:
        return cls(moment.year, moment.month)

    def __add__(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def __sub__(self, months: int) -> Month:
        return self + -months

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def partition_name(self) -> str:
        return f"p{self.year:04d}{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @classmethod
    def parse(cls, text: str) -> Month:
        """'2026-03' (as str() writes it) -> Month(2026, 3); ValueError on anything else."""
        year, sep, month = text.partition("-")
        if not sep or not year.isdigit() or not month.isdigit():
            raise ValueError(f"not a month (YYYY-MM): {text!r}")
        return cls(int(year), int(month))

    @property
    def index(self) -> int:
        """Months since year 0: differences of two are month counts."""
        return self.year * 12 + self.month - 1


def current_month(now: datetime) -> Month:
    """The UTC month of `now` (a naive `now` is taken to be UTC already)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return Month.of(now)


def headroom_months(through: Month | None, now: datetime) -> int:
    """How many months after the current one have their own partition when every month
    through `through` has (negative: even the current month has none; None: no partition)."""
    current = current_month(now)
    if through is None:
        return -1
    return through.index - current.index


# ---- the forms ----------------------------------------------------------------------------------


class Form(enum.Enum):
    """A supported partitioning form; each knows how to read and write a month-start bound."""

    YEAR_MONTH = "RANGE (YEAR(c)*100+MONTH(c))"
    UNIX_TIMESTAMP = "RANGE (UNIX_TIMESTAMP(c))"
    COLUMNS_DATE = "RANGE COLUMNS(c) on DATE"
    COLUMNS_DATETIME = "RANGE COLUMNS(c) on DATETIME"

    @property
    def columns(self) -> bool:
        return self in (Form.COLUMNS_DATE, Form.COLUMNS_DATETIME)

    def bound_sql(self, month: Month) -> str:
        """The LESS THAN value, as SQL, of the partition that ends where `month` starts."""
        first = month.first_day
        if self is Form.YEAR_MONTH:
            return f"{month.year * 100 + month.month}"
        if self is Form.UNIX_TIMESTAMP:
            # A literal, not UNIX_TIMESTAMP('…'): that would depend on the session time zone.
            return f"{_epoch(first)}"
        if self is Form.COLUMNS_DATE:
            return f"'{first.isoformat()}'"
        return f"'{first.isoformat()} 00:00:00'"

    @property
    def maxvalue_sql(self) -> str:
        # RANGE COLUMNS takes a value list; plain RANGE takes the bare keyword.
        return f"({MAXVALUE})" if self.columns else MAXVALUE

    def parse_bound(self, description: str) -> Month | None:
        """The month a bound starts, or None when it is not exactly a month start."""
        text = description.strip()
        try:
            if self is Form.YEAR_MONTH:
                value = int(text)
                return Month(value // 100, value % 100) if value > 0 else None
            if self is Form.UNIX_TIMESTAMP:
                moment = datetime.fromtimestamp(int(text), UTC)
                month = Month.of(moment)
                return month if _epoch(month.first_day) == int(text) else None
            moment = datetime.fromisoformat(text.strip("'\""))
        except (ValueError, OverflowError, OSError):
            return None
        if moment.day != 1 or moment.time() != time(0):
            return None
        return Month.of(moment)

    def describe_bound(self, month: Month) -> str:
        """A bound as an operator reads it."""
        if self is Form.UNIX_TIMESTAMP:
            return f"{month.first_day.isoformat()} 00:00:00 UTC"
        return month.first_day.isoformat()


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


# What information_schema shows, compacted (lower case, no spaces or backticks). MySQL 8
# wraps the sums in parentheses, MariaDB does not; both are accepted.
_YEAR_MONTH = re.compile(r"^\(*year\((\w+)\)\*100\)*\+month\((\w+)\)\)*$")
_UNIX_TIMESTAMP = re.compile(r"^\(*unix_timestamp\((\w+)\)\)*$")
_COLUMN = re.compile(r"^(\w+)$")


def _compact(expression: str) -> str:
    return re.sub(r"[\s`]", "", expression).lower()


# ---- what information_schema holds, and what it means ---------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One row of information_schema.PARTITIONS for the table."""

    name: str | None
    description: str | None  # the LESS THAN value as shown, or "MAXVALUE"
    rows: int = 0  # TABLE_ROWS: an estimate
    subpartition: str | None = None


@dataclass(frozen=True, slots=True)
class Partitioning:
    """A table's partitioning as read from information_schema, before any interpretation."""

    table: str
    method: str | None  # "RANGE", "RANGE COLUMNS", …; None when not partitioned
    expression: str | None
    partitions: tuple[PartitionRow, ...]  # in ordinal order
    column_types: Mapping[str, str]  # column name -> DATA_TYPE
    schema: str = ""  # the database; when given, messages and DDL name it too

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True, slots=True)
class Bounded:
    """An existing partition with a month-start upper bound."""

    name: str
    month: Month  # the partition holds rows before the start of this month
    rows: int


@dataclass(frozen=True, slots=True)
class Layout:
    """A table's partitioning, understood: the form, the bounded partitions, the MAXVALUE one."""

    table: str
    form: Form
    column: str
    bounded: tuple[Bounded, ...]  # ascending
    future: str  # the MAXVALUE partition's name
    future_rows: int
    schema: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    @property
    def last_bound(self) -> Month | None:
        return self.bounded[-1].month if self.bounded else None


def understand(partitioning: Partitioning) -> Layout:
    """Interpret `partitioning`, or raise PartitionError saying what was found instead."""
    table = partitioning.qualified
    method = (partitioning.method or "").upper()
    found = f"table {table!r}"
    if not method or not partitioning.partitions:
        raise PartitionError(f"{found} is not partitioned; expected {_EXPECTED}")
    if any(row.subpartition for row in partitioning.partitions):
        raise PartitionError(f"{found} is subpartitioned, which is not supported")
    expression = partitioning.expression or ""
    form, column = _form(table, method, expression, partitioning.column_types)

    *bounded_rows, last = partitioning.partitions
    if (last.description or "").strip().upper() != MAXVALUE or not last.name:
        raise PartitionError(
            f"{found} has no MAXVALUE partition to split months off: its last partition is "
            f"{last.name!r} VALUES LESS THAN ({last.description!r}); add one with "
            "ALTER TABLE … ADD PARTITION (PARTITION p_future VALUES LESS THAN MAXVALUE)"
        )
    bounded = []
    for row in bounded_rows:
        month = form.parse_bound(row.description or "")
        if month is None or not row.name:
            raise PartitionError(
                f"{found}: partition {row.name!r} has bound {row.description!r}, "
                f"which is not the start of a month in the form {form.value}"
            )
        bounded.append(Bounded(row.name, month, row.rows))
    return Layout(
        partitioning.table,
        form,
        column,
        tuple(bounded),
        last.name,
        last.rows,
        partitioning.schema,
    )


_EXPECTED = (
    "RANGE (YEAR(c)*100+MONTH(c)) on DATETIME, RANGE (UNIX_TIMESTAMP(c)) on TIMESTAMP, "
    "or RANGE COLUMNS(c) on DATE or DATETIME, with a MAXVALUE partition"
)


def _form(
    table: str, method: str, expression: str, column_types: Mapping[str, str]
) -> tuple[Form, str]:
    compact = _compact(expression)
    types = {name.lower(): kind.lower() for name, kind in column_types.items()}
    found = f"table {table!r} is partitioned by {method} ({expression!r})"
    if method == "RANGE":
        if match := _YEAR_MONTH.match(compact):
            column, other = match.groups()
            if column == other:
                return _typed(found, Form.YEAR_MONTH, column, types, {"datetime"})
        elif match := _UNIX_TIMESTAMP.match(compact):
            return _typed(found, Form.UNIX_TIMESTAMP, match.group(1), types, {"timestamp"})
    elif method == "RANGE COLUMNS" and (match := _COLUMN.match(compact)):
        column = match.group(1)
        kind = types.get(column)
        if kind == "date":
            return Form.COLUMNS_DATE, column
        if kind == "datetime":
            return Form.COLUMNS_DATETIME, column
        raise PartitionError(
            f"{found} on a column of type {kind!r}; RANGE COLUMNS is supported on DATE or DATETIME"
        )
    raise PartitionError(f"{found}; supported: {_EXPECTED}")


def _typed(
    found: str, form: Form, column: str, types: Mapping[str, str], allowed: set[str]
) -> tuple[Form, str]:
    kind = types.get(column)
    if kind not in allowed:
        raise PartitionError(
            f"{found} over a column of type {kind!r}; {form.value} is supported on "
            f"{' or '.join(sorted(a.upper() for a in allowed))}"
        )
    return form, column


# ---- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewPartition:
    name: str
    month: Month  # the month it holds
    bound: str  # VALUES LESS THAN (bound): the start of the next month, as SQL


@dataclass(frozen=True, slots=True)
class Plan:
    layout: Layout
    add: tuple[NewPartition, ...]
    drop: tuple[str, ...]
    through: Month  # the last month that must have its own partition

    @property
    def empty(self) -> bool:
        return not self.add and not self.drop

    def statements(self) -> list[str]:
        """The exact DDL, in the order to run it: reorganize first, then drop."""
        return [sql for sql in (self.reorganize_sql(), self.drop_sql()) if sql]

    def reorganize_sql(self) -> str | None:
        """REORGANIZE the MAXVALUE partition into the new months and itself, or None."""
        if not self.add:
            return None
        layout = self.layout
        parts = [f"PARTITION {_quote(p.name)} VALUES LESS THAN ({p.bound})" for p in self.add]
        parts.append(
            f"PARTITION {_quote(layout.future)} VALUES LESS THAN {layout.form.maxvalue_sql}"
        )
        return (
            f"ALTER TABLE {self._table} REORGANIZE PARTITION {_quote(layout.future)} "
            f"INTO ({', '.join(parts)})"
        )

    def drop_sql(self) -> str | None:
        """DROP the expired partitions, or None."""
        if not self.drop:
            return None
        names = ", ".join(_quote(name) for name in self.drop)
        return f"ALTER TABLE {self._table} DROP PARTITION {names}"

    @property
    def _table(self) -> str:
        table = _quote(self.layout.table)
        return f"{_quote(self.layout.schema)}.{table}" if self.layout.schema else table


def plan(
    layout: Layout, now: datetime, months_ahead: int, retain_months: int | None = None
) -> Plan:
    """What to add so every month through now + `months_ahead` has its own partition, and
    (when `retain_months` is given) which partitions lie wholly before now - `retain_months`."""
    if months_ahead < 0:
        raise ValueError(f"months_ahead must be >= 0, not {months_ahead!r}")
    if retain_months is not None and retain_months < 0:
        raise ValueError(f"retain_months must be >= 0, not {retain_months!r}")
    current = current_month(now)
    through = current + months_ahead
    start = current if layout.last_bound is None else layout.last_bound
    existing = {b.name for b in layout.bounded} | {layout.future}
    add = []
    month = start
    while month <= through:
        name = month.partition_name
        if name in existing:
            raise PartitionError(
                f"table {layout.qualified!r}: cannot add {name!r} for {month}: a partition of that "
                "name already exists with another bound"
            )
        add.append(NewPartition(name, month, layout.form.bound_sql(month + 1)))
        month += 1

    drop: tuple[str, ...] = ()
    if retain_months is not None:
        # A partition holding rows before `cutoff`'s first day only is expired; since
        # cutoff <= current month, the current month's partition is never among them.
        # Months filled into a long gap can be expired already: they are added (each month
        # keeps its own partition) and dropped in the same run, so a second run with the
        # same settings finds nothing to do.
        cutoff = current - retain_months
        drop = tuple(b.name for b in layout.bounded if b.month <= cutoff) + tuple(
            p.name for p in add if p.month + 1 <= cutoff
        )
    return Plan(layout, tuple(add), drop, through)


def plan_for(
    partitioning: Partitioning,
    now: datetime,
    months_ahead: int,
    retain_months: int | None = None,
) -> Plan:
    """`understand` then `plan`."""
    return plan(understand(partitioning), now, months_ahead, retain_months)


def describe(layout: Layout) -> list[tuple[str, str]]:
    """(name, the range it holds) for every partition, as an operator reads it."""
    form = layout.form
    described = []
    lower: Month | None = None
    for b in layout.bounded:
        upper = form.describe_bound(b.month)
        text = f"before {upper}" if lower is None else f"{form.describe_bound(lower)} .. {upper}"
        described.append((b.name, text))
        lower = b.month
    tail = "everything" if lower is None else f"from {form.describe_bound(lower)} on"
    described.append((layout.future, tail))
    return described


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


# Retention drops at most this many partitions in one run, and only empty ones, unless
# allowed (partitions.allow_drop_rows, --allow-drop-rows): a wrong clock, a mistyped
# --retain-months or the wrong table would otherwise delete months of rows without a word.
DROP_AT_ONCE = 3
UNKNOWN_ROWS = -1  # a partition a dry run would add and drop, its rows still in MAXVALUE


def drop_needs_permission(doomed: tuple[tuple[str, int], ...]) -> bool:
    """Whether dropping `doomed` ((partition, rows) pairs) needs allow_drop_rows: more than
    DROP_AT_ONCE partitions, or any rows."""
    return len(doomed) > DROP_AT_ONCE or any(rows != 0 for _, rows in doomed)


def drop_listing(doomed: tuple[tuple[str, int], ...]) -> list[str]:
    """One line per partition retention would drop, with its rows (exact)."""
    return [
        f"  {name}: "
        + (
            "rows not counted (added from the MAXVALUE partition by the same run)"
            if rows == UNKNOWN_ROWS
            else f"{rows} row(s)"
        )
        for name, rows in doomed
    ]
