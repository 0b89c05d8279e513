"""Farthest-point sampling: spread, determinism, initial indices, components, Euclidean variant; voxel_best."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.geodesic import GeodesicSolver, all_pairs_geodesics
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.geometry.sampling import farthest_point_sampling, farthest_point_sampling_euclidean, voxel_best
from tinyshapes import grid_mesh


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "cache"))


def _min_pairwise(D: np.ndarray, idx: np.ndarray) -> float:
    sub = D[np.ix_(idx, idx)].astype(np.float64)
    return float(sub[~np.eye(len(idx), dtype=bool)].min())


def test_geodesic_fps_spreads_points_more_than_random():
    mesh = grid_mesh()
    D = all_pairs_geodesics(mesh, progress=False)
    idx = farthest_point_sampling(D, 12, seed=0)
    assert idx.shape == (12,) and idx.dtype == np.int64 and len(set(idx.tolist())) == 12
    rng = np.random.default_rng(0)
    random_min = [_min_pairwise(D, rng.choice(mesh.num_vertices, 12, replace=False)) for _ in range(50)]
    assert _min_pairwise(D, idx) > max(random_min)
    # greedy property: each new point is the farthest from those before it
    for j in range(1, 12):
        mind = D[idx[:j]].astype(np.float64).min(0)
        assert mind[idx[j]] == pytest.approx(mind.max())


def test_fps_is_deterministic_and_respects_initial_indices():
    mesh = grid_mesh()
    D = all_pairs_geodesics(mesh, progress=False)
    a = farthest_point_sampling(D, 8, seed=3)
    assert np.array_equal(a, farthest_point_sampling(D, 8, seed=3))
    assert np.array_equal(a, farthest_point_sampling(D, 8, seed=np.random.default_rng(3)))
    others = {tuple(farthest_point_sampling(D, 8, seed=s)) for s in range(5)}
    assert len(others) > 1
    b = farthest_point_sampling(D, 8, initial=[5, 60])
    assert b[:2].tolist() == [5, 60] and len(set(b.tolist())) == 8
    assert farthest_point_sampling(D, 2, initial=[5, 60]).tolist() == [5, 60]


def test_fps_from_solver_or_mesh_equals_fps_from_table():
    mesh = grid_mesh(10)
    D = all_pairs_geodesics(mesh, dtype=np.float64, progress=False)
    solver = GeodesicSolver(mesh, "graph")
    a = farthest_point_sampling(D, 10, initial=[0])
    assert np.array_equal(a, farthest_point_sampling(solver, 10, initial=[0]))
    assert np.array_equal(a, farthest_point_sampling(mesh, 10, initial=[0]))


def test_fps_visits_every_component_first():
    a, b = grid_mesh(6), grid_mesh(6, offset=(0, 0, 1.0))
    mesh = Mesh(np.r_[a.vertices, b.vertices], np.r_[a.faces, b.faces + 36])
    idx = farthest_point_sampling(GeodesicSolver(mesh, "dijkstra"), 2, initial=[3])
    assert idx[1] >= 36


def test_fps_bad_input():
    D = np.zeros((4, 4))
    with pytest.raises(BodycorrError):
        farthest_point_sampling(D, 5)
    with pytest.raises(BodycorrError):
        farthest_point_sampling(D, 1, initial=[0, 1])
    with pytest.raises(BodycorrError):
        farthest_point_sampling(D, 3, initial=[9])
    with pytest.raises(BodycorrError):
        farthest_point_sampling(D, 3, initial=[1, 1])
    with pytest.raises(BodycorrError):
        farthest_point_sampling(np.zeros((3, 4)), 1)
    assert farthest_point_sampling(D, 0).shape == (0,)
    # all points coincide: still k distinct indices
    assert sorted(farthest_point_sampling(D, 4).tolist()) == [0, 1, 2, 3]


def test_euclidean_fps_on_a_point_cloud():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3))
    idx = farthest_point_sampling_euclidean(pts, 20, seed=1)
    assert idx.shape == (20,) and len(set(idx.tolist())) == 20
    D = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    random_min = [_min_pairwise(D, rng.choice(500, 20, replace=False)) for _ in range(50)]
    assert _min_pairwise(D, idx) > max(random_min)
    assert np.array_equal(idx, farthest_point_sampling_euclidean(PointCloud(pts), 20, seed=1))
    assert np.array_equal(idx, farthest_point_sampling(D, 20, seed=1))  # same rule as the table version
    assert farthest_point_sampling_euclidean(pts, 3, initial=[7])[0] == 7


def test_voxel_best_spreads_over_dense_regions():
    # 1000 confident points packed in a 1 cm cube (a mesh's hand) and 200 less confident ones
    # over a 1 m cube: the 50 best scores all lie in the cube; voxel_best spreads them.
    rng = np.random.default_rng(0)
    dense, sparse = rng.uniform(0, 0.01, (1000, 3)), rng.uniform(0, 1, (200, 3))
    p = np.r_[dense, sparse]
    s = np.r_[rng.uniform(0.8, 1.0, 1000), rng.uniform(0.1, 0.5, 200)]
    idx = voxel_best(p, s, 50)
    assert len(idx) == 50 and len(np.unique(idx)) == 50
    assert (idx >= 1000).sum() >= 40  # top-50 by score alone: none
    assert (idx < 1000).sum() >= 1  # the dense place still gets its best point
    assert np.all(np.diff(s[idx]) <= 0)  # best first
    np.testing.assert_array_equal(idx, voxel_best(p, s, 50))  # deterministic


def test_voxel_best_keeps_the_best_of_each_place():
    # 27 well-separated places, two points 0.1 mm apart in each: one pick per place, the better one
    rng = np.random.default_rng(1)
    centres = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    p = np.repeat(centres, 2, axis=0) + np.tile([[0, 0, 0], [1e-4, 0, 0]], (27, 1))
    s = rng.uniform(0, 1, 54)
    idx = voxel_best(p, s, 27)
    assert sorted(idx // 2) == list(range(27))
    better = np.where(s[0::2] >= s[1::2], np.arange(0, 54, 2), np.arange(1, 54, 2))
    assert set(idx) == set(better)


def test_voxel_best_small_inputs_and_bad_shapes():
    p = np.random.default_rng(2).normal(size=(5, 3))
    s = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    np.testing.assert_array_equal(voxel_best(p, s, 10), [1, 3, 2, 0, 4])  # all, best first, ties by index
    assert len(voxel_best(p, s, 0)) == 0
    np.testing.assert_array_equal(voxel_best(np.zeros((4, 3)), np.arange(4.0), 2), [3, 2])  # one place
    with pytest.raises(BodycorrError, match="voxel_best"):
        voxel_best(p[:, :2], s, 3)
    with pytest.raises(BodycorrError, match="finite"):
        voxel_best(np.where(np.arange(15).reshape(5, 3) == 4, np.nan, p), s, 3)


def test_voxel_best_breaks_ties_in_rng_order():
    # equal scores everywhere: which point of a voxel wins is the tie-break; with an rng it follows
    # one permutation draw, so callers (the body fit, the tracker) pick the same as permuting first
    p = np.random.default_rng(3).uniform(0, 1, (400, 3))
    s = np.ones(400)
    perm = np.random.default_rng(7).permutation(400)
    np.testing.assert_array_equal(voxel_best(p, s, 40, rng=np.random.default_rng(7)), perm[voxel_best(p[perm], s[perm], 40)])
    assert set(voxel_best(p, s, 40, rng=np.random.default_rng(7))) != set(voxel_best(p, s, 40))
