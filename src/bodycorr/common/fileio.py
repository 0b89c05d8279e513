"""Atomic writes: a file is either absent or complete, never half-written; output folders that
are checked before any work and never mix two runs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from bodycorr.common.errors import BodycorrError


def ensure_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) and check it is writable; raise one line otherwise."""
    p = Path(path)
    _refuse_file_in_the_way(p, what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BodycorrError(f"{what} {p}: cannot create it ({e.strerror}). Choose a writable folder.") from None
    if not os.access(p, os.W_OK):
        raise BodycorrError(f"{what} {p}: not writable. Choose a writable folder or fix its permissions.")
    return p


def _refuse_file_in_the_way(p: Path, what: str) -> Path:
    """The nearest existing folder at or above ``p``; one line if ``p`` or an ancestor is a file."""
    if p.exists() and not p.is_dir():
        raise BodycorrError(f"{what} {p}: cannot create it: it is a file, not a folder. Give a folder path (or move the file away).")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise BodycorrError(f"{what} {p}: cannot create it: {anc} is a file, not a folder. Choose another folder.")
    return anc


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Fail fast, before any work: one line unless folder ``path`` exists and is writable or can be
    created there. Creates nothing (it writes and removes one empty probe file in the nearest
    existing folder: permission bits say nothing to root or on a read-only file system)."""
    p = Path(path)
    anc = _refuse_file_in_the_way(p, what)
    try:
        fd, probe = tempfile.mkstemp(prefix=".bodycorr-probe-", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if anc == p else f" (in {anc})"
        raise BodycorrError(f"{what} {p}: cannot write there{where}: {e.strerror}. Choose a writable folder or fix its permissions.") from None
    return p


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """:func:`check_output_dir` for a file to be written: its folder, and the path not a folder."""
    p = Path(path)
    if p.is_dir():
        raise BodycorrError(f"{what} {p}: is a folder. Give a file name.")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise BodycorrError(f"{what} {p}: {anc} is a file, so nothing can be written under it. Choose another path.")
    check_output_dir(p.parent, f"folder {p.parent} of {what}")
    return p


#: The marker of a folder being written: present from the start of a run's writing to its end,
#: so a folder that holds it (an interrupted or failed run) is visibly incomplete.
RUN_MARKER = ".incomplete"
_ACTIVE_RUNS: dict[Path, int] = {}


@contextlib.contextmanager
def output_run(path: str | Path, outputs: Iterable[str] = (), what: str = "output folder") -> Iterator[Path]:
    """Write one run's outputs into folder ``path``, never mixed with an older run's.

    On entry: creates the folder, writes :data:`RUN_MARKER` and deletes what an earlier run left
    there of the kinds this run writes (``outputs``: file names or glob patterns relative to the
    folder, e.g. ``"frame_*.ply"``); nothing else in the folder is touched. On a normal exit the
    marker is removed; after an exception it stays. Nested runs on the same folder (a writer called
    by a larger job) share the outer run's marker.
    """
    p = ensure_dir(path, what)
    key = p.resolve()
    depth = _ACTIVE_RUNS.get(key, 0)
    marker = p / RUN_MARKER
    if depth == 0:
        try:
            marker.write_text("bodycorr is writing this folder; if this file stays, the run did not finish.\n")
        except OSError as e:
            raise BodycorrError(f"{what} {p}: cannot write in it ({e.strerror}). Choose a writable folder or fix its permissions.") from None
    clear_outputs(p, outputs)
    _ACTIVE_RUNS[key] = depth + 1
    ok = False
    try:
        yield p
        ok = True
    finally:
        _ACTIVE_RUNS[key] -= 1
        if not _ACTIVE_RUNS[key]:
            del _ACTIVE_RUNS[key]
            if ok:
                marker.unlink(missing_ok=True)


def clear_outputs(folder: str | Path, outputs: Iterable[str]) -> list[Path]:
    """Delete the regular files in ``folder`` that match ``outputs`` (names or glob patterns); returns them."""
    gone = []
    for pattern in outputs:
        for f in sorted(Path(folder).glob(pattern)):
            if f.is_file() or f.is_symlink():
                try:
                    f.unlink()
                except OSError as e:
                    raise BodycorrError(f"output {f}: cannot remove it from an earlier run ({e.strerror}). Remove it or choose another folder.") from None
                gone.append(f)
    return gone


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    ensure_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npz_atomic(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """Write an ``.npz`` atomically. Bytes are deterministic for the same arrays."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return write_bytes_atomic(path, buf.getvalue())


def load_result_npz(path: str | Path, required: tuple[str, ...] = (), writer: str = "") -> dict[str, np.ndarray]:
    """All arrays of a result ``.npz`` that a bodycorr command wrote, with ``required`` keys present;
    unreadable or incomplete files raise one line naming the file and the command to rerun (``writer``)."""
    path = Path(path)
    again = f"Re-run bodycorr {writer} to write it anew." if writer else "Re-run the bodycorr command that wrote it."
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a cut-short npz is a broken zip
        raise BodycorrError(f"result file {path}: cannot be read ({type(e).__name__}); it is corrupt or cut short. {again}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise BodycorrError(f"result file {path}: no {', '.join(missing)} array. {again}")
    return arrays
