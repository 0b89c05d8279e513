"""Mesh vertex normals: the vectorised sum against a face-by-face loop, and outward on a sphere."""

from __future__ import annotations

import numpy as np

from bodycorr.geometry.mesh import Mesh
from tinyshapes import icosphere


def _normals_reference(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Each face's area-weighted normal added to its three corners, one face at a time."""
    vn = np.zeros_like(v)
    for a, b, c in f:
        n = np.cross(v[b] - v[a], v[c] - v[a])
        vn[a] += n
        vn[b] += n
        vn[c] += n
    return vn / np.linalg.norm(vn, axis=1, keepdims=True)


def test_vertex_normals_equal_the_loop_reference_and_point_outward():
    v, f = icosphere(2)
    v = v * np.random.default_rng(0).uniform(0.9, 1.1, (len(v), 1))  # a bumpy sphere: unequal face areas
    fast = Mesh(v, f).vertex_normals()
    np.testing.assert_allclose(fast, _normals_reference(v, f), atol=1e-12)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", fast, radial) > 0.5).all()
