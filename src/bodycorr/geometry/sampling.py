"""Farthest-point sampling (geodesic on meshes, Euclidean on point clouds) and spatially even subsets
by voxel. Deterministic for a given seed."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.geodesic import GeodesicMethod, GeodesicSolver
from bodycorr.geometry.mesh import Mesh, PointCloud

SeedLike = int | np.random.Generator | None


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _fps(
    n: int,
    k: int,
    row: Callable[[int], np.ndarray],
    initial: Sequence[int] | np.ndarray | None,
    seed: SeedLike,
    what: str,
) -> np.ndarray:
    """Greedy FPS over ``n`` items given ``row(i) -> (n,)`` distances from item i to all items."""
    k = int(k)
    if k < 0 or k > n:
        raise BodycorrError(f"farthest-point sampling on {what}: cannot pick {k} of {n} points. Ask for 0..{n}.")
    init = np.asarray([] if initial is None else initial)
    if init.size and not np.issubdtype(init.dtype, np.integer):
        raise BodycorrError(f"farthest-point sampling on {what}: initial indices must be integers.")
    init = init.astype(np.int64).reshape(-1)
    if init.size and (init.min() < 0 or init.max() >= n):
        raise BodycorrError(f"farthest-point sampling on {what}: an initial index is outside [0, {n}).")
    if np.unique(init).size != init.size:
        raise BodycorrError(f"farthest-point sampling on {what}: initial indices repeat. Give distinct indices.")
    if init.size > k:
        raise BodycorrError(f"farthest-point sampling on {what}: {init.size} initial indices but k={k}. Raise k.")
    out = np.empty(k, dtype=np.int64)
    if k == 0:
        return out
    if init.size == 0:
        init = np.array([_rng(seed).integers(n)], dtype=np.int64)
    out[: init.size] = init
    mind = np.full(n, np.inf)
    for i in init:
        np.minimum(mind, row(int(i)), out=mind)
    mind[init] = -np.inf  # chosen points stay at -inf under np.minimum: never picked twice
    for j in range(init.size, k):
        # inf first (unreached components), ties to the lowest index
        nxt = int(np.argmax(mind))
        out[j] = nxt
        if j + 1 < k:
            np.minimum(mind, row(nxt), out=mind)
        mind[nxt] = -np.inf
    return out


def farthest_point_sampling(
    source: Mesh | GeodesicSolver | np.ndarray,
    k: int,
    initial: Sequence[int] | np.ndarray | None = None,
    seed: SeedLike = 0,
    *,
    method: GeodesicMethod = "graph",
) -> np.ndarray:
    """Geodesic farthest-point sampling of ``k`` mesh vertices.

    Args:
        source: a :class:`Mesh` (a :class:`GeodesicSolver` with ``method`` is built), a solver, or a
            precomputed (V, V) distance table (e.g. :func:`all_pairs_geodesics`; fastest for many calls).
        k: number of vertices to return.
        initial: vertices that start the set (returned first, in order). None: one vertex drawn with ``seed``.
        seed: int or ``np.random.Generator``; used only when ``initial`` is None.

    Returns:
        (k,) int64 distinct vertex indices; each next one maximises the geodesic distance to those
        before it. Unreached components (distance ``inf``) are visited first.
    """
    if isinstance(source, np.ndarray):
        d = source
        if d.ndim != 2 or d.shape[0] != d.shape[1]:
            raise BodycorrError(f"farthest-point sampling: the distance table must be (V, V), got {d.shape}.")
        return _fps(d.shape[0], k, lambda i: d[i], initial, seed, "a distance table")
    solver = source if isinstance(source, GeodesicSolver) else GeodesicSolver(source, method)
    return _fps(solver.num_vertices, k, solver.from_source, initial, seed, solver.mesh.name)


def farthest_point_sampling_euclidean(
    points: np.ndarray | PointCloud,
    k: int,
    initial: Sequence[int] | np.ndarray | None = None,
    seed: SeedLike = 0,
) -> np.ndarray:
    """Euclidean farthest-point sampling. points: (N, 3) or a PointCloud -> (k,) int64 indices.

    Same rules as :func:`farthest_point_sampling` (``initial`` first, else one point drawn with ``seed``).
    """
    p = points.points if isinstance(points, PointCloud) else np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise BodycorrError(f"farthest-point sampling: points must have shape (N, D), got {p.shape}.")
    # one contiguous array per coordinate: np.linalg.norm(p - p[i], axis=1) allocates (N, D) twice per
    # pick (4,000 picks of 5,700 points: 0.60 s -> 0.15 s, the same sums in the same order)
    cols = [np.ascontiguousarray(p[:, j]) for j in range(p.shape[1])]

    def row(i: int) -> np.ndarray:
        d = np.zeros(p.shape[0])
        for c in cols:
            t = c - c[i]
            d += t * t
        return np.sqrt(d, out=d)

    return _fps(p.shape[0], k, row, initial, seed, "a point cloud")


def voxel_best(points: np.ndarray, scores: np.ndarray, count: int, iterations: int = 20,
               rng: np.random.Generator | None = None) -> np.ndarray:  # fmt: skip
    """A spatially even subset: the best-scoring point of each occupied voxel, on a grid whose cell
    size is chosen (by bisection) so that about ``count`` voxels are occupied; at most ``count``.

    Where the points are dense (a mesh's hands and face carry far more vertices per cm² than its
    legs), the ``count`` best scores alone would all lie there; one per voxel spreads them over
    the surface while still preferring the best point of each place.

    Args:
        points: (N, 3) positions; scores: (N,) higher is better; count: the subset's size.
        rng: break ties between equal scores in the order of one ``rng.permutation(N)`` instead
            of by index (point order is often spatial: a tie would favour one end of the scan).
    Returns:
        (min(N, count),) int64 indices, best score first (ties: lower index first, or rng's order).
    """
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or s.shape != (len(p),):
        raise BodycorrError(f"voxel_best: points must be (N, 3) and scores (N,), got {p.shape} and {s.shape}.")
    if not (np.isfinite(p).all() and np.isfinite(s).all()):
        raise BodycorrError("voxel_best: points and scores must be finite; drop NaN/inf entries first.")
    if count <= 0 or len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    if rng is not None:
        perm = rng.permutation(len(p))
        return perm[voxel_best(p[perm], s[perm], count, iterations)]
    order = np.lexsort((np.arange(len(s)), -s))  # best first, stable
    if len(p) <= count:
        return order.astype(np.int64)
    lo, span = p.min(0), np.ptp(p, axis=0).max()
    if not np.isfinite(span) or span <= 0:
        return order[:count].astype(np.int64)

    def winners(h: float) -> np.ndarray:
        q = np.floor((p[order] - lo) / h).astype(np.int64)
        key = (q[:, 0] * (2**21) + q[:, 1]) * (2**21) + q[:, 2]
        _, first = np.unique(key, return_index=True)  # the first in best-first order of each voxel
        return order[np.sort(first)]

    small, large = span / 2**20, span  # many voxels (every point its own) .. one voxel
    best = winners(large)
    for _ in range(iterations):
        h = np.sqrt(small * large)
        w = winners(h)
        if len(w) >= count:
            small, best = h, w
        else:
            large = h
        if len(w) == count:
            break
    if len(best) < count:
        best = winners(small)
    return best[:count].astype(np.int64)
