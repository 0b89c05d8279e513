"""Rigid and non-rigid registration on small synthetic shapes: Procrustes, ICP, the embedded
deformation graph on a bent tube (full and partial targets), correspondence refinement, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.geometry.nonrigid import (
    NonRigidConfig,
    build_deformation_graph,
    refine_correspondences,
    register_nonrigid,
)
from bodycorr.geometry.rigid import (
    ICPConfig,
    SimilarityTransform,
    icp,
    procrustes,
    robust_procrustes,
    rotation_from_vector,
)
from bodycorr.matching.correspond import Correspondences
from tinyshapes import bend, mirrored_pair, tube

# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------


def visible_part(mesh: Mesh, view=(0.0, 1.0, 0.0)) -> tuple[Mesh, np.ndarray]:
    """The part of ``mesh`` whose normals face the viewer, and the original index of each kept vertex."""
    keep = mesh.vertex_normals() @ np.asarray(view) > 0.1
    f = mesh.faces[keep[mesh.faces].all(1)]
    used = np.unique(f)
    new = -np.ones(mesh.num_vertices, dtype=np.int64)
    new[used] = np.arange(len(used))
    return Mesh(mesh.vertices[used], new[f], "partial scan"), used


def noisy_matches(target: np.ndarray, n_source: int, share=0.3, outliers=0.2, noise=0.005, seed=0):
    """Matches for ``share`` of the source vertices: truth + Gaussian noise (m), ``outliers`` of them random."""
    rng = np.random.default_rng(seed)
    si = np.sort(rng.choice(n_source, int(share * n_source), replace=False))
    tp = target[si] + rng.normal(0, noise, (len(si), 3))
    bad = rng.random(len(si)) < outliers
    tp[bad] = target[rng.integers(0, len(target), bad.sum())]
    return si, tp


FAST = NonRigidConfig(num_nodes=60)


def _angle_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r1.T @ r2) - 1) / 2, -1, 1))))


# ----------------------------------------------------------------------------------------------
# rigid
# ----------------------------------------------------------------------------------------------


def test_procrustes_recovers_a_known_similarity_exactly(rng):
    p = rng.normal(size=(50, 3))
    truth = SimilarityTransform(rotation_from_vector([0.3, -1.2, 0.7]), np.array([0.5, -0.2, 1.0]), 1.3)
    q = truth.apply(p)
    w = rng.uniform(0.1, 1.0, 50)
    est = procrustes(p, q, w, scale=True)
    np.testing.assert_allclose(est.matrix(), truth.matrix(), atol=1e-10)
    rigid = SimilarityTransform(truth.rotation, truth.translation)
    est = procrustes(p, rigid.apply(p))
    assert est.scale == 1.0
    np.testing.assert_allclose(est.matrix(), rigid.matrix(), atol=1e-10)
    # a mirror image is fitted by a proper rotation, never a reflection
    assert np.linalg.det(procrustes(p, p * [1, 1, -1]).rotation) == pytest.approx(1.0)
    # inverse and compose agree
    np.testing.assert_allclose(truth.compose(truth.inverse()).matrix(), np.eye(4), atol=1e-12)


def test_robust_procrustes_ignores_outlier_pairs(rng):
    p = rng.normal(size=(200, 3))
    truth = SimilarityTransform(rotation_from_vector([0.0, 0.4, 0.2]), np.array([0.1, 0.0, 0.3]))
    q = truth.apply(p)
    bad = rng.random(200) < 0.3
    q[bad] = rng.normal(size=(bad.sum(), 3)) * 2
    plain = procrustes(p, q)
    robust, w = robust_procrustes(p, q)
    assert _angle_deg(plain.rotation, truth.rotation) > 2.0  # least squares is pulled away
    assert _angle_deg(robust.rotation, truth.rotation) < 0.05
    assert np.linalg.norm(robust.translation - truth.translation) < 1e-3
    assert w[bad].max() < 0.01 < w[~bad].min()


@pytest.mark.parametrize("as_cloud", [False, True])
def test_icp_recovers_a_small_rotation(as_cloud):
    src = Mesh(bend(tube().vertices), tube().faces, "bent tube")  # no continuous symmetry
    truth = SimilarityTransform(rotation_from_vector(np.deg2rad(6.0) * np.array([0.6, 0.8, 0.0])), np.array([0.02, -0.01, 0.03]))
    moved = truth.apply(src.vertices)
    target = PointCloud(moved) if as_cloud else Mesh(moved, src.faces, "moved")  # cloud: normals estimated
    res = icp(src, target, config=ICPConfig(max_distance=0.1))
    assert _angle_deg(res.transform.rotation, truth.rotation) < 0.05
    assert np.linalg.norm(res.transform.translation - truth.translation) < 1e-3
    assert res.rmse < 1e-3 and res.inlier_fraction > 0.9
    assert res.energies[-1] < res.energies[0]


# ----------------------------------------------------------------------------------------------
# non-rigid
# ----------------------------------------------------------------------------------------------


def test_deformation_graph_is_geodesic():
    # a hairpin: two legs of a strip 3 cm apart, joined at one end; Euclidean skinning would mix them
    n_len, n_w = 60, 4
    t = np.linspace(0, 1, n_len)
    u = np.linspace(0, 0.06, n_w)
    tt, uu = np.meshgrid(t, u, indexing="ij")
    ang = np.clip((tt - 0.45) / 0.1, 0, 1) * np.pi  # the bend, radius 1.5 cm
    straight = np.minimum(tt, 0.45)
    back = np.maximum(tt - 0.55, 0)
    x = straight - back + 0.015 * np.sin(ang) * (tt > 0.45)
    y = 0.015 * (1 - np.cos(ang))
    v = np.stack([x, y, uu], -1).reshape(-1, 3)
    idx = np.arange(n_len * n_w).reshape(n_len, n_w)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    mesh = Mesh(v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]), "hairpin")
    leg = np.where(tt.ravel() < 0.4, 0, np.where(tt.ravel() > 0.6, 1, -1))
    for sampling, mixes in (("geodesic", False), ("euclidean", True)):
        g = build_deformation_graph(mesh, num_nodes=30, sampling=sampling)
        assert g.num_nodes == 30 and len(np.unique(g.nodes)) == 30
        np.testing.assert_allclose(g.vertex_weights.sum(1), 1.0)
        node_leg = leg[g.nodes][g.vertex_nodes]  # (V, k)
        w = g.vertex_weights
        crossed = ((leg[:, None] >= 0) & (node_leg >= 0) & (node_leg != leg[:, None]) & (w > 0)).any(1)
        assert crossed.any() == mixes, sampling


def test_bent_tube_from_noisy_correspondences_with_outliers():
    src = tube()
    bent = bend(src.vertices)
    si, tp = noisy_matches(bent, src.num_vertices)  # 30 % of the vertices, 5 mm noise, 20 % outliers
    before = np.linalg.norm(src.vertices - bent, axis=1).mean()
    res = register_nonrigid(src, Mesh(bent, src.faces, "bent"), si, tp, config=FAST)
    err = np.linalg.norm(res.vertices - bent, axis=1)
    # measured: mean 2.3 mm, max 1.4 cm (from 13.5 cm mean before)
    assert before > 0.1
    assert err.mean() < 0.01 and err.max() < 0.05
    # the node transforms reproduce the result, and each stage lowers its energy
    np.testing.assert_allclose(res.graph.deform(src.vertices, res.node_affine, res.node_translation), res.vertices, atol=1e-9)
    for s in np.unique(res.stage):
        e = res.energies[res.stage == s]
        assert e[-1] <= e[0]
    # near-rigid nodes: the lower end stays put, the upper end turns by 60°
    lower = res.graph.positions[:, 2] < 0.3
    upper = res.graph.positions[:, 2] > 0.7
    rot = rotation_from_vector(np.deg2rad(60) * np.array([1.0, 0, 0]))
    assert np.median([_angle_deg(a, np.eye(3)) for a in res.node_affine[lower]]) < 3
    assert np.median([_angle_deg(a / np.cbrt(np.linalg.det(a)), rot) for a in res.node_affine[upper]]) < 3


def test_mirror_alternatives_undo_left_right_flips_of_the_matches():
    src, sym = mirrored_pair()
    np.testing.assert_allclose(src.vertices[sym], src.vertices * [-1, 1, 1], atol=1e-12)
    n = src.num_vertices // 2
    target = src.vertices.copy()
    target[:n] = bend(src.vertices[:n] - [0.3, 0, 0]) + [0.3, 0, 0]  # only the left tube bends
    target += [0.05, 0.02, 0.0]
    si, tp = noisy_matches(target, src.num_vertices, outliers=0.0)
    flipped = np.random.default_rng(1).random(len(si)) < 0.45  # descriptors that cannot tell the sides apart
    given = np.where(flipped, sym[si], si)
    plain = register_nonrigid(src, Mesh(target, src.faces, "t"), given, tp, config=FAST)
    fixed = register_nonrigid(src, Mesh(target, src.faces, "t"), given, tp, config=FAST, alternatives=sym[given])
    oracle = register_nonrigid(src, Mesh(target, src.faces, "t"), si, tp, config=FAST)
    e_plain = np.linalg.norm(plain.vertices - target, axis=1).mean()
    # measured: the alternatives give exactly the unflipped result (6.3 mm); the flips alone, 18.6 mm
    np.testing.assert_allclose(fixed.vertices, oracle.vertices, atol=1e-6)
    assert e_plain > 2 * np.linalg.norm(oracle.vertices - target, axis=1).mean()
    with pytest.raises(BodycorrError, match="alternatives"):
        register_nonrigid(src, Mesh(target, src.faces, "t"), given, tp, config=FAST, alternatives=sym[given][:-1])


def test_bent_tube_to_a_point_cloud_and_with_a_scale():
    src = tube()
    bent = bend(src.vertices) * 1.1 + [0.3, 0.0, 0.1]
    si, tp = noisy_matches(bent, src.num_vertices, seed=1)
    cfg = NonRigidConfig(num_nodes=60, rigid_init="similarity")
    res = register_nonrigid(src, PointCloud(bent), si, tp, config=cfg)  # no normals: estimated
    assert res.rigid.scale > 0.9  # a straight-to-bent similarity underestimates the scale (0.97 here)
    assert np.linalg.norm(res.vertices - bent, axis=1).mean() < 0.01


def test_partial_target_fits_the_visible_side():
    src = tube()
    bent = bend(src.vertices)
    scan, used = visible_part(Mesh(bent, src.faces))  # one side only, with a border
    seen = np.zeros(src.num_vertices, dtype=bool)
    seen[used] = True
    si, tp = noisy_matches(bent, src.num_vertices, seed=2)
    keep = seen[si]  # matches exist for what the camera sees
    res = register_nonrigid(src, scan, si[keep], tp[keep], config=FAST)
    err = np.linalg.norm(res.vertices - bent, axis=1)
    # measured: 3.4 mm on the visible side, 1.7 cm on the hidden side (held by the graph only)
    assert err[seen].mean() < 0.01
    assert err[~seen].mean() < 0.04


def test_refinement_lowers_the_error_of_a_corrupted_map():
    src = tube()
    bent = bend(src.vertices)
    target = Mesh(bent, src.faces, "bent")
    rng = np.random.default_rng(3)
    n = src.num_vertices
    noisy = bent + rng.normal(0, 0.02, (n, 3))
    ti = np.argmin(((noisy[:, None] - bent[None]) ** 2).sum(-1), axis=1)  # nearest vertex to a noisy point
    bad = rng.random(n) < 0.2
    ti[bad] = rng.integers(0, n, bad.sum())
    corr = Correspondences(
        target=ti,
        distance=np.full(n, 0.1, np.float32),
        confidence=np.full(n, 0.8, np.float32),
        mutual=np.zeros(n, bool),
    )
    out = refine_correspondences(src, target, corr, FAST)
    assert isinstance(out, Correspondences)
    assert out.target.dtype == np.int64 and out.confidence.dtype == np.float32 and out.mutual.dtype == bool
    err_before = np.linalg.norm(bent[ti] - bent, axis=1)
    err_after = np.linalg.norm(bent[out.target] - bent, axis=1)
    # measured: 8.9 cm -> 0.1 cm
    assert err_after.mean() < 0.25 * err_before.mean()
    assert err_after.mean() < 0.01
    assert (out.confidence > 0.5).mean() > 0.95 and out.mutual.mean() > 0.5
    # distance is now the geometric residual (m) and the confidence follows it
    assert out.distance.max() < 0.05
    np.testing.assert_allclose(out.confidence, np.exp(-((out.distance.astype(np.float64) / 0.02) ** 2)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def test_bad_input_raises_one_line():
    src = tube(8, 6)
    n = src.num_vertices
    good_t = src.vertices + 0.01
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, np.zeros((0, 3)), np.arange(n), good_t)
    assert "empty" in _one_line(e)
    tp = good_t.copy()
    tp[3] = np.nan
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, np.arange(n), tp)
    assert "NaN" in _one_line(e)
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, np.arange(n - 1), good_t)
    _one_line(e)
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, np.arange(n), good_t, np.ones(n - 2))
    _one_line(e)
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, np.arange(n) + 1, good_t)
    assert "outside" in _one_line(e)
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, config=NonRigidConfig(fit_weight=(0, 0, 0, 0)))
    _one_line(e)
    with pytest.raises(BodycorrError) as e:
        register_nonrigid(src, good_t, config=NonRigidConfig(stiffness=(1.0, 0.1)))
    assert "stage" in _one_line(e)
    conf = np.ones(n, np.float32)
    conf[0] = np.nan
    corr = Correspondences(np.arange(n), np.zeros(n, np.float32), conf, np.ones(n, bool))
    with pytest.raises(BodycorrError) as e:
        refine_correspondences(src, Mesh(good_t, src.faces), corr)
    assert "NaN" in _one_line(e)
    short = Correspondences(np.arange(n - 1), np.zeros(n - 1, np.float32), np.ones(n - 1, np.float32), np.ones(n - 1, bool))
    with pytest.raises(BodycorrError) as e:
        refine_correspondences(src, Mesh(good_t, src.faces), short)
    assert "per source vertex" in _one_line(e)
    with pytest.raises(BodycorrError) as e:
        procrustes(np.zeros((5, 3)), np.zeros((4, 3)))
    _one_line(e)
    with pytest.raises(BodycorrError) as e:
        procrustes(np.eye(3)[:2], np.eye(3)[:2])
    _one_line(e)
    with pytest.raises(BodycorrError) as e:
        icp(src, PointCloud(src.vertices + 5.0))
    assert "pre-align" in _one_line(e).lower()
