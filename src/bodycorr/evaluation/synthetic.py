"""Correspondence quality of a model on a synthetic suite: full-full, partial-full, partial-partial.

The suite runs through the generic harness (:mod:`bodycorr.evaluation.harness`) as a
:class:`SyntheticPairSuite`: its shapes share the template's topology (vertex i is template vertex
i), its views are the suite's stored Kinect v2 renders with per-pixel template-vertex truth.

Geodesics (``geodesic``; the CLI's ``--geodesic``)
-------------------------------------------------
``graph`` (default): on each target's own surface, the 3-ring graph method of
:mod:`bodycorr.geometry.geodesic` (0.41 % above exact MMP on the template; 0.42-0.44 % on two
posed targets), its edge lengths found by unfolding (:func:`~bodycorr.geometry.geodesic.kring_graph_unfolded`
with the template's strips; rows equal the MMP-built graph's to ~1e-7 on average). Rows come from
a fixed set of N truth vertices shared by every pair and target (:func:`stratified_vertices`: one
vertex drawn at random from each of N cells of equal vertex count; N = ``--points``, default
:data:`DEFAULT_TRUTH_POINTS`), and only source points whose truth is one of them are evaluated:
every full-full pair evaluates N points, a partial source the pixels showing them (~0.75 N).
``meta["geodesic"]`` says so. Rows are kept per target in the disk cache (float16, keyed on the
mesh, the vertices and the method), so later runs read them instead of computing them.

``heat``: the same with the heat method (1.9 % from exact overall on the template, but 5-14 % at
under 20 cm on a posed synthetic-v1 target, where most match errors lie).

``template``: every point, from the template's all-pairs table scaled by the square root of each
target's area ratio (the old default; fast, approximate). On the same points as ``graph`` (45
pairs on 24 targets, all kinds, the shipped model) its pair means were 3.7 % lower on average
(-14.8 % to +6.8 %; intra pairs -4 to -5 %, inter -2 to -3 %), single errors over 2 cm differed
by 7.5 % on average (p95 20 %), medians by up to 4 %; flip shares agreed within 0.6 points.

Why a subset (issue #4; 2 cores shared with other jobs, load 2-6 while measuring)
---------------------------------------------------------------------------------
Each pair needs ``d(truth, match)`` for its evaluated points; over synthetic-v1 every target vertex
is a truth (full-full sources) and nearly every one a match (268k distinct pairs on one target),
so exact answers for all points need all rows of every target: 13,348 Dijkstra rows of ~6.5 ms =
~85 s per target, ~90 CPU-min for the 64 targets. Measured on one target and rejected:

* rows from H "hub" vertices bound far distances well (``min_h d(h,a) + d(h,b)`` within 0.01 %
  beyond 40 cm with H = 500) but not near ones (14 % at 5-10 cm); resolving near matches exactly
  needs a bounded Dijkstra from every truth vertex (0.3 ms at 10 cm, 0.7 ms at 20 cm): >= 10 s per
  target for all points (> 10 min for the suite) before the hub rows;
* the template's shortest paths measured on the target: +2.8 % on average, up to +51 %;
  transported edge lengths (chord, arc or path ratios): edges within 0.4 % but rows 0.8-1.6 %
  short (Dijkstra picks the underestimated edges);
* the heat method: no cheaper per row than Dijkstra (9 ms under load; SuperLU with many
  right-hand sides was slower per column) and poor at short range (above);
* MMP for the graph's edge lengths: 16.5 s per target; unfolding: 1.8 s, 0.9 s with the strips
  recorded on the template.

So a target costs ~0.9 s (graph) + N x ~6.5 ms (rows), ~2.5 s at N = 250, once: the harness does
these while it would otherwise wait for descriptions and in its describe workers after them
(:meth:`~bodycorr.evaluation.harness.PairSuite.geodesic_task`). The full suite (shipped model,
``--workers 2``, load 1-2.7 on the 2 cores): 3:30 min and 345 CPU-s with no cached rows, 1:46 min
and 185 CPU-s with them (the rows' 64 files: 430 MB), the same figures both times. The 6.2 min of
the ``template`` run were measured on a busier machine (its describe step 3x slower, ~0.5 of a
core per CPU-second); there the 160 extra CPU-s of a cold run would make ~11-12 min, a warm run
stays ~6. ``--points 100`` cuts the cold extra by about a quarter (the graphs stay). The subset's own noise, from
all-point errors of 14 full-full pairs of the shipped model (template table) resampled with 20
seeds: the mean over pairs moved by 0.9 / 0.7 / 0.5 cm (sd) at N = 200 / 300 / 500 (a plain random
subset: 3.1 / 1.8 / 2.1 cm), one pair's mean by 2.8 / 2.0 / 1.5 cm, the median by <= 0.4 cm;
unbiased, and the same points for every method (comparisons are paired).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.body.template import TEMPLATE_FACING, TEMPLATE_UP, get_template
from bodycorr.common.cache import cache_dir, cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, write_json_atomic
from bodycorr.data.suite import CLOTHED_SUFFIX, load_suite
from bodycorr.evaluation.harness import (
    FLIP_MIN_M,
    KINDS,
    OVERLAP_M,
    HarnessConfig,
    ModelMethod,
    PairSpec,
    PairSuite,
    ReferenceBody,
    Surface,
    View,
    run_benchmark,
)
from bodycorr.geometry.geodesic import GeodesicSolver, KRingPattern, all_pairs_geodesics
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.extract import DescriptorExtractor

__all__ = ["KINDS", "OVERLAP_M", "FLIP_MIN_M", "GEODESICS", "DEFAULT_TRUTH_POINTS", "SuiteEvalConfig", "SyntheticPairSuite",
           "SubsetRows", "own_surface_rows", "stratified_vertices", "evaluate_suite", "format_table"]  # fmt: skip

GEODESICS = ("graph", "heat", "template")
DEFAULT_TRUTH_POINTS = 250  # truth vertices per run (shared by all pairs) for own-surface geodesics
ROWS_CACHE_MAX_BYTES = 64 * 2**20  # rows of one target stored on disk up to this size (250 rows: 6.7 MB)
ROWS_MEMORY_BYTES = 1_500_000_000  # rows kept in memory across targets
_ROWS_VERSION = 2  # bump when the rows change


@dataclass(frozen=True)
class SuiteEvalConfig:
    """What :func:`evaluate_suite` runs.

    Attributes:
        kinds: pair types; noise: depth views "clean" and/or "noisy" for partial sources/targets.
        views: renders per full mesh for per-vertex descriptors.
        max_pairs: evaluate only the first N pairs of each set (0 = all): for quick checks.
        workers: processes describing shapes (``HarnessConfig.workers``).
        geodesic: "graph", "heat" or "template" (see the module docstring).
        points: truth vertices evaluated (own-surface geodesics; None = :data:`DEFAULT_TRUTH_POINTS`,
            0 = all, slow) or points per pair (``template``; None or 0 = all).
    """

    suite: str = "synthetic-v1"
    kinds: tuple[str, ...] = KINDS
    noise: tuple[str, ...] = ("clean", "noisy")
    views: int = 48
    max_pairs: int = 0
    workers: int = 1
    geodesic: str = "graph"
    points: int | None = None


class _TableRows:
    """Geodesic rows from the template's all-pairs table, scaled to one target's size."""

    def __init__(self, table: np.ndarray, scale: float):
        self.table, self.scale = table, float(scale)

    def rows(self, vertices: np.ndarray) -> np.ndarray:
        """(K,) vertices -> (K, V) float32 metres."""
        return self.table[np.asarray(vertices, dtype=np.int64)].astype(np.float32) * np.float32(self.scale)

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N,) float32 metres from vertex ``a[i]`` to ``b[i]``: ``rows(a)[i, b[i]]`` without the rows
        (a full-full pair needs 13k rows, 0.7 GB, but only one entry of each)."""
        d = self.table[np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)]
        return d.astype(np.float32) * np.float32(self.scale)


