"""The listener's stop signals: the first SIGTERM or SIGINT stops it after the current batch
(warm), a second one at once (cold)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def install_warm_stop(stopping: threading.Event, name: str) -> None:
    """Set `stopping` on the first SIGTERM or SIGINT; exit with status 1 on the second."""

    def warm_stop(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            raise SystemExit(1)  # second signal: cold stop
        log.info("%s: stopping after the current batch (signal %d)", name, signum)
        stopping.set()

    signal.signal(signal.SIGTERM, warm_stop)
    signal.signal(signal.SIGINT, warm_stop)
