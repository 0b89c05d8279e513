"""Own-surface geodesics for the synthetic suite (issue #4) on tiny geometry: the shared truth subset,
the per-target rows against plain scipy Dijkstra rows, the disk cache, the harness's truth mask, and
geodesic tasks shared between the describe workers and the pair loop."""

import dataclasses

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from bodycorr.common.errors import BodycorrError
from bodycorr.evaluation.harness import HarnessConfig, PairSuite, SolverRows, run_benchmark
from bodycorr.evaluation.synthetic import SubsetRows, own_surface_rows, stratified_vertices, template_pattern
from bodycorr.evaluation.userdata import UserSuiteConfig, load_user_suite
from bodycorr.geometry.geodesic import GeodesicSolver, kring_graph_unfolded
from bodycorr.geometry.io import save_mesh
from bodycorr.geometry.mesh import Mesh
from tinyshapes import icosphere


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYCORR_CACHE_DIR", str(tmp_path / "cache"))


def blob(lean: float = 0.0, scale: float = 1.0) -> Mesh:
    v, f = icosphere(3)
    x, y, z = v.T
    return Mesh(np.c_[0.25 * x * (1 + 0.3 * z) + lean * (z + 1) ** 2, 0.15 * y, 0.85 * (z + 1)] * scale, f, "blob")


def test_stratified_vertices_are_spread_deterministic_and_unbiased():
    pts = blob().vertices
    a, b = stratified_vertices(pts, 40, 0), stratified_vertices(pts, 40, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 40 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, stratified_vertices(pts, 40, 1))
    assert np.array_equal(stratified_vertices(pts, 10_000, 0), np.arange(len(pts)))
    # every point is drawn about equally often (cells of equal size), so subset means estimate the full mean
    counts = np.zeros(len(pts))
    for seed in range(300):
        counts[stratified_vertices(pts, 64, seed)] += 1
    expected = 300 * 64 / len(pts)
    assert abs(counts.mean() - expected) < 1e-9 and counts.std() < 0.5 * expected
    with pytest.raises(BodycorrError):
        stratified_vertices(pts, 0, 0)


def test_subset_rows_are_the_table_and_refuse_other_sources():
    rng = np.random.default_rng(0)
    sources = np.array([3, 8, 20])
    table = rng.uniform(0, 2, (3, 30)).astype(np.float16)
    geo = SubsetRows(sources, table, "t")
    a, b = rng.choice(sources, 50), rng.integers(0, 30, 50)
    got = geo.distances(a, b)
    assert got.dtype == np.float32 and np.array_equal(got, table[np.searchsorted(sources, a), b].astype(np.float32))
    assert np.array_equal(geo.rows(np.array([20, 3])), table[[2, 0]].astype(np.float32))
    with pytest.raises(BodycorrError, match="not an evaluated truth vertex"):
        geo.distances(np.array([4]), np.array([0]))


@pytest.mark.parametrize("method", ["graph", "heat"])
def test_own_surface_rows_equal_plain_dijkstra_rows_and_are_cached(method):
    """The fast path (pattern with recorded strips, solver rows, float16, disk cache) beside the
    obvious reference: scipy Dijkstra full rows on the graph built from scratch (or the heat solver)."""
    ref_shape, target = blob(), blob(lean=0.06, scale=1.1)
    sources = stratified_vertices(ref_shape.vertices, 25, 0)
    pattern = template_pattern(ref_shape.faces, ref_shape.vertices) if method == "graph" else None
    rows, hit = own_surface_rows(target, sources, method, pattern)
    assert rows.dtype == np.float16 and rows.shape == (25, target.num_vertices) and not hit
    if method == "graph":
        g = kring_graph_unfolded(target)  # no pattern, no strips: the full unfolding search
        n = target.num_vertices
        w = np.r_[g["w"], g["w"]]
        full = dijkstra(csr_matrix((w, (np.r_[g["s"], g["t"]], np.r_[g["t"], g["s"]])), shape=(n, n)), indices=sources)
    else:
        full = GeodesicSolver(target, "heat").from_sources(sources)
    np.testing.assert_allclose(rows.astype(np.float64), full, rtol=1e-3, atol=1e-6)  # float16 rounding
    again, hit = own_surface_rows(target, sources, method, pattern)
    assert hit and np.array_equal(again, rows)
    other, hit = own_surface_rows(blob(lean=0.07), sources, method, pattern)
    assert not hit and not np.array_equal(other, rows)
    with pytest.raises(BodycorrError):
        own_surface_rows(target, sources, "exact")


