"""Tiny geometry built in code for tests (no datasets): an icosphere, a jittered flat grid, a tube
(bendable like a limb) and a mirrored pair of tubes with its left/right symmetry map."""

import numpy as np

from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.rigid import rotation_from_vector


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


def tube(n_around: int = 24, n_along: int = 41, length: float = 1.0, radius: float = 0.1) -> Mesh:
    """An open cylinder along +z from z = 0 to ``length`` (984 vertices by default, ~2.6 cm edges)."""
    th = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    z = np.linspace(0, length, n_along)
    tt, zz = np.meshgrid(th, z)
    v = np.stack([radius * np.cos(tt), radius * np.sin(tt), zz], -1).reshape(-1, 3)
    idx = np.arange(n_along * n_around).reshape(n_along, n_around)
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    c, d = idx[1:], np.roll(idx[1:], -1, axis=1)
    f = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return Mesh(v, f, "tube")


def bend(v: np.ndarray, angle_deg: float = 60.0, centre_z: float = 0.5, width: float = 0.2) -> np.ndarray:
    """Rotate the upper half of a tube by ``angle_deg`` about the x axis through (0, 0, centre_z),
    blended smoothly over ``width`` around the middle (two-bone skinning)."""
    rot = rotation_from_vector(np.deg2rad(angle_deg) * np.array([1.0, 0.0, 0.0]))
    c = np.array([0.0, 0.0, centre_z])
    s = np.clip((v[:, 2] - (centre_z - width / 2)) / width, 0, 1)
    s = s * s * (3 - 2 * s)
    return (1 - s)[:, None] * v + s[:, None] * ((v - c) @ rot.T + c)


def mirrored_pair(gap: float = 0.3) -> tuple[Mesh, np.ndarray]:
    """Two tubes at x = ±gap (mirror images through x = 0) as one mesh, and its left/right symmetry map."""
    one = tube()
    left = one.vertices + [gap, 0, 0]
    n = one.num_vertices
    faces = np.concatenate([one.faces, one.faces[:, ::-1] + n])  # the mirror copy keeps outward normals
    symmetry = np.concatenate([np.arange(n) + n, np.arange(n)])  # vertex i + n is vertex i mirrored
    right = left * [-1, 1, 1]
    return Mesh(np.concatenate([left, right]), faces, "pair"), symmetry
