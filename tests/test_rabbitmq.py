"""RabbitMQ as the broker for every process: the worker, the listener, beat and the CLI
(`warm` waits for its results through the rpc:// backend; `status` reads queue depths)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import redis

from config.query import Query
from tests.services import VENV_BIN
from tests.sidecar import Sidecar, isolated


def test_cli_warm_status_and_beat_on_rabbitmq(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
    amqp_url: str,
) -> None:
    with isolated(
        Sidecar, services, mysql_params, redis_client, tmp_path, broker_url=amqp_url
    ) as car:
        for n in range(5):
            car.insert_chunk(f"r{n}", "security", f"0.{n}5", "required")
        car.start_worker()
        car.start_listener()
        car.sync()
        # warm waits for each result: Celery 5 has no amqp backend, rpc:// brings them back
        warmed = car.cli("warm", "--categories", "security", "--enforcement", "required")
        assert warmed.returncode == 0, warmed.stdout + warmed.stderr
        assert "5 rows" in warmed.stdout and "warmed" in warmed.stdout
        key = car.keys.build(Query(("security",), enforcement_level="required"))
        assert car.redis.exists(key)
        status = car.cli("status", "--json")
        info = json.loads(status.stdout)
        assert info["queues"] == {name: 0 for name in car.queues}, info["queues"]
        # beat starts on the same broker (its schedule is too slow to wait for here)
        beat = car._start(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "tasks",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(tmp_path / f"beat-{random.randint(0, 10**9)}"),
            ],
            car.env,
            "beat",
            ready="beat: Starting",
        )
        assert beat.alive(), beat.output()
