"""Mesh.vertex_areas against a triangle-by-triangle loop; evaluation's area-weighted mean."""

from __future__ import annotations

import numpy as np

from bodycorr.evaluation.metrics import PairErrors, summarize
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


def test_summarize_weights_points_by_area():
    e = PairErrors("a->b", np.array([0.0, 10.0], dtype=np.float32), np.zeros(2, bool), weights=np.array([3.0, 1.0]))
    plain = PairErrors("c->d", np.array([4.0, 4.0], dtype=np.float32), np.zeros(2, bool))
    s = summarize([e, plain])
    assert s["AE_cm"] == 4.5 and s["AE_area_cm"] == (2.5 + 4.0) / 2 and s["WE_area_cm"] == 4.0
    assert e.area_mean_cm() == 2.5 and plain.area_mean_cm() == 4.0
