"""Farthest-point sampling: geodesic on meshes (from a solver or an all-pairs table) and Euclidean on
point clouds. Deterministic for a given seed."""

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
    return _fps(p.shape[0], k, lambda i: np.linalg.norm(p - p[i], axis=1), initial, seed, "a point cloud")
