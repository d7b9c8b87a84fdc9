"""The pure partition planner: forms, bounds, plans and their DDL (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.partition_plan import (
    Form,
    Month,
    PartitionError,
    Partitioning,
    PartitionRow,
    Plan,
    current_month,
    describe,
    plan,
    plan_for,
    understand,
)

TABLE = "analytics"

# How MariaDB 10.11's information_schema.PARTITIONS shows each form (checked by hand).
EXPRESSIONS = {
    Form.YEAR_MONTH: ("RANGE", "year(`ts`) * 100 + month(`ts`)", "datetime"),
    Form.UNIX_TIMESTAMP: ("RANGE", "unix_timestamp(`ts`)", "timestamp"),
    Form.COLUMNS_DATE: ("RANGE COLUMNS", "`ts`", "date"),
    Form.COLUMNS_DATETIME: ("RANGE COLUMNS", "`ts`", "datetime"),
}


def shown(form: Form, month: Month) -> str:
    """A month-start bound as information_schema shows it (the SQL literal, as written)."""
    return form.bound_sql(month)


def partitioning(
    form: Form,
    bounds: list[Month],
    *,
    names: list[str] | None = None,
    future: str = "p_future",
    schema: str = "",
) -> Partitioning:
    """A table of `form` whose bounded partitions end where `bounds` start, then MAXVALUE."""
    method, expression, kind = EXPRESSIONS[form]
    names = names or [(b - 1).partition_name for b in bounds]
    rows = [PartitionRow(n, shown(form, b)) for n, b in zip(names, bounds, strict=True)]
    rows.append(PartitionRow(future, "MAXVALUE"))
    return Partitioning(TABLE, method, expression, tuple(rows), {"ts": kind, "id": "int"}, schema)


def applied(table: Partitioning, done: Plan) -> Partitioning:
    """What the server holds after running `done`'s DDL on `table`."""
    *bounded, future = table.partitions
    bounded += [PartitionRow(p.name, p.bound) for p in done.add]
    bounded = [row for row in bounded if row.name not in done.drop]
    return replace(table, partitions=(*bounded, future))


def bound_months(table: Partitioning) -> list[Month]:
    return [b.month for b in understand(table).bounded]


forms = st.sampled_from(list(Form))
months = st.builds(Month, st.integers(1990, 2090), st.integers(1, 12))
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2080, 12, 31, 23, 59, 59)
).map(lambda moment: moment.replace(tzinfo=UTC))


@st.composite
def existing_bounds(draw: st.DrawFn, now: datetime) -> list[Month]:
    """Ascending month-start bounds around `now`: none, a few, with gaps, some ahead."""
    current = current_month(now)
    offsets = draw(st.lists(st.integers(-40, 40), max_size=8, unique=True))
    return [current + offset for offset in sorted(offsets)]


# ---- months ---------------------------------------------------------------------------------


def test_month_arithmetic_crosses_year_ends() -> None:
    assert Month(2025, 12) + 1 == Month(2026, 1)
    assert Month(2026, 1) - 1 == Month(2025, 12)
    assert Month(2025, 11) + 14 == Month(2027, 1)
    assert Month(2025, 3) - 27 == Month(2022, 12)
    assert str(Month(2026, 2)) == "2026-02"
    assert Month(2026, 2).partition_name == "p202602"


@given(months, st.integers(-500, 500))
def test_month_steps_are_reversible_and_ordered(month: Month, steps: int) -> None:
    assert (month + steps) - steps == month
    assert (month + steps > month) == (steps > 0)


