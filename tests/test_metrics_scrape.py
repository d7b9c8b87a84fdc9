"""A scrape never fails for a file that holds nothing yet, and never drops its connection.

A process in prometheus-client's multiprocess mode creates its file and only then sizes it:
a scrape in between, or a pool child SIGKILLed in between (its empty file then stays for
good), made the whole scrape fail (prometheus/client_python#1199), and the endpoint dropped
the connection. Here the files are written by a real process in multiprocess mode.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import GaugeMetricFamily

import tests.warm_fixtures  # noqa: F401  (tasks.app reads the services' URLs from os.environ)
from adapters.observability import metrics_http
from tasks.work.metrics import ReadableFilesCollector
from tests.services import free_port, scrape

WRITER = textwrap.dedent(
    """
    from prometheus_client import Counter
    Counter("scrape_test_written", "written by a child").inc(3)
    """
)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A multiprocess directory with one process's counter and one empty file."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WRITER], env=env, check=True, timeout=60)
    (tmp_path / "counter_999999.db").touch()  # created, never sized: its process was killed
    return tmp_path


def test_an_empty_file_is_skipped_not_fatal(files: Path) -> None:
    with pytest.raises(struct.error):  # the library's own collector: every metric is lost
        generate_latest(_registry(multiprocess.MultiProcessCollector, files))
    text = generate_latest(_registry(ReadableFilesCollector, files)).decode()
    assert "scrape_test_written_total 3.0" in text


class Broken:
    def collect(self) -> list[GaugeMetricFamily]:
        raise RuntimeError("unreadable")


def test_a_failed_collection_is_a_500_not_a_dropped_connection() -> None:
    registry = CollectorRegistry()
    registry.register(Broken())  # type: ignore[arg-type]
    port = free_port()
    server = metrics_http.serve(port, registry, lambda: None)
    try:
        status, body = scrape(port)
        assert status == 500 and "unreadable" in body
        assert scrape(port, "/healthz") == (200, "ok\n")  # still serving
    finally:
        server.shutdown()
        server.server_close()


def _registry(collector: type, path: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    collector(registry, path=str(path))
    return registry
