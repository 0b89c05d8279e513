"""Nearest neighbours in descriptor space: exact, with a plain reference beside them.

Two backends give the same exact answers (ties aside):

* ``"blocks"`` (k = 1). Descriptors of a body are smooth functions on a 2-D
  surface and fill little of their 16-D space. Both sets are cut into kd-tree leaves along their
  main axes; each leaf has a centre and a radius. A group of about 256 queries is first searched
  in the leaves nearest to it, which gives every query an upper bound on its nearest distance;
  the leaves that cannot hold anything closer for any query of the group (``|q - centre| - radius``
  beyond the bound) are skipped, the others searched exactly. About a sixth of the pairs get a
  distance, each search a faiss BLAS call (fused distance and argmin).
* ``"faiss"`` (the default): ``IndexFlatL2``, every pair (also used for k > 1 and for small problems).

:func:`nearest_both` gives both directions; ``backward="hit"`` searches back only from the
database points that some query chose, which is all a mutual-nearest check needs.

Measured (bench/bench_matching.py, two shipped-model scans of 13,348 vertices, 2 shared cores at
load average ~5, interleaved medians): faiss flat both ways 236 ms; ``match()`` (blocks, backward
from hit targets) 91 ms (x0.39); blocks both ways in full x0.51; faiss with the hit-only backward
x0.64. CPU time, one thread each: 161 ms against 69 ms. The pruning pays only while the
descriptors cluster tightly: with the better-trained model shipped later (quiet machine, load
0.9), faiss with the hit-only backward takes 43-46 ms and blocks 111-113 ms, so faiss is the
default again; ``backward="hit"`` keeps its gain (x0.66 of both ways in full). Tried and dropped: scipy cKDTree
(``workers=2``, raw or on principal axes: x0.8 to x1.7 of faiss), one shared GEMM pass with row
and running column minima in torch or numpy (reductions and page faults of the big temporaries
made it 5 to 10x slower than faiss), faiss IVF made exact by bounds (about 10 µs per query of
overhead in ``search_preassigned``). numpy's own BLAS is avoided in the loop: its threads spin
on a busy machine (a 13k x 16 SVD took 280 ms).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bodycorr.common.errors import BodycorrError

BACKENDS = ("blocks", "faiss")
DEFAULT_BACKEND = "faiss"  # see the module docstring: blocks pruning depends on how the descriptors cluster
DIMS = 4  # main axes the kd-tree splits along
LEAF = 128  # points per kd leaf (the unit of pruning)
GROUP = 256  # queries searched together
FIRST = 512  # points of the nearest leaves searched first, for the upper bounds
CHUNK = 1 << 18  # floats of query-to-leaf distances held at once
SMALL = 2_000_000  # below this many pairs (queries x database) plain faiss is as fast


@dataclass(frozen=True, eq=False)
class Neighbours:
    """k nearest neighbours of each query.

    Attributes:
        index: (N, k) int64 indices into the database, nearest first (-1: not searched).
        distance: (N, k) float32 Euclidean distances (inf: not searched).
    """

    index: np.ndarray
    distance: np.ndarray


def _check(x: np.ndarray, what: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise BodycorrError(f"{what}: descriptors must be a non-empty (N, D) array, got {a.shape}.")
    if not np.isfinite(a).all():
        raise BodycorrError(f"{what}: descriptors contain NaN or inf.")
    return a


def _check_pair(queries: np.ndarray, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, db = _check(queries, "queries"), _check(database, "database")
    if q.shape[1] != db.shape[1]:
        raise BodycorrError(f"descriptor sizes differ: queries have {q.shape[1]}, database {db.shape[1]}.")
    return q, db


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise BodycorrError(f"nearest-neighbour backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
    return backend


_FAISS_LOCK = threading.Lock()


@contextmanager
def _faiss_settings(threads: int, blas_threshold: int | None = None):
    """faiss's thread count and BLAS threshold are process-wide: set them for one call, then restore."""
    import faiss

    with _FAISS_LOCK:
        old_threads = faiss.omp_get_max_threads()
        old_blas = faiss.cvar.distance_compute_blas_threshold
        if threads:
            faiss.omp_set_num_threads(threads)
        if blas_threshold is not None:
            # below this many query values (nq * d, default 128,000: 8,000 16-D queries) faiss
            # uses a per-pair loop, measured ~20x slower than its BLAS path for 1-NN here
            faiss.cvar.distance_compute_blas_threshold = blas_threshold
        try:
            yield faiss
        finally:
            faiss.omp_set_num_threads(old_threads)
            faiss.cvar.distance_compute_blas_threshold = old_blas


