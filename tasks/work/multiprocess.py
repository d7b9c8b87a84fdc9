"""prometheus-client's multiprocess mode for a Celery worker, chosen before anything in the
process imports prometheus_client (tasks/__init__.py calls `prepare` first).

Celery's prefork children record into their own files under PROMETHEUS_MULTIPROC_DIR and the
main process, which serves PRIMER_WORKER_METRICS_PORT, adds them up at each scrape. The
directory is private to the worker (a fresh temporary one, removed at exit) unless the
operator set PROMETHEUS_MULTIPROC_DIR, in which case the worker empties it at start: files
left by an earlier worker would add its counts to this one's.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def is_celery_worker(argv: Sequence[str]) -> bool:
    """Whether this process is a `celery ... worker` main process (not beat, not the CLI)."""
    if not argv:
        return False
    program = Path(argv[0])
    runs_celery = program.name == "celery" or (
        program.name == "__main__.py" and program.parent.name == "celery"
    )
    return runs_celery and "worker" in argv[1:]


def prepare(
    argv: Sequence[str] | None = None, env: MutableMapping[str, str] | None = None
) -> str | None:
    """Set up the multiprocess directory when this is a worker that serves metrics; returns
    it (None: single-process mode)."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    if not env.get("PRIMER_WORKER_METRICS_PORT") or not is_celery_worker(argv):
        return None
    if "prometheus_client" in sys.modules and ENV not in env:
        # Too late to switch modes in this process: say so rather than serve partial counts.
        print(
            "primer-cache: prometheus_client was imported before the worker chose its "
            "multiprocess mode; worker metrics will miss the pool children",
            file=sys.stderr,
        )
        return None
    path = env.get(ENV)
    if path:
        empty(Path(path))
    else:
        path = tempfile.mkdtemp(prefix="primer-cache-worker-metrics-")
        env[ENV] = path
        atexit.register(_remove, path, os.getpid())
    return path


def _remove(path: str, owner: int) -> None:
    # Only the process that made it removes it (a forked child may run atexit too).
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def empty(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
