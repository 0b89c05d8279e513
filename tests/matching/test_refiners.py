"""The refiner registry and the spectral refiner, on tiny geometry built here."""

import numpy as np
import pytest
from scipy.spatial import cKDTree
from tinyshapes import icosphere

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.matching.correspond import match
from bodycorr.matching.describe import Described
from bodycorr.matching.inputs import ScanInput
from bodycorr.matching.refiners import RefineContext, get_refiner, list_refiners
from bodycorr.matching.refiners.auto import is_complete
from bodycorr.matching.refiners.spectral import SpectralConfig, SpectralRefiner, laplacian_basis, mirrored_map, zoomout

AXES = np.array([0.35, 0.22, 0.12])  # an ellipsoid with three different axes


def _ellipsoid(subdivisions: int, rotate_seed: int | None = None) -> Mesh:
    """An ellipsoid; ``rotate_seed`` triangulates it differently (a rotated icosphere, then scaled)."""
    v, f = icosphere(subdivisions)
    if rotate_seed is not None:
        from scipy.spatial.transform import Rotation

        v = v @ Rotation.random(random_state=rotate_seed).as_matrix().T
    return Mesh(v * AXES, f, name=f"ellipsoid{subdivisions}")


def _described(mesh: Mesh, descriptors: np.ndarray) -> Described:
    scan = ScanInput(kind="mesh", points=mesh.vertices, name=mesh.name, mesh=mesh)
    return Described(scan, mesh.vertices, descriptors.astype(np.float32), np.ones(mesh.num_vertices, np.float32), np.array([0, 0, 1.0]), 0.0)


def _pair(rng, wrong: float = 0.3):
    """Two triangulations of one ellipsoid (642 and 2,562 vertices), coarse descriptors (a smooth
    function of the position plus noise), and a start map with ``wrong`` of its matches random."""
    a, b = _ellipsoid(3, rotate_seed=1), _ellipsoid(4)
    feat = lambda p: np.tanh(p / AXES * 1.5)  # noqa: E731  (distinguishes the octants: no intrinsic symmetry left)
    da = feat(a.vertices) + rng.normal(0, 0.05, (a.num_vertices, 3))
    db = feat(b.vertices)
    start = cKDTree(b.vertices).query(a.vertices + rng.normal(0, 0.02, a.vertices.shape))[1]
    bad = rng.random(a.num_vertices) < wrong
    start[bad] = rng.integers(0, b.num_vertices, bad.sum())
    return a, b, da, db, start


def _error(a: Mesh, b: Mesh, target: np.ndarray) -> float:
    """Mean distance (m) from each source vertex's match to its true counterpart (the same point of the ellipsoid)."""
    return float(np.linalg.norm(b.vertices[target] - a.vertices, axis=1).mean())


def test_registry_lists_every_refiner_and_the_cli_offers_them():
    from bodycorr.cli.main import REFINERS

    assert set(list_refiners()) == {"none", "spectral", "template", "body", "register", "auto"}
    assert sorted(REFINERS) == sorted(list_refiners())
    for name in list_refiners():
        r = get_refiner(name)
        assert callable(r.prepare) and callable(r.refine) and r.name == name
    with pytest.raises(BodycorrError, match="unknown refiner 'zoom'"):
        get_refiner("zoom")


def test_zoomout_equals_pyfm_reference(rng):
    """Without descriptors and subsampling, :func:`zoomout` is pyFM's ZoomOut (the slow, obvious reference)."""
    from pyFM.refine.zoomout import zoomout_refine
    from pyFM.spectral import p2p_to_FM

    a, b, da, db, start = _pair(rng)
    ea = laplacian_basis(a.vertices, a.faces, 40).evecs
    eb = laplacian_basis(b.vertices, b.faces, 40).evecs
    ours = zoomout(start, ea, eb, da, db, k_init=10, k_final=40, step=10, weight=0.0)
    fm = p2p_to_FM(start, eb[:, :10], ea[:, :10])
    _, ref = zoomout_refine(fm, eb, ea, nit=3, step=10, return_p2p=True, n_jobs=1)
    assert (ours == ref).mean() > 0.99


def test_spectral_refiner_repairs_a_noisy_map_between_triangulations(rng):
    a, b, da, db, start = _pair(rng)
    sa, sb = _described(a, da), _described(b, db)
    initial = match(sa.descriptors, sb.descriptors, source_points=a.vertices)
    initial = type(initial)(start, initial.distance, initial.confidence, initial.mutual, initial.cycle)
    ctx = RefineContext()  # no network: no mirrored start to test
    refiner = SpectralRefiner(SpectralConfig(k_init=10, k_final=60, step=10))
    out = refiner.refine(refiner.prepare(sa, ctx), refiner.prepare(sb, ctx), initial, ctx)
    before, after = _error(a, b, start), _error(a, b, out.correspondences.target)
    assert before > 0.08 and after < 0.35 * before, (before, after)
    c = out.correspondences
    assert c.target.shape == (a.num_vertices,) and ((c.confidence >= 0) & (c.confidence <= 1)).all()
    assert out.refiner == "spectral" and out.info["drift"]["kept"] in ("free", "anchored") and out.info["laplacian"] == ["mesh", "mesh"]


