"""Rigid and similarity alignment: weighted Procrustes (Kabsch/Umeyama) from point pairs, its robust
(IRLS) variant, and robust point-to-plane ICP. Also the robust kernels shared with
:mod:`bodycorr.geometry.nonrigid`.

All positions are in metres. A transform maps source points ``p`` to ``scale * R @ p + t``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh, PointCloud

RobustKernel = Literal["geman_mcclure", "huber", "none"]
ROBUST_KERNELS: tuple[str, ...] = get_args(RobustKernel)


# ----------------------------------------------------------------------------------------------
# robust kernels
# ----------------------------------------------------------------------------------------------


def robust_weights(residuals: np.ndarray, kernel: RobustKernel, scale: float) -> np.ndarray:
    """IRLS weights ``ρ'(r) / (2 r)`` of residual norms ``r`` (N,) -> (N,) in [0, 1].

    ``geman_mcclure``: ρ(r) = σ² r² / (σ² + r²), weight (σ² / (σ² + r²))² — residuals of a few σ
    hardly count (outlier matches). ``huber``: quadratic up to σ, linear beyond, weight min(1, σ / r).
    ``none``: weight 1 (least squares).
    """
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    if kernel == "none":
        return np.ones_like(r)
    s = max(float(scale), 1e-12)
    if kernel == "geman_mcclure":
        return (s * s / (s * s + r * r)) ** 2
    if kernel == "huber":
        return np.minimum(1.0, s / np.maximum(r, 1e-300))
    raise BodycorrError(f"robust kernel {kernel!r} is unknown. Use one of {', '.join(ROBUST_KERNELS)}.")


def robust_loss(residuals: np.ndarray, kernel: RobustKernel, scale: float) -> np.ndarray:
    """ρ(r) of residual norms ``r`` (N,) -> (N,), in m²; ρ(r) ≈ r² for r ≪ σ (see :func:`robust_weights`)."""
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    if kernel == "none":
        return r * r
    s = max(float(scale), 1e-12)
    if kernel == "geman_mcclure":
        return s * s * r * r / (s * s + r * r)
    if kernel == "huber":
        return np.where(r <= s, r * r, 2 * s * r - s * s)
    raise BodycorrError(f"robust kernel {kernel!r} is unknown. Use one of {', '.join(ROBUST_KERNELS)}.")


def _check_kernel(kernel: str, where: str) -> None:
    if kernel not in ROBUST_KERNELS:
        raise BodycorrError(f"{where}: robust kernel {kernel!r} is unknown. Use one of {', '.join(ROBUST_KERNELS)}.")


# ----------------------------------------------------------------------------------------------
# transforms and Procrustes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SimilarityTransform:
    """``p -> scale * rotation @ p + translation``.

    Attributes:
        rotation: (3, 3) float64, a proper rotation (det +1).
        translation: (3,) float64, metres.
        scale: uniform scale (1 for a rigid transform).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float = 1.0

    @staticmethod
    def identity() -> "SimilarityTransform":
        return SimilarityTransform(np.eye(3), np.zeros(3), 1.0)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3) transformed points."""
        p = np.asarray(points, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation

    def apply_to_normals(self, normals: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3) rotated normals (scale does not change directions)."""
        return np.asarray(normals, dtype=np.float64) @ self.rotation.T

    def compose(self, first: "SimilarityTransform") -> "SimilarityTransform":
        """The transform that applies ``first`` and then ``self``."""
        return SimilarityTransform(
            self.rotation @ first.rotation,
            self.scale * self.rotation @ first.translation + self.translation,
            self.scale * first.scale,
        )

    def inverse(self) -> "SimilarityTransform":
        rt = self.rotation.T
        return SimilarityTransform(rt, -(rt @ self.translation) / self.scale, 1.0 / self.scale)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def _as_points(x, what: str) -> np.ndarray:
    if isinstance(x, Mesh):
        return x.vertices
    if isinstance(x, PointCloud):
        return x.points
    p = np.asarray(x, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise BodycorrError(f"{what}: points must have shape (N, 3), got {p.shape}.")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p).all(1)).sum())
        raise BodycorrError(f"{what}: {bad} points have NaN or infinite coordinates. Drop them first.")
    return p


