"""Unit detection from the size of a body."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.units import detect_units, extent, resolve_units, to_metres


def box(size_m: float, scale: float = 1.0) -> np.ndarray:
    """(50, 3) points whose largest bounding-box side is ``size_m`` metres, times ``scale``."""
    rng = np.random.default_rng(0)
    pts = rng.random((50, 3)) * [0.3, 1.0, 0.2] * size_m
    pts[0], pts[1] = 0.0, [0.3 * size_m, size_m, 0.2 * size_m]
    return pts * scale


@pytest.mark.parametrize("size_m", [0.3, 0.6, 1.0, 1.75, 2.5])  # an arm ... a person with raised arms
@pytest.mark.parametrize("unit, scale", [("m", 1.0), ("cm", 100.0), ("mm", 1000.0)])
def test_detects_body_units(size_m, unit, scale):
    assert detect_units(box(size_m, scale)) == unit


def test_ambiguous_size_prefers_whole_body():
    # 170 could be a 1.7 m person in cm or a 17 cm hand in mm: a whole body wins.
    assert detect_units(box(1.7, 100.0)) == "cm"
    assert detect_units(box(0.17, 1000.0)) == "cm"  # documented limitation: pass units="mm"


@pytest.mark.parametrize("size", [0.001, 5.0, 1e5])
def test_implausible_size_raises_one_line(size):
    with pytest.raises(BodycorrError, match="fits no unit") as err:
        detect_units(box(size), name="mesh scan.ply")
    assert "mesh scan.ply" in str(err.value) and "units=" in str(err.value)


def test_resolve_and_convert():
    pts = box(1.7, 1000.0)
    assert resolve_units(pts, "auto") == "mm"
    assert resolve_units(pts, "cm") == "cm"  # explicit units are trusted
    with pytest.raises(BodycorrError, match="unknown units 'inch'"):
        resolve_units(pts, "inch", "mesh a.obj")
    out = to_metres(pts, "mm")
    assert np.isclose(extent(out), 1.7)
    assert to_metres(pts, "m") is not pts and np.array_equal(to_metres(pts, "m"), pts)
    with pytest.raises(BodycorrError):
        to_metres(pts, "ft")
