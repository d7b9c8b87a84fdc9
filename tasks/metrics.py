"""Kept for cli/, which imports stats_key from here; it lives in
tasks.work.metrics now. Remove once cli/ imports it from there."""

from tasks.work.metrics import stats_key

__all__ = ["stats_key"]
