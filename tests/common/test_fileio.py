import numpy as np
import pytest

from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import atomic_path, ensure_dir, save_npz_atomic


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_npz_bytes_are_deterministic(tmp_path):
    a = {"x": np.arange(10.0), "y": np.ones((3, 3), dtype=np.int16)}
    save_npz_atomic(tmp_path / "a.npz", **a)
    save_npz_atomic(tmp_path / "b.npz", **a)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_cache_builds_once_and_rebuilds_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"v": np.arange(5)}

    key = content_hash(np.arange(3), "cfg")
    assert cached_arrays("k", key, build)["v"].sum() == 10
    assert cached_arrays("k", key, build)["v"].sum() == 10
    assert len(calls) == 1
    (tmp_path / "k" / f"{key}.npz").write_bytes(b"garbage")
    assert cached_arrays("k", key, build)["v"].sum() == 10
    assert len(calls) == 2


def test_content_hash_sees_array_changes():
    a = np.arange(6.0)
    b = a.copy()
    b[3] += 1e-9
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) == content_hash(a.copy())


def test_readable_and_writable_errors(tmp_path):
    with pytest.raises(BodycorrError, match="no such file"):
        check_readable(tmp_path / "missing.ply")
    (tmp_path / "empty.ply").write_bytes(b"")
    with pytest.raises(BodycorrError, match="empty"):
        check_readable(tmp_path / "empty.ply")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BodycorrError, match="cannot create"):
        ensure_dir(blocker / "sub")


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from bodycorr.common.fileio import write_text_atomic

    p = write_text_atomic(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
