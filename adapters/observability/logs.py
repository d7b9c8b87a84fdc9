"""Log output for every process (listener, worker, beat, CLI): text, or with
PRIMER_LOG_FORMAT=json one JSON object per line, for log pipelines that index fields.

A JSON line carries `ts` (UTC, ISO 8601), `level`, `logger`, `message` (the %-formatted
text, as in text mode), `pid` (and `process`, a pool child's name), the fields a call site
passes with `extra=` (GTID, position, key counts, the key acted on), and `exc` with the
traceback.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ENV = "PRIMER_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: whatever else a record carries came in through `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.processName not in (None, "MainProcess"):
            entry["process"] = record.processName  # a pool child: ForkPoolWorker-2
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_format(env: Mapping[str, str] | None = None) -> str:
    """The configured format; an unknown value counts as text here (the settings loader
    reports it as a configuration error)."""
    value = (os.environ if env is None else env).get(ENV, "text").strip().lower()
    return value if value in FORMATS else "text"


def formatter(env: Mapping[str, str] | None = None) -> logging.Formatter:
    return JsonFormatter() if log_format(env) == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: int) -> None:
    """The root logger of a CLI process (listen included): one stderr handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def reformat(logger: logging.Logger) -> None:
    """Give the handlers Celery set up on `logger` the JSON formatter, when JSON is asked
    for (text mode keeps Celery's own format)."""
    if log_format() == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
