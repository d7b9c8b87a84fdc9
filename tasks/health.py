"""Kept for cli/, which imports broker_eviction_warning from here; it lives in
tasks.work.health now. Remove once cli/ imports it from there."""

from tasks.work.health import broker_eviction_warning

__all__ = ["broker_eviction_warning"]
