"""`primer-cache partitions ensure|list`: the analytics table's monthly partitions, in-process.

The same work as the Celery task (tasks.partitions), run here without a worker so operators
can see the DDL (`--dry-run`) and fix a table by hand when beat is not running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pymysql

from cli.errors import OperationError, UsageError
from config import Settings, load_settings
from core.partition_plan import DROP_AT_ONCE, PartitionError, drop_listing

if TYPE_CHECKING:  # deferred at run time: see cli/__init__.py
    from tasks.partitions import Result

# The same ranges the [partitions] settings accept (config/groups.py).
MONTHS_AHEAD_RANGE = range(0, 121)
RETAIN_MONTHS_RANGE = range(1, 1201)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "partitions", help="the analytics table's monthly partitions"
    )
    actions = parser.add_subparsers(dest="partitions_command", required=True)

    ensure = actions.add_parser(
        "ensure", help="add the months ahead (and drop expired ones with retention)"
    )
    ensure.add_argument(
        "--months-ahead",
        type=int,
        metavar="N",
        help="months after the current one (default: config)",
    )
    ensure.add_argument(
        "--retain-months",
        type=int,
        metavar="M",
        help="drop partitions wholly before the current month - M (default: config; none)",
    )
    ensure.add_argument(
        "--allow-drop-rows",
        action="store_true",
        help=f"let retention drop partitions holding rows, or more than {DROP_AT_ONCE} at once "
        "(default: config partitions.allow_drop_rows)",
    )
    ensure.add_argument(
        "--dry-run", action="store_true", help="print the DDL that would run; change nothing"
    )
    ensure.set_defaults(func=run_ensure)

    listing = actions.add_parser("list", help="partitions, the ranges they hold, row estimates")
    listing.set_defaults(func=run_list)


def run_ensure(args: argparse.Namespace) -> int:
    _check_range("--months-ahead", args.months_ahead, MONTHS_AHEAD_RANGE)
    _check_range("--retain-months", args.retain_months, RETAIN_MONTHS_RANGE)
    settings = load_settings()
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.partitions import ensure_from_settings

    with _mysql_failures(settings):
        result = ensure_from_settings(
            settings,
            months_ahead=args.months_ahead,
            retain_months=args.retain_months,
            dry_run=args.dry_run,
            allow_drop_rows=True if args.allow_drop_rows else None,
        )
    if result.doomed:
        verb = "would drop" if result.drop_refused or result.dry_run else "drops"
        print(f"-- {result.table}: retention {verb} these partitions and their rows:")
        for line in drop_listing(result.doomed):
            print(f"-- {line.strip()}")
    if result.dry_run:
        _print_dry_run(result)
        return 0
    return _report(result)


def _print_dry_run(result: Result) -> None:
    """The DDL a run would execute, as SQL the operator can read or paste."""
    print(
        f"-- {result.table}: dry run, nothing changed; rows in the MAXVALUE partition:"
        f" {result.future_rows}"
    )
    for statement in result.statements:
        print(f"{statement};")
    if not result.statements:
        print(f"-- nothing to do: partitions present through {result.through}")
    if result.drop_refused:
        print(f"-- the drop needs --allow-drop-rows: {_why_refused(result)}")


def _report(result: Result) -> int:
    """What a real run did; OperationError when it could not do all it was asked."""
    if result.skipped:
        raise OperationError(f"{result.table}: another run held the run lock; nothing done")
    if not result.statements:
        print(f"{result.table}: nothing to do; partitions present through {result.through}")
        return 0
    if result.added:
        print(f"{result.table}: added {', '.join(result.added)}")
    if result.dropped:
        print(f"{result.table}: dropped {', '.join(result.dropped)}")
    print(f"{result.table}: partitions present through {result.through}")
    if result.drop_refused:
        raise OperationError(
            f"{result.table}: retention not done: {_why_refused(result)}; nothing dropped. "
            "Check the list above, then run again with --allow-drop-rows"
        )
    return 0


def _why_refused(result: Result) -> str:
    rows = sum(rows for _, rows in result.doomed if rows > 0)
    return (
        f"{len(result.doomed)} partition(s) holding {rows} row(s) "
        f"(more than {DROP_AT_ONCE} at once, or any rows, need it)"
    )


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.partitions import list_partitions

    with _mysql_failures(settings):
        listing = list_partitions(
            settings.mysql, settings.mysql.database, settings.partitions.table
        )
    print(f"{listing.table}: {listing.form or 'unsupported partitioning'}")
    rows = [("PARTITION", "HOLDS", "LESS THAN", "ROWS (estimate)")]
    rows += [(p.name, p.holds, p.bound, str(p.rows)) for p in listing.partitions]
    w_name, w_holds, w_bound = (max(len(row[i]) for row in rows) for i in range(3))
    for name, holds, bound, count in rows:
        print(f"{name:<{w_name}}  {holds:<{w_holds}}  {bound:<{w_bound}}  {count}")
    if listing.problem:
        print(f"primer-cache: {listing.problem}", file=sys.stderr)
        return 1
    return 0


def _check_range(option: str, value: int | None, allowed: range) -> None:
    if value is not None and value not in allowed:
        raise UsageError(
            f"{option} {value!r} is out of range: expected {allowed.start}..{allowed.stop - 1}"
        )


@contextmanager
def _mysql_failures(settings: Settings) -> Iterator[None]:
    """A bad table or a MySQL failure as an OperationError naming the table and the server."""
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.partitions import DatabaseUnavailable

    try:
        yield
    except PartitionError as exc:
        raise OperationError(str(exc)) from exc
    except DatabaseUnavailable as exc:
        raise OperationError(f"MySQL {settings.mysql.url()}: {exc}") from exc
    except pymysql.MySQLError as exc:
        table = f"{settings.mysql.database}.{settings.partitions.table}"
        raise OperationError(f"partitions of {table}: MySQL {settings.mysql.url()}: {exc}") from exc