def _faiss_knn(q: np.ndarray, db: np.ndarray, k: int, threads: int = 0) -> Neighbours:
    with _faiss_settings(threads, blas_threshold=0) as faiss:
        index = faiss.IndexFlatL2(db.shape[1])
        index.add(db)
        d2, idx = index.search(q, k)
    return Neighbours(index=idx.astype(np.int64), distance=np.sqrt(np.maximum(d2, 0)).astype(np.float32))


def _neighbours(i: np.ndarray, d2: np.ndarray) -> Neighbours:
    return Neighbours(index=i[:, None], distance=np.sqrt(np.maximum(d2, 0)).astype(np.float32)[:, None])


def knn(queries: np.ndarray, database: np.ndarray, k: int = 1, threads: int = 0, backend: str = DEFAULT_BACKEND) -> Neighbours:
    """Exact k-NN. queries: (N, D), database: (M, D) -> :class:`Neighbours` (N, k).

    ``backend``: "blocks" (pruned exact search; k = 1 only, larger k and small problems go to
    faiss) or "faiss" (``IndexFlatL2``). ``threads``: faiss's threads (0 = its default); the
    blocks backend runs on one thread.
    """
    q, db = _check_pair(queries, database)
    k = min(k, db.shape[0])
    if _check_backend(backend) == "faiss" or k > 1 or len(q) * len(db) <= SMALL:
        return _faiss_knn(q, db, k, threads)
    with _faiss_settings(1, blas_threshold=0) as faiss:
        axes = _main_axes(q, db)
        pq, pd = _Partition(q, q @ axes), _Partition(db, db @ axes)
        return _neighbours(*_unsort(pq, pd, *_search(pq, pd, faiss, _tolerance(q, db))))


def nearest_both(a: np.ndarray, b: np.ndarray, threads: int = 0, backend: str = DEFAULT_BACKEND,
                 backward: str = "all") -> tuple[Neighbours, Neighbours]:  # fmt: skip
    """The nearest ``b`` of every ``a`` (forward) and the nearest ``a`` of ``b`` points (backward).

    a: (N, D), b: (M, D) -> (forward (N, 1), backward (M, 1)), exact. ``backward``: "all" (every
    b point) or "hit" (only the b points that are some a point's nearest; the others get index -1
    and distance inf). ``threads``, ``backend``: as in :func:`knn`.
    """
    a, b = _check_pair(a, b)
    if backward not in ("all", "hit"):
        raise BodycorrError(f"backward={backward!r}: choose 'all' or 'hit'.")
    if _check_backend(backend) == "faiss" or len(a) * len(b) <= SMALL:
        fw = _faiss_knn(a, b, 1, threads)
        if backward == "all":
            return fw, _faiss_knn(b, a, 1, threads)
        hit = np.unique(fw.index[:, 0])
        sub = _faiss_knn(b[hit], a, 1, threads)
        bi, bd = np.full(len(b), -1, np.int64), np.full(len(b), np.inf, np.float32)
        bi[hit], bd[hit] = sub.index[:, 0], sub.distance[:, 0]
        return fw, Neighbours(index=bi[:, None], distance=bd[:, None])
    with _faiss_settings(1, blas_threshold=0) as faiss:
        tol = _tolerance(a, b)
        axes = _main_axes(a, b)
        pa, pb = _Partition(a, a @ axes), _Partition(b, b @ axes)
        fi, fd = _unsort(pa, pb, *_search(pa, pb, faiss, tol))
        if backward == "all":
            bi, bd = _unsort(pb, pa, *_search(pb, pa, faiss, tol))
        else:
            hit = np.unique(fi)
            bi, bd = np.full(len(b), -1, np.int64), np.full(len(b), np.inf, np.float32)
            if len(hit) * len(a) <= SMALL:  # few: every pair is cheaper than a partition
                sub = faiss.knn(b[hit], a, 1)
                bi[hit], bd[hit] = sub[1][:, 0], sub[0][:, 0]
            else:
                ph = _Partition(b[hit], b[hit] @ axes)
                i, d2 = _unsort(ph, pa, *_search(ph, pa, faiss, tol))
                bi[hit], bd[hit] = i, d2
    return _neighbours(fi, fd), _neighbours(bi, bd)


