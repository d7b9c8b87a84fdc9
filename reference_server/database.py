"""The primer query against MySQL from asyncio: PyMySQL on a small thread pool, one connection
per pool thread. The rows and the response are the sidecar's own (adapters.mysql.primer_query,
core.response), so a server fill and a sidecar warm store equal values."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pymysql

from adapters.mysql.primer_query import fetch_rows
from config import Settings
from config.query import Query
from core.response import build_response


class DatabaseUnavailable(Exception):
    """The database did not answer; the message names it."""


class Database:
    def __init__(self, settings: Settings, pool_size: int = 8, connect_timeout: float = 5.0):
        self.settings = settings
        self._kwargs = {
            **settings.mysql.connect_kwargs(),
            "database": settings.mysql.database,
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "read_timeout": 30,
        }
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="primer-db")
        self._local = threading.local()
        self._connections: list[pymysql.Connection] = []
        self._lock = threading.Lock()
        self.calls = 0
        self.seconds = 0.0

    async def load(self, query: Query) -> dict:
        """The structured response for `query` as the database holds it now."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._load, query)

    def _load(self, query: Query) -> dict:
        started = time.perf_counter()
        try:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    rows = fetch_rows(conn, self.settings, query)
                    return build_response(query, rows, datetime.now(UTC))
                except pymysql.OperationalError as exc:
                    self._drop(conn)
                    if attempt == 2:
                        raise DatabaseUnavailable(
                            f"database {self.settings.mysql.url()} unreachable: {exc.args[-1]}"
                        ) from None
            raise AssertionError("unreachable")
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - started

    def _connection(self) -> pymysql.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = pymysql.connect(**self._kwargs)
            except pymysql.Error as exc:
                raise DatabaseUnavailable(
                    f"database {self.settings.mysql.url()} unreachable: {exc.args[-1]}"
                ) from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop(self, conn: pymysql.Connection) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(pymysql.Error):
            conn.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(pymysql.Error):
                    conn.close()
            self._connections.clear()
