"""Tiny geometry built in code for tests (no datasets): an icosphere and a jittered flat grid."""

import numpy as np

from bodycorr.geometry.mesh import Mesh


def icosphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]  # fmt: skip
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]  # fmt: skip
    verts = [np.asarray(p, float) / np.linalg.norm(p) for p in v]
    faces = np.asarray(f)
    for _ in range(subdivisions):
        mid: dict = {}

        def m(i, j):
            key = (min(i, j), max(i, j))
            if key not in mid:
                p = verts[i] + verts[j]
                verts.append(p / np.linalg.norm(p))
                mid[key] = len(verts) - 1
            return mid[key]

        faces = np.asarray([q for a, b, c in faces for q in ([a, m(a, b), m(c, a)], [b, m(b, c), m(a, b)],
                                                               [c, m(c, a), m(b, c)], [m(a, b), m(b, c), m(c, a)])])  # fmt: skip
    return np.asarray(verts), faces


def grid_mesh(n: int = 14, size: float = 0.2, jitter: float = 0.25, seed: int = 0, offset=(0.0, 0.0, 0.0)) -> Mesh:
    """A flat, jittered n×n grid in the z=0 plane (convex, so geodesic = Euclidean)."""
    rng = np.random.default_rng(seed)
    h = size / (n - 1)
    xy = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2).astype(float) * h
    inner = ((xy > 0) & (xy < size - 1e-12)).all(1)
    xy[inner] += rng.uniform(-jitter, jitter, size=(inner.sum(), 2)) * h
    v = np.c_[xy, np.zeros(len(xy))] + np.asarray(offset)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return Mesh(v, f, "grid")
