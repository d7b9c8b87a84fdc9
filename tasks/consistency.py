"""Kept for cli/, which imports check_cache from here; it lives in
tasks.work.consistency now. Remove once cli/ imports it from there."""

from tasks.work.consistency import check_cache

__all__ = ["check_cache"]
