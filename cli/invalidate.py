"""`primer-cache invalidate (--element ID | --category C | --all) [--dry-run]`.

Runs the sweep in-process with the same code as the invalidate task, and prints what it did.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from cli.errors import OperationError, UsageError
from config import load_settings
from core.batch import Batch
from core.keys import KeyFilter
from core.predicate import ElementImage, category_listed


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "invalidate", help="delete cached primer responses now"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--element", metavar="ID", help="a chunk_id or global element_id")
    which.add_argument(
        "--category",
        metavar="C",
        help="every key whose category list names C (literally: '*' is a name)",
    )
    which.add_argument("--all", action="store_true", help="every key under the primer prefix")
    parser.add_argument("--dry-run", action="store_true", help="list the keys, delete nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.invalidation import run_invalidation
    from tasks.work.elements import element_images
    from tasks.work.runtime import Runtime

    rt = Runtime(load_settings())
    doomed: Callable[[KeyFilter], bool] | None = None
    if args.all:
        batch = Batch(flush=True, reason="operator: invalidate --all")
    elif args.category is not None:
        if not args.category:
            raise UsageError("--category needs a non-empty category name")
        category = args.category
        batch = Batch.of([ElementImage.wildcard(category)])
        # Keys that list the category, taken literally (`*` is a name, not a pattern).
        doomed = lambda key_filter: category_listed(category, key_filter.cats)  # noqa: E731
    else:
        images = element_images(rt.db(), rt.settings, args.element)
        if images is None:
            raise OperationError(f"no chunk or global element with id {args.element!r}")
        if not images:
            print(f"element {args.element!r} is not in realm GLOBAL: no cached response holds it")
            return 0
        batch = Batch.of(images)
    result = run_invalidation(rt, batch, dry_run=args.dry_run, doomed=doomed)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **result.to_json()}, indent=2))
        return 0
    for key in result.keys:  # a dry run lists them; a real run counts (a flush can be millions)
        print(key)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {result.deleted} of {result.scanned} keys ({result.unparseable} unparseable)")
    return 0
