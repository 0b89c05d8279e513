"""Nearest neighbours in descriptor space: faiss (exact, flat L2) with a plain reference beside it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycorr.common.errors import BodycorrError


@dataclass(frozen=True, eq=False)
class Neighbours:
    """k nearest neighbours of each query.

    Attributes:
        index: (N, k) int64 indices into the database, nearest first.
        distance: (N, k) float32 Euclidean distances.
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


def knn(queries: np.ndarray, database: np.ndarray, k: int = 1, threads: int = 0) -> Neighbours:
    """Exact k-NN. queries: (N, D), database: (M, D) -> :class:`Neighbours` (N, k).

    Uses faiss ``IndexFlatL2`` (measured 28 ms for 20k queries x 14k points, 16-D, on 2 cores).
    """
    q, db = _check(queries, "queries"), _check(database, "database")
    if q.shape[1] != db.shape[1]:
        raise BodycorrError(f"descriptor sizes differ: queries have {q.shape[1]}, database {db.shape[1]}.")
    k = min(k, db.shape[0])
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    d2, idx = index.search(q, k)
    return Neighbours(index=idx.astype(np.int64), distance=np.sqrt(np.maximum(d2, 0)).astype(np.float32))


def knn_reference(queries: np.ndarray, database: np.ndarray, k: int = 1) -> Neighbours:
    """Slow, obvious reference for :func:`knn` (full distance matrix; tests only)."""
    q, db = _check(queries, "queries").astype(np.float64), _check(database, "database").astype(np.float64)
    d = np.sqrt(np.maximum(((q[:, None, :] - db[None]) ** 2).sum(-1), 0))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return Neighbours(index=idx, distance=np.take_along_axis(d, idx, 1).astype(np.float32))
