"""A generic pair-suite runner: methods x pairs -> geodesic errors on the target -> summaries, a
terminal table, JSON and plots. ``bodycorr benchmark --compare A B ...`` runs several methods (model
files, checkpoints, baselines) side by side on exactly the same pairs and source points.

The model
---------
* A suite (:class:`PairSuite`) has full *surfaces* (:class:`Surface`: a mesh in metres, a reference
  id per vertex, optionally a left/right symmetry map), a list of pairs (:class:`PairSpec`), one
  partial *view* of each surface (:class:`View`, a depth map whose pixels know their surface vertex)
  and geodesic distances on each surface (:class:`GeodesicRows`). The synthetic suite
  (:mod:`bodycorr.evaluation.synthetic`) and user folders (:mod:`bodycorr.evaluation.userdata`) are
  two such suites.
* A method (:class:`Method`) describes each shape once (``prepare``: timed, cached per shape) and
  maps every source point to a target point (``correspond``: timed). Learned models are
  :class:`ModelMethod`; :mod:`bodycorr.evaluation.baseline` has methods that need no learning.
* Each pair is run as every requested kind (``full-full``, ``partial-full``, ``partial-partial``:
  the partial side is the surface's view) and noise level; the group of a pair is
  ``"<kind>/<pair group>/<noise>"`` (e.g. ``partial-full/intra/noisy``).

Truth and error
---------------
A source point is a surface vertex (full shape) or a pixel whose truth is the nearest corner of the
rendered triangle. Its reference id (``Surface.ref``; the vertex itself for same-topology data)
names the true target points: the target vertices with the same reference id (a set when several
target vertices share one id; at most :data:`MAX_TRUTH_SET` of them, nearest the set's centre).
The matched target point is likewise a target vertex (or a pixel -> its corner vertex). The error
is the geodesic distance, **on the target's own surface**, from the truth to the match (the minimum
over the truth set), in cm. A match on a pixel without truth (a flying pixel) or on another
connected component counts as :data:`PENALTY_M` (1 m).

For speed only a deterministic random subset of the source points with truth is evaluated
(``HarnessConfig.max_points``, 2000 for folders): the subset is drawn from ``(seed, number of
candidate points)``, the same for every method, so geodesics are needed from at most that many
truth vertices per pair; their rows are computed once per pair for all methods, and cached per
target surface (for same-topology full sources the subset is the same vertex set for every pair,
so rows are reused across pairs). A suite may instead mark a fixed set of reference points
(:meth:`PairSuite.truth_subset`): every pair then evaluates exactly its source points whose truth
is marked, so each target needs rows from those few points only (the synthetic suite on each
target's own surface: ``max_points`` marked vertices, see :mod:`bodycorr.evaluation.synthetic`);
``meta["truth_points"]`` records how many.

Flips (left/right): the match is nearer the mirror of the truth than the truth, and the truth is
at least :data:`FLIP_MIN_M` from its mirror. Computed as ``d(truth, sym(match)) < d(truth, match)``
(equal to ``d(sym(truth), match)`` when the symmetry map is an isometry), so it needs no extra
geodesic rows. Only where the suite has a symmetry map; otherwise flip figures are ``None``.

Partial pairs: ``outside_overlap`` (on :class:`PairErrors`, partial targets) marks source points
whose truth lies more than :data:`OVERLAP_M` from what the target view sees (no true counterpart);
``match_outside_overlap_pct`` is the share of source points whose *match* falls more than
:data:`OVERLAP_M` outside the truly overlapping region (the target surface seen by the source view,
and by the target view for partial targets). Both use Dijkstra on the target mesh (2-ring chords).

Speed (issue #4; nothing here changes a reported figure)
--------------------------------------------------------
* Each shape (a full surface, or a view at one noise level) is described once per method and
  reused by every pair and kind it appears in. With ``HarnessConfig.workers`` > 1 (the CLI's
  ``--workers``, default 2), methods with ``parallel_prepare`` (:class:`ModelMethod`) describe all
  needed shapes ahead of the pairs in that many spawned processes, one torch thread each, in the
  order the pairs need them, while this process matches and scores the pairs already ready. On the
  shared 2-core machine with a training job running, one 13k-vertex body (48 renders) took 2.3 s
  with 1 torch thread and 3.7-4.3 s with 2, and two 1-thread workers describe about twice as many
  bodies per second as one. Descriptors from 1 and 2 torch threads differ by ~1e-7, which moved
  group means by at most 1e-4 relative on ``--max-pairs 3`` of synthetic-v1. Suites too small to
  pay for starting workers (:data:`PREFETCH_MIN_WORK`) are described in this process.
* :class:`ModelMethod` matches with one nearest-neighbour search (``bodycorr match`` also searches
  backwards for its mutual flags, which the harness does not use).
* Geodesics: a suite with a ``distances`` lookup (the synthetic suite's rows or table) is read
  only at the (truth, match) entries needed, instead of fetching whole rows (for a full-full pair,
  13k rows = 0.7 GB of float32 per pair). A suite's costly per-surface geodesic work
  (:meth:`PairSuite.geodesic_task`: the synthetic suite's rows on each target, ~3 s each) is shared
  between the describe workers and this process: this process does the next one whenever it
  would otherwise wait for a description, the workers take them from the last surface back once
  all descriptions are done, and each is done once (a shared claim per surface).
* The 2-ring chord graph's structure is built once per topology (:class:`_RingPattern`); only
  chord lengths are recomputed per target. The distance to what a target view sees is computed
  once per view.
* ``meta["seconds"]`` in the result says where the time went: ``describe`` (summed over shapes,
  also when described in parallel), ``match``, ``truth`` (graphs, truth sets, overlap Dijkstra),
  ``evaluate`` and ``total`` (wall clock of the run, without loading the suite and writing plots).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from bodycorr.common.cache import content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import atomic_path, check_output_dir, output_run, write_json_atomic
from bodycorr.evaluation.metrics import GROSS_CM, PairErrors, auc, cumulative_curve, summarize
from bodycorr.geometry.camera import Camera
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.inputs import ScanInput, remove_flying_pixels

KINDS = ("full-full", "partial-full", "partial-partial")
NOISE = ("clean", "noisy")
OVERLAP_M = 0.03  # a point farther than this from the other side's visible surface has no counterpart
FLIP_MIN_M = 0.10  # truth and its mirror must be this far apart for a match to count as a flip
PENALTY_M = 1.0  # error of a match on a pixel without truth, or on another connected component
MAX_TRUTH_SET = 16
DEFAULT_POINTS = 2000
ROW_CACHE_BYTES = 1_500_000_000
PREFETCH_MIN_WORK = 2_000_000  # described points x renders below which worker processes do not pay (~3 bodies)


# ----------------------------------------------------------------------------------------------
# what a suite provides
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Surface:
    """A full shape of a suite.

    Attributes:
        name: unique name in the suite (file stem for folders).
        mesh: the mesh, metres.
        ref: (V,) int64 reference id of each vertex, -1 = none; None = the vertex index itself
            (same-topology data: vertex i is the same point on every shape).
        symmetry: (V,) int64 left/right mirror vertex of each vertex (-1 = unknown), or None.
        up: (3,) unit up axis (for rendering views and plots).
        up_hint: what methods are told about the up axis ("auto" or an axis such as "z").
        subject: person id, when known.
        path: the file it came from ("" for generated shapes).
        units: the units the file was in ("m", "cm", "mm").
        canonical: (V, 3) each vertex as a point in a frame every surface of the suite shares (the
            rest template), or None. Surfaces of different topologies with canonical points take
            their truth from them instead of ``ref``: a source point's true counterpart is the
            target vertex nearest its canonical point.
    """

    name: str
    mesh: Mesh
    ref: np.ndarray | None = None
    symmetry: np.ndarray | None = None
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    up_hint: str = "auto"
    subject: str | None = None
    path: str = ""
    units: str = "m"
    canonical: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class View:
    """One depth view of a surface.

    Attributes:
        depth: (H, W) float32 metres, 0 = no data.
        camera: the camera that took it (world = the surface's frame).
        vertex: (N,) int64 surface vertex of each valid pixel (``depth > 0``, row-major order), the
            nearest corner of the rendered triangle; -1 for a pixel without truth (flying pixel).
        name: label for messages.
    """

    depth: np.ndarray
    camera: Camera
    vertex: np.ndarray
    name: str


@dataclass(frozen=True, eq=False)
class ReferenceBody:
    """The body a benchmark's error heatmap is drawn on.

    Attributes:
        mesh: the body (metres).
        up: (3,) its up axis.
        facing: (3,) the way it faces, or None (unknown: the picture calls its sides 1 and 2).
        name: what it is, for the picture ("template", "source of a->b").
        pair: None: a suite's shared body (the template): every pair's evaluated points lie on it
            (:attr:`PairRecord.anchor`) and the heatmap shows the per-vertex mean over all pairs of a
            group. A pair name: that pair's source surface; the heatmap shows that pair's errors at
            its evaluated points (:attr:`PairRecord.points`).
    """

    mesh: Mesh
    up: np.ndarray
    facing: np.ndarray | None = None
    name: str = "template"
    pair: str | None = None


@dataclass(frozen=True)
class PairSpec:
    """A pair of surfaces (source -> target) and its group ("intra", "inter", "pairs", ...)."""

    source: str
    target: str
    group: str = "pairs"

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


class GeodesicRows(Protocol):
    """Geodesic distances on one surface: ``rows(vertices (K,)) -> (K, V) float32 metres``.

    A suite whose distances are cheap one by one (a stored table) may also give
    ``distances(a (N,), b (N,)) -> (N,) float32``, equal to ``rows(a)[i, b[i]]``: the harness then
    looks up only the pairs it needs instead of whole rows (see :func:`pair_distances`).
    """

    def rows(self, vertices: np.ndarray) -> np.ndarray: ...


def pair_distances(geodesics: GeodesicRows, sources: np.ndarray):
    """A lookup ``dist(a (N,), b (N,)) -> (N,) float32`` of the distances from vertices ``a`` (each
    one of ``sources``) to vertices ``b``: the suite's own ``distances`` when it has one, else the
    rows of the unique ``sources`` fetched once (``rows(unique)[position of a, b]``)."""
    own = getattr(geodesics, "distances", None)
    if callable(own):
        return lambda a, b: np.asarray(own(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))
    uniq = np.unique(np.asarray(sources, dtype=np.int64))
    rows = np.asarray(geodesics.rows(uniq)) if uniq.size else np.zeros((0, 0), np.float32)
    return lambda a, b: rows[np.searchsorted(uniq, a), b]


class PairSuite:
    """What the harness needs from a suite; subclasses fill the attributes and methods."""

    name: str = "suite"
    pairs: list[PairSpec]
    issues: list[str]
    meta: dict
    default_points: int = DEFAULT_POINTS

    def surface(self, name: str) -> Surface:
        raise NotImplementedError

    def view(self, name: str, noise: str) -> View:
        raise NotImplementedError

    def geodesics(self, name: str) -> GeodesicRows:
        raise NotImplementedError

    def truth_subset(self, max_points: int, seed: int) -> np.ndarray | None:
        """A (R,) bool mask over reference ids (vertex ids when ``Surface.ref`` is None), or None.

        None (the default): each pair evaluates a random subset of at most ``max_points`` of its points
        (:func:`select_points`). A mask: every pair evaluates exactly its source points whose truth
        is marked, so geodesics are needed from the same few truth points on every target (a suite
        whose geodesics cost per truth point, such as the synthetic suite on each target's own
        surface); ``max_points`` then sets how many reference ids the suite marks (0 = all).
        Called once per run, before the first pair.
        """
        return None

    def reference_body(self) -> ReferenceBody | None:
        """Optional: a body every surface of the suite corresponds to vertex by vertex, whose vertex
        ``r`` is reference id ``r`` (``Surface.ref``; the vertex index itself when that is None) and
        in whose frame ``Surface.canonical`` points lie (the synthetic suites: the template). The
        benchmark's heatmap then shows the mean error per vertex of it over all pairs. None (default):
        the heatmap is drawn on one pair's source surface."""
        return None

    def geodesic_task(self, name: str) -> tuple[Any, tuple] | None:
        """Optional: a picklable ``(function, args)`` that computes what :meth:`geodesics` of surface
        ``name`` needs. When shapes are described in worker processes, the harness shares these
        tasks between the workers (from the last surface back, once the descriptions are done; the
        result goes to :meth:`take_geodesic`) and the pair loop's process (from the first surface
        on, whenever it would wait for a description; it calls :meth:`geodesics`), so a costly
        geodesic precomputation keeps every process busy instead of stalling the pair loop.
        None (default): nothing to precompute."""
        return None

    def take_geodesic(self, name: str, result: Any) -> None:
        """Receives the result of :meth:`geodesic_task` for ``name`` (computed in a worker)."""


class RowCache:
    """Geodesic rows (float32) per (surface, vertex), bounded in bytes; whole surfaces are evicted
    least recently used first."""

    def __init__(self, max_bytes: int = ROW_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict[str, dict[int, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str, vertices: np.ndarray, compute) -> np.ndarray:
        """(K, V) rows of ``vertices`` on surface ``key``; missing ones via ``compute(missing) -> (M, V)``."""
        rows = self._store.setdefault(key, {})
        self._store.move_to_end(key)
        missing = np.array([v for v in np.unique(vertices).tolist() if v not in rows], dtype=np.int64)
        if missing.size:
            for lo in range(0, missing.size, 256):
                chunk = missing[lo : lo + 256]
                got = np.asarray(compute(chunk), dtype=np.float32)
                for v, r in zip(chunk.tolist(), got):
                    rows[v] = r
                self._bytes += got.nbytes
        out = np.stack([rows[int(v)] for v in vertices]) if len(vertices) else np.zeros((0, 0), np.float32)
        while self._bytes > self.max_bytes and self._store:
            _, old = self._store.popitem(last=False)  # the surface in use is last: evicted only if alone
            self._bytes -= sum(r.nbytes for r in old.values())
        return out


class SolverRows:
    """:class:`GeodesicRows` from a :class:`~bodycorr.geometry.geodesic.GeodesicSolver` on the mesh
    itself (``method`` "graph" or "heat"; ``edges``: the graph's edge lengths, see the solver), built
    on first use; rows kept in a shared :class:`RowCache`. The solver caches its own preprocessing
    on disk (the "graph" edges by MMP), keyed on the mesh content."""

    def __init__(self, mesh: Mesh, method: str = "graph", cache: RowCache | None = None, key: str | None = None, edges: str = "mmp"):
        self.mesh, self.method, self.edges = mesh, method, edges
        self.cache = cache or RowCache()
        self.key = key or f"{mesh.name}:{method}"
        self._solver = None

    @property
    def solver(self):
        if self._solver is None:
            from bodycorr.geometry.geodesic import GeodesicSolver

            kwargs = {"edges": self.edges} if self.method == "graph" else {}
            self._solver = GeodesicSolver(self.mesh, self.method, **kwargs)  # type: ignore[arg-type]
        return self._solver

    def rows(self, vertices: np.ndarray) -> np.ndarray:
        return self.cache.get(self.key, np.asarray(vertices, dtype=np.int64), lambda v: self.solver.from_sources(v))


# ----------------------------------------------------------------------------------------------
# what a method sees, and methods
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvalShape:
    """One side of a pair as a method sees it.

    Attributes:
        key: cache key ("<surface>" or "<surface> [view, <noise>]").
        scan: the input: kind "mesh" (points = vertices) or "depth" (points = valid pixels, world).
        surface: name of the full surface it is (a view of).
        up_hint: what the suite says about the up axis ("auto" = unknown).
        up: (3,) up axis for plots.
        vertex: (N,) surface vertex of each point, -1 = none. For evaluation only: methods must not use it.
    """

    key: str
    scan: ScanInput
    surface: str
    up_hint: str
    up: np.ndarray
    vertex: np.ndarray

    @property
    def partial(self) -> bool:
        return self.scan.kind == "depth"


class Method(Protocol):
    """A correspondence method: ``prepare`` each shape once, then ``correspond`` pairs.

    ``correspond(prepare(source), prepare(target))`` returns (N_source,) int target point indices
    (into ``target.scan.points``), one per source point.
    """

    name: str

    def prepare(self, shape: EvalShape) -> Any: ...

    def correspond(self, source: Any, target: Any) -> np.ndarray: ...


DESCRIBED_CACHE = 64  # described shapes kept per process, shared by the methods of a run that use one network
# (a refined method then times only its own per-shape step: "desc s" of the first method is the describing)
_DESCRIBED: OrderedDict = OrderedDict()


class ModelMethod:
    """A descriptor network: per-pixel descriptors for views, multi-view per-vertex descriptors for
    meshes (``views`` renders), nearest neighbours in descriptor space (as ``bodycorr match``).

    Args:
        extractor: a :class:`~bodycorr.matching.extract.DescriptorExtractor`.
        name: label in tables and plots.
        views: renders per full mesh.
        up: up axis for meshes ("auto" = estimated by the network); None = the suite's hint.
    """

    parallel_prepare = True  # the harness may describe shapes in worker processes (HarnessConfig.workers)
    model_file: str | None = None  # the model file and its sha256, recorded in results.json (make_method sets them)
    model_sha256: str | None = None

    def __init__(self, extractor, name: str = "model", views: int = 48, up: str | None = None):
        self.extractor, self.name, self.views, self.up = extractor, name, int(views), up

    def prepare(self, shape: EvalShape):
        from bodycorr.matching.describe import describe

        up = self.up or shape.up_hint
        key = (id(self.extractor), self.views, up, shape.key)
        hit = _DESCRIBED.get(key)
        if hit is not None and hit[0] is self.extractor:  # another method of this run described it already
            _DESCRIBED.move_to_end(key)
            return hit[1]
        d = describe(shape.scan, self.extractor, self.views, up)
        _DESCRIBED[key] = (self.extractor, d)
        while len(_DESCRIBED) > DESCRIBED_CACHE:
            _DESCRIBED.popitem(last=False)
        if len(d.descriptors) != len(shape.scan.points):
            raise BodycorrError(f"{shape.key}: the model described {len(d.descriptors)} points but the shape has "
                                f"{len(shape.scan.points)}. This is a bug; report it.")  # fmt: skip
        return d

    def correspond(self, source, target) -> np.ndarray:
        """The nearest target descriptor of each source descriptor: ``bodycorr match``'s ``target``
        (its backward search, only needed for the mutual flags, is skipped)."""
        from bodycorr.matching.nearest import knn

        return knn(source.descriptors, target.descriptors, k=1).index[:, 0]


class RefinerMethod(ModelMethod):
    """A descriptor network's nearest-neighbour map refined by a registered refiner
    (:mod:`bodycorr.matching.refiners`, the same code ``bodycorr match --refine`` runs): each shape
    is described and prepared by the refiner once (its eigenbasis, its fitted body; in the describe
    workers when there are any), then every pair is refined from its plain map.

    Args:
        refiner: a registered refiner name; options: its constructor's arguments.
    """

    def __init__(self, extractor, name: str = "model", views: int = 48, up: str | None = None, refiner: str = "auto", **options):
        super().__init__(extractor, name, views, up)
        self.refiner_name, self.options = refiner, options
        self._refiner = self._ctx = None

    def __getstate__(self):  # workers build their own refiner and context (and their caches)
        state = dict(self.__dict__)
        state["_refiner"] = state["_ctx"] = None
        return state

    def _parts(self):
        if self._refiner is None:
            from bodycorr.matching.refiners import RefineContext, get_refiner

            self._refiner, self._ctx = get_refiner(self.refiner_name, **self.options), RefineContext(self.extractor, self.views)
        return self._refiner, self._ctx

    def prepare(self, shape: EvalShape):
        refiner, ctx = self._parts()
        return refiner.prepare(super().prepare(shape), ctx)

    def correspond(self, source, target) -> np.ndarray:
        from bodycorr.matching.correspond import match

        refiner, ctx = self._parts()
        a, b = source.described, target.described
        initial = match(a.descriptors, b.descriptors, a.consistency, source_points=a.points)
        return refiner.refine(source, target, initial, ctx).correspondences.target


# method spec prefix -> (refiner, its options, label); the first four keep their earlier meaning
REFINER_SPECS = {
    "refine": ("register", {}, "refine"), "fit": ("template", {}, "template fit"), "body": ("body", {"model": "body"}, "body fit"),
    "bodyfit": ("body", {}, "body + graph fit"), "spectral": ("spectral", {}, "spectral"), "auto": ("auto", {}, "auto"),
    "autospectral": ("auto", {"complete": "spectral"}, "auto (spectral)"),
}  # fmt: skip


def make_method(spec: str | None, views: int = 48, device: str = "cpu", up: str | None = None) -> Method:
    """A method from a command-line spec: ``baseline:<name>`` (see :mod:`bodycorr.evaluation.baseline`),
    a model file or training checkpoint, None or "shipped" for the shipped model, or
    ``<refinement>:<model file or 'shipped'>`` for that model's map refined (:data:`REFINER_SPECS`):
    ``spectral:`` ZoomOut anchored to the descriptors, ``auto:`` what ``bodycorr match`` does by
    default (``autospectral:`` the same with complete scans matched spectrally, its earlier default), ``refine:`` non-rigid registration of the source onto the target, ``fit:`` through the
    template registered onto both shapes (mirror-aware), ``body:`` the same through Anny's pose and
    shape fitted onto both, ``bodyfit:`` the body fit followed by the deformation graph."""
    prefix = spec.split(":", 1)[0] if spec else ""
    if prefix in REFINER_SPECS:
        refiner, options, label = REFINER_SPECS[prefix]
        inner = spec.split(":", 1)[1]
        base = make_method(None if inner in ("", "shipped") else inner, views, device, up)
        m = RefinerMethod(base.extractor, name=f"{base.name} + {label}", views=views, up=up, refiner=refiner, **options)
        m.model_file, m.model_sha256 = base.model_file, base.model_sha256
        return m
    if spec == "shipped":
        spec = None
    if spec and spec.startswith("baseline:"):
        from bodycorr.evaluation.baseline import get_baseline

        return get_baseline(spec.split(":", 1)[1])
    from bodycorr.common.fileio import file_sha256
    from bodycorr.matching.describe import DEFAULT_MODEL, check_depth_model
    from bodycorr.matching.pipeline import load_extractor

    if not spec:
        m = ModelMethod(load_extractor(None, device), name="shipped model", views=views, up=up)
        m.model_file, m.model_sha256 = str(DEFAULT_MODEL), file_sha256(DEFAULT_MODEL)
        return m
    from bodycorr.matching.extract import DescriptorExtractor
    from bodycorr.models.io import load_model_file, read_torch_file

    # input size: the model file's meta, else a training checkpoint's view config, else 128
    d = read_torch_file(spec, "model file")
    check_depth_model(d, spec)
    size = (d.get("meta") or {}).get("size") or ((d.get("config") or {}).get("view") or {}).get("size") or 128
    m = ModelMethod(DescriptorExtractor(load_model_file(spec, device), size=int(size), device=device), name=spec, views=views, up=up)
    m.model_file, m.model_sha256 = str(spec), file_sha256(spec)  # results.json records it: 'bodycorr release' checks it
    return m


def make_methods(specs: list[str | None], views: int = 48, device: str = "cpu", up: str | None = None) -> list[Method]:
    """:func:`make_method` for each spec; repeated names get a ``#2``, ``#3`` suffix."""
    out: list[Method] = []
    seen: dict[str, int] = {}
    for s in specs:
        m = make_method(s, views, device, up)
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name}#{seen[m.name]}"
        out.append(m)
    return out


# ----------------------------------------------------------------------------------------------
# truth of one pair
# ----------------------------------------------------------------------------------------------


class _RefIndex:
    """Target vertices by reference id."""

    def __init__(self, surface: Surface):
        self.n = surface.mesh.num_vertices
        self.identity = surface.ref is None
        self.vertices = surface.mesh.vertices
        self.canonical = None
        if surface.canonical is not None:
            from scipy.spatial import cKDTree

            self.canonical = cKDTree(np.asarray(surface.canonical, dtype=np.float64))
        if not self.identity:
            ref = np.asarray(surface.ref, dtype=np.int64)
            order = np.argsort(ref, kind="stable")
            order = order[ref[order] >= 0]
            self.order, self.sorted = order, ref[order]

    def nearest(self, canonical: np.ndarray) -> np.ndarray:
        """(N, 3) canonical points -> (N, 1) the target vertex nearest each (surfaces with canonical points)."""
        return self.canonical.query(np.asarray(canonical, dtype=np.float64).reshape(-1, 3), workers=1)[1].astype(np.int64)[:, None]

    def members(self, refs: np.ndarray) -> np.ndarray:
        """(N,) reference ids -> (N, S) target vertices with that id, -1 padded (S <= MAX_TRUTH_SET)."""
        refs = np.asarray(refs, dtype=np.int64)
        if self.identity:
            return np.where((refs >= 0) & (refs < self.n), refs, -1)[:, None]
        lo = np.searchsorted(self.sorted, refs, "left")
        hi = np.searchsorted(self.sorted, refs, "right")
        cnt = np.where(refs >= 0, hi - lo, 0)
        s = int(min(max(cnt.max(initial=1), 1), MAX_TRUTH_SET))
        col = np.arange(s)
        pos = lo[:, None] + col
        out = np.where(col < cnt[:, None], self.order[np.minimum(pos, len(self.order) - 1)] if len(self.order) else -1, -1)
        for i in np.flatnonzero(cnt > MAX_TRUTH_SET):  # big sets: the members nearest the set's centre
            mem = self.order[lo[i] : hi[i]]
            c = self.vertices[mem].mean(0)
            out[i] = mem[np.argsort(np.linalg.norm(self.vertices[mem] - c, axis=1), kind="stable")[:MAX_TRUTH_SET]]
        return out.astype(np.int64)


def _edge_graph(mesh: Mesh, pattern: _RingPattern | None = None) -> sp.csr_matrix:
    """Vertices joined to their 2-ring neighbours by straight chords. For the 3 cm overlap tests:
    on the template at 1-5 cm it is unbiased (mean 0.0 %, 90 % within +-3.5 % of the geodesic),
    where Dijkstra on plain mesh edges zigzags (+7 % on average).

    ``pattern`` (:class:`_RingPattern` of the mesh's faces) skips rebuilding the 2-ring structure:
    the same matrix, only the chord lengths are computed (shapes sharing one topology)."""
    if pattern is not None:
        return pattern.graph(mesh.vertices)
    e = mesh.edges()
    n = mesh.num_vertices
    a = sp.csr_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
    a2 = sp.triu(a + a @ a, k=1).tocoo()
    w = np.linalg.norm(mesh.vertices[a2.row] - mesh.vertices[a2.col], axis=1)
    return sp.csr_matrix((np.r_[w, w], (np.r_[a2.row, a2.col], np.r_[a2.col, a2.row])), shape=(n, n))


class _RingPattern:
    """The structure of :func:`_edge_graph` for one topology (vertex count, faces), built once:
    :meth:`graph` fills in the chord lengths of any vertex positions in that topology."""

    def __init__(self, mesh: Mesh):
        e = mesh.edges()
        n = mesh.num_vertices
        a = sp.csr_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
        a2 = sp.triu(a + a @ a, k=1).tocoo()
        self.row, self.col, self.n = a2.row, a2.col, n
        # the CSR layout _edge_graph's constructor gives, with entry k of [w, w] at position order[k]
        k = np.arange(1, 2 * len(a2.row) + 1, dtype=np.float64)
        g = sp.csr_matrix((k, (np.r_[a2.row, a2.col], np.r_[a2.col, a2.row])), shape=(n, n))
        self.indptr, self.indices, self.take = g.indptr, g.indices, g.data.astype(np.int64) - 1

    def graph(self, vertices: np.ndarray) -> sp.csr_matrix:
        """vertices: (V, 3) -> (V, V) csr chord-length graph, equal to ``_edge_graph(Mesh(vertices, faces))``."""
        w = np.linalg.norm(vertices[self.row] - vertices[self.col], axis=1)
        return sp.csr_matrix((np.r_[w, w][self.take], self.indices.copy(), self.indptr.copy()), shape=(self.n, self.n))


def _distance_to_set(graph: sp.csr_matrix, seeds: np.ndarray) -> np.ndarray:
    """(V,) graph distance from each vertex to the nearest seed (inf if none is reachable)."""
    if len(seeds) == 0:
        return np.full(graph.shape[0], np.inf)
    return np.asarray(dijkstra(graph, directed=False, indices=np.unique(seeds), min_only=True), dtype=np.float64)


def select_points(candidates: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """A deterministic random subset (sorted) of ``candidates`` of at most ``max_points`` (0 = all),
    drawn from ``(seed, len(candidates))`` so every method and every same-size source gets the same."""
    if not max_points or len(candidates) <= max_points:
        return np.asarray(candidates, dtype=np.int64)
    rng = np.random.default_rng([int(seed), len(candidates)])
    return np.sort(rng.choice(np.asarray(candidates, dtype=np.int64), int(max_points), replace=False))


class PairTruth:
    """Truth of one pair (source/target shapes), shared by every method evaluated on it."""

    def __init__(self, src: EvalShape, tgt: EvalShape, src_surface: Surface, tgt_surface: Surface, tgt_index: _RefIndex,
                 graph: sp.csr_matrix, geodesics: GeodesicRows, max_points: int, seed: int,
                 dist_seen: np.ndarray | None = None, truth_mask: np.ndarray | None = None):  # fmt: skip
        """``dist_seen``: (V,) ``_distance_to_set(graph, seen target vertices)`` when already known
        (partial targets; it depends only on the target view). ``truth_mask``: the suite's
        :meth:`PairSuite.truth_subset`: only source points whose reference id is marked are
        evaluated (then ``max_points`` is not applied)."""
        self.tgt, self.tsurf, self.geo = tgt, tgt_surface, geodesics
        v = src.vertex
        ref = np.full(len(v), -1, dtype=np.int64)
        ok = v >= 0
        ref[ok] = v[ok] if src_surface.ref is None else np.asarray(src_surface.ref)[v[ok]]
        if (src_surface.canonical is None) != (tgt_index.canonical is None):
            raise BodycorrError(f"pair {src.surface}->{tgt.surface}: one surface has canonical points and the other not.")
        if tgt_index.canonical is not None:  # different topologies: the target vertex nearest the source point's canonical point
            members = np.full((len(v), 1), -1, dtype=np.int64)
            members[ok] = tgt_index.nearest(np.asarray(src_surface.canonical)[v[ok]])
        else:
            members = tgt_index.members(ref)
        cand = np.flatnonzero(members[:, 0] >= 0)
        if cand.size == 0:
            raise BodycorrError(f"pair {src.surface}->{tgt.surface}: no source point has a true counterpart on the target. "
                                "Check that both ground-truth files refer to the same reference points.")  # fmt: skip
        rep_all = members[cand, 0]
        if truth_mask is not None:
            r = ref[cand]
            marked = cand[r < len(truth_mask)]
            marked = marked[np.asarray(truth_mask, dtype=bool)[ref[marked]]]
            if marked.size == 0:
                raise BodycorrError(f"pair {src.surface}->{tgt.surface}: none of the {int(np.sum(truth_mask))} evaluated truth "
                                    f"points is among the {cand.size} source points with a counterpart; use more points.")  # fmt: skip
            cand, max_points = marked, 0
        self.candidates = int(cand.size)
        self.index = select_points(cand, max_points, seed)  # (K,) evaluated source points
        # the area each evaluated point stands for: a complete source's vertex areas (a view's
        # pixels already sample its surface by area)
        self.weights = None
        if not src.partial and getattr(src_surface.mesh, "num_faces", 0):
            sv = src.vertex[self.index]
            self.weights = np.where(sv >= 0, src_surface.mesh.vertex_areas()[np.maximum(sv, 0)], 0.0)
        self.members = members[self.index]  # (K, S)
        self.outside_truth = None
        self.dist_region = None
        if not tgt.partial:
            dist_seen = None
        elif dist_seen is None:
            dist_seen = _distance_to_set(graph, tgt.vertex[tgt.vertex >= 0])
        if tgt.partial:
            self.outside_truth = dist_seen[self.members[:, 0]] >= OVERLAP_M
        if src.partial or tgt.partial:
            region = np.unique(rep_all)
            if dist_seen is not None:
                region = region[dist_seen[region] < OVERLAP_M]
            self.dist_region = _distance_to_set(graph, region)
        self._dist = None  # pair_distances lookup, made on first evaluate

    def _min_distance(self, cols: np.ndarray) -> np.ndarray:
        """(K,) min over each point's truth members of the distance to target vertex ``cols`` (K,)."""
        ok = self.members >= 0  # (K, S); column 0 is always a member
        a = self.members[ok]
        b = np.broadcast_to(np.maximum(cols, 0)[:, None], self.members.shape)[ok]
        got = self._dist(a, b)
        d = np.full(self.members.shape, np.inf, dtype=got.dtype)
        d[ok] = got
        return np.where(cols >= 0, d.min(1), np.inf)

    def evaluate(self, pred: np.ndarray, name: str, seconds: dict) -> tuple[PairErrors, np.ndarray | None]:
        """Errors of a method's (N_source,) target indices: :class:`PairErrors` and the match-outside flags."""
        if self._dist is None:
            self._dist = pair_distances(self.geo, self.members[self.members >= 0])
        q = np.asarray(pred)[self.index]
        w = self.tgt.vertex[q]  # target surface vertex of each match, -1 = none
        d = self._min_distance(w)
        d = np.where(np.isfinite(d), d, PENALTY_M)
        sym = self.tsurf.symmetry
        flips = np.zeros(len(d), dtype=bool)
        if sym is not None:
            sym = np.asarray(sym)
            sw = np.where(w >= 0, sym[np.maximum(w, 0)], -1)
            d_mirror = self._min_distance(sw)
            rep = self.members[:, 0]
            srep = sym[rep]
            apart = np.where(srep >= 0, self._dist(rep, np.maximum(srep, 0)), 0.0)
            flips = (w >= 0) & (d_mirror < d) & (apart > FLIP_MIN_M)
        outside = None
        if self.dist_region is not None:
            outside = (w < 0) | ~(self.dist_region[np.maximum(w, 0)] <= OVERLAP_M)
        errs = PairErrors(name, (d * 100).astype(np.float32), flips, self.outside_truth, seconds, self.weights)
        return errs, outside


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HarnessConfig:
    """What :func:`run_benchmark` runs.

    Attributes:
        kinds: pair kinds (``full-full``, ``partial-full``, ``partial-partial``).
        noise: view noise levels for partial kinds ("clean", "noisy").
        max_points: evaluated source points per pair (0 = all; None = the suite's default:
            2000 for folders, all for the synthetic suite).
        seed: seed of the point subsets.
        workers: processes that describe shapes ahead of the pairs for methods with
            ``parallel_prepare`` (learned models; 1 thread each); 1 = in this process, on demand.
    """

    kinds: tuple[str, ...] = KINDS
    noise: tuple[str, ...] = NOISE
    max_points: int | None = None
    seed: int = 0
    workers: int = 1

    def check(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise BodycorrError(f"benchmark: unknown kind(s) {', '.join(bad) or '(none)'}. Use some of {', '.join(KINDS)}.")
        badn = [n for n in self.noise if n not in NOISE]
        if badn or not self.noise:
            raise BodycorrError(f"benchmark: unknown noise level(s) {', '.join(badn) or '(none)'}. Use clean and/or noisy.")
        if self.max_points is not None and self.max_points < 0:
            raise BodycorrError(f"benchmark: --points must be >= 0 (0 = all), got {self.max_points}.")
        if self.workers < 1:
            raise BodycorrError(f"benchmark: --workers must be >= 1, got {self.workers}.")


@dataclass(eq=False)
class PairRecord:
    """One method on one pair: its errors plus what the plots and extra statistics need."""

    group: str
    pair: str
    errors: PairErrors
    match_outside: np.ndarray | None
    has_symmetry: bool
    points: np.ndarray  # (K, 3) float32 evaluated source points (metres)
    up: np.ndarray
    anchor: np.ndarray | None = None  # (K, 3) float32 the evaluated points on the suite's reference body, or None


@dataclass(eq=False)
class BenchmarkResult:
    """Everything a run produced. ``records[method][group]`` lists :class:`PairRecord` in pair order."""

    suite: str
    methods: list[str]
    records: dict[str, dict[str, list[PairRecord]]]
    issues: list[str]
    meta: dict
    groups: list[str]
    body: ReferenceBody | None = None  # what the heatmap is drawn on (None: nothing evaluated)

    def summaries(self) -> dict[str, dict[str, dict]]:
        """``{method: {group: summary}}`` (:func:`summarize_records`)."""
        return {m: {g: summarize_records(self.records[m].get(g, [])) for g in self.groups} for m in self.methods}


def summarize_records(recs: list[PairRecord]) -> dict:
    """:func:`~bodycorr.evaluation.metrics.summarize` plus ``flip_pct`` (share of all evaluated points
    that are flips), ``match_outside_overlap_pct`` (partial kinds) and ``None`` flip figures when the
    suite has no symmetry map."""
    out = summarize([r.errors for r in recs])
    if not recs:
        return out
    if all(r.has_symmetry for r in recs):
        out["flip_pct"] = float(np.concatenate([r.errors.flips for r in recs]).mean() * 100)
    else:
        out["flip_pct"] = None
        out["flip_share_of_gross_pct"] = None
    if recs[0].match_outside is not None:
        out["match_outside_overlap_pct"] = float(np.concatenate([r.match_outside for r in recs]).mean() * 100)
    return out


class _Runner:
    def __init__(self, suite: PairSuite, methods: list[Method], config: HarnessConfig):
        self.suite, self.methods, self.config = suite, methods, config
        self.max_points = suite.default_points if config.max_points is None else config.max_points
        self.shapes: dict[str, EvalShape] = {}
        self.prepared: dict[tuple[str, str], tuple[Any, float]] = {}
        self.failed: dict[tuple[str, str], str] = {}
        self.indexes: dict[str, _RefIndex] = {}
        self.graphs: dict[str, sp.csr_matrix] = {}
        self.patterns: dict[str, _RingPattern] = {}  # per topology (content hash of the faces)
        self.seen: dict[str, np.ndarray] = {}  # per target view: graph distance to what it sees
        self.issues: list[str] = []
        self.skipped: dict[str, int] = {}
        self.seconds = {"describe": 0.0, "match": 0.0, "truth": 0.0, "evaluate": 0.0}  # where the run's time went
        self.prefetch: _Prefetch | None = None
        self.truth_mask: np.ndarray | None = None  # the suite's shared truth subset (PairSuite.truth_subset)
        self.body: ReferenceBody | None = None  # the suite's reference body (PairSuite.reference_body)

    def shape(self, name: str, partial: bool, noise: str) -> EvalShape:
        key = f"{name} [view, {noise}]" if partial else name
        if key not in self.shapes:
            surf = self.suite.surface(name)
            if partial:
                v = self.suite.view(name, noise)
                raw = np.asarray(v.depth, dtype=np.float32)
                raw_valid = np.isfinite(raw) & (raw > 0)
                if len(v.vertex) != int(raw_valid.sum()):
                    raise BodycorrError(f"{key}: the view has {int(raw_valid.sum())} valid pixels but {len(v.vertex)} truth entries.")
                vimg = np.full(raw.shape, -1, dtype=np.int64)
                vimg[raw_valid] = v.vertex
                # what `bodycorr match` does to depth input: drop flying pixels and isolated returns
                depth = remove_flying_pixels(np.where(raw_valid, raw, 0))
                valid = depth > 0
                pts = v.camera.backproject(depth)[valid]
                scan = ScanInput(kind="depth", points=pts, name=key, depth=depth, camera=v.camera)
                vert = vimg[valid]
                up = -v.camera.R[1]
            else:
                scan = ScanInput(kind="mesh", points=surf.mesh.vertices, name=key, mesh=surf.mesh)
                vert = np.arange(surf.mesh.num_vertices, dtype=np.int64)
                up = np.asarray(surf.up, dtype=np.float64)
            self.shapes[key] = EvalShape(key, scan, name, surf.up_hint, up, vert)
        return self.shapes[key]

    def prepare(self, m: Method, shape: EvalShape) -> tuple[Any, float]:
        k = (m.name, shape.key)
        if k in self.failed:
            raise _Known(self.failed[k])
        if k not in self.prepared:
            got = self.prefetch.take(k) if self.prefetch is not None else None
            if got is None:
                t0 = time.perf_counter()
                try:
                    obj, err = m.prepare(shape), None
                except BodycorrError as e:
                    obj, err = None, str(e)
                got = (obj, time.perf_counter() - t0, err)
            obj, secs, err = got
            if err is not None:
                msg = f"method {m.name} cannot describe {shape.key}: {err} Its pairs are skipped for this method."
                self.failed[k] = msg
                self.issues.append(msg)
                raise _Known(msg)
            self.prepared[k] = (obj, secs)
            self.seconds["describe"] += secs
        return self.prepared[k]

    def start_prefetch(self, jobs: list) -> None:
        """Describe, in ``config.workers`` processes, every shape the pairs of ``jobs`` need with the
        methods that allow it (``parallel_prepare``), in the order the pairs will ask for them."""
        par = [m for m in self.methods if getattr(m, "parallel_prepare", False)]
        if self.config.workers <= 1 or not par:
            return
        items: list[tuple] = []
        geo_items: list[tuple] = []
        seen: set[tuple[str, str]] = set()
        task_of = getattr(self.suite, "geodesic_task", None)
        for kind, _, noise, pairs in jobs:
            for pair in pairs:
                if callable(task_of) and ("", pair.target) not in seen:
                    seen.add(("", pair.target))
                    task = task_of(pair.target)
                    if task is not None:
                        geo_items.append((pair.target, task[0], task[1]))
                for name, partial in ((pair.source, kind.startswith("partial")), (pair.target, kind.endswith("partial"))):
                    try:
                        shape = self.shape(name, partial, noise)
                    except BodycorrError:  # reported by the pair loop
                        continue
                    for i, m in enumerate(par):
                        if (m.name, shape.key) not in seen:
                            seen.add((m.name, shape.key))
                            items.append((i, shape))
        # starting a worker (torch, the model, the renderer) costs seconds: only for real work
        work = sum(len(sh.scan.points) * (1 if sh.partial else int(getattr(par[i], "views", 1))) for i, sh in items)
        if items and work >= PREFETCH_MIN_WORK:
            self.prefetch = _Prefetch(par, items, min(self.config.workers, len(items)), geo_items)
            self.prefetch.on_idle = self.suite.geodesics

    def run(self, progress: bool) -> BenchmarkResult:
        t_start = time.perf_counter()
        cfg = self.config
        cfg.check()
        mask = self.suite.truth_subset(self.max_points, cfg.seed) if hasattr(self.suite, "truth_subset") else None
        self.truth_mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.body = self.suite.reference_body() if hasattr(self.suite, "reference_body") else None
        groups_in_order = list(dict.fromkeys(p.group for p in self.suite.pairs))
        jobs = []
        for kind in cfg.kinds:
            for g in groups_in_order:
                pairs = [p for p in self.suite.pairs if p.group == g]
                for noise in (("clean",) if kind == "full-full" else cfg.noise):
                    jobs.append((kind, g, noise, pairs))
        records: dict[str, dict[str, list[PairRecord]]] = {m.name: {} for m in self.methods}
        group_keys = [f"{kind}/{g}/{noise}" for kind, g, noise, _ in jobs]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(j[3]) for j in jobs), desc="pairs", unit="pair")
        try:
            self.start_prefetch(jobs)
            for (kind, g, noise, pairs), gkey in zip(jobs, group_keys):
                for m in self.methods:
                    records[m.name].setdefault(gkey, [])
                for pair in pairs:
                    try:
                        self._run_pair(pair, kind, noise, gkey, records)
                    except BodycorrError as e:
                        self.issues.append(f"{gkey} pair {pair.name}: {e}")
                    if bar is not None:
                        bar.update()
        finally:
            if self.prefetch is not None:
                self.prefetch.close()
            if bar is not None:
                bar.close()
        meta = dict(self.suite.meta)
        meta.update(points_per_pair=self.max_points, seed=cfg.seed, kinds=list(cfg.kinds), noise=list(cfg.noise))
        if self.truth_mask is not None:  # every point whose truth is one of these, in every pair
            meta.update(points_per_pair=None, truth_points=int(self.truth_mask.sum()))
        meta["describe_workers"] = self.prefetch.workers if self.prefetch is not None else 1
        meta["seconds"] = {k: round(v, 2) for k, v in self.seconds.items()}
        meta["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
        views = sorted({int(m.views) for m in self.methods if hasattr(m, "views")})
        meta["views"] = views[0] if len(views) == 1 else (views or None)
        meta["models"] = {m.name: {"file": m.model_file, "sha256": m.model_sha256}
                          for m in self.methods if getattr(m, "model_sha256", None)}  # fmt: skip
        result = BenchmarkResult(self.suite.name, [m.name for m in self.methods], records,
                                 list(self.suite.issues) + self.issues, meta, group_keys, self.body)  # fmt: skip
        if result.body is None:
            result.body = self._pair_body(result)
        return result

    def _pair_body(self, result: BenchmarkResult) -> ReferenceBody | None:
        """The source surface of the pair the heatmap shows (:func:`heatmap_pair`), for suites without a reference body."""
        pick = heatmap_pair(result)
        if pick is None:
            return None
        spec = next((p for p in self.suite.pairs if p.name == pick[1]), None)
        if spec is None:
            return None
        surf = self.suite.surface(spec.source)
        if not getattr(surf.mesh, "num_faces", 0):
            return None
        return ReferenceBody(surf.mesh, np.asarray(surf.up, np.float64), None, f"source of {spec.name}", spec.name)

    def _anchor(self, src: EvalShape, surf: Surface, index: np.ndarray) -> np.ndarray | None:
        """(K, 3) float32 the evaluated source points ``index`` on the reference body, or None without one."""
        if self.body is None:
            return None
        v = src.vertex[index]  # evaluated points always have a surface vertex
        if surf.canonical is not None:
            return np.asarray(surf.canonical, np.float32)[v]
        ref = v if surf.ref is None else np.asarray(surf.ref)[v]
        return np.asarray(self.body.mesh.vertices, np.float32)[ref]

    def _run_pair(self, pair: PairSpec, kind: str, noise: str, gkey: str, records) -> None:
        src = self.shape(pair.source, kind.startswith("partial"), noise)
        tgt = self.shape(pair.target, kind.endswith("partial"), noise)
        ssurf, tsurf = self.suite.surface(pair.source), self.suite.surface(pair.target)
        t_truth = time.perf_counter()
        if pair.target not in self.indexes:
            self.indexes[pair.target] = _RefIndex(tsurf)
            topo = content_hash(tsurf.mesh.num_vertices, tsurf.mesh.faces)
            if topo not in self.patterns:
                self.patterns[topo] = _RingPattern(tsurf.mesh)
            self.graphs[pair.target] = _edge_graph(tsurf.mesh, self.patterns[topo])
        graph = self.graphs[pair.target]
        got = self.prefetch.geodesic(pair.target) if self.prefetch is not None else None
        if got is not None and got[2] is None:  # a failed task: geodesics() below computes (and reports) it here
            self.suite.take_geodesic(pair.target, got[0])
        if tgt.partial and tgt.key not in self.seen:
            self.seen[tgt.key] = _distance_to_set(graph, tgt.vertex[tgt.vertex >= 0])
        truth = PairTruth(src, tgt, ssurf, tsurf, self.indexes[pair.target], graph, self.suite.geodesics(pair.target),
                          self.max_points, self.config.seed, self.seen.get(tgt.key), self.truth_mask)  # fmt: skip
        self.seconds["truth"] += time.perf_counter() - t_truth
        anchor = None  # the same evaluated points for every method
        for m in self.methods:
            try:
                a, ta = self.prepare(m, src)
                b, tb = self.prepare(m, tgt)
            except _Known:
                continue
            t0 = time.perf_counter()
            try:
                pred = np.asarray(m.correspond(a, b))
            except BodycorrError as e:
                self.issues.append(f"{gkey} pair {pair.name}, method {m.name}: {e}")
                continue
            tm = time.perf_counter() - t0
            self.seconds["match"] += tm
            n_t = len(tgt.scan.points)
            if pred.shape != (len(src.scan.points),) or not np.issubdtype(pred.dtype, np.integer) or \
                    (pred.size and (pred.min() < 0 or pred.max() >= n_t)):  # fmt: skip
                self.issues.append(f"{gkey} pair {pair.name}, method {m.name}: returned {pred.dtype} {pred.shape} "
                                   f"instead of {len(src.scan.points)} target indices in [0, {n_t}); skipped.")  # fmt: skip
                continue
            t_eval = time.perf_counter()
            errs, outside = truth.evaluate(pred, pair.name, {"describe": ta + tb, "match": tm})
            self.seconds["evaluate"] += time.perf_counter() - t_eval
            if anchor is None and self.body is not None:
                anchor = self._anchor(src, ssurf, truth.index)
            records[m.name][gkey].append(PairRecord(gkey, pair.name, errs, outside, tsurf.symmetry is not None,
                                                    src.scan.points[truth.index].astype(np.float32), src.up, anchor))  # fmt: skip


class _Known(Exception):
    """Internal: a failure already recorded as an issue."""


_WORKER: dict = {}


def _prefetch_init(methods: list, claims: Any = None) -> None:
    import torch

    torch.set_num_threads(1)  # see the module docstring: 1-thread workers beat 2 threads on a busy machine
    _WORKER["methods"] = methods
    _WORKER["claims"] = claims


def _prefetch_task(item: tuple[int, EvalShape]) -> tuple[Any, float, str | None]:
    """In a worker: (prepared object, seconds, None) or (None, seconds, the BodycorrError's message)."""
    i, shape = item
    t0 = time.perf_counter()
    try:
        obj = _WORKER["methods"][i].prepare(shape)
    except BodycorrError as e:
        return None, time.perf_counter() - t0, str(e)
    return obj, time.perf_counter() - t0, None


def _claim(claims: Any, i: int) -> bool:
    """Take geodesic task ``i`` (True) unless another process has (False)."""
    with claims.get_lock():
        if claims[i]:
            return False
        claims[i] = 1
        return True


def _geodesic_task(item: tuple[int, Any, tuple]) -> tuple[Any, float, str | None] | None:
    """In a worker: a suite's geodesic task ``(index, function, args)``, or None if the pair loop's
    process has taken it: (result, seconds, None) or (None, seconds, the BodycorrError's message)."""
    i, fn, args = item
    if not _claim(_WORKER["claims"], i):
        return None
    t0 = time.perf_counter()
    try:
        obj = fn(*args)
    except BodycorrError as e:
        return None, time.perf_counter() - t0, str(e)
    return obj, time.perf_counter() - t0, None


class _Prefetch:
    """``methods[i].prepare(shape)`` for each ``(i, shape)`` of ``items``, in spawned worker processes,
    in order; :meth:`take` hands a result over once (waiting for it if needed).

    ``geo``: a suite's geodesic tasks ``(surface name, function, args)`` (:meth:`PairSuite.geodesic_task`)
    in the order the pairs need them, shared between the workers and this process, each done once:
    the workers take them from the back once every description is done; this process takes them
    from the front (``on_idle(name)``) whenever it would otherwise wait for a description, and
    :meth:`geodesic` tells the pair loop whether a worker did a surface's task (its result) or this
    process must (None).
    """

    def __init__(self, methods: list, items: list[tuple[int, EvalShape]], workers: int, geo: list[tuple[str, Any, tuple]] = ()):  # fmt: skip
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.keys = [(methods[i].name, shape.key) for i, shape in items]
        self.pending = set(self.keys)
        self.done: dict[tuple[str, str], tuple[Any, float, str | None]] = {}
        self.workers = int(workers)
        self.claims = ctx.Array("b", max(len(geo), 1))
        self.pool = ctx.Pool(workers, initializer=_prefetch_init, initargs=(methods, self.claims))
        self._results = self.pool.imap(_prefetch_task, items)
        self._next = 0
        self.geo_names = [g[0] for g in geo]
        self._geo_index = {name: i for i, name in enumerate(self.geo_names)}
        self._geo_async = {geo[i][0]: self.pool.apply_async(_geodesic_task, ((i, geo[i][1], geo[i][2]),))
                           for i in reversed(range(len(geo)))}  # fmt: skip
        self._front = 0
        self.here: set[str] = set()  # surfaces whose geodesic task this process took
        self.on_idle = None  # callable(surface name): does that surface's geodesic work in this process

    def _idle(self) -> bool:
        """Take the next geodesic task from the front and do it here; False if none is left."""
        while self.on_idle is not None and self._front < len(self.geo_names):
            i = self._front
            self._front += 1
            if _claim(self.claims, i):
                self.here.add(self.geo_names[i])
                try:
                    self.on_idle(self.geo_names[i])
                except BodycorrError:  # the pair loop asks again and reports it
                    pass
                return True
        return False

    def take(self, key: tuple[str, str]) -> tuple[Any, float, str | None] | None:
        """The result for ``(method name, shape key)``, or None if it was not scheduled or was taken."""
        import multiprocessing

        if key not in self.pending:
            return None
        while key not in self.done:
            try:  # while the description is not ready, do geodesic tasks here
                got = self._results.next(timeout=0) if self._front < len(self.geo_names) else next(self._results)
            except multiprocessing.TimeoutError:
                if not self._idle():
                    got = next(self._results)
                else:
                    continue
            self.done[self.keys[self._next]] = got
            self._next += 1
        self.pending.discard(key)
        return self.done.pop(key)

    def geodesic(self, name: str) -> tuple[Any, float, str | None] | None:
        """A worker's result of surface ``name``'s geodesic task (waiting for it if a worker has
        taken it), the first time a surface is asked for; otherwise None: this process did or must
        do it (then taken now, if nobody had), or the result was handed over already."""
        if name not in self._geo_index or name in self.here:
            return None
        self.here.add(name)  # asked once: later pairs of this surface find it with the suite
        if _claim(self.claims, self._geo_index[name]):
            return None
        return self._geo_async[name].get()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def run_benchmark(suite: PairSuite, methods: list[Method], config: HarnessConfig = HarnessConfig(),
                  out: str | Path | None = None, progress: bool = True) -> BenchmarkResult:  # fmt: skip
    """Run every method on every pair of ``suite`` (x kinds x noise levels).

    Bad pairs and failing methods are recorded in ``result.issues`` (one line each) and the rest of
    the suite still runs. With ``out``, writes ``results.json`` and the plots (:func:`write_report`).
    """
    if not methods:
        raise BodycorrError("benchmark: no method to run. Give --model or --compare.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise BodycorrError(f"benchmark: method names must be unique, got {names}.")
    if out is not None:
        check_output_dir(out)  # before the pairs, not after them
    result = _Runner(suite, methods, config).run(progress)
    if out is not None:
        write_report(result, out)
    return result


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def result_json(result: BenchmarkResult) -> dict:
    """The JSON document: per method per group summaries and per-pair figures, issues, meta.

    ``groups`` (top level) repeats the first method's groups: what ``bodycorr release`` reads.
    """
    summ = result.summaries()
    methods = {}
    for m in result.methods:
        pairs = {}
        for g in result.groups:
            rows = []
            for r in result.records[m].get(g, []):
                e = r.errors
                rows.append({
                    "pair": r.pair, "points": int(e.errors_cm.size), "mean_cm": float(e.errors_cm.mean()),
                    "area_mean_cm": e.area_mean_cm(),
                    "median_cm": float(np.median(e.errors_cm)), "within_5cm_pct": float((e.errors_cm < 5).mean() * 100),
                    "flip_pct": float(e.flips.mean() * 100) if r.has_symmetry else None,
                    "describe_s": float(e.seconds["describe"]), "match_s": float(e.seconds["match"]),
                })  # fmt: skip
            pairs[g] = rows
        methods[m] = {"groups": summ[m], "pairs": pairs}
    first = result.methods[0]
    return {
        "suite": result.suite, "views": result.meta.get("views"), "method_order": list(result.methods),
        "group_order": list(result.groups), "methods": methods, "groups": summ[first],
        "errors": list(result.issues), "meta": result.meta,
    }  # fmt: skip


_TABLE_COLS = (
    ("pairs", "pairs", "{:>6.0f}"), ("AE_cm", "AE cm", "{:>8.2f}"), ("WE_cm", "WE cm", "{:>8.2f}"),
    ("AE_area_cm", "AEa cm", "{:>8.2f}"),
    ("median_cm", "med cm", "{:>8.2f}"), ("within_2cm_pct", "<2cm %", "{:>8.1f}"), ("within_5cm_pct", "<5cm %", "{:>8.1f}"),
    ("within_10cm_pct", "<10cm %", "{:>8.1f}"), ("auc_10cm", "AUC10", "{:>7.3f}"), ("flip_pct", "flip %", "{:>7.1f}"),
    ("match_outside_overlap_pct", "out %", "{:>7.1f}"), ("median_describe_s", "desc s", "{:>8.2f}"),
    ("median_match_s", "match s", "{:>8.3f}"),
)  # fmt: skip


def format_comparison(result: BenchmarkResult) -> str:
    """A terminal table: one row per (group, method). ``AEa``: AE with each point weighted by the
    surface area it stands for (complete sources; :class:`~bodycorr.evaluation.metrics.PairErrors`).
    ``flip %``: share of points flipped left/right
    ("-" without a symmetry map); ``out %``: matches outside the true overlap (partial kinds);
    ``desc s`` / ``match s``: median seconds per pair for descriptors (both shapes) and matching."""
    summ = result.summaries()
    gw = max([len(g) for g in result.groups] + [5]) + 2
    mw = max([len(m) for m in result.methods] + [6]) + 2
    head = f"{'group':{gw}s}{'method':{mw}s}" + "".join(f"{lab:>{len(fmt.format(0))}s}" for _, lab, fmt in _TABLE_COLS)
    lines = [head, "-" * len(head)]
    for g in result.groups:
        for m in result.methods:
            s = summ[m][g]
            cells = []
            for key, _, fmt in _TABLE_COLS:
                v = s.get(key)
                width = len(fmt.format(0))
                cells.append(fmt.format(v) if isinstance(v, (int, float)) and s.get("pairs") else f"{'-':>{width}s}")
            lines.append(f"{g:{gw}s}{m:{mw}s}" + "".join(cells))
    return "\n".join(lines)


def format_issues(result: BenchmarkResult) -> str:
    """The issues, one line each (empty string if none)."""
    if not result.issues:
        return ""
    return "\n".join([f"{len(result.issues)} problem(s); the rest of the suite ran:"] + [f"  - {i}" for i in result.issues])


def write_report(result: BenchmarkResult, out: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``cumulative.png``, ``pairs_sorted.png`` and ``heatmap.png`` to ``out``
    (an older run's files of these names are deleted first: a plot this run does not draw is not left behind)."""
    with output_run(out, BENCHMARK_OUTPUTS) as out:
        paths = {"json": write_json_atomic(out / "results.json", result_json(result))}
        if any(result.records[m][g] for m in result.methods for g in result.groups):
            paths["cumulative"] = plot_cumulative_compare(result, out / "cumulative.png")
            paths["pairs_sorted"] = plot_sorted_pairs_compare(result, out / "pairs_sorted.png")
            p = plot_error_heatmap(result, out / "heatmap.png")
            if p is not None:
                paths["heatmap"] = p
    return paths


BENCHMARK_OUTPUTS = ("results.json", "cumulative.png", "pairs_sorted.png", "heatmap.png")


def _figure(n: int, w: float = 5.0, h: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, max(1, n))
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


def plot_cumulative_compare(result: BenchmarkResult, path: str | Path, max_cm: float = 20.0) -> Path:
    """One panel per group, one curve per method: share of points with geodesic error below x cm."""
    fig, axes = _figure(len(result.groups))
    for ax, g in zip(axes, result.groups):
        for m in result.methods:
            recs = result.records[m].get(g, [])
            if not recs:
                continue
            e = np.concatenate([r.errors.errors_cm for r in recs])
            x, y = cumulative_curve(e, max_cm)
            ax.plot(x, y * 100, label=f"{m}: AUC10 {auc(e, 10.0):.2f}, mean {e.mean():.1f} cm")
        ax.axvline(10.0, color="0.7", lw=0.8, ls=":")
        ax.set(title=g, xlabel="geodesic error (cm)", ylabel="% of points", ylim=(0, 100), xlim=(0, max_cm))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, Path(path))


def plot_sorted_pairs_compare(result: BenchmarkResult, path: str | Path) -> Path:
    """One panel per group, one line per method: the pairs' mean errors sorted ascending."""
    fig, axes = _figure(len(result.groups))
    for ax, g in zip(axes, result.groups):
        for m in result.methods:
            means = np.sort([r.errors.errors_cm.mean() for r in result.records[m].get(g, [])])
            if means.size:
                ax.plot(np.arange(1, means.size + 1), means, marker=".", label=m)
        ax.axhline(GROSS_CM, color="0.7", lw=0.8, ls=":")
        ax.set(title=g, xlabel="pair (sorted)", ylabel="mean geodesic error (cm)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, Path(path))


def heatmap_pair(result: BenchmarkResult) -> tuple[str, str] | None:
    """(group, pair) shown in the heatmap: in the first group the first method has pairs in, the pair
    whose mean error is that method's median (a typical pair)."""
    first = result.methods[0]
    for g in result.groups:
        recs = result.records[first].get(g, [])
        if recs:
            means = np.array([r.errors.errors_cm.mean() for r in recs])
            return g, recs[int(np.argsort(means)[len(means) // 2])].pair
    return None


def plot_error_heatmap(result: BenchmarkResult, path: str | Path, max_cm: float = 20.0) -> Path | None:
    """Geodesic errors drawn on a body, front and back, one pair of views per method, colour bar in cm.

    On a suite's reference body (the template; :attr:`BenchmarkResult.body`): the mean error per
    vertex over every pair of the first group the first method has pairs in, known at the evaluated
    points and spread to the other vertices (:func:`~bodycorr.evaluation.plots.spread_to_vertices`).
    Otherwise on the source surface of a typical pair (:func:`heatmap_pair`), that pair's errors.
    None when nothing was evaluated.
    """
    from bodycorr.evaluation.plots import plot_errors_on_body, spread_to_vertices

    body, pick = result.body, heatmap_pair(result)
    if body is None or pick is None:
        return None
    g = pick[0]
    verts = np.asarray(body.mesh.vertices, np.float64)
    panels, counts = [], []
    for m in result.methods:
        if body.pair is None:
            recs = [r for r in result.records[m].get(g, []) if r.anchor is not None]
            anchors = [r.anchor for r in recs]
        else:
            recs = [r for r in result.records[m].get(g, []) if r.pair == body.pair]
            anchors = [r.points for r in recs]
        if not recs:
            continue
        e = np.concatenate([r.errors.errors_cm for r in recs])
        values = spread_to_vertices(np.concatenate(anchors), e, verts)
        panels.append((f"{m}\nmean {e.mean():.1f} cm, {(e < 5).mean() * 100:.0f} % < 5 cm", values))
        counts.append(len(recs))
    if not panels:
        return None
    points = len(result.records[result.methods[0]][g][0].errors.errors_cm) if result.records[result.methods[0]].get(g) else 0
    if body.pair is None:
        title = (f"{g}: mean geodesic error per {body.name} vertex over {max(counts)} pair(s)\n(measured at ~{points} "
                 "points a pair, spread to the other vertices by inverse-distance weighting)")  # fmt: skip
    else:
        title = (f"{g}, pair {body.pair} (a typical one): geodesic error on its source surface\n(measured at {points} points, "
                 "spread to the other vertices by inverse-distance weighting)")  # fmt: skip
    return plot_errors_on_body(panels, verts, body.mesh.faces, path, body.up, body.facing, max_cm, title)
