"""Geodesic distances: known answers on a plane and a sphere, the fast method against the slow exact
reference, the cached all-pairs table, components and surface points."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry import geodesic as geo
from bodycorr.geometry.geodesic import (
    GeodesicSolver,
    all_pairs_geodesics,
    geodesic_distance,
    surface_geodesic,
)
from bodycorr.geometry.mesh import Mesh
from tinyshapes import grid_mesh
from tinyshapes import icosphere as unit_icosphere


def icosphere(subdivisions: int = 3, radius: float = 0.1) -> Mesh:
    v, f = unit_icosphere(subdivisions)
    return Mesh(v * radius, f, "icosphere")


def bumpy_mesh(n: int = 16) -> Mesh:
    """A curved, irregular height field: where graph/heat approximations actually err."""
    g = grid_mesh(n, size=0.2, jitter=0.3, seed=3)
    x, y = g.vertices[:, 0], g.vertices[:, 1]
    z = 0.03 * np.sin(18 * x) * np.cos(14 * y) + 0.02 * np.exp(-((x - 0.1) ** 2 + (y - 0.1) ** 2) / 0.002)
    return Mesh(np.c_[x, y, z], g.faces, "bumpy")


def _rel_err(d: np.ndarray, ref: np.ndarray, min_dist: float) -> float:
    m = ref > min_dist
    return float(np.mean(np.abs(d[m] - ref[m]) / ref[m]))


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("method, tol", [("exact", 1e-9), ("graph", 0.02), ("heat", 0.05)])
def test_flat_grid_distances_are_euclidean(method, tol):
    mesh = grid_mesh()
    src = [0, 7 * 14 + 7]  # a corner and a centre vertex
    d = GeodesicSolver(mesh, method).from_sources(src)
    assert d.shape == (2, mesh.num_vertices)
    ref = np.linalg.norm(mesh.vertices[None] - mesh.vertices[src][:, None], axis=2)
    assert _rel_err(d, ref, 0.02) < tol
    assert np.all(d[[0, 1], src] == 0)


def test_dijkstra_on_edges_never_underestimates_on_a_plane():
    mesh = grid_mesh()
    d = GeodesicSolver(mesh, "dijkstra").from_source(0)
    ref = np.linalg.norm(mesh.vertices - mesh.vertices[0], axis=1)
    assert np.all(d >= ref - 1e-12)
    assert _rel_err(d, ref, 0.02) > 0.01  # it is the crude baseline


@pytest.mark.parametrize("method, tol", [("exact", 0.01), ("graph", 0.03), ("heat", 0.05)])
def test_sphere_antipodes_are_pi_r_apart(method, tol):
    r = 0.1
    mesh = icosphere(3, r)
    v = mesh.vertices
    src = 0
    anti = int(np.argmin(np.linalg.norm(v + v[src], axis=1)))
    d = GeodesicSolver(mesh, method).from_source(src)
    assert d[anti] == pytest.approx(np.pi * r, rel=tol)
    # great-circle distances everywhere, not only at the antipode
    great = r * np.arccos(np.clip(v @ v[src] / r**2, -1, 1))
    assert _rel_err(d, great, 0.02) < tol


def test_graph_method_matches_slow_exact_reference_on_a_curved_mesh():
    """The fast default (k-ring graph with exact edge lengths) beside the obvious exact MMP."""
    mesh = bumpy_mesh()
    rng = np.random.default_rng(1)
    src = rng.choice(mesh.num_vertices, 6, replace=False)
    exact = GeodesicSolver(mesh, "exact").from_sources(src)
    fast = GeodesicSolver(mesh, "graph").from_sources(src)
    assert _rel_err(fast, exact, 0.02) < 0.01
    assert np.all(fast >= exact * (1 - 1e-9) - 1e-12)  # graph paths lie on the surface: never shorter
    crude = GeodesicSolver(mesh, "dijkstra").from_sources(src)
    assert _rel_err(crude, exact, 0.02) > _rel_err(fast, exact, 0.02)


def test_khop_pairs_are_the_k_ring_with_path_upper_bounds():
    mesh = grid_mesh(6, jitter=0.0)
    s, t, ub = geo._khop_pairs(mesh.num_vertices, *geo._edge_graph(mesh), 2)
    # vertex 14 (row 2, col 2) on a 6x6 grid: its 2-ring is every vertex within 2 edge hops
    h = 0.2 / 5
    ring = set(t[s == 14].tolist())
    assert 14 not in ring and {0, 2, 12, 16, 26, 28, 7, 21} <= ring
    assert 4 not in ring and 24 not in ring  # (0,4), (4,0): not reachable along two edges
    d = dict(zip(t[s == 14].tolist(), ub[s == 14].tolist()))
    assert d[15] == pytest.approx(h) and d[16] == pytest.approx(2 * h) and d[21] == pytest.approx(np.sqrt(2) * h)


@pytest.mark.parametrize("rings", [2, 3])
def test_kring_pattern_gives_the_khop_pairs_and_bounds(rings):
    mesh = bumpy_mesh(10)
    s, t, ub = geo._khop_pairs(mesh.num_vertices, *geo._edge_graph(mesh), rings)
    half = s < t
    p = geo.KRingPattern(mesh.faces, mesh.num_vertices, rings)
    assert np.array_equal(p.s, s[half]) and np.array_equal(p.t, t[half])
    np.testing.assert_allclose(p.upper_bounds(mesh.vertices), ub[half], rtol=1e-12)
    with pytest.raises(BodycorrError):
        p.check(grid_mesh(5))


def test_unfolded_edges_are_euclidean_on_a_flat_grid():
    mesh = grid_mesh(10, jitter=0.3)
    g = geo.kring_graph_unfolded(mesh)
    ref = np.linalg.norm(mesh.vertices[g["s"]] - mesh.vertices[g["t"]], axis=1)
    np.testing.assert_allclose(g["w"], ref, rtol=1e-9)


@pytest.mark.parametrize("shape", ["bumpy", "sphere"])
def test_unfolded_graph_matches_the_mmp_graph(shape):
    """The fast edge lengths (unfolded strips) beside the slow reference (MMP per vertex), and the
    rows of both graphs by plain scipy Dijkstra."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    mesh = bumpy_mesh(14) if shape == "bumpy" else icosphere(2)
    n = mesh.num_vertices
    slow = geo._build_kring_graph(mesh, 3, 1, False)
    fast = geo.kring_graph_unfolded(mesh)
    assert np.array_equal(fast["s"], slow["s"]) and np.array_equal(fast["t"], slow["t"])
    assert np.all(fast["w"] >= slow["w"] * (1 - 1e-9))  # straight surface paths: never shorter than exact
    assert np.mean(np.abs(fast["w"] - slow["w"]) <= 1e-9 * slow["w"]) > 0.9

    def rows(g):
        w = np.r_[g["w"], g["w"]]
        return dijkstra(csr_matrix((w, (np.r_[g["s"], g["t"]], np.r_[g["t"], g["s"]])), shape=(n, n)), indices=np.arange(n))

    a, b = rows(fast), rows(slow)
    assert np.all(a >= b * (1 - 1e-9))
    assert np.mean((a - b)[b > 0] / b[b > 0]) < 1e-4
    exact = GeodesicSolver(mesh, "exact").from_sources(np.arange(0, n, 7))
    assert _rel_err(a[::7], exact, 0.02) < 0.01
    solver = GeodesicSolver(mesh, "graph", edges="unfold")
    np.testing.assert_allclose(solver.from_sources([0, 5]), a[[0, 5]], rtol=1e-12)
    assert solver.params() != GeodesicSolver(mesh, "graph").params()