def test_current_month_is_taken_in_utc() -> None:
    new_york = timezone(timedelta(hours=-5))
    assert current_month(datetime(2025, 12, 31, 23, 30, tzinfo=new_york)) == Month(2026, 1)
    assert current_month(datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == (
        Month(2025, 12)
    )
    assert current_month(datetime(2025, 12, 31, 23, 30)) == Month(2025, 12)  # naive: UTC


# ---- bounds ---------------------------------------------------------------------------------


def test_bounds_as_each_form_writes_them() -> None:
    august = Month(2025, 8)
    assert Form.YEAR_MONTH.bound_sql(august) == "202508"
    assert Form.UNIX_TIMESTAMP.bound_sql(august) == "1754006400"  # 2025-08-01T00:00:00Z
    assert Form.COLUMNS_DATE.bound_sql(august) == "'2025-08-01'"
    assert Form.COLUMNS_DATETIME.bound_sql(august) == "'2025-08-01 00:00:00'"
    assert Form.UNIX_TIMESTAMP.bound_sql(Month(2026, 1)) == str(
        int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    )


@given(forms, months)
def test_every_written_bound_reads_back_as_its_month(form: Form, month: Month) -> None:
    assert form.parse_bound(form.bound_sql(month)) == month


@pytest.mark.parametrize(
    ("form", "description"),
    [
        (Form.YEAR_MONTH, "202513"),
        (Form.YEAR_MONTH, "202500"),
        (Form.YEAR_MONTH, "-5"),
        (Form.YEAR_MONTH, "to_days"),
        (Form.UNIX_TIMESTAMP, "1754006401"),  # one second past a month start
        (Form.UNIX_TIMESTAMP, "1754092800"),  # 2025-08-02
        (Form.COLUMNS_DATE, "'2025-08-02'"),
        (Form.COLUMNS_DATETIME, "'2025-08-01 00:00:01'"),
        (Form.COLUMNS_DATETIME, "'not a date'"),
    ],
)
def test_bounds_that_are_not_month_starts_are_refused(form: Form, description: str) -> None:
    assert form.parse_bound(description) is None
    method, expression, kind = EXPRESSIONS[form]
    table = Partitioning(
        TABLE,
        method,
        expression,
        (PartitionRow("p_odd", description), PartitionRow("p_future", "MAXVALUE")),
        {"ts": kind},
    )
    with pytest.raises(PartitionError, match=rf"'{TABLE}'.*'p_odd'.*{description!r}"):
        understand(table)


# ---- the forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expression", "kind", "form"),
    [
        ("RANGE", "year(`access_timestamp`) * 100 + month(`access_timestamp`)", "datetime", None),
        # MySQL 8 wraps the sums in parentheses; operators write whatever case they like.
        ("RANGE", "((year(`ts`) * 100) + month(`ts`))", "datetime", None),
        ("range", "YEAR( ts )*100+MONTH( ts )", "DATETIME", None),
        ("RANGE", "unix_timestamp(`ts`)", "timestamp", Form.UNIX_TIMESTAMP),
        ("RANGE", "(UNIX_TIMESTAMP(`ts`))", "timestamp", Form.UNIX_TIMESTAMP),
        ("RANGE COLUMNS", "`ts`", "date", Form.COLUMNS_DATE),
        ("RANGE COLUMNS", "ts", "datetime", Form.COLUMNS_DATETIME),
    ],
)
def test_supported_forms_are_recognised(
    method: str, expression: str, kind: str, form: Form | None
) -> None:
    column = "access_timestamp" if "access_timestamp" in expression else "ts"
    form = form or Form.YEAR_MONTH
    table = Partitioning(
        TABLE,
        method,
        expression,
        (PartitionRow("p202507", form.bound_sql(Month(2025, 8))), PartitionRow("p_f", "MAXVALUE")),
        {column: kind},
    )
    layout = understand(table)
    assert (layout.form, layout.column, layout.future) == (form, column, "p_f")
    assert [(b.name, b.month) for b in layout.bounded] == [("p202507", Month(2025, 8))]


def _table(method: str | None, expression: str | None, kind: str = "datetime") -> Partitioning:
    rows = (PartitionRow("p202507", "202508"), PartitionRow("p_future", "MAXVALUE"))
    return Partitioning(TABLE, method, expression, rows if method else (), {"ts": kind}, "db1")


@pytest.mark.parametrize(
    ("table", "found"),
    [
        (_table(None, None), "is not partitioned"),
        (_table("HASH", "`ts`"), "HASH"),
        (_table("LIST", "month(`ts`)"), "LIST"),
        (_table("RANGE", "to_days(`ts`)"), "to_days"),
        (_table("RANGE", "year(`ts`) * 100 + month(`other`)"), "other"),
        (_table("RANGE", "year(`ts`)"), "year"),
        (_table("RANGE", "year(`ts`) * 100 + month(`ts`)", "date"), "'date'"),
        (_table("RANGE", "year(`ts`) * 100 + month(`ts`)", "timestamp"), "'timestamp'"),
        (_table("RANGE", "unix_timestamp(`ts`)", "datetime"), "'datetime'"),
        (_table("RANGE COLUMNS", "`ts`", "int"), "'int'"),
        (_table("RANGE COLUMNS", "`ts`,`id`"), "`ts`,`id`"),
    ],
)
def test_unsupported_forms_are_refused_naming_the_table(table: Partitioning, found: str) -> None:
    with pytest.raises(PartitionError) as caught:
        understand(table)
    message = str(caught.value)
    assert "'db1.analytics'" in message
    assert found in message


def test_a_table_without_a_maxvalue_partition_is_refused() -> None:
    table = replace(
        partitioning(Form.YEAR_MONTH, [Month(2025, 8)]),
        partitions=(PartitionRow("p202507", "202508"), PartitionRow("p202508", "202509")),
    )
    with pytest.raises(PartitionError, match=r"'analytics' has no MAXVALUE partition.*'p202508'"):
        understand(table)