def test_anchored_twin_runs_only_when_the_free_map_covers_too_little(rng):
    a, b, da, db, start = _pair(rng)
    sa, sb = _described(a, da), _described(b, db)
    initial = match(sa.descriptors, sb.descriptors, source_points=a.vertices)
    ctx = RefineContext()
    info = {}
    for share in (0.0, 1.0):  # never below 0 coverage; always below all of it
        r = SpectralRefiner(SpectralConfig(k_init=10, k_final=40, step=10, drift_coverage=share))
        info[share] = r.refine(r.prepare(sa, ctx), r.prepare(sb, ctx), initial, ctx).info["drift"]
    assert not info[0.0]["anchored_run"] and info[0.0]["kept"] == "free" and set(info[0.0]["coverage"]) == {"free"}
    assert info[1.0]["anchored_run"] and set(info[1.0]["coverage"]) == {"free", "anchored"}
    assert info[1.0]["kept"] == ("anchored" if info[1.0]["coverage"]["anchored"] > info[1.0]["coverage"]["free"] else "free")
    with pytest.raises(BodycorrError, match="drift_coverage"):
        SpectralConfig(drift_coverage=1.5)


def test_mirrored_map_goes_through_the_template_symmetry():
    # a "template" of 4 points: 0 <-> 1 and 2 <-> 3 mirror each other; descriptors are one-hot
    tdesc = np.eye(4, dtype=np.float32)
    symmetry = np.array([1, 0, 3, 2])
    src = np.eye(4, dtype=np.float32)[[0, 2, 3]]
    tgt = np.eye(4, dtype=np.float32)[[3, 2, 1, 0]]  # target point j has template descriptor 3 - j
    assert mirrored_map(src, tgt, tdesc, symmetry).tolist() == [2, 0, 1]


def test_big_scans_are_subsampled_and_clouds_get_a_point_laplacian(rng):
    big = _ellipsoid(4)
    basis = laplacian_basis(big.vertices, big.faces, 30, max_points=500)
    assert basis.laplacian == "points" and len(basis.sample) == 500 and basis.evecs.shape == (500, 30)
    assert basis.nearest.shape == (big.num_vertices,) and basis.nearest.max() < 500
    cloud = laplacian_basis(big.vertices[:800], None, 30)
    assert cloud.laplacian == "points" and cloud.evecs.shape == (800, 30)
    # two components (two ellipsoids): still a basis (two constant eigenfunctions first)
    two = Mesh(np.concatenate([big.vertices, big.vertices + [1.0, 0, 0]]), np.concatenate([big.faces, big.faces + big.num_vertices]))
    b2 = laplacian_basis(two.vertices, two.faces, 10, max_points=10000)
    assert b2.evals[:2].max() < 1e-6 and b2.evals[2] > 1e-3
    with pytest.raises(BodycorrError, match="points"):
        laplacian_basis(np.zeros((10, 2)), None, 5)


def test_spectral_keeps_the_plain_map_on_tiny_inputs(rng):
    pts = rng.normal(size=(50, 3))
    d = _described(Mesh(pts, np.zeros((0, 3), int)), rng.normal(size=(50, 4)))
    d = Described(ScanInput(kind="points", points=pts, name="few", cloud=PointCloud(pts)), pts, d.descriptors, d.consistency, d.up, 0.0)
    initial = match(d.descriptors, d.descriptors)
    r = get_refiner("spectral")
    out = r.refine(r.prepare(d, RefineContext()), r.prepare(d, RefineContext()), initial, RefineContext())
    assert out.correspondences is initial and "fewer than" in out.info["spectral"]


def test_auto_tells_complete_scans_from_partial_ones():
    closed = _ellipsoid(3)
    assert is_complete(_described(closed, np.zeros((closed.num_vertices, 3))))
    front = Mesh(closed.vertices, closed.faces[closed.vertices[closed.faces].mean(1)[:, 1] < 0])  # what one camera sees
    assert not is_complete(_described(front, np.zeros((front.num_vertices, 3))))
    depth = ScanInput(kind="depth", points=np.zeros((100, 3)), name="view", depth=np.ones((10, 10)))
    assert not is_complete(Described(depth, depth.points, np.zeros((100, 3)), np.ones(100), np.array([0, 0, 1.0]), 0.0))


def test_auto_without_a_network_matches_two_complete_meshes_spectrally(rng):
    """The body fits need the template's descriptors; with no network (and with complete="spectral") two complete scans meet spectrally."""
    from bodycorr.matching.refiners.auto import AutoRefiner

    with pytest.raises(BodycorrError, match="complete="):
        AutoRefiner(complete="graph")
    a, b, da, db, start = _pair(rng, wrong=0.0)
    ctx = RefineContext()
    auto = get_refiner("auto")
    assert auto.complete == "fit"
    sa, sb = _described(a, da), _described(b, db)
    initial = match(sa.descriptors, sb.descriptors, source_points=a.vertices)
    # without a network the spectral step runs without its flip test
    out = auto.refine(auto.prepare(sa, ctx), auto.prepare(sb, ctx), initial, ctx)
    assert out.refiner == "spectral" and out.info["auto"] == {"chose": "spectral", "why": "both scans complete"}
    assert _error(a, b, out.correspondences.target) <= _error(a, b, initial.target) + 0.005
