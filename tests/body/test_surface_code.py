"""Surface colour codes: encoding, decoding (round trips, uv, a brute-force reference), the codes themselves."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from bodycorr.body.surface_code import (
    CODE_METHODS,
    DEFAULT_CODE,
    SurfaceCode,
    code_quality,
    code_values,
    get_surface_code,
    make_surface_code,
)
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.closest import closest_on_triangles
from bodycorr.geometry.mesh import Mesh
from tinyshapes import icosphere


def sphere_code(method: str = "position") -> tuple[SurfaceCode, Mesh, np.ndarray]:
    """A 10 cm sphere (642 vertices) with exact geodesics (great circles) and a UV per face corner."""
    v, f = icosphere(3)
    mesh = Mesh(0.1 * v, f, "sphere")
    geo = 0.1 * np.arccos(np.clip(v @ v.T, -1.0, 1.0))
    corner = v[f]  # (F, 3, 3)
    face_uv = np.stack([np.arctan2(corner[..., 1], corner[..., 0]), corner[..., 2]], -1)
    return make_surface_code(method, mesh, face_uv, geo), mesh, geo


def split_ring(n_around: int = 64, n_up: int = 5, gap: float = 0.025, radius: float = 0.1, height: float = 0.06):
    """A cylinder band cut open with its two ends ``gap`` apart: close in space, 60 cm apart on the surface.

    Developable, so the geodesic is the distance in the unrolled (arc length, height) plane.
    """
    span = 2 * np.pi - gap / radius
    theta = np.linspace(0, span, n_around)
    z = np.linspace(0, height, n_up)
    tt, zz = np.meshgrid(theta, z, indexing="ij")
    v = np.stack([radius * np.cos(tt), radius * np.sin(tt), zz], -1).reshape(-1, 3)
    flat = np.stack([radius * tt, zz], -1).reshape(-1, 2)
    idx = np.arange(n_around * n_up).reshape(n_around, n_up)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    geo = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    return Mesh(v, f, "split ring"), geo, idx


# ------------------------------------------------------------------------------------ encode/decode


def test_vertices_decode_to_themselves():
    code, _, _ = sphere_code()
    d = code.decode(code.values)
    assert np.array_equal(d.vertex, np.arange(code.num_vertices))
    # the decoded point is the vertex: its face holds it with barycentric 1
    corner = np.argmax(d.bary, axis=1)
    assert np.array_equal(code.faces[d.face, corner], d.vertex)
    np.testing.assert_allclose(d.bary.max(1), 1.0, atol=1e-5)
    assert d.distance.max() < 1e-3
    # quantised colours (the training targets) decode to the same or a neighbouring vertex
    q = code.decode(code.encode_vertices(np.arange(code.num_vertices)))
    _, _, geo = sphere_code()
    assert geo[np.arange(code.num_vertices), q.vertex].max() < 0.012  # < one edge (~1 cm)
    assert code.encode_vertices(np.arange(code.num_vertices)).dtype == np.uint8


def test_points_on_triangles_round_trip_with_uv():
    code, mesh, _ = sphere_code()
    rng = np.random.default_rng(0)
    face = rng.integers(0, len(code.faces), 500)
    bary = rng.dirichlet([3, 3, 3], 500).astype(np.float32)
    bary = np.maximum(bary, 0.05)
    bary /= bary.sum(1, keepdims=True)  # interior points: no ties with the neighbouring faces
    colour = code.encode_points(face, bary)
    assert colour.dtype == np.float32 and colour.shape == (500, 3)
    assert colour.min() >= 0 and colour.max() <= 255
    d = code.decode(colour)
    assert np.array_equal(d.face, face)
    np.testing.assert_allclose(d.bary, bary, atol=2e-4)
    np.testing.assert_allclose(d.uv, np.einsum("nk,nkc->nc", bary, code.face_uv[face]), atol=1e-4)
    assert d.distance.max() < 0.01
    # the nearest vertex is a corner of the face or next to it
    assert np.linalg.norm(mesh.vertices[d.vertex] - mesh.surface_points(face, bary), axis=1).max() < 0.02


def test_decode_matches_brute_force_closest_point():
    """Colours off the coded surface decode to the closest point of any triangle (dense-sampling reference)."""
    code, _, _ = sphere_code()
    rng = np.random.default_rng(1)
    face = rng.integers(0, len(code.faces), 60)
    colour = code.encode_points(face, rng.dirichlet([1, 1, 1], 60)) + rng.normal(0, 3, (60, 3))
    d = code.decode(colour)
    # reference: every triangle sampled on a fine barycentric grid, nearest sample wins
    s = np.array([(i, j, 40 - i - j) for i in range(41) for j in range(41 - i)], float) / 40
    samples = np.einsum("sk,fkc->fsc", s, code.values[code.faces].astype(np.float64)).reshape(-1, 3)
    ref = cKDTree(samples).query(colour)[0]
    point = np.einsum("nk,nkc->nc", d.bary, code.values[code.faces[d.face]])
    np.testing.assert_allclose(np.linalg.norm(point - colour, axis=1), d.distance, rtol=1e-4, atol=1e-3)
    assert (d.distance <= ref + 1e-3).all()  # never worse than the reference
    assert (d.distance >= ref - 0.2).all()  # and the reference is within its grid spacing
    assert (d.bary >= 0).all()
    np.testing.assert_allclose(d.bary.sum(1), 1.0, atol=1e-5)


def test_closest_point_on_triangle_regions():
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    pts = np.array([[0.2, 0.2, 1.0], [-1, -1, 0], [2, 0, 0.5], [0.5, -1, 0], [1, 1, 0], [-1, 0.5, 0]])
    bary, d2 = closest_on_triangles(pts[:, None], np.broadcast_to(tri, (len(pts), 1, 3, 3)))
    closest = np.array([[0.2, 0.2, 0], [0, 0, 0], [1, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0]])
    np.testing.assert_allclose(np.einsum("nk,kc->nc", bary[:, 0], tri), closest, atol=1e-12)
    np.testing.assert_allclose(d2[:, 0], ((pts - closest) ** 2).sum(1), atol=1e-12)
    # a degenerate (zero-area) triangle still gives its closest point
    flat = np.array([[[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]]])
    b, d = closest_on_triangles(np.array([[[1.5, 1, 0]]]), flat)
    np.testing.assert_allclose(np.einsum("k,kc->c", b[0, 0], flat[0, 0]), [1.5, 0, 0], atol=1e-12)
    assert d[0, 0] == pytest.approx(1.0)


def test_decode_chunks_and_dtypes_agree():
    code, _, _ = sphere_code()
    rng = np.random.default_rng(2)
    colour = rng.uniform(0, 255, (300, 3))
    whole = code.decode(colour)
    parts = code.decode(colour, chunk=7)
    for k in ("vertex", "face", "bary", "uv", "distance"):
        np.testing.assert_array_equal(getattr(whole, k), getattr(parts, k))
    assert len(code.decode(np.zeros((0, 3)))) == 0
    u8 = code.decode(code.colours[:10])
    np.testing.assert_array_equal(u8.vertex, code.decode(code.colours[:10].astype(np.float32)).vertex)


def test_bad_input_raises_one_line():
    code, mesh, _ = sphere_code()
    for bad in (np.zeros((4, 2)), np.zeros(3), np.full((2, 3), np.nan), np.array([["a", "b", "c"]])):
        with pytest.raises(BodycorrError, match="decode") as e:
            code.decode(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(BodycorrError, match="outside"):
        code.encode_vertices(np.array([code.num_vertices]))
    with pytest.raises(BodycorrError, match="integer"):
        code.encode_vertices(np.array([0.5]))
    with pytest.raises(BodycorrError, match="outside"):
        code.encode_points(np.array([-1]), np.ones((1, 3)) / 3)
    with pytest.raises(BodycorrError, match="bary"):
        code.encode_points(np.array([0, 1]), np.ones((1, 3)) / 3)
    with pytest.raises(BodycorrError, match="unknown method"):
        code_values("rainbow", mesh)
    with pytest.raises(BodycorrError, match="unknown method"):
        get_surface_code("rainbow")
    with pytest.raises(BodycorrError, match="0, 255"):
        SurfaceCode.from_values("x", code.values * 2, code.faces, code.face_uv)
    with pytest.raises(BodycorrError, match="face_uv"):
        SurfaceCode.from_values("x", code.values, code.faces, code.face_uv[:-1])
    with pytest.raises(BodycorrError, match=r"\(V, V\)"):
        code_values("geodesic", mesh, np.zeros((3, 3)))


# ------------------------------------------------------------------------------------ the codes


@pytest.mark.parametrize("method", CODE_METHODS)
def test_every_code_fills_the_cube_and_is_deterministic(method):
    code, mesh, geo = sphere_code(method)
    assert code.method == method
    np.testing.assert_allclose(code.values.min(0), 0, atol=1e-3)
    np.testing.assert_allclose(code.values.max(0), 255, atol=1e-3)
    np.testing.assert_array_equal(code.colours, np.rint(code.values).astype(np.uint8))
    again = make_surface_code(method, mesh, code.face_uv, geo)
    np.testing.assert_array_equal(again.values, code.values)


def test_position_code_is_the_scaled_rest_pose():
    code, mesh, _ = sphere_code("position")
    v = mesh.vertices
    np.testing.assert_allclose(code.values, (v - v.min(0)) / (v.max(0) - v.min(0)) * 255, atol=1e-3)


def test_geodesic_code_separates_surfaces_that_touch_in_space():
    """The split ring's two ends are 1 cm apart in space but 62 cm apart on the surface."""
    mesh, geo, idx = split_ring(gap=0.01)
    uv = np.zeros((mesh.num_faces, 3, 2))
    pos = make_surface_code("position", mesh, uv, geo)
    rel = make_surface_code("geodesic", mesh, uv, geo)
    ends = np.concatenate([idx[0], idx[-1]])

    def gap(code):  # smallest colour distance between the two ends
        a, b = code.values[idx[0]].astype(np.float64), code.values[idx[-1]].astype(np.float64)
        return np.linalg.norm(a[:, None] - b[None], axis=-1).min()

    assert gap(pos) < 15 and gap(rel) > 45  # levels; pushed towards the 5 cm cap
    # the surface is not torn elsewhere: steps between neighbours along the ring stay even
    c = rel.values[idx].astype(np.float64)
    steps = np.linalg.norm(c[1:] - c[:-1], axis=-1)
    assert steps.max() < 2.0 * np.median(steps)
    # +-8 levels of noise on the end colours: the position code decodes some to the other end
    rng = np.random.default_rng(0)
    truth = np.repeat(ends, 200)
    noise = rng.uniform(-8, 8, (len(truth), 3))
    far = {}
    for name, code in (("position", pos), ("geodesic", rel)):
        got = code.decode(code.values[truth] + noise).vertex
        far[name] = (geo[truth, got] > 0.1).mean()
    assert far["position"] > 0.01 and far["geodesic"] == 0.0