def test_a_subpartitioned_table_is_refused() -> None:
    table = replace(
        partitioning(Form.YEAR_MONTH, []),
        partitions=(PartitionRow("p_future", "MAXVALUE", 0, "p_futuresp0"),),
    )
    with pytest.raises(PartitionError, match="'analytics' is subpartitioned"):
        understand(table)


# ---- plans ------------------------------------------------------------------------------------


def test_the_ddl_is_exact_for_each_form() -> None:
    now = datetime(2025, 10, 15, 12, tzinfo=UTC)
    ym = plan_for(partitioning(Form.YEAR_MONTH, [Month(2025, 10)]), now, 1)
    assert ym.statements() == [
        "ALTER TABLE `analytics` REORGANIZE PARTITION `p_future` INTO ("
        "PARTITION `p202510` VALUES LESS THAN (202511), "
        "PARTITION `p202511` VALUES LESS THAN (202512), "
        "PARTITION `p_future` VALUES LESS THAN MAXVALUE)"
    ]
    ts = plan_for(partitioning(Form.UNIX_TIMESTAMP, [Month(2025, 11)], schema="db"), now, 1)
    assert ts.statements() == [
        "ALTER TABLE `db`.`analytics` REORGANIZE PARTITION `p_future` INTO ("
        "PARTITION `p202511` VALUES LESS THAN (1764547200), "
        "PARTITION `p_future` VALUES LESS THAN MAXVALUE)"
    ]
    day = plan_for(partitioning(Form.COLUMNS_DATE, [Month(2025, 11)]), now, 1)
    assert day.statements() == [
        "ALTER TABLE `analytics` REORGANIZE PARTITION `p_future` INTO ("
        "PARTITION `p202511` VALUES LESS THAN ('2025-12-01'), "
        "PARTITION `p_future` VALUES LESS THAN (MAXVALUE))"
    ]
    dt = plan_for(partitioning(Form.COLUMNS_DATETIME, [Month(2025, 6)]), now, 0, retain_months=3)
    assert dt.statements() == [
        "ALTER TABLE `analytics` REORGANIZE PARTITION `p_future` INTO ("
        "PARTITION `p202506` VALUES LESS THAN ('2025-07-01 00:00:00'), "
        "PARTITION `p202507` VALUES LESS THAN ('2025-08-01 00:00:00'), "
        "PARTITION `p202508` VALUES LESS THAN ('2025-09-01 00:00:00'), "
        "PARTITION `p202509` VALUES LESS THAN ('2025-10-01 00:00:00'), "
        "PARTITION `p202510` VALUES LESS THAN ('2025-11-01 00:00:00'), "
        "PARTITION `p_future` VALUES LESS THAN (MAXVALUE))",
        "ALTER TABLE `analytics` DROP PARTITION `p202505`, `p202506`",
    ]


def test_the_seed_table_gets_the_months_through_now_plus_three() -> None:
    seed = partitioning(Form.YEAR_MONTH, [Month(2025, 8), Month(2025, 9), Month(2025, 10)])
    planned = plan_for(seed, datetime(2025, 9, 20, tzinfo=UTC), 3)
    assert [(p.name, p.bound) for p in planned.add] == [
        ("p202510", "202511"),
        ("p202511", "202512"),
        ("p202512", "202601"),
    ]
    assert planned.drop == ()
    assert str(planned.through) == "2025-12"


def test_december_rolls_over_into_the_next_year() -> None:
    table = partitioning(Form.YEAR_MONTH, [Month(2025, 12)])  # p202511 is the last month
    planned = plan_for(table, datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), 3)
    assert [(p.name, p.bound) for p in planned.add] == [
        ("p202512", "202601"),
        ("p202601", "202602"),
        ("p202602", "202603"),
        ("p202603", "202604"),
    ]


def test_a_gap_of_missed_months_is_filled_month_by_month() -> None:
    table = partitioning(Form.COLUMNS_DATE, [Month(2025, 2)])  # last run: January 2025
    planned = plan_for(table, datetime(2025, 9, 1, tzinfo=UTC), 2)
    assert [p.name for p in planned.add] == [Month(2025, m).partition_name for m in range(2, 12)]
    assert planned.add[0].bound == "'2025-03-01'"
    assert planned.add[-1].bound == "'2025-12-01'"


def test_a_table_with_only_maxvalue_starts_at_the_current_month() -> None:
    planned = plan_for(partitioning(Form.UNIX_TIMESTAMP, []), datetime(2026, 2, 10, tzinfo=UTC), 1)
    assert [p.name for p in planned.add] == ["p202602", "p202603"]


