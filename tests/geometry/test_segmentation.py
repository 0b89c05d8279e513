"""Random geodesic-Voronoi patch segmentations (Wei et al. 2016)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry import segmentation as seg
from bodycorr.geometry.geodesic import all_pairs_geodesics
from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.segmentation import (
    SegmentationConfig,
    random_segmentation_set,
    random_segmentations,
    voronoi_labels,
)


def grid_mesh(n: int = 18, size: float = 0.3, jitter: float = 0.25, seed: int = 0) -> Mesh:
    rng = np.random.default_rng(seed)
    h = size / (n - 1)
    xy = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2).astype(float) * h
    inner = ((xy > 0) & (xy < size - 1e-12)).all(1)
    xy[inner] += rng.uniform(-jitter, jitter, size=(inner.sum(), 2)) * h
    z = 0.03 * np.sin(12 * xy[:, 0])  # a little curvature
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return Mesh(np.c_[xy, z], np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]), "grid")


CFG = SegmentationConfig(num_segmentations=4, num_patches=15, num_random_seeds=3, seed=7)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "cache"))


def test_labels_cover_all_patches_and_centres_label_themselves():
    mesh = grid_mesh()
    s = random_segmentation_set(mesh, CFG, progress=False)
    assert s.labels.shape == (4, mesh.num_vertices) and s.labels.dtype == np.int16
    assert s.centres.shape == (4, 15)
    for k in range(4):
        assert set(s.labels[k].tolist()) == set(range(15))
        assert len(set(s.centres[k].tolist())) == 15
        assert np.array_equal(s.labels[k, s.centres[k]], np.arange(15))
    # different segmentations differ
    assert not np.array_equal(s.labels[0], s.labels[1])
    assert np.array_equal(random_segmentations(mesh, CFG, progress=False), s.labels)


def test_labels_are_geodesic_voronoi_cells_of_fps_centres():
    mesh = grid_mesh()
    s = random_segmentation_set(mesh, CFG, progress=False)
    D = all_pairs_geodesics(mesh, progress=False).astype(np.float64)
    for k in range(4):
        c = s.centres[k]
        nearest = D[c].min(0)
        assert np.allclose(D[c[s.labels[k]], np.arange(mesh.num_vertices)], nearest)
        # after the random seeds, every centre is the farthest point from the previous ones
        for j in range(CFG.num_random_seeds, CFG.num_patches):
            mind = D[c[:j]].min(0)
            assert mind[c[j]] == pytest.approx(mind.max())


def test_cells_are_connected():
    mesh = grid_mesh()
    labels = random_segmentations(mesh, CFG, progress=False)
    e = mesh.edges()
    in_cell = 0
    for lab in labels:
        same = lab[e[:, 0]] == lab[e[:, 1]]
        g = sp.coo_matrix((np.ones(same.sum()), (e[same, 0], e[same, 1])), shape=(mesh.num_vertices,) * 2)
        _, comp = connected_components(g, directed=False)
        for p in range(CFG.num_patches):
            cc = comp[lab == p]
            in_cell += np.bincount(cc).max()
    assert in_cell / labels.size > 0.99  # almost every vertex lies in its cell's main piece


def test_deterministic_and_seed_dependent(tmp_path, monkeypatch):
    mesh = grid_mesh()
    a = random_segmentations(mesh, CFG, progress=False)
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "elsewhere"))
    b = random_segmentations(mesh, CFG, progress=False)  # rebuilt from scratch
    assert np.array_equal(a, b)
    c = random_segmentations(mesh, SegmentationConfig(4, 15, 3, seed=8), progress=False)
    assert not np.array_equal(a, c)
    # segmentation i does not depend on how many are drawn
    d = random_segmentations(mesh, SegmentationConfig(2, 15, 3, seed=7), progress=False)
    assert np.array_equal(a[:2], d)


def test_cache_reuse(tmp_path, monkeypatch):
    mesh = grid_mesh()
    a = random_segmentations(mesh, CFG, progress=False)
    assert len(list((tmp_path / "cache" / "segmentations").glob("*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt instead of loading from disk")

    monkeypatch.setattr(seg, "_build", boom)
    assert np.array_equal(a, random_segmentations(mesh, CFG, progress=False))


def test_voronoi_labels_unreached_vertices():
    D = np.array([[0, 1, np.inf], [1, 0, np.inf], [np.inf, np.inf, 0]])
    assert voronoi_labels(D, np.array([1])).tolist() == [0, 0, -1]


def test_config_validation():
    with pytest.raises(BodycorrError):
        SegmentationConfig(num_patches=0)
    with pytest.raises(BodycorrError):
        SegmentationConfig(num_patches=40000)
    with pytest.raises(BodycorrError):
        SegmentationConfig(num_patches=5, num_random_seeds=6)
    with pytest.raises(BodycorrError):
        SegmentationConfig(num_segmentations=0)
    with pytest.raises(BodycorrError):
        SegmentationConfig(geodesic_method="magic")  # type: ignore[arg-type]
    with pytest.raises(BodycorrError, match="patches but only"):
        random_segmentations(grid_mesh(4), SegmentationConfig(1, 20, 2), progress=False)
