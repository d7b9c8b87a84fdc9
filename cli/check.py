"""`primer-cache check [--sample N] [--json]`: cached primer responses against fresh queries
(tasks/consistency.py). Exit status 1 when any key is stale or undecodable."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.errors import UsageError
from config import load_settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "check", help="compare cached responses with fresh queries; exit 1 when any is stale"
    )
    parser.add_argument(
        "--sample", type=int, metavar="N", help="check N random keys instead of every key"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.work.consistency import check_cache
    from tasks.work.runtime import Runtime

    if args.sample is not None and args.sample < 1:
        raise UsageError(f"--sample {args.sample!r}: give a number of keys, 1 or more")
    rt = Runtime(load_settings())
    rt.db()  # MySQL away is one line (cli.main), even when no cached key needs a query
    result = check_cache(rt, args.sample)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        for key in result.stale:
            print(f"stale: {key}")
        for key in result.undecodable:
            print(f"undecodable: {key}")
        for key in result.missing:
            print(f"missing warm key: {key}")
        print(
            f"checked {result.checked} keys{'' if args.sample is None else ' (a sample)'}: "
            f"{len(result.stale)} stale, {len(result.undecodable)} undecodable, "
            f"{result.unparseable} unparseable, {len(result.missing)} warm keys missing"
        )
    return 0 if result.ok else 1