def _check_pairs(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _as_points(source, f"{where} source")
    q = _as_points(target, f"{where} target")
    if p.shape != q.shape:
        raise BodycorrError(f"{where}: {p.shape[0]} source points but {q.shape[0]} target points. Give one target per source point.")
    if weights is None:
        w = np.ones(p.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != p.shape[0]:
            raise BodycorrError(f"{where}: {w.shape[0]} weights for {p.shape[0]} point pairs. Give one weight per pair.")
        if not np.isfinite(w).all() or (w < 0).any():
            raise BodycorrError(f"{where}: weights must be finite and >= 0. Replace NaN or negative weights.")
    if int((w > 0).sum()) < 3:
        raise BodycorrError(f"{where}: fewer than 3 point pairs with positive weight. Give at least 3 correspondences.")
    return p, q, w


def procrustes(
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    scale: bool = False,
) -> SimilarityTransform:
    """Weighted least-squares rigid (Kabsch) or similarity (Umeyama) fit of point pairs.

    Minimises ``Σ w_i ||s R p_i + t - q_i||²`` in closed form (reflections excluded).

    Args:
        source: (N, 3) points p_i.
        target: (N, 3) points q_i.
        weights: (N,) non-negative weights (None: all 1); at least 3 must be positive.
        scale: also fit a uniform scale s (else s = 1).
    Returns:
        the :class:`SimilarityTransform`; exact for noise-free pairs of ≥ 3 non-collinear points.
    """
    p, q, w = _check_pairs(source, target, weights, "procrustes")
    ws = w / w.sum()
    mp, mq = ws @ p, ws @ q
    pc, qc = p - mp, q - mq
    cov = (qc * ws[:, None]).T @ pc  # Σ w q pᵀ
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = (u * d) @ vt
    s = 1.0
    if scale:
        var = float(ws @ (pc * pc).sum(1))
        if var <= 0:
            raise BodycorrError("procrustes: all weighted source points coincide, so no scale can be fitted.")
        s = float((sv * d).sum() / var)
    return SimilarityTransform(rot, mq - s * rot @ mp, s)


def rotation_angle_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    """The angle (degrees) of the rotation that takes ``r1`` to ``r2`` (both (3, 3))."""
    return float(np.degrees(np.arccos(np.clip((np.trace(np.asarray(r1).T @ np.asarray(r2)) - 1) / 2, -1, 1))))


def robust_procrustes(
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    scale: bool = False,
    kernel: RobustKernel = "geman_mcclure",
    robust_scale: float | None = None,
    iterations: int = 20,
) -> tuple[SimilarityTransform, np.ndarray]:
    """:func:`procrustes` with iteratively reweighted least squares against outlier pairs.

    Args:
        robust_scale: kernel scale σ in metres; None: annealed from the spread of the points down to
            1.5 × the weighted median residual (so ≤ 50 % outliers do not steer the fit).
        iterations: IRLS rounds.
    Returns:
        the transform and the final (N,) IRLS weights (kernel weight × given weight).
    """
    _check_kernel(kernel, "robust_procrustes")
    p, q, w = _check_pairs(source, target, weights, "robust_procrustes")
    tr = procrustes(p, q, w, scale=scale)
    spread = float(np.sqrt((w @ ((q - (w / w.sum()) @ q) ** 2).sum(1)) / w.sum())) + 1e-9
    wk = w
    for it in range(max(1, int(iterations))):
        r = np.linalg.norm(tr.apply(p) - q, axis=1)
        if robust_scale is None:
            med = _weighted_median(r, w)
            sigma = max(1.5 * med, spread * 0.5 ** (it + 1), 1e-6)
        else:
            sigma = float(robust_scale)
        wk = w * robust_weights(r, kernel, sigma)
        if int((wk > 1e-12).sum()) < 3:
            break
        new = procrustes(p, q, wk, scale=scale)
        done = np.abs(new.matrix() - tr.matrix()).max() < 1e-10
        tr = new
        if done:
            break
    return tr, wk


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, 0.5 * cw[-1])])


def rotation_from_vector(omega: np.ndarray) -> np.ndarray:
    """(3,) axis × angle (radians) -> (3, 3) rotation (Rodrigues)."""
    w = np.asarray(omega, dtype=np.float64)
    a = float(np.linalg.norm(w))
    if a < 1e-15:
        return np.eye(3)
    k = w / a
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


def nearest_rotations(m: np.ndarray) -> np.ndarray:
    """(N, 3, 3) matrices -> (N, 3, 3) nearest proper rotations in the Frobenius norm (polar factor)."""
    u, _, vt = np.linalg.svd(m)
    det = np.linalg.det(u @ vt)
    u = u.copy()
    u[:, :, 2] *= np.where(det < 0, -1.0, 1.0)[:, None]
    return u @ vt


# ----------------------------------------------------------------------------------------------
# targets: points, normals, boundary
# ----------------------------------------------------------------------------------------------


