"""Correspondence methods that need no learning, usable wherever a model is (``--compare baseline:rigid-nn``).

* ``baseline:rigid-nn`` — rigid alignment, then nearest neighbour. The source is aligned to the
  target by trimmed point-to-point ICP from several starts (as given, centroids matched, and the
  four proper rotations that map the source's principal axes onto the target's); the start whose
  ICP ends with the smallest trimmed RMS wins. Each source point then takes its nearest target point.
  Works on full meshes and on partial views (a view is in world coordinates, like its mesh).
* ``baseline:nn`` — nearest neighbour in the coordinates as given (for data that is already aligned).

Both ignore shape and pose differences, so they are a floor that a learned method should beat on
inter-subject and different-pose pairs; on a rigidly moved copy rigid-nn is nearly exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError


@dataclass(eq=False)
class _Cloud:
    points: np.ndarray  # (N, 3) float64
    centre: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) principal axes as columns, largest spread first
    _tree: cKDTree | None = None

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree


def _cloud(points: np.ndarray) -> _Cloud:
    p = np.asarray(points, dtype=np.float64)
    c = p.mean(0)
    _, _, vt = np.linalg.svd(p[:: max(1, len(p) // 20000)] - c, full_matrices=False)
    return _Cloud(p, c, vt.T)


def kabsch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising ``|a @ R.T + t - b|`` (a, b: (N, 3)); det R = +1."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    R = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return R, cb - R @ ca


def icp(source: np.ndarray, tree: cKDTree, target: np.ndarray, R: np.ndarray, t: np.ndarray,
        iterations: int = 30, trim: float = 0.9, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """Trimmed point-to-point ICP from (R, t): each step pairs every source point with its nearest
    target point, keeps the ``trim`` share closest and refits. Returns (R, t, trimmed RMS in metres)."""
    prev = np.inf
    rms = np.inf
    for _ in range(iterations):
        d, j = tree.query(source @ R.T + t)
        keep = d <= np.quantile(d, trim)
        rms = float(np.sqrt(np.mean(d[keep] ** 2)))
        R, t = kabsch(source[keep], target[j[keep]])
        if abs(prev - rms) < tol:
            break
        prev = rms
    d, _ = tree.query(source @ R.T + t)
    rms = float(np.sqrt(np.mean(np.sort(d)[: max(1, int(len(d) * trim))] ** 2)))
    return R, t, rms


def rigid_align(source: _Cloud, target: _Cloud, icp_points: int = 2000, iterations: int = 30,
                trim: float = 0.9, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """Best rigid (R, t, trimmed RMS) over the starts described in the module docstring.

    Coarse to fine: every start runs 10 ICP steps on 500 source points; the two best are refined
    with ``iterations`` steps on ``icp_points`` points.
    """
    rng = np.random.default_rng(seed)
    s = source.points
    if len(s) > icp_points:
        s = s[np.sort(rng.choice(len(s), icp_points, replace=False))]
    coarse = s[np.sort(rng.choice(len(s), 500, replace=False))] if len(s) > 500 else s
    starts = [(np.eye(3), np.zeros(3)), (np.eye(3), target.centre - source.centre)]
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        R = target.axes @ np.diag(signs) @ source.axes.T
        if np.linalg.det(R) < 0:  # the two frames differ in handedness: flip the least-spread axis
            R = target.axes @ np.diag([signs[0], signs[1], -signs[2]]) @ source.axes.T
        starts.append((R, target.centre - R @ source.centre))
    rough = sorted((icp(coarse, target.tree, target.points, R0, t0, 10, trim) for R0, t0 in starts), key=lambda r: r[2])
    best = None
    for R0, t0, _ in rough[:2]:
        R, t, rms = icp(s, target.tree, target.points, R0, t0, iterations, trim)
        if best is None or rms < best[2]:
            best = (R, t, rms)
    return best  # type: ignore[return-value]


class RigidNN:
    """``baseline:rigid-nn``: rigid alignment (PCA starts + trimmed ICP), then nearest neighbour."""

    def __init__(self, icp_points: int = 2000, iterations: int = 30, trim: float = 0.9, seed: int = 0):
        self.name = "baseline:rigid-nn"
        self.icp_points, self.iterations, self.trim, self.seed = icp_points, iterations, trim, seed

    def prepare(self, shape) -> _Cloud:
        return _cloud(shape.scan.points)

    def correspond(self, source: _Cloud, target: _Cloud) -> np.ndarray:
        R, t, _ = rigid_align(source, target, self.icp_points, self.iterations, self.trim, self.seed)
        return target.tree.query(source.points @ R.T + t)[1].astype(np.int64)


class NearestNeighbour:
    """``baseline:nn``: each source point takes the nearest target point, coordinates as given."""

    def __init__(self):
        self.name = "baseline:nn"

    def prepare(self, shape) -> _Cloud:
        return _cloud(shape.scan.points)

    def correspond(self, source: _Cloud, target: _Cloud) -> np.ndarray:
        return target.tree.query(source.points)[1].astype(np.int64)


BASELINES = {"rigid-nn": RigidNN, "nn": NearestNeighbour}


def get_baseline(name: str):
    """A new baseline method by name (``rigid-nn`` or ``nn``)."""
    if name not in BASELINES:
        raise BodycorrError(f"baseline {name!r}: unknown. Known baselines: {', '.join('baseline:' + k for k in BASELINES)}.")
    return BASELINES[name]()