# ---- the blocks backend -------------------------------------------------------------------------


def _tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """A bound on float32 rounding in a squared distance |x|² + |y|² - 2x·y (generous: ~100 ulp)."""
    return 1e-5 * float(np.einsum("ij,ij->i", a, a).max() + np.einsum("ij,ij->i", b, b).max()) + 1e-30


def _ball(x: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (mean) and squared radius of each run ``x[starts[i]:starts[i + 1]]``."""
    sizes = np.diff(starts)
    centre = (np.add.reduceat(x, starts[:-1], axis=0) / sizes[:, None]).astype(np.float32)
    d = x - np.repeat(centre, sizes, axis=0)
    return centre, np.maximum.reduceat(np.einsum("ij,ij->i", d, d), starts[:-1])


class _Partition:
    """Points sorted into kd-tree leaves (of their projection on the main axes), with each leaf's
    centre and squared radius, and query groups (whole subtrees of about ``group`` points) with
    their centres.

    ``padded``: (leaves, L) sorted indices of each leaf's points, short leaves padded with their
    first point (a repeated point changes no nearest neighbour), so leaves gather in one step.
    """

    def __init__(self, x: np.ndarray, projected: np.ndarray, leaf: int | None = None, group: int | None = None):
        from scipy.spatial import cKDTree

        leaf, group = leaf or LEAF, group or GROUP
        tree = cKDTree(projected, leafsize=leaf, balanced_tree=True, compact_nodes=True, copy_data=False)
        ranges, stack = [], [tree.tree]
        while stack:  # leaves left to right
            node = stack.pop()
            if node.lesser is None:
                ranges.append(node.start_idx)
            else:
                stack += [node.greater, node.lesser]
        self.perm = tree.indices.astype(np.int64)
        self.x = np.ascontiguousarray(x[self.perm])
        starts = np.append(np.asarray(ranges, dtype=np.int64), len(x))
        sizes = np.diff(starts)
        per = 2 ** max(0, int(round(np.log2(max(1.0, group / np.median(sizes))))))  # whole subtrees
        self.groups = starts[np.r_[np.arange(0, len(sizes), per), len(sizes)]]
        # a leaf of repeated points cannot be split by value: cut it into even runs of <= leaf
        pieces = -(-sizes // leaf)
        if (pieces > 1).any():
            cuts = [np.linspace(a, b, k + 1).round().astype(np.int64)[1:-1] for a, b, k in zip(starts[:-1], starts[1:], pieces) if k > 1]
            starts = np.unique(np.concatenate([starts, *cuts]))
            sizes = np.diff(starts)
        self.starts = starts
        self.centre, self.r2 = _ball(self.x, starts)
        offset = np.arange(sizes.max())
        self.padded = starts[:-1, None] + np.where(offset[None] < sizes[:, None], offset[None], 0)
        first_leaf = np.searchsorted(starts, self.groups)
        self.group_centre = (np.add.reduceat(self.centre * sizes[:, None], first_leaf[:-1], axis=0)
                             / np.diff(self.groups)[:, None]).astype(np.float32)  # fmt: skip


def _main_axes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(D, DIMS) main axes of both sets together (from a subsample)."""
    sub = np.concatenate([a[:: max(1, len(a) // 2000)], b[:: max(1, len(b) // 2000)]]).astype(np.float64)
    sub -= sub.mean(0)
    _, vec = np.linalg.eigh(sub.T @ sub)
    return np.ascontiguousarray(vec[:, ::-1][:, : min(DIMS, a.shape[1])], dtype=np.float32)


def _pairwise(faiss, x: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Squared distances (len(x), len(y)) by faiss's BLAS (numpy's may spin threads on a busy machine)."""
    out = np.empty((len(x), len(y)), np.float32) if out is None else out
    faiss.pairwise_L2sqr(int(x.shape[1]), len(x), faiss.swig_ptr(x), len(y), faiss.swig_ptr(y), faiss.swig_ptr(out))
    return out


def _search(Q: _Partition, X: _Partition, faiss, tol: float, first_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest X point of every Q point -> (index into X's sorted order, squared distance),
    both in Q's sorted order.

    1) Each query group is searched in the ``first_points`` points of the leaves nearest to its
       centre: every query q gets an upper bound u_q of its nearest distance.
    2) A point of leaf J is at least ``|q - c_J| - r_J`` from q, so a group searches only the other
       leaves where some query has ``|q - c_J|² - tol <= (r_J + u_q)²``. ``tol`` absorbs float32
       rounding of a computed squared distance (u_q and r_J are rounded up by it too).
    """
    n_leaves, n_groups = len(X.r2), len(Q.groups) - 1
    n_first = min(n_leaves, max(1, int(round((first_points or FIRST) / X.padded.shape[1]))))
    group_d2 = _pairwise(faiss, Q.group_centre, X.centre)  # (groups, leaves)
    if n_first < n_leaves:
        first = np.argpartition(group_d2, n_first - 1, axis=1)[:, :n_first]
    else:
        first = np.tile(np.arange(n_leaves), (n_groups, 1))
    gathered = np.empty((n_leaves * X.padded.shape[1], X.x.shape[1]), np.float32)
    best_i = np.empty(len(Q.x), np.int64)
    best_d = np.empty(len(Q.x), np.float32)
    bounds = Q.groups.tolist()
    for g in range(n_groups):
        s, e = bounds[g], bounds[g + 1]
        idx = X.padded[first[g]].ravel()
        d, i = faiss.knn(Q.x[s:e], np.take(X.x, idx, axis=0, out=gathered[: len(idx)]), 1)
        best_i[s:e], best_d[s:e] = idx[i[:, 0]], d[:, 0]
    # need[g, J]: some query of group g might find leaf J closer (groups in chunks of ~1 MB)
    u_up, r_up = np.sqrt(best_d + 2 * tol), np.sqrt(X.r2 + tol)  # rounded up
    need = np.empty((n_groups, n_leaves), bool)
    widest = n_leaves * int(np.diff(Q.groups).max())
    rows, half = max(1, CHUNK // widest), max(CHUNK, widest)
    buf = np.empty(2 * half, np.float32)
    for g0 in range(0, n_groups, rows):
        g1 = min(n_groups, g0 + rows)
        s, e = bounds[g0], bounds[g1]
        p2 = _pairwise(faiss, X.centre, Q.x[s:e], buf[: (e - s) * n_leaves].reshape(n_leaves, e - s))
        reach = np.add.outer(r_up, u_up[s:e], out=buf[half : half + (e - s) * n_leaves].reshape(n_leaves, e - s))
        reach *= reach
        p2 -= reach
        need[g0:g1] = (np.minimum.reduceat(p2, Q.groups[g0:g1] - s, axis=1) <= tol).T
    need[np.arange(n_groups)[:, None], first] = False
    for g in np.flatnonzero(need.any(1)).tolist():
        s, e = bounds[g], bounds[g + 1]
        idx = X.padded[need[g]].ravel()
        d, i = faiss.knn(Q.x[s:e], np.take(X.x, idx, axis=0, out=gathered[: len(idx)]), 1)
        better = d[:, 0] < best_d[s:e]
        best_i[s:e][better] = idx[i[better, 0]]
        best_d[s:e][better] = d[better, 0]
    return best_i, best_d


def _unsort(Q: _Partition, X: _Partition, i: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_i = np.empty(len(i), np.int64)
    out_d = np.empty(len(i), np.float32)
    out_i[Q.perm] = X.perm[i]
    out_d[Q.perm] = d2
    return out_i, out_d


def knn_reference(queries: np.ndarray, database: np.ndarray, k: int = 1) -> Neighbours:
    """Slow, obvious reference for :func:`knn` (full distance matrix in float64; tests only)."""
    q, db = _check(queries, "queries").astype(np.float64), _check(database, "database").astype(np.float64)
    d = np.sqrt(np.maximum(((q[:, None, :] - db[None]) ** 2).sum(-1), 0))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return Neighbours(index=idx, distance=np.take_along_axis(d, idx, 1).astype(np.float32))
