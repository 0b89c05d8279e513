"""Closest points on a triangle mesh: the face and barycentrics of the surface point nearest each query."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError

CENTROID_CANDIDATES = 8  # faces with the nearest centroids tried besides those around the nearest vertex


@dataclass(frozen=True, eq=False)
class ClosestPoints:
    """The surface point nearest each query.

    Attributes:
        vertex: (N,) int64 the nearest vertex.
        face: (N,) int64 the face holding the closest point.
        bary: (N, 3) float64 its barycentrics in that face (non-negative, sum 1).
        distance: (N,) float64 from the query to it.
    """

    vertex: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    distance: np.ndarray


def closest_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of triangles to points (any dimension).

    p: (..., D) broadcastable against tri: (..., 3, D) -> barycentrics (..., 3) and squared distance (...).
    Interior projections are used when all barycentrics are >= 0, otherwise the best of the three edges.
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    e0, e1, v = b - a, c - a, p - a
    d00 = (e0 * e0).sum(-1)
    d01 = (e0 * e1).sum(-1)
    d11 = (e1 * e1).sum(-1)
    d20 = (v * e0).sum(-1)
    d21 = (v * e1).sum(-1)
    den = d00 * d11 - d01 * d01
    ok = den > 1e-12 * np.maximum(d00 * d11, 1e-30)
    safe = np.where(ok, den, 1.0)
    bv = (d11 * d20 - d01 * d21) / safe
    bw = (d00 * d21 - d01 * d20) / safe
    bu = 1.0 - bv - bw
    inside = ok & (bu >= 0) & (bv >= 0) & (bw >= 0)
    best_bary = np.stack([bu, bv, bw], -1)
    q = bu[..., None] * a + bv[..., None] * b + bw[..., None] * c
    best = np.where(inside, ((p - q) ** 2).sum(-1), np.inf)
    best_bary = np.where(inside[..., None], best_bary, 0.0)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        s, t = tri[..., i, :], tri[..., j, :]
        e = t - s
        ee = (e * e).sum(-1)
        u = np.clip(((p - s) * e).sum(-1) / np.maximum(ee, 1e-30), 0.0, 1.0)
        d = ((p - (s + u[..., None] * e)) ** 2).sum(-1)
        better = d < best
        bb = np.zeros(best_bary.shape)
        bb[..., i] = 1.0 - u
        bb[..., j] += u
        best = np.where(better, d, best)
        best_bary = np.where(better[..., None], bb, best_bary)
    return best_bary, best


class SurfaceLocator:
    """Finds the closest surface point of a triangle mesh, in any coordinates (3-D positions, colour
    codes): the nearest vertex (a k-d tree), then the triangles around it and the
    :data:`CENTROID_CANDIDATES` triangles with the nearest centroids (which catch long, thin
    triangles whose corners are all far from the query); the query is projected onto each and the
    closest point wins. Exact wherever the closest triangle is among those candidates, which on
    reasonable meshes is everywhere but where two sheets nearly touch.

    Args:
        values: (V, D) the vertices' coordinates; faces: (F, 3).
    """

    def __init__(self, values: np.ndarray, faces: np.ndarray):
        self.values = np.asarray(values, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        if self.values.ndim != 2 or self.faces.ndim != 2 or self.faces.shape[1] != 3 or not len(self.faces):
            raise BodycorrError(f"closest points: need (V, D) values and (F>0, 3) faces, got {self.values.shape} and {self.faces.shape}.")

    @functools.cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(self.values)

    @functools.cached_property
    def _centroid_tree(self) -> cKDTree:
        return cKDTree(self.values[self.faces].mean(1))

    @functools.cached_property
    def vertex_faces(self) -> np.ndarray:
        """(V, K) faces around each vertex, padded with -1."""
        n = len(self.values)
        vf = np.repeat(np.arange(len(self.faces)), 3)
        vv = self.faces.ravel()
        order = np.argsort(vv, kind="stable")
        vv, vf = vv[order], vf[order]
        counts = np.bincount(vv, minlength=n)
        k = max(1, int(counts.max()))
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(vv)) - start[vv]
        out = np.full((n, k), -1, dtype=np.int64)
        out[vv, slot] = vf
        return out

    def query(self, points: np.ndarray, chunk: int = 16384) -> ClosestPoints:
        """points: (N, D) -> :class:`ClosestPoints` (memory bounded by working ``chunk`` points at a time)."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.values.shape[1]:
            raise BodycorrError(f"closest points: queries must be (N, {self.values.shape[1]}), got {p.shape}.")
        parts = [self._chunk(p[i : i + chunk]) for i in range(0, len(p), chunk)] or [self._chunk(p[:0])]
        return ClosestPoints(*(np.concatenate([getattr(c, k) for c in parts]) for k in ("vertex", "face", "bary", "distance")))

    def _chunk(self, c: np.ndarray) -> ClosestPoints:
        n = len(c)
        nearest = np.asarray(self._tree.query(c)[1], dtype=np.int64).reshape(n)
        k = min(CENTROID_CANDIDATES, len(self.faces))
        by_centroid = np.asarray(self._centroid_tree.query(c, k)[1]).reshape(n, k)
        cand = np.concatenate([self.vertex_faces[nearest], by_centroid], 1)  # -1 padded
        tri = self.values[self.faces[np.maximum(cand, 0)]]  # (N, M, 3 corners, D)
        bary, dist2 = closest_on_triangles(c[:, None, :], tri)
        dist2 = np.where(cand >= 0, dist2, np.inf)
        best = np.argmin(dist2, axis=1)
        rows = np.arange(n)
        return ClosestPoints(nearest, cand[rows, best].astype(np.int64), bary[rows, best], np.sqrt(dist2[rows, best]))