def stratified_vertices(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k,) sorted indices: ``points`` split at the median of the longest axis, recursively, into
    k cells of equal size (within one point), and one point drawn at random from each cell.

    Every point is drawn with (nearly) the same probability k / N, so means over the drawn points
    estimate means over all points without weighting; the cells spread the draw over the body (no
    region over- or under-sampled by chance). Deterministic in ``(seed, N, k)``; k >= N gives all.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k < 1:
        raise BodycorrError(f"stratified_vertices: need at least 1 point, got {k}.")
    rng = np.random.default_rng([int(seed), n, int(k)])
    out = []
    stack = [(np.arange(n), int(k))]
    while stack:
        idx, kk = stack.pop()
        if kk == 1:
            out.append(int(idx[rng.integers(len(idx))]))
            continue
        p = pts[idx]
        axis = int(np.argmax(p.max(0) - p.min(0)))
        kl = kk // 2
        nl = int(round(len(idx) * kl / kk))
        order = np.argsort(p[:, axis], kind="stable")
        stack.append((idx[order[nl:]], kk - kl))
        stack.append((idx[order[:nl]], kl))
    return np.sort(np.asarray(out, dtype=np.int64))


class SubsetRows:
    """Geodesics on one surface from a fixed, sorted set of source vertices (``rows`` (K, V)):
    ``rows``/``distances`` as :class:`~bodycorr.evaluation.harness.GeodesicRows`, for sources in the set."""

    def __init__(self, sources: np.ndarray, rows: np.ndarray, name: str = "surface"):
        self.sources, self.table, self.name = np.asarray(sources, dtype=np.int64), rows, name
        if rows.shape[0] != len(self.sources):
            raise BodycorrError(f"{name}: {rows.shape[0]} geodesic rows for {len(self.sources)} sources.")

    def _pos(self, vertices: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.sources, v), max(len(self.sources) - 1, 0))
        bad = self.sources[pos] != v if len(self.sources) else np.ones(v.shape, bool)
        if bad.any():
            raise BodycorrError(f"{self.name}: no geodesic row from vertex {int(v[bad][0])} (not an evaluated truth vertex). "
                                "This is a bug; report it.")  # fmt: skip
        return pos

    def rows(self, vertices: np.ndarray) -> np.ndarray:
        """(K,) source vertices -> (K, V) float32 metres."""
        return self.table[self._pos(vertices)].astype(np.float32)

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N,) float32 metres from source vertex ``a[i]`` to vertex ``b[i]``."""
        return self.table[self._pos(a), np.asarray(b, dtype=np.int64)].astype(np.float32)


def own_surface_rows(mesh: Mesh, sources: np.ndarray, method: str = "graph", pattern: KRingPattern | None = None,
                     cache: bool = True) -> tuple[np.ndarray, bool]:  # fmt: skip
    """(K, V) float16 geodesic rows on ``mesh`` itself from ``sources`` (``method`` "graph": Dijkstra on
    the 3-ring graph, edge lengths by unfolding; "heat": the heat method), and whether they came from
    the disk cache (``<cache>/geodesic_rows``, keyed on the mesh, the sources and the method; only
    up to :data:`ROWS_CACHE_MAX_BYTES`). float16 keeps ~3 significant digits (0.5 mm at 1 m); the
    rows are rounded to it whether computed or read, so both give the same figures.
    """
    if method not in ("graph", "heat"):
        raise BodycorrError(f"own_surface_rows: method must be 'graph' or 'heat', got {method!r}.")
    src = np.asarray(sources, dtype=np.int64)
    n = mesh.num_vertices

    def build() -> dict[str, np.ndarray]:
        solver = GeodesicSolver(mesh, method, edges="unfold", pattern=pattern)  # type: ignore[arg-type]
        out = np.empty((len(src), n), dtype=np.float16)
        for lo in range(0, len(src), 256):
            out[lo : lo + 256] = solver.from_sources(src[lo : lo + 256])
        return {"rows": out}

    if not cache or len(src) * n * 2 > ROWS_CACHE_MAX_BYTES:
        return build()["rows"], False
    how = (method, pattern is not None and pattern.strips is not None)  # the strips move rows by <= 1e-7 on average
    key = content_hash("own_surface_rows", _ROWS_VERSION, mesh.vertices, mesh.faces, how, src)
    hit = (cache_dir() / "geodesic_rows" / f"{key}.npz").exists()
    return cached_arrays("geodesic_rows", key, build)["rows"], hit


_WORKER_PATTERNS: dict[str, KRingPattern] = {}  # per process: the topology's pattern, built once


def template_pattern(faces: np.ndarray, reference: np.ndarray) -> KRingPattern:
    """The 3-ring :class:`KRingPattern` of the template topology with the template's strips recorded
    (:meth:`KRingPattern.record_strips`, cached on disk), built once per process."""
    key = content_hash(faces, reference)
    if key not in _WORKER_PATTERNS:
        p = KRingPattern(faces, len(reference))
        p.record_strips(reference)
        _WORKER_PATTERNS[key] = p
    return _WORKER_PATTERNS[key]


def _rows_task(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray, method: str, name: str,
               reference: np.ndarray) -> tuple[np.ndarray, float, bool]:  # fmt: skip
    """:meth:`SyntheticPairSuite.geodesic_task`'s function (run in a harness worker): the rows of one
    target, the seconds they took, and whether they came from the disk cache."""
    t0 = time.perf_counter()
    pattern = template_pattern(faces, reference) if method == "graph" else None
    rows, hit = own_surface_rows(Mesh(vertices, faces, name=name), sources, method, pattern)
    return rows, time.perf_counter() - t0, hit


class SyntheticPairSuite(PairSuite):
    """A synthetic suite (``synthetic-v1``) as a harness suite: pairs grouped ``inter`` then ``intra``
    (the first ``max_pairs`` of each when > 0), z up, the template's left/right symmetry, geodesics
    ``geodesic`` (:data:`GEODESICS`, see the module docstring)."""

    def __init__(self, name: str = "synthetic-v1", max_pairs: int = 0, progress: bool = True, geodesic: str = "graph"):
        if geodesic not in GEODESICS:
            raise BodycorrError(f"--geodesic {geodesic!r}: use one of {', '.join(GEODESICS)} for the synthetic suite.")
        self.geodesic = geodesic
        self.suite = load_suite(name)
        self.name = self.suite.name
        template = get_template()
        self.template_mesh = template.mesh
        self.template_vertices = template.mesh.vertices
        self.symmetry = template.symmetry
        self.template_area = float(template.mesh.face_areas().sum())
        if geodesic == "template":
            self.table = all_pairs_geodesics(template.mesh, progress=progress)
            self.default_points = 0  # the table makes every point cheap: evaluate all
            desc = "template all-pairs table (graph), scaled by sqrt(area ratio)"
        else:
            self.table = None
            self.default_points = DEFAULT_TRUTH_POINTS
            desc = "each target's own surface"  # completed by truth_subset
        self.names = [self.suite.shape_name(i) for i in range(len(self.suite))]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.pairs = []
        for pairset in ("inter", "intra"):
            pairs = self.suite.pairs(pairset)
            if max_pairs:
                pairs = pairs[:max_pairs]
            self.pairs += [PairSpec(self.names[int(a)], self.names[int(b)], pairset) for a, b in pairs]
        self.issues = []
        self.meta = {"format": "synthetic", "geodesic": desc, "suite_parameters_sha256": self.suite.parameters_sha256[:16],
                     "symmetry": {"available": True, "from": "template"}, "units": {"m": len(self.suite)}}  # fmt: skip
        self._surfaces: dict[str, Surface] = {}
        self.subset: np.ndarray | None = None
        self._rows: OrderedDict[str, SubsetRows] = OrderedDict()
        self._rows_bytes = 0
        self._rows_stats = {"targets": 0, "from_cache": 0, "in_workers": 0, "seconds": 0.0}

    def surface(self, name: str) -> Surface:
        if name not in self._surfaces:
            mesh = self.suite.mesh(self.index[name])
            self._surfaces[name] = Surface(name, mesh, None, self.symmetry, np.array([0.0, 0.0, 1.0]), "z",
                                           str(self.suite.identity[self.index[name]]))  # fmt: skip
        return self._surfaces[name]

    def view(self, name: str, noise: str) -> View:
        i = self.index[name]
        depth = self.suite.depth_clean[i] if noise == "clean" else self.suite.depth_noisy[i]
        vert = self.suite.vertex_clean[i] if noise == "clean" else self.suite.vertex_noisy[i]
        valid = np.isfinite(depth) & (depth > 0)
        return View(np.where(valid, depth, 0).astype(np.float32), self.suite.camera(i), vert[valid].astype(np.int64),
                    f"{name} ({noise})")  # fmt: skip

    def reference_body(self) -> ReferenceBody:
        """The template (z up, facing -y): every body of the suite is it in another shape and pose."""
        return ReferenceBody(self.template_mesh, TEMPLATE_UP, TEMPLATE_FACING, "template")

    def truth_subset(self, max_points: int, seed: int) -> np.ndarray | None:
        """Own-surface geodesics: the ``max_points`` truth vertices (0 = all 13,348) every pair
        evaluates, :func:`stratified_vertices` of the template's vertices; ``template``: None."""
        if self.geodesic == "template":
            return None
        n = len(self.template_vertices)
        self.subset = stratified_vertices(self.template_vertices, n if not max_points else int(max_points), seed)
        self._rows.clear()
        self._rows_bytes = 0
        k = len(self.subset)
        how = ("3-ring graph geodesics (Dijkstra; exact edge lengths, by unfolding; 0.41 % above exact MMP on the template)"
               if self.geodesic == "graph" else "heat-method geodesics (robust Laplacian, t_coef 2)")  # fmt: skip
        which = ("all truth vertices" if k == n else
                 f"{k} of the {n} truth vertices, the same for every pair (one drawn from each of {k} equal-count cells "
                 f"of the template, seed {seed}): only source points whose truth is one of them are evaluated")  # fmt: skip
        self.meta["geodesic"] = f"each target's own surface, {how}, from {which}"
        self.meta["geodesic_rows"] = self._rows_stats
        return np.isin(np.arange(n), self.subset)

    def geodesic_task(self, name: str) -> tuple | None:
        """Own-surface geodesics: the target's rows, computed in a harness worker (:func:`_rows_task`)."""
        if self.geodesic == "template" or self.subset is None or name in self._rows:
            return None
        mesh = self.surface(name).mesh
        return _rows_task, (mesh.vertices, mesh.faces, self.subset, self.geodesic, mesh.name, self.template_vertices)

    def take_geodesic(self, name: str, result: tuple[np.ndarray, float, bool]) -> None:
        rows, seconds, hit = result
        if name not in self._rows and self.subset is not None and rows.shape == (len(self.subset), len(self.template_vertices)):
            self._keep(name, rows, seconds, hit, worker=True)

    def _keep(self, name: str, rows: np.ndarray, seconds: float, hit: bool, worker: bool) -> SubsetRows:
        st = self._rows_stats
        st["targets"] += 1
        st["from_cache"] += int(hit)
        st["in_workers"] += int(worker)
        st["seconds"] = round(st["seconds"] + seconds, 2)
        geo = SubsetRows(self.subset, rows, name)
        self._rows[name] = geo
        self._rows_bytes += rows.nbytes
        while self._rows_bytes > ROWS_MEMORY_BYTES and len(self._rows) > 1:
            _, old = self._rows.popitem(last=False)
            self._rows_bytes -= old.table.nbytes
        return geo

    def geodesics(self, name: str) -> _TableRows | SubsetRows:
        if self.geodesic == "template":
            area = float(self.surface(name).mesh.face_areas().sum())
            return _TableRows(self.table, np.sqrt(area / self.template_area))
        if self.subset is None:
            self.truth_subset(self.default_points, 0)
        if name in self._rows:
            self._rows.move_to_end(name)
            return self._rows[name]
        mesh = self.surface(name).mesh
        t0 = time.perf_counter()
        pattern = template_pattern(mesh.faces, self.template_vertices) if self.geodesic == "graph" else None
        rows, hit = own_surface_rows(mesh, self.subset, self.geodesic, pattern)
        return self._keep(name, rows, time.perf_counter() - t0, hit, worker=False)