def test_recorded_strips_serve_a_deformed_shape_like_the_full_search():
    """Strips recorded on one shape and unfolded on another (the fast path for many shapes of one
    topology) beside the full unfolding search on that shape, and both beside plain Dijkstra rows."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    ref = bumpy_mesh(14)
    x, y, z = ref.vertices.T
    bent = Mesh(np.c_[1.1 * x, 0.9 * y + 0.4 * x**2, z * (1 + 2 * x) + 0.3 * y**2], ref.faces, "bent")
    fresh = geo.KRingPattern(ref.faces, ref.num_vertices)
    recorded = geo.KRingPattern(ref.faces, ref.num_vertices)
    recorded.record_strips(ref.vertices, cache=False)
    assert len(recorded.strips["pair"]) >= len(recorded.s) * 0.9
    slow = geo.kring_graph_unfolded(bent, pattern=fresh)
    fast = geo.kring_graph_unfolded(bent, pattern=recorded)
    assert np.all(fast["w"] >= slow["w"] * (1 - 1e-9))  # strips that still hold are surface paths
    assert np.mean(np.abs(fast["w"] - slow["w"]) <= 1e-9 * slow["w"]) > 0.98
    n = bent.num_vertices

    def rows(g):
        w = np.r_[g["w"], g["w"]]
        return dijkstra(csr_matrix((w, (np.r_[g["s"], g["t"]], np.r_[g["t"], g["s"]])), shape=(n, n)), indices=np.arange(0, n, 5))

    a, b = rows(fast), rows(slow)
    assert np.all(a >= b * (1 - 1e-9)) and np.mean((a - b)[b > 0] / b[b > 0]) < 1e-4
    same = geo.kring_graph_unfolded(ref, pattern=recorded)  # on its own shape: the full search's graph
    np.testing.assert_allclose(same["w"], geo.kring_graph_unfolded(ref, pattern=fresh)["w"], rtol=1e-9)


def test_geodesic_distance_one_shot():
    mesh = grid_mesh()
    v = mesh.vertices
    assert geodesic_distance(mesh, 0, 100) == pytest.approx(np.linalg.norm(v[0] - v[100]), rel=1e-9)
    d = geodesic_distance(mesh, 0, [0, 5, 100])
    assert d.shape == (3,) and d[0] == 0
    with pytest.raises(BodycorrError):
        geodesic_distance(mesh, 0, 10_000)


# ---------------------------------------------------------------- all pairs + cache


def test_all_pairs_symmetric_triangle_inequality_and_cached(tmp_path, monkeypatch):
    mesh = bumpy_mesh(12)
    D = all_pairs_geodesics(mesh, progress=False)
    n = mesh.num_vertices
    assert D.shape == (n, n) and D.dtype == np.float16
    assert np.array_equal(D, D.T)
    assert np.all(np.diag(D) == 0) and np.all(D[~np.eye(n, dtype=bool)] > 0)
    rng = np.random.default_rng(0)
    i, j, k = rng.integers(n, size=(3, 2000))
    Df = D.astype(np.float64)
    assert np.all(Df[i, k] <= Df[i, j] + Df[j, k] + 2e-3 * Df[i, k] + 1e-6)  # float16 rounding slack
    # rows agree with the solver (up to float16 rounding)
    row = GeodesicSolver(mesh, "graph").from_source(5)
    np.testing.assert_allclose(Df[5], row, rtol=2e-3, atol=1e-6)
    files = list((tmp_path / "cache" / "geodesic_all_pairs").glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("rebuilt instead of loading from disk")

    monkeypatch.setattr(geo, "_rows_worker_task", boom)
    D2 = all_pairs_geodesics(mesh, progress=False)
    assert np.array_equal(D, D2)
    with pytest.raises(AssertionError):  # another method is another key
        all_pairs_geodesics(mesh, method="dijkstra", progress=False)


def test_heat_all_pairs_is_symmetrised():
    mesh = bumpy_mesh(10)
    raw = GeodesicSolver(mesh, "heat").from_sources(np.arange(mesh.num_vertices))
    assert not np.allclose(raw, raw.T)  # the heat method alone is not symmetric
    D = all_pairs_geodesics(mesh, method="heat", dtype=np.float64, progress=False)
    np.testing.assert_allclose(D, (raw + raw.T) / 2 * (1 - np.eye(len(D))), atol=1e-12)


def test_parallel_build_equals_serial(tmp_path, monkeypatch):
    mesh = bumpy_mesh(10)
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "serial"))
    a = all_pairs_geodesics(mesh, dtype=np.float32, workers=1, progress=False, chunk=16)
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "parallel"))
    b = all_pairs_geodesics(mesh, dtype=np.float32, workers=2, progress=False, chunk=16)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- components and errors


@pytest.mark.parametrize("method", ["graph", "heat", "exact", "dijkstra"])
def test_distances_across_components_are_inf(method):
    a = grid_mesh(6)
    b = grid_mesh(5, offset=(1.0, 0.0, 0.0))
    v = np.r_[a.vertices, b.vertices, [[5.0, 5.0, 5.0]]]  # + one isolated vertex
    f = np.r_[a.faces, b.faces + a.num_vertices]
    mesh = Mesh(v, f, "two grids")
    na, nb = a.num_vertices, b.num_vertices
    s = GeodesicSolver(mesh, method)
    d = s.from_sources([0, na + 1, na + nb])
    assert np.all(np.isfinite(d[0, :na])) and np.all(np.isinf(d[0, na:]))
    assert np.all(np.isfinite(d[1, na : na + nb])) and np.all(np.isinf(d[1, :na])) and np.isinf(d[1, -1])
    assert d[2, -1] == 0 and np.all(np.isinf(d[2, :-1]))
    # within the second component the answer is the same as on that component alone
    alone = GeodesicSolver(b, method).from_source(1)
    np.testing.assert_allclose(d[1, na : na + nb], alone, rtol=1e-6, atol=1e-9)


def test_all_pairs_inf_across_components():
    a, b = grid_mesh(5), grid_mesh(5, offset=(0, 0, 1.0))
    mesh = Mesh(np.r_[a.vertices, b.vertices], np.r_[a.faces, b.faces + 25])
    D = all_pairs_geodesics(mesh, progress=False)
    assert np.all(np.isinf(D[:25, 25:])) and np.all(np.isfinite(D[:25, :25])) and np.all(np.isfinite(D[25:, 25:]))


def test_bad_input_raises_one_line_errors():
    faceless = Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=int), "pts")
    with pytest.raises(BodycorrError, match="no faces"):
        GeodesicSolver(faceless)
    with pytest.raises(BodycorrError, match="no faces"):
        all_pairs_geodesics(faceless)
    mesh = grid_mesh(4)
    with pytest.raises(BodycorrError, match="unknown method"):
        GeodesicSolver(mesh, "magic")  # type: ignore[arg-type]
    with pytest.raises(BodycorrError, match="out of range"):
        GeodesicSolver(mesh, "dijkstra").from_source(16)
    with pytest.raises(BodycorrError):
        all_pairs_geodesics(mesh, dtype=np.int32)
    with pytest.raises(BodycorrError, match="edges"):
        GeodesicSolver(mesh, "graph", edges="guess")  # type: ignore[arg-type]


# ---------------------------------------------------------------- surface points


def _random_surface_points(mesh: Mesh, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    f = rng.integers(mesh.num_faces, size=n)
    b = rng.dirichlet(np.ones(3), size=n)
    return f, b


def test_surface_geodesic_is_exact_on_a_plane_given_exact_vertex_distances():
    mesh = grid_mesh()
    v = mesh.vertices
    D = np.linalg.norm(v[:, None] - v[None], axis=2)  # on a convex flat patch, geodesic = Euclidean
    rng = np.random.default_rng(0)
    fa, ba = _random_surface_points(mesh, 500, rng)
    fb, bb = _random_surface_points(mesh, 500, rng)
    d = surface_geodesic(D, mesh, fa, ba, fb, bb)
    ref = np.linalg.norm(mesh.surface_points(fa, ba) - mesh.surface_points(fb, bb), axis=1)
    np.testing.assert_allclose(d, ref, rtol=1e-7, atol=1e-9)
    # neighbouring faces and short distances too (where corner-based shortcuts fail)
    fb2 = np.where(rng.random(500) < 0.5, fa, (fa + 1) % mesh.num_faces)
    d2 = surface_geodesic(D, mesh, fa, ba, fb2, bb)
    ref2 = np.linalg.norm(mesh.surface_points(fa, ba) - mesh.surface_points(fb2, bb), axis=1)
    np.testing.assert_allclose(d2, ref2, rtol=1e-7, atol=1e-9)


def test_surface_geodesic_from_the_cached_table():
    mesh = grid_mesh()
    D = all_pairs_geodesics(mesh, progress=False)  # float16, graph method
    rng = np.random.default_rng(1)
    fa, ba = _random_surface_points(mesh, 300, rng)
    fb, bb = _random_surface_points(mesh, 300, rng)
    d = surface_geodesic(D, mesh, fa, ba, fb, bb)
    ref = np.linalg.norm(mesh.surface_points(fa, ba) - mesh.surface_points(fb, bb), axis=1)
    assert _rel_err(d, ref, 0.02) < 0.02
    # symmetric, zero for a point to itself, and the table itself at vertices
    np.testing.assert_allclose(d, surface_geodesic(D, mesh, fb, bb, fa, ba), rtol=1e-12)
    assert np.allclose(surface_geodesic(D, mesh, fa, ba, fa, ba), 0)
    corner = np.eye(3)[rng.integers(3, size=300)]
    dv = surface_geodesic(D, mesh, fa, corner, fb, corner[::-1])
    ia = mesh.faces[fa][corner.astype(bool)]
    ib = mesh.faces[fb][corner[::-1].astype(bool)]
    other = fa != fb  # (in one face the straight segment is used instead of the table)
    np.testing.assert_allclose(dv[other], D[ia, ib].astype(np.float64)[other], rtol=1e-6, atol=1e-9)


def test_surface_geodesic_broadcasts_and_handles_components():
    a, b = grid_mesh(5), grid_mesh(5, offset=(0, 0, 1.0))
    mesh = Mesh(np.r_[a.vertices, b.vertices], np.r_[a.faces, b.faces + 25])
    D = all_pairs_geodesics(mesh, progress=False)
    fb = np.array([0, 1, a.num_faces + 3])
    d = surface_geodesic(D, mesh, 0, [1 / 3, 1 / 3, 1 / 3], fb, np.full((3, 3), 1 / 3))
    assert d.shape == (3,) and d[0] == 0 and np.isfinite(d[1]) and np.isinf(d[2])
    with pytest.raises(BodycorrError):
        surface_geodesic(D[:5, :5], mesh, 0, [1, 0, 0], 1, [1, 0, 0])
    with pytest.raises(BodycorrError):
        surface_geodesic(D, mesh, [0, 1], np.full((3, 3), 1 / 3), 1, [1, 0, 0])


def test_surface_geodesic_on_a_sphere_for_nearby_and_far_points():
    r = 0.1
    mesh = icosphere(3, r)
    D = all_pairs_geodesics(mesh, progress=False)
    rng = np.random.default_rng(2)
    fa, ba = _random_surface_points(mesh, 400, rng)
    fb, bb = _random_surface_points(mesh, 400, rng)
    # half of the b points in a face sharing a vertex with a's face: short distances
    f = mesh.faces
    near = np.arange(400) < 200
    for i in np.flatnonzero(near):
        cand = np.flatnonzero(np.isin(f, f[fa[i]]).any(1))
        fb[i] = rng.choice(cand[cand != fa[i]])
    pa, pb = mesh.surface_points(fa, ba), mesh.surface_points(fb, bb)
    ua = pa / np.linalg.norm(pa, axis=1, keepdims=True)
    ub = pb / np.linalg.norm(pb, axis=1, keepdims=True)
    great = r * np.arccos(np.clip((ua * ub).sum(1), -1, 1))
    d = surface_geodesic(D, mesh, fa, ba, fb, bb)
    rel = np.abs(d - great) / great
    assert rel[near].mean() < 0.01 and rel[~near].mean() < 0.02
