"""Shared low-level utilities (errors, atomic files, caches): importable from every layer."""
