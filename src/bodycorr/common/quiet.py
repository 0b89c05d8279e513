"""Third-party libraries, started without noise on the console.

NVIDIA Warp (the ray caster, and Anny's skinning) probes for a CUDA driver when it initialises and
its native code prints "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver" straight
to the process's stderr on every machine without one, which is every CPU machine: there is no
setting for it. :func:`init_warp` initialises Warp once with that one line filtered out of what
the native code writes to stderr meanwhile; every other line is passed on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from typing import Any, Iterator

#: Lines written by Warp's initialisation that are dropped (substrings).
WARP_NOISE = ("Could not find or load the NVIDIA CUDA driver",)


@functools.lru_cache(maxsize=1)
def init_warp() -> Any:
    """``import warp``, set its log level to warnings (no banner on stdout) and ``warp.init()``
    without the CUDA-driver warning; returns the module. Later calls return it at once."""
    os.environ.setdefault("WARP_LOG_LEVEL", "error")
    import warp as wp

    wp.config.log_level = wp.LOG_WARNING
    with filtered_stderr(WARP_NOISE):
        wp.init()
    return wp


@contextlib.contextmanager
def filtered_stderr(drop: tuple[str, ...]) -> Iterator[None]:
    """Within the block, what anything (native code included) writes to file descriptor 2 is held
    back; at its end the lines containing none of ``drop`` are written to it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(d in line for d in drop))
            if kept:
                os.write(2, kept.encode("utf-8"))