def test_mds_code_recovers_a_flat_sheet():
    """On a flat square sheet (geodesic = Euclidean) classical MDS is the sheet itself up to a rigid motion."""
    n = 12
    xy = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) * 0.01
    v = np.c_[xy, np.zeros(len(xy))]
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    mesh = Mesh(v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]), "sheet")
    geo = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    vals = code_values("mds", mesh, geo)[:, :2]  # third axis: no spread, scaled noise
    # distances between codes are proportional to the true distances (per-axis scaling is equal for a square)
    dc = np.linalg.norm(vals[:, None] - vals[None], axis=-1)
    ratio = dc[geo > 0] / geo[geo > 0]
    assert ratio.std() / ratio.mean() < 0.02


def test_code_quality_counts_shared_colours():
    code, _, geo = sphere_code("position")
    q = code_quality(code, geo, levels=(1, 8), seed=0)
    assert q.unique_5cm == 0.0
    assert 0 < q.noise[1][0] < q.noise[8][0]  # more noise, larger error
    assert q == code_quality(code, geo, levels=(1, 8), seed=0)  # seeded
    # a code that gives the south half of the sphere the north half's colours is caught
    v = code.values.copy()
    south = v[:, 2] < 127.5
    v[south, 2] = 255 - v[south, 2]
    bad = SurfaceCode.from_values("folded", v, code.faces, code.face_uv)
    qb = code_quality(bad, geo, levels=(1,))
    assert qb.unique_5cm > 20 and qb.noise[1][2] > 20
    assert "folded" in str(qb)