def evaluate_suite(extractor: DescriptorExtractor, config: SuiteEvalConfig = SuiteEvalConfig(), out: str | Path | None = None,
                   progress: bool = True) -> dict:  # fmt: skip
    """Match every pair of the suite and summarise errors per (kind, intra/inter, noise).

    All shapes share the template's topology, so the true target point of every source point is
    known exactly; geodesic errors are measured as ``config.geodesic`` says (the module docstring).
    Returns a nested dict, also written to ``out/results.json``;
    ``"_per_pair"`` holds the :class:`~bodycorr.evaluation.metrics.PairErrors` of each group.
    """
    suite = pair_suite(config.suite, config.max_pairs, progress, geodesic=config.geodesic)
    method = ModelMethod(extractor, name="model", views=config.views, up="z")
    cfg = HarnessConfig(kinds=tuple(config.kinds), noise=tuple(config.noise), max_points=config.points, workers=config.workers)
    res = run_benchmark(suite, [method], cfg, progress=progress)
    per_pair = {g: [r.errors for r in res.records["model"][g]] for g in res.groups}
    results: dict = {"suite": suite.name, "views": config.views, "groups": res.summaries()["model"], "meta": res.meta}
    if res.issues:
        results["errors"] = res.issues
    if out is not None:
        out = ensure_dir(out)
        write_json_atomic(out / "results.json", results)
        from bodycorr.evaluation.plots import plot_cumulative, plot_sorted_pairs

        nonempty = {k: v for k, v in per_pair.items() if v}
        plot_cumulative({k: np.concatenate([p.errors_cm for p in v]) for k, v in nonempty.items()}, out / "cumulative.png")
        plot_sorted_pairs(nonempty, out / "pairs_sorted.png")
    results["_per_pair"] = per_pair
    return results