# ------------------------------------------------------------------------------------------------
# the harness side: a shared truth subset, geodesic tasks in workers
# ------------------------------------------------------------------------------------------------


class _SubsetSuite(PairSuite):
    """The registration folder with two vertices per reference id, a shared truth subset (a mask over
    reference ids) and heat rows from its vertices, optionally as geodesic tasks for the workers."""

    def __init__(self, folder, subset: bool, tasks: bool = False):
        self.user = load_user_suite(UserSuiteConfig(str(folder), up="z"))
        self.name, self.pairs, self.issues, self.meta = "subset", self.user.pairs, [], {}
        self.subset, self.tasks = subset, tasks
        self._s = {}
        for p in self.user.pairs:
            for n in (p.source, p.target):
                s = self.user.surface(n)
                self._s[n] = dataclasses.replace(s, ref=np.arange(s.mesh.num_vertices) // 2)
        self.rows: dict[str, SubsetRows] = {}
        self.received: list[str] = []
        self.computed: list[str] = []

    def surface(self, name):
        return self._s[name]

    def view(self, name, noise):
        return self.user.view(name, noise)

    def truth_subset(self, max_points, seed):
        if not self.subset:
            return None
        n_ref = self._s[self.pairs[0].target].mesh.num_vertices // 2
        marked = np.zeros(n_ref, bool)
        marked[stratified_vertices(np.arange(n_ref, dtype=float)[:, None], max_points, seed)] = True
        self.sources = np.flatnonzero(marked[np.arange(2 * n_ref) // 2])  # target vertices with a marked id
        return marked

    def geodesics(self, name):
        if not self.subset:
            return SolverRows(self._s[name].mesh, "heat")
        if name not in self.rows:
            self.computed.append(name)
            self.rows[name] = SubsetRows(self.sources, own_surface_rows(self._s[name].mesh, self.sources, "heat", cache=False)[0])
        return self.rows[name]

    def geodesic_task(self, name):
        if not (self.tasks and self.subset):
            return None
        return own_surface_rows, (self._s[name].mesh, self.sources, "heat", None, False)

    def take_geodesic(self, name, result):
        self.received.append(name)
        self.rows[name] = SubsetRows(self.sources, result[0], name)


@pytest.fixture
def reg_folder(tmp_path):
    d = tmp_path / "regs"
    d.mkdir()
    save_mesh(blob(), d / "alice_00.ply")
    save_mesh(blob(lean=0.05), d / "alice_01.ply")
    save_mesh(blob(lean=-0.04, scale=1.05), d / "bob_00.ply")
    return d


class _Shifted:
    """The perfect map moved by a few vertices: errors that differ from point to point."""

    name = "shifted"

    def __init__(self, suite):
        self.suite = suite

    def prepare(self, shape):
        return shape

    def correspond(self, s, t):
        n = self.suite.surface(t.surface).mesh.num_vertices
        v = (np.maximum(s.vertex, 0) + 7) % n
        if t.partial:  # a target pixel showing that vertex (any, else pixel 0)
            first = np.zeros(n, dtype=np.int64)
            ok = t.vertex >= 0
            first[t.vertex[ok][::-1]] = np.flatnonzero(ok)[::-1]
            return first[v]
        return v


def _errors_by_point(rec):
    return {tuple(p): e for p, e in zip(np.round(rec.points, 6), rec.errors.errors_cm)}


def test_truth_subset_evaluates_exactly_the_marked_points(reg_folder):
    cfg = HarnessConfig(kinds=("full-full", "partial-full"), noise=("clean",), max_points=40)
    full, part = _SubsetSuite(reg_folder, subset=False), _SubsetSuite(reg_folder, subset=True)
    a = run_benchmark(full, [_Shifted(full)], dataclasses.replace(cfg, max_points=0), progress=False)
    b = run_benchmark(part, [_Shifted(part)], cfg, progress=False)
    assert not a.issues and not b.issues
    assert b.meta["truth_points"] == 40 and b.meta["points_per_pair"] is None
    n = 0
    for g in a.groups:
        for ra, rb in zip(a.records["shifted"][g], b.records["shifted"][g], strict=True):
            src = part.surface(ra.pair.split("->")[0])
            if g.startswith("full-full"):  # a full source: exactly the vertices with a marked id
                assert len(rb.errors.errors_cm) == int(part.truth_subset(40, 0)[src.ref].sum())
            assert 0 < len(rb.errors.errors_cm) < len(ra.errors.errors_cm)
            ea = _errors_by_point(ra)
            for p, e in _errors_by_point(rb).items():  # the same errors at those points (float16 rows)
                assert e == pytest.approx(ea[p], rel=2e-3, abs=0.01)
                n += 1
    assert n > 100


def test_geodesic_tasks_are_shared_by_workers_and_the_pair_loop(reg_folder, tmp_path, monkeypatch):
    import torch

    from bodycorr.evaluation import harness
    from bodycorr.evaluation.harness import ModelMethod
    from bodycorr.matching.pipeline import load_extractor
    from bodycorr.models.io import save_model_file
    from bodycorr.models.registry import create_model

    monkeypatch.setattr(harness, "PREFETCH_MIN_WORK", 0)  # the toy suite is too small to start workers otherwise
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_model_file(create_model("unet", base_width=4, max_width=16, num_levels=3), path, meta={"size": 32})
    method = ModelMethod(load_extractor(str(path)), name="tiny", views=4)
    cfg = dict(kinds=("full-full", "partial-full"), noise=("clean",), max_points=30)
    serial_suite, par_suite = _SubsetSuite(reg_folder, True), _SubsetSuite(reg_folder, True, tasks=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: bit-identical descriptors
    try:
        serial = run_benchmark(serial_suite, [method], HarnessConfig(**cfg), progress=False)
    finally:
        torch.set_num_threads(threads)
    par = run_benchmark(par_suite, [method], HarnessConfig(**cfg, workers=2), progress=False)
    assert not par.issues and par.meta["describe_workers"] == 2
    targets = {p.target for p in par_suite.pairs}
    # every target's rows came once, from a worker or from the pair loop's process (while it waited)
    assert sorted(par_suite.received + par_suite.computed) == sorted(targets)  # each once
    for g in par.groups:
        for x, y in zip(par.records["tiny"][g], serial.records["tiny"][g], strict=True):
            assert np.array_equal(x.errors.errors_cm, y.errors.errors_cm)


def test_prefetch_hands_each_geodesic_result_over_once():
    from bodycorr.evaluation.harness import _Prefetch

    geo = [(f"s{i}", np.add, (i, 100)) for i in range(4)]
    pf = _Prefetch([], [], 2, geo)
    try:
        for name, *_ in geo:
            pf._geo_async[name].wait(60)  # the workers take every task (nothing claimed here)
        got = [pf.geodesic(name) for name, *_ in geo]
        assert [g[0] for g in got] == [100, 101, 102, 103] and all(g[2] is None for g in got)
        assert all(pf.geodesic(name) is None for name, *_ in geo)  # asked again: already handed over
        assert pf.geodesic("unknown") is None
    finally:
        pf.close()
    pf = _Prefetch([], [], 1, geo[:1])
    try:  # whoever claims it first does it: here (None, the worker skips it) or the worker (its result)
        here, worker = pf.geodesic("s0"), pf._geo_async["s0"].get(60)
        assert (here is None and worker is None) or (here is not None and here[0] == worker[0] == 100)
    finally:
        pf.close()
