"""A content-hashed, versioned on-disk cache for expensive precomputation (geodesics, segmentations)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from bodycorr.common.fileio import atomic_path

CACHE_VERSION = 1


def cache_dir() -> Path:
    """Root of the cache: ``$BODYCORR_CACHE_DIR`` or ``~/.cache/bodycorr``."""
    root = os.environ.get("BODYCORR_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bodycorr")
    return Path(root)


def content_hash(*parts: object) -> str:
    """A short SHA-1 over arrays (by dtype, shape and bytes) and plain values (by ``repr``)."""
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def cached_arrays(kind: str, key: str, build: Callable[[], dict[str, np.ndarray]], compress: bool = False) -> dict[str, np.ndarray]:
    """Load ``<cache>/<kind>/<key>.npz`` or build, store atomically and return it.

    A corrupt cache file is rebuilt rather than trusted.
    """
    path = cache_dir() / kind / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # corrupt or truncated: rebuild below
            path.unlink(missing_ok=True)
    arrays = build()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
    return arrays