def format_table(results: dict) -> str:
    """A terminal table of the groups."""
    cols = ("AE_cm", "WE_cm", "median_cm", "within_5cm_pct", "within_10cm_pct", "gross_pct", "flip_share_of_gross_pct")
    head = f"{'group':34s}" + "".join(f"{c.replace('_pct', ' %').replace('_cm', ' cm'):>14s}" for c in cols)
    lines = [head, "-" * len(head)]
    for k, g in results["groups"].items():
        lines.append(f"{k:34s}" + "".join(f"{_num(g.get(c)):14.2f}" for c in cols))
    return "\n".join(lines)


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")


REMESHED_POINTS = 1000  # evaluated source points per pair on the remeshed suite (isotropic meshes: spread evenly by area)
REMESHED_SUFFIX = "-remeshed"


class RemeshedPairSuite(SyntheticPairSuite):
    """A synthetic suite's pairs on its bodies remeshed one by one (:mod:`bodycorr.data.remeshed`):
    every full mesh has its own connectivity and vertex placement, so no method can lean on a shared
    vertex order. Truth through each vertex's point on the rest template
    (:attr:`~bodycorr.evaluation.harness.Surface.canonical`); the depth views are the suite's, each
    pixel's truth the source body's vertex nearest its template vertex; left/right through the
    template's mirror plane (x -> -x, within 0.4 mm of its symmetry map). Errors are geodesics on each
    target's own remeshed surface from :data:`REMESHED_POINTS` random source points per pair (the
    same for every method)."""

    def __init__(self, name: str = "synthetic-v1", max_pairs: int = 0, progress: bool = True, geodesic: str = "graph"):
        from bodycorr.data.remeshed import load_remeshed
        from bodycorr.evaluation.harness import RowCache

        if geodesic == "template":
            raise BodycorrError("--geodesic template: the remeshed suite is measured on each target's own surface; use graph or heat.")
        super().__init__(name, max_pairs, progress, geodesic)
        self.remeshed = load_remeshed(name)
        self.name = f"{name}{REMESHED_SUFFIX}"
        self.default_points = REMESHED_POINTS
        how = ("3-ring graph geodesics" if geodesic == "graph" else "heat-method geodesics")
        self.meta.update(format="synthetic-remeshed", remeshed_sha256=self.remeshed.parameters_sha256[:16],
                         geodesic=f"each target's own remeshed surface, {how}; truth = the target vertex nearest the source point's rest-template point",
                         symmetry={"available": True, "from": "template mirror plane (x -> -x)"})  # fmt: skip
        self._row_cache = RowCache()
        self._trees: dict = {}

    def surface(self, name: str) -> Surface:
        if name not in self._surfaces:
            from scipy.spatial import cKDTree

            i = self.index[name]
            mesh, canon = self.remeshed.mesh(i), self.remeshed.canonical(i)
            tree = cKDTree(canon)
            self._trees[name] = tree
            sym = tree.query(canon * np.array([-1.0, 1.0, 1.0]), workers=1)[1].astype(np.int64)
            self._surfaces[name] = Surface(name, mesh, None, sym, np.array([0.0, 0.0, 1.0]), "z", str(self.suite.identity[i]),
                                           canonical=canon)  # fmt: skip
        return self._surfaces[name]

    def view(self, name: str, noise: str) -> View:
        v = super().view(name, noise)
        self.surface(name)
        ok = v.vertex >= 0
        vert = np.full(len(v.vertex), -1, dtype=np.int64)
        vert[ok] = self._trees[name].query(self.template_vertices[v.vertex[ok]], workers=1)[1]
        return View(v.depth, v.camera, vert, v.name)

    def truth_subset(self, max_points: int, seed: int) -> np.ndarray | None:
        return None  # every pair draws its own source points (harness.select_points)

    def geodesic_task(self, name: str) -> tuple | None:
        return None

    def geodesics(self, name: str):
        from bodycorr.evaluation.harness import SolverRows

        # edge lengths by unfolding: the MMP ones to 1e-7 on a body, ~9x faster (each target is used a few times)
        return SolverRows(self.surface(name).mesh, self.geodesic, self._row_cache, key=f"{name}:{self.geodesic}", edges="unfold")


def pair_suite(name: str = "synthetic-v1", max_pairs: int = 0, progress: bool = True, geodesic: str = "graph") -> SyntheticPairSuite:
    """The harness suite called ``name``: a synthetic suite (``synthetic-v1``, its clothed variant
    ``synthetic-v1-clothed``), or its remeshed bodies with the ``-remeshed`` suffix
    (``synthetic-v1-remeshed``; clothed: ``synthetic-v1-clothed-remeshed``, also spelt
    ``synthetic-v1-remeshed-clothed``)."""
    alias = REMESHED_SUFFIX + CLOTHED_SUFFIX
    if name.endswith(alias):
        name = name[: -len(alias)] + CLOTHED_SUFFIX + REMESHED_SUFFIX
    if name.endswith(REMESHED_SUFFIX):
        return RemeshedPairSuite(name[: -len(REMESHED_SUFFIX)], max_pairs, progress, geodesic)
    return SyntheticPairSuite(name, max_pairs, progress, geodesic)
