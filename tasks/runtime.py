"""Kept for cli/, which imports Runtime, connect_mysql from here; it lives in
tasks.work.runtime now. Remove once cli/ imports it from there."""

from tasks.work.runtime import Runtime, connect_mysql

__all__ = ["Runtime", "connect_mysql"]
