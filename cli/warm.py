"""`primer-cache warm (--all | --categories … --enforcement … --priority … --limit …)`.

Enqueues warm tasks on the warm queue (a worker does the work, with the same race guard and
collapsing as every other warm), then waits for their results unless `--no-wait`.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

from cli.errors import OperationError, UsageError
from config import load_settings
from config.query import Query

_PATTERN_OPTIONS = {
    "categories": "include_categories",
    "priority": "priority_threshold",
    "enforcement": "enforcement_level",
    "sort_by": "sort_by",
    "limit": "limit",
}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "warm", help="warm cached primer responses now (through the Celery workers)"
    )
    parser.add_argument("--all", action="store_true", help="every configured warm pattern")
    parser.add_argument("--categories", nargs="+", metavar="C", help="include_categories")
    parser.add_argument("--enforcement", metavar="LEVEL", help="required, recommended, optional")
    parser.add_argument("--priority", type=float, metavar="P", help="priority_threshold, 0..1")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N elements")
    parser.add_argument("--sort-by", metavar="ORDER", help="priority_desc (the only order)")
    parser.add_argument("--no-wait", action="store_true", help="enqueue and print task ids")
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="seconds to wait (default 60)"
    )
    parser.set_defaults(func=run)


def pattern_from_args(args: argparse.Namespace) -> Query | None:
    """The one pattern the arguments name, None for --all; UsageError for anything else."""
    given = {param: getattr(args, opt) for opt, param in _PATTERN_OPTIONS.items()}
    given = {param: value for param, value in given.items() if value is not None}
    if args.all and given:
        named = ", ".join(
            f"--{opt.replace('_', '-')}" for opt, p in _PATTERN_OPTIONS.items() if p in given
        )
        raise UsageError(f"--all takes no pattern options (got {named})")
    if not args.all and not given:
        raise UsageError(
            "name what to warm: --all, or a pattern (--categories, --enforcement, "
            "--priority, --limit, --sort-by)"
        )
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout!r} must be a positive number of seconds")
    if args.all:
        return None
    try:
        return Query.from_params(given)
    except ValueError as exc:
        raise UsageError(f"bad warm pattern: {exc}") from None


def run(args: argparse.Namespace) -> int:
    query = pattern_from_args(args)
    settings = load_settings()
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.warming import enqueue_warms
    from tasks.work.runtime import Runtime

    rt = Runtime(settings)
    queries = settings.warm.patterns if query is None else (query,)
    if not queries:
        print("no warm patterns configured ([[warm.patterns]] is empty)")
        return 0
    _reach_broker()
    sent = enqueue_warms(rt, queries)
    if args.no_wait:
        for item in sent:
            print(f"{item['task_id']}  {item['key']}")
        return 0
    return _wait(sent, args.timeout)


def _reach_broker() -> None:
    """Connect to the broker once before sending: a broker away is then one line (cli.main),
    not Celery's result backend retrying for 20 s with a line per attempt (with a Redis
    broker the results live on the broker's Redis too)."""
    from tasks.app import app  # deferred: see cli/__init__.py

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)


def _wait(sent: list[dict], timeout: float) -> int:
    # Deferred: Celery, for this command alone (cli/__init__.py).
    from celery.exceptions import TimeoutError as ResultTimeout

    from tasks.app import app

    deadline = time.monotonic() + timeout
    failed = 0
    waited: list[Any] = []
    try:
        for item in sent:
            result = app.AsyncResult(item["task_id"])
            waited.append(result)
            try:
                outcome = result.get(
                    timeout=max(deadline - time.monotonic(), 0.01), propagate=False
                )
            except ResultTimeout:
                raise OperationError(
                    f"timed out after {timeout:g} s waiting for the warm of {item['key']} "
                    f"(task {item['task_id']}; is a worker consuming the warm queue?)"
                ) from None
            if result.failed() or not isinstance(outcome, dict):
                failed += 1
                print(f"{item['key']}  FAILED: {outcome!r}")
                continue
            rows = "-" if outcome.get("rows") is None else outcome["rows"]
            ms = outcome.get("ms", 0)
            print(f"{item['key']}  {rows} rows  {ms:.1f} ms  {outcome.get('status')}")
            if outcome.get("status") == "aborted":
                failed += 1
    finally:
        _stop_waiting(waited)
    return 1 if failed else 0


def _stop_waiting(results: list[Any]) -> None:
    """Unsubscribe from the results now: left to AsyncResult.__del__, a Redis result backend
    unsubscribes while the interpreter shuts down, and prints a traceback (ImportError:
    sys.meta_path is None) after a timeout. A backend already gone has nothing to undo."""
    for result in results:
        with contextlib.suppress(Exception):
            result.backend.remove_pending_result(result)