def test_nothing_is_added_when_partitions_reach_far_enough() -> None:
    table = partitioning(Form.YEAR_MONTH, [Month(2026, 1), Month(2027, 1)])
    planned = plan_for(table, datetime(2026, 3, 1, tzinfo=UTC), 3)
    assert planned.empty
    assert planned.statements() == []


def test_retention_drops_exactly_the_expired_partitions() -> None:
    table = partitioning(Form.YEAR_MONTH, [Month(2025, m) for m in range(1, 13)])  # p2024‥p202511
    planned = plan_for(table, datetime(2025, 11, 15, tzinfo=UTC), 1, retain_months=3)
    # kept: August, September, October (the 3 months before November), November and ahead
    assert planned.drop == (
        "p202412",
        "p202501",
        "p202502",
        "p202503",
        "p202504",
        "p202505",
        "p202506",
        "p202507",
    )


def test_retention_of_zero_keeps_the_current_month() -> None:
    table = partitioning(Form.YEAR_MONTH, [Month(2025, 10), Month(2025, 11), Month(2025, 12)])
    planned = plan_for(table, datetime(2025, 11, 1, tzinfo=UTC), 1, retain_months=0)
    assert planned.drop == ("p202509", "p202510")  # p202511 is the current month


def test_a_misnamed_partition_blocks_the_name_it_needs() -> None:
    table = partitioning(Form.YEAR_MONTH, [Month(2025, 10)], names=["p202510"])
    with pytest.raises(PartitionError, match=r"'analytics'.*'p202510'.*already exists"):
        plan_for(table, datetime(2025, 10, 2, tzinfo=UTC), 0)


def test_negative_months_are_refused() -> None:
    layout = understand(partitioning(Form.YEAR_MONTH, []))
    with pytest.raises(ValueError, match="months_ahead"):
        plan(layout, datetime(2025, 1, 1, tzinfo=UTC), -1)
    with pytest.raises(ValueError, match="retain_months"):
        plan(layout, datetime(2025, 1, 1, tzinfo=UTC), 1, retain_months=-1)


def test_describe_shows_each_range_readably() -> None:
    layout = understand(partitioning(Form.UNIX_TIMESTAMP, [Month(2025, 8), Month(2025, 9)]))
    assert describe(layout) == [
        ("p202507", "before 2025-08-01 00:00:00 UTC"),
        ("p202508", "2025-08-01 00:00:00 UTC .. 2025-09-01 00:00:00 UTC"),
        ("p_future", "from 2025-09-01 00:00:00 UTC on"),
    ]


# ---- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data(), form=forms, now=moments, ahead=st.integers(0, 24))
def test_plans_add_contiguous_single_months_through_now_plus_n(
    data: st.DataObject, form: Form, now: datetime, ahead: int
) -> None:
    bounds = data.draw(existing_bounds(now))
    table = partitioning(form, bounds)
    planned = plan_for(table, now, ahead)
    current = current_month(now)
    through = current + ahead
    start = bounds[-1] if bounds else current

    expected = []
    month = start
    while month <= through:
        expected.append(month)
        month += 1
    assert [p.month for p in planned.add] == expected  # contiguous, from the right month
    for p in planned.add:
        assert p.name == f"p{p.month.year:04d}{p.month.month:02d}"
        assert form.parse_bound(p.bound) == p.month + 1  # exactly one month each
    assert planned.drop == ()

    after = applied(table, planned)
    assert bound_months(after)[-1] > through  # every month through now + N is covered
    assert plan_for(after, now, ahead).empty  # and a second run does nothing


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    form=forms,
    now=moments,
    ahead=st.integers(0, 6),
    retain=st.integers(0, 30),
)
def test_retention_drops_only_expired_partitions_and_settles(
    data: st.DataObject, form: Form, now: datetime, ahead: int, retain: int
) -> None:
    bounds = data.draw(existing_bounds(now))
    table = partitioning(form, bounds)
    planned = plan_for(table, now, ahead, retain_months=retain)
    current = current_month(now)
    cutoff = current - retain

    upper = {b.name: b.month for b in understand(table).bounded}
    upper.update({p.name: p.month + 1 for p in planned.add})
    assert "p_future" not in planned.drop
    for name, bound in upper.items():
        # a partition is dropped exactly when all it holds lies before the cutoff month
        assert (name in planned.drop) == (bound <= cutoff), name
        if name in planned.drop:
            assert bound <= current  # never the current month, nor anything after it

    after = applied(table, planned)
    remaining = understand(after)
    assert remaining.future == "p_future"
    assert all(b.month > cutoff for b in remaining.bounded)
    assert bound_months(after)[-1] > current + ahead
    assert plan_for(after, now, ahead, retain_months=retain).empty
