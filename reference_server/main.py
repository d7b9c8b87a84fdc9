"""`primer-cache-server`: the reference primer server (JSON-RPC over HTTP).

    primer-cache-server [--host 127.0.0.1] [--port 8080] [--cache primer-cache] [--processes 1]

Configuration is the sidecar's (PRIMER_MYSQL_URL, PRIMER_REDIS_URL, PRIMER_CONFIG: key prefix,
TTL, compression). With --processes N (or --reuse-port on each of several servers started by
hand) the processes bind with SO_REUSEPORT and share one port, each with its own L1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from aiohttp import web

from adapters.observability import logs
from config import ConfigError, load_settings
from reference_server.app import PrimerServer, build_app
from reference_server.caches import CACHE_MODES, make_cache
from reference_server.database import Database

DEFAULT_PORT = 8080
READY = "primer server: serving"  # the line a supervisor (or a test) waits for

log = logging.getLogger("primer_cache.server")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primer-cache-server", description=__doc__.split("\n")[0])
    env = os.environ
    parser.add_argument("--host", default=env.get("PRIMER_SERVER_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port",
        type=_port,
        default=env.get("PRIMER_SERVER_PORT", str(DEFAULT_PORT)),
        help="TCP port (env PRIMER_SERVER_PORT; default 8080)",
    )
    parser.add_argument(
        "--cache",
        choices=CACHE_MODES,
        default=env.get("PRIMER_SERVER_CACHE", "primer-cache"),
        help="read path: primer-cache (default), none, seed (the seed's plan as written: "
        "a baseline, stale by design), ceiling (benchmark only)",
    )
    parser.add_argument(
        "--processes",
        type=_positive,
        default=env.get("PRIMER_SERVER_PROCESSES", "1"),
        help="server processes sharing the port (SO_REUSEPORT), each with its own L1",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=env.get("PRIMER_SERVER_REUSE_PORT", "") in ("1", "true", "yes"),
        help="bind with SO_REUSEPORT, so that several servers share the port (implied by "
        "--processes N > 1)",
    )
    parser.add_argument("--db-pool", type=_positive, default=8, help="MySQL connections")
    parser.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=64 * 1024,
        help="larger request bodies are refused with 413",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    if args.cache not in CACHE_MODES:
        print(
            f"primer-cache-server: cache {args.cache!r} is not one of {CACHE_MODES}",
            file=sys.stderr,
        )
        return 2
    if args.processes > 1:
        return supervise(args, list(argv if argv is not None else sys.argv[1:]))
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"primer-cache-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"primer-cache-server: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


async def serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    cache = make_cache(args.cache, settings)
    server = PrimerServer(cache, Database(settings, pool_size=args.db_pool))
    runner = web.AppRunner(build_app(server, args.max_request_bytes), access_log=None)
    await runner.setup()
    # SO_REUSEPORT only when asked: any process of the same user that sets it joins the
    # port, so a second server started by mistake (another checkout's `make run`) would
    # silently take half the requests instead of failing to bind.
    site = web.TCPSite(runner, args.host, args.port, reuse_port=args.reuse_port)
    try:
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"{READY} http://{args.host}:{args.port}/mcp/jsonrpc "
            f"(cache {args.cache}, pid {os.getpid()})",
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Run `args.processes` single-process servers on the same port; stop them all when one
    exits or on SIGTERM/SIGINT."""
    child_args = [
        sys.executable,
        "-m",
        "reference_server",
        *_without_processes(argv),
        "--processes",
        "1",
        "--reuse-port",
    ]
    children = [subprocess.Popen(child_args) for _ in range(args.processes)]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        _, raw = os.wait()  # the first child to exit (or a signal) ends the group
        if not stopping:
            code = os.waitstatus_to_exitcode(raw)
            print(f"primer-cache-server: a server process exited ({code})", file=sys.stderr)
            status = code if code > 0 else 1
    except ChildProcessError:
        pass
    stop(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return status


def _without_processes(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