def boundary_vertices(mesh: Mesh) -> np.ndarray:
    """(V,) bool: the vertex lies on an edge used by exactly one face (a hole or scan border)."""
    out = np.zeros(mesh.num_vertices, dtype=bool)
    if mesh.num_faces == 0:
        return out
    f = mesh.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    key, cnt = np.unique(e[:, 0] * mesh.num_vertices + e[:, 1], return_counts=True)
    once = key[cnt == 1]
    out[once // mesh.num_vertices] = True
    out[once % mesh.num_vertices] = True
    return out


def estimate_normals(points: np.ndarray, k: int = 12, tree: cKDTree | None = None) -> np.ndarray:
    """(N, 3) unit normals by PCA of the ``k`` nearest neighbours; the sign is arbitrary."""
    p = np.asarray(points, dtype=np.float64)
    k = int(min(max(k, 3), p.shape[0]))
    if p.shape[0] < 3:
        return np.tile([0.0, 0.0, 1.0], (p.shape[0], 1))
    tree = tree or cKDTree(p)
    _, idx = tree.query(p, k=k)
    nb = p[idx] - p[idx].mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vec = np.linalg.eigh(cov)
    return vec[:, :, 0]


@dataclass(frozen=True, eq=False)
class SurfaceTarget:
    """A target prepared for closest-point queries.

    Attributes:
        points: (M, 3) target vertices or points.
        normals: (M, 3) unit normals.
        oriented: False when the normals were estimated (sign unknown): angle tests use |cos|.
        boundary: (M,) bool, True on mesh borders (closest points there are rejected).
        tree: KD-tree over ``points``.
    """

    points: np.ndarray
    normals: np.ndarray
    oriented: bool
    boundary: np.ndarray
    tree: cKDTree

    @staticmethod
    def of(target: Mesh | PointCloud, where: str = "registration") -> "SurfaceTarget":
        if isinstance(target, Mesh):
            pts = target.vertices
            tree = cKDTree(pts)
            if target.num_faces:
                n = target.vertex_normals()
                bad = np.linalg.norm(n, axis=1) < 0.5  # vertices referenced by no face
                if bad.any():
                    n[bad] = estimate_normals(pts, tree=tree)[bad]
                return SurfaceTarget(pts, n, not bad.any(), boundary_vertices(target), tree)
            return SurfaceTarget(pts, estimate_normals(pts, tree=tree), False, np.zeros(len(pts), bool), tree)
        if isinstance(target, PointCloud):
            pts = target.points
            tree = cKDTree(pts)
            if target.normals is not None:
                n = target.normals
                norm = np.linalg.norm(n, axis=1, keepdims=True)
                if (norm < 1e-9).any():
                    raise BodycorrError(f"{where}: target {target.name} has zero-length normals. Drop the normals or fix them.")
                return SurfaceTarget(pts, n / norm, True, np.zeros(len(pts), bool), tree)
            return SurfaceTarget(pts, estimate_normals(pts, tree=tree), False, np.zeros(len(pts), bool), tree)
        raise BodycorrError(f"{where}: the target must be a Mesh or a PointCloud, got {type(target).__name__}.")

    def closest(
        self,
        points: np.ndarray,
        normals: np.ndarray | None,
        max_distance: float,
        max_angle_deg: float,
        reject_boundary: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closest target point of each query point (N, 3), with rejection.

        Returns: index (N,) int64, distance (N,) and valid (N,) bool (within ``max_distance``, normals
        within ``max_angle_deg`` where ``normals`` is given, and not on a border if ``reject_boundary``).
        """
        dist, idx = self.tree.query(points, k=1, distance_upper_bound=max_distance, workers=1)
        valid = np.isfinite(dist)
        idx = np.where(valid, idx, 0).astype(np.int64)
        if normals is not None and max_angle_deg < 180:
            cos = np.einsum("nd,nd->n", normals, self.normals[idx])
            if not self.oriented:
                cos = np.abs(cos)
            valid &= cos >= np.cos(np.deg2rad(max_angle_deg))
        if reject_boundary:
            valid &= ~self.boundary[idx]
        return idx, np.where(valid, dist, np.inf), valid


# ----------------------------------------------------------------------------------------------
# ICP
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ICPConfig:
    """Robust point-to-plane ICP.

    Attributes:
        iterations: maximum number of iterations.
        max_distance: closest points farther than this (m) are rejected.
        max_normal_angle: closest points whose normal differs by more than this (degrees) are rejected.
        reject_boundary: reject closest points on the border of a target mesh (partial scans).
        kernel: robust kernel on the point-to-plane residual.
        robust_scale: kernel scale σ (m); None: 1.5 × the median residual, at least 1 mm.
        max_points: source points used per iteration (a fixed random subset; None: all).
        tolerance: stop when an update moves no point by more than this (m).
        seed: for the subset.
    """

    iterations: int = 50
    max_distance: float = 0.1
    max_normal_angle: float = 60.0
    reject_boundary: bool = True
    kernel: RobustKernel = "geman_mcclure"
    robust_scale: float | None = None
    max_points: int | None = 5000
    tolerance: float = 1e-6
    seed: int = 0


@dataclass(frozen=True, eq=False)
class ICPResult:
    """Result of :func:`icp`.

    Attributes:
        transform: source -> target rigid transform (includes ``init``).
        rmse: root mean square point-to-plane residual (m) of the valid pairs at the last iteration (before its step).
        inlier_fraction: share of used source points with a valid closest point at the last iteration.
        energies: (T,) robust point-to-plane energy (mean ρ, m²) per iteration.
        iterations: iterations run.
        seconds: wall time.
    """

    transform: SimilarityTransform
    rmse: float
    inlier_fraction: float
    energies: np.ndarray
    iterations: int
    seconds: float


def _source_points_normals(source) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(source, Mesh):
        return source.vertices, (source.vertex_normals() if source.num_faces else None)
    if isinstance(source, PointCloud):
        return source.points, source.normals
    return _as_points(source, "icp source"), None


def icp(
    source: Mesh | PointCloud | np.ndarray,
    target: Mesh | PointCloud,
    init: SimilarityTransform | None = None,
    config: ICPConfig = ICPConfig(),
) -> ICPResult:
    """Rigidly align ``source`` to ``target`` by robust point-to-plane ICP.

    Each iteration: closest target point of every (transformed) source point, rejection by
    distance / normal angle / border, then one Gauss-Newton step on
    ``Σ ρ(nᵢ·(R pᵢ + t − qᵢ))`` (linearised rotation about the centroid, IRLS weights).
    Converges from small misalignments (a few degrees, a few cm); start larger ones with
    :func:`procrustes` on correspondences.

    Args:
        source: a Mesh, PointCloud or (N, 3) points; its normals (if any) are used for rejection.
        target: a Mesh (vertices + vertex normals; may be a partial scan) or a PointCloud
            (normals estimated by PCA when missing).
        init: initial transform (a similarity's scale is kept fixed).
    Returns:
        :class:`ICPResult`.
    """
    t0 = time.perf_counter()
    _check_kernel(config.kernel, "icp")
    if config.iterations < 1 or not config.max_distance > 0:
        raise BodycorrError("icp: iterations must be >= 1 and max_distance > 0.")
    p, pn = _source_points_normals(source)
    tgt = SurfaceTarget.of(target, "icp")
    if config.max_points is not None and p.shape[0] > config.max_points:
        sel = np.sort(np.random.default_rng(config.seed).choice(p.shape[0], config.max_points, replace=False))
        p = p[sel]
        pn = None if pn is None else pn[sel]
    tr = init or SimilarityTransform.identity()
    energies: list[float] = []
    it = 0
    rmse, frac = float("nan"), 0.0
    for it in range(1, config.iterations + 1):
        x = tr.apply(p)
        xn = None if pn is None else tr.apply_to_normals(pn)
        idx, dist, valid = tgt.closest(x, xn, config.max_distance, config.max_normal_angle, config.reject_boundary)
        frac = float(valid.mean())
        if valid.sum() < 6:
            raise BodycorrError(
                f"icp: only {int(valid.sum())} source points have a closest target point within "
                f"{config.max_distance} m. Pre-align the shapes (e.g. procrustes on correspondences) or raise max_distance."
            )
        xs, q, n = x[valid], tgt.points[idx[valid]], tgt.normals[idx[valid]]
        r = np.einsum("nd,nd->n", xs - q, n)
        sigma = config.robust_scale if config.robust_scale is not None else max(1.5 * float(np.median(np.abs(r))), 1e-3)
        w = robust_weights(r, config.kernel, sigma)
        energies.append(float(robust_loss(r, config.kernel, sigma).mean()))
        rmse = float(np.sqrt(np.mean(r * r)))
        c = (w[:, None] * xs).sum(0) / max(w.sum(), 1e-300)
        xc = xs - c
        jac = np.concatenate([np.cross(xc, n), n], axis=1)  # d r / d (omega, tau)
        h = (jac * w[:, None]).T @ jac
        g = (jac * w[:, None]).T @ r
        h += np.eye(6) * (1e-9 * np.trace(h) + 1e-18)
        delta = -np.linalg.solve(h, g)
        dr = rotation_from_vector(delta[:3])
        step = SimilarityTransform(dr, c - dr @ c + delta[3:], 1.0)
        tr = step.compose(tr)
        move = float(np.abs(np.linalg.norm(xc, axis=1)).max()) * float(np.linalg.norm(delta[:3])) + float(np.linalg.norm(delta[3:]))
        if move < config.tolerance:
            break
    return ICPResult(tr, rmse, frac, np.asarray(energies), it, time.perf_counter() - t0)
