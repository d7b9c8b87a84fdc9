"""PRIMER_LOG_FORMAT=json: one JSON object per line from the listener, the worker (pool
children included), beat and the CLI, with the object acted on in fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import redis

from adapters.logs import JsonFormatter
from config.query import Query
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every log line; the worker's start-up banner is printed, not logged, and is skipped."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_formatter_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "tasks.invalidation",
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
        "tasks.invalidation",
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
                if e["logger"] == "tasks.invalidation" and e.get("keys_deleted")
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
