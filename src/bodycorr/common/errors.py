"""One exception type for bad input: its message is one line that names the file and the fix."""

from __future__ import annotations

from pathlib import Path


class BodycorrError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` as one line and exits with status 2.

    Build messages as ``"<what> <where>: <why>. <fix>"``, e.g.
    ``"mesh scan.ply: 12 vertices have NaN coordinates. Clean the file or drop those vertices."``
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def require(cond: bool, message: str) -> None:
    """Raise :class:`BodycorrError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise BodycorrError(message)


def check_readable(path: str | Path, what: str = "file") -> Path:
    """Return ``Path(path)`` if it is an existing, non-empty regular file, else raise one line."""
    p = Path(path)
    if not p.exists():
        raise BodycorrError(f"{what} {p}: no such file. Check the path.")
    if p.is_dir():
        raise BodycorrError(f"{what} {p}: is a folder, not a file. Give a file path.")
    if p.stat().st_size == 0:
        raise BodycorrError(f"{what} {p}: the file is empty. Regenerate or re-export it.")
    return p