# ------------------------------------------------------------------------------------ the template


@pytest.mark.slow
def test_template_position_code_round_trip(template):
    code = get_surface_code("position")
    assert code is get_surface_code("position")  # memory cache
    assert get_surface_code() is get_surface_code(DEFAULT_CODE)
    assert code.colours.shape == (template.num_vertices, 3) and code.colours.dtype == np.uint8
    rng = np.random.default_rng(0)
    face = rng.integers(0, len(template.mesh.faces), 3000)
    bary = rng.dirichlet([2, 2, 2], 3000).astype(np.float32)
    d = code.decode(code.encode_points(face, bary))
    err = np.linalg.norm(template.mesh.surface_points(d.face, d.bary) - template.mesh.surface_points(face, bary), axis=1)
    assert (d.face == face).mean() > 0.99
    assert (err < 1e-3).mean() > 0.995
    assert d.distance.max() < 0.5  # colour levels
    same = d.face == face
    np.testing.assert_allclose(d.uv[same], np.einsum("nk,nkc->nc", bary, template.face_uv[face])[same], atol=1e-3)


@pytest.mark.slow
def test_template_default_code_is_unique_and_robust(template):
    """The measured claim behind the default: no vertex shares its colour with a far-away one."""
    from bodycorr.geometry.geodesic import all_pairs_geodesics

    geo = all_pairs_geodesics(template.mesh, progress=False)
    assert DEFAULT_CODE == "geodesic"
    q_def = code_quality(get_surface_code(), geo, levels=(3,))
    q_pos = code_quality(get_surface_code("position"), geo, levels=(3,))
    assert q_def.unique_5cm == 0.0 < q_pos.unique_5cm
    assert q_def.unique_1cm < 1.0
    assert q_def.noise[3][0] < q_pos.noise[3][0]
    assert q_def.noise[3][2] < 0.05 < q_pos.noise[3][2]
