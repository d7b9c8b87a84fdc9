"""Kept for cli/, which imports element_images from here; it lives in
tasks.work.elements now. Remove once cli/ imports it from there."""

from tasks.work.elements import element_images

__all__ = ["element_images"]
