"""PRIMER_LOG_FORMAT=json: one JSON object per line from the listener, the worker (pool
children included), beat and the CLI, with the object acted on in fields."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import redis

from adapters.observability.logs import JsonFormatter
from config.query import Query
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated

# A plain-text log line: ours (`2026-12-06 04:12:53,158 INFO …`) or Celery's (`[2026-… INFO/…]`)
PLAIN_LOG_LINE = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every JSON log line of a process's output."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def assert_all_json(name: str, text: str) -> None:
    """Every line `name` logged is a JSON object. Celery's worker and beat print a start-up
    banner (and Python a SecurityWarning for root) before their first log line: printed, not
    logged; it may hold no log line, and after it every line is JSON."""
    lines = [line for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("{")), len(lines))
    assert first < len(lines), f"{name} logged nothing as JSON:\n{text}"
    printed = [line for line in lines[:first] if PLAIN_LOG_LINE.match(line)]
    assert not printed, f"{name} logged plain text before its first JSON line: {printed}"
    for line in lines[first:]:
        assert line.startswith("{"), f"{name} logged a line that is not JSON: {line!r}"
        json.loads(line)


def test_formatter_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "tasks.work.invalidation",
            "levelname": "INFO",
            "levelno": logging.INFO,
            "msg": "invalidated %d keys up to %s",
            "args": (3, "GTID 0-1-9"),
            "gtid": "0-1-9",
            "keys_deleted": 3,
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "invalidated 3 keys up to GTID 0-1-9"
    assert (entry["level"], entry["logger"], entry["gtid"], entry["keys_deleted"]) == (
        "INFO",
        "tasks.work.invalidation",
        "0-1-9",
        3,
    )
    assert entry["ts"].endswith("+00:00") and "\n" not in JsonFormatter().format(record)


def test_every_process_logs_json_lines(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as car:
        car.env["PRIMER_LOG_FORMAT"] = "json"
        worker = car.start_worker()
        listener = car.start_listener()
        beat = car.start_beat()
        (key,) = car.plant(Query(("security",)))
        car.insert_chunk("j1", "security", "0.90", "required")
        car.sync()
        assert not car.redis.exists(key)
        car.plant(Query(("process",)))
        cli = car.cli("invalidate", "--all")
        assert cli.returncode == 0, cli.stderr

        started = [e for e in json_lines(listener.output()) if "streaming from" in e["message"]]
        assert started and started[0]["position"].startswith("GTID ") and started[0]["term"]

        def swept() -> list[dict[str, Any]]:
            return [
                e
                for e in json_lines(worker.output())
                if e["logger"] == "tasks.work.invalidation" and e.get("keys_deleted")
            ]

        entries = wait_for(swept, what="a JSON sweep line from the worker")
        assert entries[0]["gtid"] and entries[0]["process"].startswith("ForkPoolWorker")
        assert any("ready" in e["message"] for e in json_lines(worker.output()))
        assert json_lines(beat.output()), beat.output()
        flushed = [e for e in json_lines(cli.stderr) if "FLUSHED" in e["message"]]
        assert flushed and flushed[0]["keys_deleted"] >= 1
        # The listener prints no banner: every line of its output is a JSON object.
        lines = [line for line in listener.output().splitlines() if line.strip()]
        assert len(json_lines(listener.output())) == len(lines), listener.output()
        # And every line of the others after their banner; the CLI's stderr is its log.
        assert_all_json("the worker", worker.output())
        assert_all_json("beat", beat.output())
        assert_all_json("the CLI", cli.stderr)
