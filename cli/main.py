"""`primer-cache`: listen, warm, invalidate, partitions, status, check, functions,
ack-undecodable."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from adapters import unreachable
from adapters.observability import logs
from cli import ack, check, functions, invalidate, listen, partitions, status, warm
from cli.errors import OperationError, UsageError
from config import ConfigError, Settings, load_settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="primer-cache", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (listen, warm, invalidate, partitions, status, check, functions, ack):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"primer-cache: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"primer-cache: {exc}", file=sys.stderr)
        return 2
    except OperationError as exc:
        print(f"primer-cache: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A server away or refusing us (Redis, MySQL, the broker; TLS, credentials): one
        # line naming it, exit 1. Anything else is a bug and keeps its traceback.
        line = unreachable.describe(exc, _settings())
        if line is None:
            raise
        print(f"primer-cache: {line}", file=sys.stderr)
        return 1


def _settings() -> Settings | None:
    """The settings, to name the servers in a failure (the command loaded them already)."""
    try:
        return load_settings()
    except ConfigError:
        return None


if __name__ == "__main__":
    sys.exit(main())
