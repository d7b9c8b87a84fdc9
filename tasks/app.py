"""The Celery app of the worker and beat: the broker's configuration (adapters.broker) and the
beat schedule, read from the settings when Celery first needs them, not at import.

`celery -A tasks worker|beat` reach the settings here first, so this is where their
configuration errors become the entry point's answer: every problem on its own line, exit 2,
no traceback. A command that imports the app has loaded the same settings already.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from celery import Celery
from celery.schedules import crontab

from adapters import broker
from config import ConfigError, Settings, load_settings
from tasks.work import runtime as process_runtime
from tasks.work.runtime import Runtime

app = Celery("primer_cache")

_settings: Settings | None = None


def settings() -> Settings:
    """This process's settings, loaded from the environment on first use; raises ConfigError."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def runtime() -> Runtime:
    """The process's connections, sending follow-up tasks through this app."""
    return process_runtime.runtime(settings(), app)


def send(name: str, args: list[Any], queue: str, countdown: float | None = None) -> None:
    """Queue task `name` ignoring its result (adapters.broker.send)."""
    broker.send(app, name, args, queue, countdown=countdown)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "warm-all-before-ttl": {
            "task": broker.WARM_ALL_TASK,
            "schedule": float(settings.warm.refresh_seconds),
            "options": {"queue": broker.queue_name(settings, broker.WARM)},
        },
        "ensure-partitions-daily": {
            "task": broker.ENSURE_PARTITIONS_TASK,
            "schedule": crontab(minute=7, hour=settings.partitions.schedule_hour),
        },
    }
    if settings.check.sample:
        # The continuous consistency check (off by default): a random sample of cached keys.
        schedule["check-sample"] = {
            "task": broker.CHECK_TASK,
            "schedule": float(settings.check.every_s),
            "options": {"queue": broker.queue_name(settings, broker.MAINTENANCE)},
        }
    return schedule


def refuse_to_start(program: str, problems: list[str]) -> NoReturn:
    """The worker's and beat's answer to what they cannot start with: one line each, exit 2."""
    for problem in problems:
        print(f"{program}: {problem}", file=sys.stderr)
    raise SystemExit(2)


@app.on_configure.connect
def _configure(sender: Celery, **_: object) -> None:
    try:
        loaded = settings()
    except ConfigError as exc:
        refuse_to_start("primer-cache", [str(exc)])
    sender.conf.update(
        broker.celery_config(loaded),
        beat_schedule=beat_schedule(loaded),
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
