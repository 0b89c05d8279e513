"""Mesh openness: closed and holed surfaces read as complete scans, an open half as a partial one."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.fit import COMPLETE_OPENNESS
from tinyshapes import icosphere


@pytest.fixture(scope="module")
def sphere():
    v, f = icosphere(3)
    return Mesh(v, f, name="sphere")


def test_a_closed_surface_has_no_boundary(sphere):
    assert len(sphere.boundary_edges()) == 0 and sphere.openness() == 0.0


def test_a_hemisphere_is_open_by_its_rim(sphere):
    c = sphere.vertices[sphere.faces].mean(1)
    half = Mesh(sphere.vertices, sphere.faces[c[:, 2] > 0], name="half")
    # rim ~ 2 pi r over sqrt(2 pi r^2) = sqrt(2 pi) for a unit sphere (the triangles' zigzag adds ~15 %)
    assert half.openness() == pytest.approx(np.sqrt(2 * np.pi), rel=0.2)
    assert half.openness() > COMPLETE_OPENNESS


def test_scattered_small_holes_stay_complete(sphere):
    rng = np.random.default_rng(0)
    far = rng.choice(sphere.num_faces, 12, replace=False)
    holed = Mesh(sphere.vertices, np.delete(sphere.faces, far, axis=0), name="holed")
    assert len(holed.boundary_edges()) >= 30  # the holes are there...
    assert holed.openness() < 0.2 * COMPLETE_OPENNESS  # ...but each is short
