"""deploy/monitoring: the alerting rules pass promtool's checks and unit tests, and every
metric the rules and the Grafana dashboard use is one the processes really export (scraped
from a running listener and worker, and parsed with prometheus-client's parser)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.query import Query
from tests.conftest import IN_CI
from tests.services import ROOT, VENV_BIN, free_port, scrape, wait_for
from tests.sidecar import Sidecar, isolated

MONITORING = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\bprimer_cache_[a-z0-9_]+")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is missing (apt package prometheus; `make services` installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.mark.parametrize(
    ("command", "target"), [("check", "alerts.yml"), ("test", "alerts_test.yml")]
)
def test_promtool_rules(command: str, target: str) -> None:
    done = subprocess.run(
        [promtool(), command, "rules", target],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", (MONITORING / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text()))
    assert alerts and alerts == tested


def used_metrics() -> dict[str, set[str]]:
    """Metric (sample) names per file: every PromQL expression of the rules and panels."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    return {
        "grafana-dashboard.json": set(METRIC.findall("\n".join(exprs))),
        "alerts.yml": set(METRIC.findall((MONITORING / "alerts.yml").read_text())),
    }


@dataclass
class Exporting(Sidecar):
    listener_port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)


@pytest.fixture
def car(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Exporting]:
    with isolated(Exporting, services, mysql_params, redis_client, tmp_path) as sidecar:
        sidecar.start_worker(concurrency=2, metrics_port=sidecar.worker_port)
        sidecar.start_listener(metrics_port=sidecar.listener_port)
        yield sidecar


def exported(port: int) -> set[str]:
    status, text = scrape(port)
    assert status == 200, text
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_dashboard_and_rules_use_only_exported_metrics(car: Exporting) -> None:
    car.plant(Query(("security",)))
    car.insert_chunk("mon1", "security", "0.90", "required")
    car.sync()
    # The gauges set by the periodic check and the partitions run exist once those ran.
    for task in ("primer_cache.ensure_partitions", "primer_cache.check_sample"):
        done = subprocess.run(
            [str(VENV_BIN / "celery"), "-A", "tasks", "call", task],
            env=car.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    def names() -> set[str]:
        return exported(car.listener_port) | exported(car.worker_port)

    wait_for(
        lambda: (
            {
                "primer_cache_check_last_run_timestamp_seconds",
                "primer_cache_partitions_last_success_timestamp_seconds",
            }
            <= names()
        ),
        timeout=60,
        what="the check and partitions gauges",
    )
    available = names()
    for source, used in used_metrics().items():
        assert used, source
        assert used <= available, f"{source} uses metrics nobody exports: {used - available}"
