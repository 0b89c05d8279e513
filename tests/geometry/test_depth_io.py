"""Depth map IO: 16-bit PNG millimetres and NPY metres, unit detection, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.depth_io import load_depth, save_depth


def depth_map() -> np.ndarray:
    d = np.random.default_rng(0).uniform(0.8, 3.5, (6, 9)).astype(np.float32)
    d[0, :3] = 0.0
    return d


def expect_error(path, match: str, **kwargs) -> str:
    with pytest.raises(BodycorrError, match=match) as err:
        load_depth(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_png_round_trip_is_millimetre_precise(tmp_path):
    d = depth_map()
    path = save_depth(tmp_path / "d.png", d)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # 16-bit
    back = load_depth(path)
    assert back.dtype == np.float32 and back.shape == d.shape
    assert np.abs(back - d).max() <= 0.0005 + 1e-6
    assert (back[0, :3] == 0).all()


def test_npy_round_trip_is_exact(tmp_path):
    d = depth_map()
    d[1, 1] = np.nan  # written as no data
    back = load_depth(save_depth(tmp_path / "d.npy", d))
    expected = np.where(np.isnan(d), 0, d)
    assert np.array_equal(back, expected)


def test_unit_detection(tmp_path):
    d = depth_map()
    np.save(tmp_path / "int_mm.npy", np.rint(d * 1000).astype(np.uint16))
    np.save(tmp_path / "float_mm.npy", d * 1000.0)
    np.save(tmp_path / "float_m.npy", d[..., None])  # (H, W, 1) is accepted
    for name in ("int_mm.npy", "float_mm.npy", "float_m.npy"):
        assert np.allclose(load_depth(tmp_path / name), d, atol=6e-4), name
    assert np.allclose(load_depth(tmp_path / "float_m.npy", units="mm"), d / 1000)
    assert np.allclose(load_depth(tmp_path / "float_mm.npy", units="mm"), d, atol=1e-6)


def test_partial_nan_becomes_no_data(tmp_path):
    d = depth_map().astype(np.float64)
    d[2, 2] = np.nan
    d[3, 3] = np.inf
    np.save(tmp_path / "d.npy", d)
    back = load_depth(tmp_path / "d.npy")
    assert back[2, 2] == 0 and back[3, 3] == 0 and np.isfinite(back).all()


def test_bad_depth_files(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan))
    expect_error(tmp_path / "nan.npy", "no valid pixels")
    np.save(tmp_path / "zero.npy", np.zeros((4, 4)))
    expect_error(tmp_path / "zero.npy", "depth map has no valid pixels")
    neg = depth_map()
    neg[1, :2] = -1.0
    np.save(tmp_path / "neg.npy", neg)
    expect_error(tmp_path / "neg.npy", "2 pixels have negative depth")
    np.save(tmp_path / "rgb.npy", np.ones((4, 4, 3)))
    expect_error(tmp_path / "rgb.npy", r"\(H, W\)")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    expect_error(tmp_path / "junk.npy", "not a valid .npy")

    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "gray8.png")
    msg = expect_error(tmp_path / "gray8.png", "looks like an 8-bit image")
    assert "16-bit PNG in millimetres or .npy in metres" in msg
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(tmp_path / "rgb.png")
    expect_error(tmp_path / "rgb.png", "8-bit")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect_error(tmp_path / "broken.png", "cannot read the image")

    expect_error(tmp_path / "missing.png", "no such file")
    (tmp_path / "empty.npy").write_bytes(b"")
    expect_error(tmp_path / "empty.npy", "empty")
    (tmp_path / "d.exr").write_bytes(b"x")
    expect_error(tmp_path / "d.exr", "unknown format")
    expect_error(save_depth(tmp_path / "ok.npy", depth_map()), "unknown units", units="cm")


def test_save_depth_errors(tmp_path):
    with pytest.raises(BodycorrError, match="16-bit"):
        save_depth(tmp_path / "far.png", np.full((2, 2), 70.0))
    with pytest.raises(BodycorrError, match="negative"):
        save_depth(tmp_path / "neg.npy", -np.ones((2, 2)))
    with pytest.raises(BodycorrError, match=r"\(H, W\)"):
        save_depth(tmp_path / "flat.npy", np.ones(5))
    with pytest.raises(BodycorrError, match="cannot write format"):
        save_depth(tmp_path / "d.jpg", np.ones((2, 2)))
    assert list(tmp_path.iterdir()) == []  # nothing half-written
