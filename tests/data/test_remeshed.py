"""The remeshed suite: its face code round-trips, and the shipped bodies are remeshed on their own."""

import numpy as np
import pytest

from bodycorr.data.remeshed import _decode_faces, _encode_faces


def _oriented(faces):
    """Faces as a set of rotations to the smallest index (orientation kept)."""
    f = np.asarray(faces)
    r = np.argmin(f, 1)
    return {tuple(f[i, (r[i] + np.arange(3)) % 3]) for i in range(len(f))}


def test_face_code_round_trips_with_orientation(rng):
    faces = rng.integers(0, 5000, size=(3000, 3))
    code = _encode_faces(faces)
    assert code.dtype == np.int16
    assert _oriented(_decode_faces(code)) == _oriented(faces)
    assert _oriented(_decode_faces(code)) != _oriented(faces[:, ::-1])  # a flipped face is another face


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthetic-v1", "synthetic-v1-clothed"])
def test_shipped_remeshed_bodies_are_their_own_meshes(template, name):
    from scipy.spatial import cKDTree

    from bodycorr.data.remeshed import load_remeshed

    r = load_remeshed(name)
    assert r.suite.name == name
    s = r.suite
    assert set(np.unique(np.r_[s.intra.ravel(), s.inter.ravel()])) == set(r.shapes.tolist())
    a, b = (int(x) for x in s.inter[0])
    ma, mb = r.mesh(a), r.mesh(b)
    for m in (ma, mb):
        assert 5000 <= m.num_vertices <= 8000 and m.num_vertices != template.num_vertices
        assert m.faces.max() < m.num_vertices and m.openness() == 0  # closed, like the body it covers
    assert not np.array_equal(ma.faces[: min(ma.num_faces, mb.num_faces)], mb.faces[: min(ma.num_faces, mb.num_faces)])
    # each vertex lies on the posed body (its triangle's plane) and its canonical point on the rest template
    body = s.mesh(a)
    d = cKDTree(body.vertices).query(ma.vertices)[0]
    edge = np.linalg.norm(body.vertices[body.faces[:, 0]] - body.vertices[body.faces[:, 1]], axis=1)
    assert d.max() < edge.max()
    ca = r.canonical(a)
    assert cKDTree(template.mesh.vertices).query(ca)[0].max() < edge.max()
    # the posed vertex and its canonical point are the same body point: the template vertex nearest
    # the canonical point sits, posed, next to the remeshed vertex
    nearest = cKDTree(template.mesh.vertices).query(ca)[1]
    assert np.linalg.norm(body.vertices[nearest] - ma.vertices, axis=1).max() < edge.max()
    with pytest.raises(Exception, match="no remeshed body"):
        r.mesh(int(np.setdiff1d(np.arange(len(s)), r.shapes)[0]))
