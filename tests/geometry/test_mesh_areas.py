"""Mesh.vertex_areas against a triangle-by-triangle loop."""

from __future__ import annotations

import numpy as np

from bodycorr.geometry.mesh import Mesh
from tinyshapes import grid_mesh


def test_vertex_areas_match_a_loop_and_sum_to_the_area():
    m = grid_mesh(6)
    rng = np.random.default_rng(0)
    m = Mesh(m.vertices + rng.normal(scale=0.01, size=m.vertices.shape), m.faces)
    ref = np.zeros(m.num_vertices)
    for f in m.faces:
        a, b, c = m.vertices[f]
        ref[f] += 0.5 * np.linalg.norm(np.cross(b - a, c - a)) / 3
    np.testing.assert_allclose(m.vertex_areas(), ref, rtol=1e-12)
    assert np.isclose(m.vertex_areas().sum(), m.face_areas().sum())
    extra = Mesh(np.r_[m.vertices, [[9.0, 9.0, 9.0]]], m.faces)  # an unreferenced vertex
    assert extra.vertex_areas()[-1] == 0

