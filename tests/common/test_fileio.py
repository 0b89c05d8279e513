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


def test_check_output_dir_fails_fast_and_creates_nothing(tmp_path):
    from bodycorr.common.fileio import check_output_dir, check_output_file

    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []  # the probe file is gone too
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub", tmp_path / "file" / "sub" / "deeper"):
        with pytest.raises(BodycorrError, match="is a file") as e:
            check_output_dir(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BodycorrError, match="is a file"):
        check_output_file(tmp_path / "file" / "x.onnx")
    with pytest.raises(BodycorrError, match="is a folder"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "new" / "x.onnx") == tmp_path / "new" / "x.onnx" and not (tmp_path / "new").exists()


def test_output_run_never_mixes_two_runs(tmp_path):
    """An earlier run's files of the kinds a run writes are deleted when it starts; the marker says
    'incomplete' until it ends, and stays when it fails; other files are left alone."""
    from bodycorr.common.fileio import RUN_MARKER, output_run

    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json", "frame_0000.ply", "frame_0041.ply", "notes.txt"):
        (out / name).write_text("old")
    with output_run(out, ("summary.json", "frame_[0-9][0-9][0-9][0-9].ply")) as folder:
        assert folder == out and (out / RUN_MARKER).exists()
        assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "notes.txt"]
        (out / "summary.json").write_text("new")
        with output_run(out, ("matches.png",)):  # a writer inside a larger job: one run, one marker
            (out / "matches.png").write_text("new")
        assert (out / RUN_MARKER).exists()
    assert not (out / RUN_MARKER).exists() and (out / "notes.txt").read_text() == "old"
    with pytest.raises(RuntimeError):
        with output_run(out, ("summary.json",)):
            raise RuntimeError("the run failed")
    assert (out / RUN_MARKER).exists() and not (out / "summary.json").exists() and (out / "matches.png").exists()
    with output_run(out):  # the next run clears the marker when it ends
        pass
    assert not (out / RUN_MARKER).exists()


def test_file_sha256(tmp_path):
    import hashlib

    from bodycorr.common.fileio import file_sha256

    (tmp_path / "f").write_bytes(b"abc" * 1_000_000)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


def test_load_result_npz_names_the_file_and_the_command(tmp_path):
    from bodycorr.common.errors import BodycorrError
    from bodycorr.common.fileio import load_result_npz, save_npz_atomic

    good = save_npz_atomic(tmp_path / "r.npz", a=np.arange(3))
    assert list(load_result_npz(good, ("a",))["a"]) == [0, 1, 2]
    with pytest.raises(BodycorrError, match=r"r\.npz: no b array\. Re-run bodycorr match"):
        load_result_npz(good, ("a", "b"), "match")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:20])
    with pytest.raises(BodycorrError, match=r"cut\.npz: cannot be read"):
        load_result_npz(cut)
