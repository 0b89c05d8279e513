"""Fit Anny's pose (and shape) to 3-D points matched to template vertices: robust, mirror-aware, from a rigid start.

Descriptor matches are noisy in a structured way: whole limbs land on the wrong side, and a tail
of matches is simply wrong. A deformation graph started from the rest template has to bend every
limb from the A-pose by itself and can fold a limb onto its neighbour. Fitting the body model
instead keeps every candidate a plausible body: only bone rotations (and the six phenotypes) move,
so the limbs stay attached, the sides cannot swap part-way along a limb, and hard poses (squats,
arms overhead) are reachable from the rest pose. Each match pulls whichever of its template vertex
and that vertex's mirror costs less, the mirror at a small penalty
(:func:`bodycorr.geometry.nonrigid.register_nonrigid` lets matches pull the mirror too), under a Geman-McClure kernel whose scale shrinks as the fit settles; an optional
closest-point term pulls the body onto the scan's surface at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import roma
import torch
from scipy.spatial import cKDTree

from bodycorr.body.anny_model import PHENOTYPES, BodyModel, get_body_model
from bodycorr.body.template import Template
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.rigid import SimilarityTransform
from bodycorr.geometry.silhouette import DepthSilhouette

# The bones whose rotation is fitted (Anny names; every other bone keeps its rest orientation
# relative to its parent). The segments that only twist (upperarm02, lowerarm02, upperleg02,
# lowerleg02) and the fingers and toes stay at rest: matches cannot see them reliably.
FIT_BONES: tuple[str, ...] = (
    "spine05", "spine03", "spine01", "neck01", "head",
    "clavicle.L", "upperarm01.L", "lowerarm01.L", "wrist.L",
    "clavicle.R", "upperarm01.R", "lowerarm01.R", "wrist.R",
    "upperleg01.L", "lowerleg01.L", "foot.L",
    "upperleg01.R", "lowerleg01.R", "foot.R",
)  # fmt: skip


SELECT_SCALE = 0.1  # metres: the kernel scale starts are compared at when one is chosen early


@dataclass(frozen=True)
class PoseFitConfig:
    """How the body model is fitted.

    Attributes:
        iterations: Adam steps.
        learning_rate: Adam step size for the bone and global rotations (radians).
        shape: also fit the six phenotypes (else the template's neutral 0.5).
        robust_scale: (start, end) Geman-McClure scale in metres, shrunk geometrically.
        pose_prior: weight of the squared bone rotation angles (radians²) per bone.
        shape_prior: weight of the squared phenotype offsets from 0.5.
        closest_point: weight of the scan-to-body closest-point term (0: off); it is on for the
            last ``closest_point_share`` of the steps, with the end scale.
        closest_point_share: share of the steps with the closest-point term on.
        mirror_penalty: a match that pulls its mirror vertex instead of its own pays this share
            of the kernel's ceiling (0: either side is free; 1: the mirror is never worth it). The
            descriptors are right about the side more often than not, so a small penalty lets
            the majority pick each limb's side while a limb matched wholly to the other side
            can still go there. 0.1 beat 0.3 on the tracking walk (visible error 2.2 vs 2.7 cm)
            and on 3 of 4 benchmark groups.
        max_scan_points: scan points used by the closest-point term (a fixed random subset).
        select_at: with several rigid starts, all are fitted for this share of the steps, then
            the one with the lowest energy goes on alone (1: all to the end, then the lowest
            final energy; choosing early picked a start turned half-way round on 1 of 6 test
            bodies, the final energy on none).
        select: how the kept start is chosen at the end: ``energy`` (the lowest match energy),
            ``coverage`` (the lowest mean distance from the fitted body's vertices to the scan; only
            for a complete scan, where every body vertex has scan near it), ``residual`` (the
            lowest mean distance from the scan's points to the fitted body: what the fit leaves
            unexplained) or ``combined`` (the lowest energy x (coverage + residual): the fit must
            explain the matches and the surface alike; complete scans only). Descriptors that
            read a whole body as its mirror image can make the body turned half-way round match
            best, but that body's feet, face and knees then point the wrong way, off the surface.
            On 30 complete synthetic-v1 scans outside the benchmark's first 20 pairs (the shipped
            model's matches, 2 starts x 2 penalties each), the kept fit was more than 5 cm worse
            than the best candidate on 3 scans by energy, 0 by coverage, 1 by residual, 0 by
            combined (mean vertex error 5.5 / 4.0 / 4.4 / 4.0 cm; the best candidate's 4.0; with
            the matches then taken by confidence alone, not spread over the scan: 3 / 5 / 1 / 0
            misses, 8.1 / 8.5 / 7.3 / 6.4 cm). That was the suite's first draw (Intel machine); on
            the 30 tuning scans of the frozen suite (``bench/bench_fit_select.py``) the energy
            missed none and combined 1 (mean 4.5 / 5.3 cm, worst 24.3 / 54.4; the best candidate's
            4.3): over both draws, 3 misses in 60 by energy, 1 by combined, so combined stays.
            Neither can tell a body turned half-way round that fits the surface as closely as the
            right one (on 3 benchmark scans the wrong fit was nearer the scan).
        coverage_penalties: when ``select`` compares the fits with the scan, every rigid start is
            fitted once with each of these mirror penalties (instead of ``mirror_penalty``), all
            in one batch, and the score picks among them all: no one penalty suits every scan (on
            12 test pairs 0.1 fixed some scans and broke others that 0.3 got right), and energies
            under different penalties do not compare on their own, but distances to the scan do
            (``combined`` multiplies each fit's own energy by them).
        select_energy_ratio: with a ``select`` that compares the fits with the scan, candidates
            whose match energy (:attr:`FitCandidates.energy`) exceeds this many times the lowest
            are not kept (0: off): a body turned round can sit nearer the scan than the right one.
        tighten_steps: after the kept candidate is chosen, this many more steps on it alone with the
            closest-point term at ``tighten_closest_point`` (needs ``scan``; 0: none). Pulling every
            candidate that hard before choosing made a candidate with a limb on the wrong side sit as
            near the scan as the right one (the demo's view: residual 1.24 against 1.29 cm; at weight
            0.5, 1.56 against 1.38); :attr:`PoseFit.candidates` are the candidates before it.
        tighten_closest_point: the closest-point weight of those steps.
        tighten_learning_rate: their Adam step size, as a share of ``learning_rate`` (a fresh Adam
            moves every parameter by about its step size at first: a jolt to a converged fit).
        free_space: weight of the free-space term when ``fit_pose`` gets a ``silhouette`` (one
            depth frame and its camera): body vertices must not lie in front of the nearest
            surface measured around their pixel, where the camera looked through empty space.
            Matches and closest points only pull the body towards what the camera saw; a leg
            bent across the other, in front of it, costs them nothing. Tuned on walks other than
            the evaluation walk (seed 0): weight 3 (from the start only) took the visible error
            of two 12-frame walks, shape given, from 3.11 / 4.06 cm to 2.19 / 2.82 (1: 2.16 /
            3.52; 10: 2.24 / 4.90). Off by default (give 3 to use it): with the final shipped
            model the 100-frame evaluation walk came out worse with it (visible 1.9 -> 2.1 cm)
            and each frame took 1.7 s instead of 0.9-1.1.
        silhouette: weight of the other depth-image term: body vertices must project inside the
            person's pixels. Off: on the same walks it made every setting worse (weight 0.3 with
            free space 1: 3.37 / 3.95 cm visible against 2.16 / 3.52 without it); the fit pulls
            limbs into the outline more readily than onto the right place in it.
        silhouette_scale: the Geman-McClure scale (metres) of both depth-image terms (not
            shrunk: a limb far outside the silhouette must keep paying).
        silhouette_vertices: body vertices checked against the depth image (a fixed random subset).
        free_space_from: each rigid start is fitted once per entry, the free-space term switched
            on after that share of the steps, all in one batch; the lowest final energy (matches
            plus free space) is kept. Switched on from the start, the term fixes legs bent the
            wrong way (a 30-frame walk: 11.4 -> 5.9 cm on its worst frame) but now and then sends
            a well-fitted foot off (the evaluation walk: 14 of 100 frames above 3 cm, none
            without it); switched on half-way it keeps the fit's path and only tidies it. Both,
            on three 30-frame walks with the shape estimated: 7.07 / 2.43 / 3.10 cm visible
            without the term, 6.58 / 2.70 / 3.25 from the start, 7.26 / 2.52 / 2.99 from
            half-way, 6.34 / 2.52 / 2.93 both.
        free_space_tolerance: metres a vertex may lie in front of the measured depth (sensor noise).
        silhouette_margin_px: pixels a vertex may project outside the person's pixels (a
            Kinect-style sensor loses the silhouette's edge).
        closest_point_facing: with a depth frame (``silhouette``), each scan point's closest body
            vertex is sought only among the vertices facing the camera: a camera sees only
            surface that faces it, and a point on the front of a limb fitted a little off must
            not pull the limb's back. On two 40-frame walks other than the evaluation walk (seeds
            1 and 2, shape given) it took the visible error from 2.42 / 2.55 to 2.26 / 2.22 cm,
            better on 35 and 36 of the 40 frames, at no measurable cost per frame.
        seed: subset seed.
    """

    iterations: int = 120
    learning_rate: float = 0.05
    shape: bool = True
    robust_scale: tuple[float, float] = (0.5, 0.03)
    pose_prior: float = 1e-5
    shape_prior: float = 1e-4
    closest_point: float = 0.5
    closest_point_share: float = 0.4
    mirror_penalty: float = 0.1
    max_scan_points: int = 3000
    select_at: float = 1.0
    select: Literal["energy", "coverage", "residual", "combined"] = "energy"
    coverage_penalties: tuple[float, ...] = (0.1, 0.3)
    select_energy_ratio: float = 0.0
    tighten_steps: int = 0
    tighten_closest_point: float = 5.0
    tighten_learning_rate: float = 0.1
    silhouette: float = 0.0
    free_space: float = 0.0
    silhouette_scale: float = 0.1
    silhouette_vertices: int = 1000
    free_space_from: tuple[float, ...] = (0.0, 0.5)
    free_space_tolerance: float = 0.03
    silhouette_margin_px: float = 2.0
    closest_point_facing: bool = True
    seed: int = 0


@dataclass(frozen=True, eq=False)
class PoseFit:
    """The body model fitted to one scan.

    Attributes:
        vertices: (Vt, 3) the template's vertices, posed onto the scan (metres, the scan's frame).
        pose: (J, 4, 4) Anny ``local-ref`` deltas of the fit (the root's is the identity; the
            global placement is ``rotation``/``translation``/``scale``).
        phenotypes: (6,) the fitted phenotypes, in :data:`PHENOTYPES` order.
        rotation: (3, 3), translation: (3,), scale: the body's placement in the scan's frame.
        energy: final robust energy per unit weight (end scale; comparable across scans' fits),
            plus the free-space term when a depth image was given.
        start: index of the kept rigid start.
        start_energies: (S × P × F,) each (start, mirror penalty, free-space path)'s score when
            the kept one was chosen (P = 1 unless ``select`` compares the fits with the scan and
            tries several penalties, F = 1 unless a depth image adds ``free_space_from`` paths;
            entry k is start k // (P F)): its energy (at the end scale, or at
            :data:`SELECT_SCALE` when chosen early) or, with ``select="coverage"`` /
            ``"residual"``, its mean body-to-scan / scan-to-body distance in metres
            (``"combined"``: energy x their sum); NaN: one start.
        seconds: wall time.
    """

    vertices: np.ndarray
    pose: np.ndarray
    phenotypes: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    energy: float
    start: int
    start_energies: np.ndarray
    seconds: float
    candidates: FitCandidates | None = None


@dataclass(frozen=True, eq=False)
class FitCandidates:
    """Every finished candidate of a fit whose ``select`` compared them with the scan (rigid start x
    mirror penalty x free-space path), so a selection rule can be checked against the others.

    Attributes:
        vertices: (B, Vt, 3) float32 each candidate's posed template (the scan's frame).
        energy: (B,) match energy per unit weight at the end scale, every candidate's mirror
            matches paying :attr:`PoseFitConfig.mirror_penalty` (comparable across candidates).
        residual: (B,) mean distance from the scan's points to the candidate (m).
        coverage: (B,) mean distance from the candidate's vertices to the scan (m).
        start: (B,) the rigid start of each; penalty: (B,) its mirror penalty.
    """

    vertices: np.ndarray
    energy: np.ndarray
    residual: np.ndarray
    coverage: np.ndarray
    start: np.ndarray
    penalty: np.ndarray


def _mean_distance(points: np.ndarray, to: np.ndarray) -> float:
    """Mean distance from each of ``points`` (N, 3) to its nearest of ``to`` (M, 3)."""
    return float(cKDTree(to).query(points, workers=1)[0].mean())


def _gm(r2: torch.Tensor, s: float) -> torch.Tensor:
    """Geman-McClure of squared residuals, scaled to s² (so it is ~r² near 0 and ~s² far away)."""
    return s * s * r2 / (r2 + s * s)


def fit_pose(
    template: Template,
    si: np.ndarray,
    points: np.ndarray,
    weights: np.ndarray,
    starts: SimilarityTransform | Sequence[SimilarityTransform],
    alternatives: np.ndarray | None = None,
    scan: np.ndarray | None = None,
    config: PoseFitConfig = PoseFitConfig(),
    model: BodyModel | None = None,
    phenotypes: np.ndarray | None = None,
    silhouette: DepthSilhouette | None = None,
) -> PoseFit:
    """Fit Anny's bone rotations (and phenotypes) so that template vertex ``si[k]`` (or its mirror
    ``alternatives[k]``) lands on ``points[k]``.

    Several rigid starts are fitted together (one batch through the body model) for the first
    ``config.select_at`` of the steps; the one with the lowest energy then goes on alone.

    Args:
        template: the body template (its vertices are Anny's neutral body, rest pose).
        si: (K,) matched template vertices; points: (K, 3) their scan points (metres); weights: (K,) >= 0.
        starts: the template's rigid placement(s) on the scan (e.g. from
            :func:`~bodycorr.geometry.nonrigid.rigid_starts`).
        alternatives: (K,) a second template vertex each match may pull instead (the mirror), or None.
        scan: (N, 3) the scan's points for the closest-point term, or None.
        phenotypes: (6,) the body's shape when ``config.shape`` is off (default: the template's
            neutral 0.5), or the fit's starting shape when it is on. A fixed shape is posed by
            skinning only the vertices each step needs
            (:meth:`~bodycorr.body.anny_model.BodyModel.skin`), about twice as fast per step.
        silhouette: the scan's depth frame and camera (:class:`~bodycorr.geometry.silhouette.DepthSilhouette`),
            or None: adds ``config.silhouette`` and ``config.free_space`` terms.
    Returns:
        :class:`PoseFit` of the kept start.
    """
    t_start = time.perf_counter()
    model = get_body_model() if model is None else model
    starts = [starts] if isinstance(starts, SimilarityTransform) else list(starts)
    if not starts:
        raise BodycorrError("fit_pose: no rigid start given.")
    compares = config.select in ("coverage", "residual", "combined")  # finished fits, against the scan
    penalties = tuple(config.coverage_penalties) if compares and alternatives is not None else (config.mirror_penalty,)
    if not penalties or any(not 0 <= p <= 1 for p in penalties):
        raise BodycorrError(f"PoseFitConfig: mirror penalties must lie in [0, 1], got {penalties}.")
    paths = tuple(config.free_space_from)
    if not paths or any(not 0 <= f <= 1 for f in paths):
        raise BodycorrError(f"PoseFitConfig: free_space_from shares must lie in [0, 1], got {paths}.")
    paths = paths if silhouette is not None and config.free_space > 0 else (0.0,)
    n_pen, n_var = len(penalties), len(penalties) * len(paths)
    # batch entry k: rigid start k // n_var, mirror penalty (k // len(paths)) % n_pen, free-space path k % len(paths)
    starts = [st for st in starts for _ in range(n_var)]
    pen_of = torch.as_tensor([penalties[(k // len(paths)) % n_pen] for k in range(len(starts))], dtype=torch.float32)
    si = np.asarray(si, dtype=np.int64)
    points = np.asarray(points, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    K = len(si)
    if points.shape != (K, 3) or weights.shape != (K,):
        raise BodycorrError(f"fit_pose: {K} matches need (K, 3) points and (K,) weights, got {points.shape} and {weights.shape}.")
    if K < 3 or not np.isfinite(points).all() or not np.isfinite(weights).all():
        raise BodycorrError(f"fit_pose: need at least 3 finite matches, got {K}.")
    if si.min() < 0 or si.max() >= template.num_vertices:
        raise BodycorrError(f"fit_pose: template vertex indices must lie in [0, {template.num_vertices}).")
    dt = torch.float32
    # x_scan = s R0 (Rd (x_body - c) + c) + t0 + dt: the fitted rotation Rd turns the body about the
    # template's centroid c (turning about the origin, at the feet, would couple it to the translation).
    c = torch.as_tensor(template.mesh.vertices.mean(0), dtype=dt)
    R0 = torch.as_tensor(np.stack([st.rotation for st in starts]), dtype=dt)  # (B, 3, 3)
    T0 = torch.as_tensor(np.stack([st.translation for st in starts]), dtype=dt)  # (B, 3)
    S0 = torch.as_tensor([float(st.scale) for st in starts], dtype=dt)  # (B,)
    full = torch.as_tensor(template.template_to_full, dtype=torch.int64)
    faces = np.asarray(template.mesh.faces)
    idx = torch.as_tensor(si, dtype=torch.int64)
    alt = None if alternatives is None else torch.as_tensor(np.asarray(alternatives, dtype=np.int64))
    tp = torch.as_tensor(points, dtype=dt)
    w = torch.as_tensor(weights / max(weights.sum(), 1e-12), dtype=dt)
    if config.select not in ("energy", "coverage", "residual", "combined"):
        raise BodycorrError(f"PoseFitConfig.select {config.select!r}: use 'energy', 'coverage', 'residual' or 'combined'.")
    if compares and scan is None:
        raise BodycorrError(f"fit_pose: select={config.select!r} compares the fits with the scan; pass scan=.")
    if compares and config.select_at < 1:
        raise BodycorrError(f"PoseFitConfig: select={config.select!r} compares finished fits; it needs select_at=1.")
    full_scan = None if scan is None else np.asarray(scan, dtype=np.float64)
    cp = None
    if scan is not None and config.closest_point > 0:
        scan = np.asarray(scan, dtype=np.float64)
        scan = scan[np.isfinite(scan).all(1)]
        if len(scan) > config.max_scan_points:
            scan = scan[np.random.default_rng(config.seed).choice(len(scan), config.max_scan_points, replace=False)]
        cp = torch.as_tensor(scan, dtype=dt) if len(scan) else None

    B = len(starts)
    bone_ids = torch.as_tensor([model.bone_index(b) for b in FIT_BONES], dtype=torch.int64)
    params = {
        "rot": torch.zeros(B, len(FIT_BONES), 3, dtype=dt), "glob": torch.zeros(B, 3, dtype=dt),
        "trans": torch.zeros(B, 3, dtype=dt), "shape": torch.zeros(B, len(PHENOTYPES), dtype=dt),
    }  # fmt: skip
    if phenotypes is not None:
        phenotypes = np.asarray(phenotypes, dtype=np.float64).reshape(-1)
        if phenotypes.shape != (len(PHENOTYPES),) or not np.isfinite(phenotypes).all() or (phenotypes < 0).any() or (phenotypes > 1).any():
            raise BodycorrError(f"fit_pose: phenotypes must be {len(PHENOTYPES)} values in [0, 1] ({', '.join(PHENOTYPES)}), got {phenotypes}.")
    fixed_shape = None
    if config.shape and phenotypes is not None:  # a starting shape
        params["shape"][:] = torch.as_tensor(np.arctanh(np.clip(2 * phenotypes - 1, -0.999, 0.999)), dtype=dt)
    if not config.shape:
        fixed_shape = model.rest_body(np.full(len(PHENOTYPES), 0.5) if phenotypes is None else phenotypes)

    def optimiser(p: dict[str, torch.Tensor], lr: float = config.learning_rate) -> torch.optim.Optimizer:
        for t in p.values():
            t.requires_grad_(True)
        groups = [{"params": [p["rot"], p["glob"]], "lr": lr}, {"params": [p["trans"]], "lr": lr * 0.2}]
        if config.shape:
            groups.append({"params": [p["shape"]], "lr": lr * 0.5})
        return torch.optim.Adam(groups)

    opt = optimiser(params)
    J = model.num_bones
    eye4 = torch.eye(4, dtype=dt)
    n = max(1, config.iterations)
    select_at = int(round(n * config.select_at)) if B > 1 else -1
    s_start, s_end = config.robust_scale
    cp_from = int(round(n * (1 - config.closest_point_share))) if cp is not None else n + 1
    keep = torch.arange(B)
    start_energies = np.full(B, np.nan)

    def pose_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
        b = p["rot"].shape[0]
        pose = eye4.expand(b, J, 4, 4).clone()
        pose[:, bone_ids, :3, :3] = roma.rotvec_to_rotmat(p["rot"])
        return pose

    def phenotypes_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
        if fixed_shape is not None and phenotypes is not None:
            return torch.as_tensor(phenotypes, dtype=dt).expand(p["shape"].shape[0], -1)
        return 0.5 + 0.5 * torch.tanh(p["shape"])

    def body(p: dict[str, torch.Tensor], sel: torch.Tensor | None) -> torch.Tensor:
        """(b, n, 3) posed template vertices ``sel`` (None: all) in the scan's frame."""
        ids = full if sel is None else full[sel]
        if fixed_shape is not None:
            v = model.skin(pose_of(p), fixed_shape, ids)
        else:
            v = model.forward_torch(pose_of(p), phenotypes_of(p))[:, ids]
        v = (v - c) @ roma.rotvec_to_rotmat(p["glob"]).transpose(-1, -2) + c
        return S0[keep, None, None] * v @ R0[keep].transpose(-1, -2) + (T0[keep] + p["trans"])[:, None]

    # Each step poses only the vertices it reads: the matched ones (and their mirrors), plus the
    # closest-point partners once that term is on (re-found on the whole body every 10 steps).
    use_sil = silhouette is not None and (config.silhouette > 0 or config.free_space > 0)
    sil_ids = torch.zeros(0, dtype=torch.int64)
    if use_sil:
        nv = template.num_vertices
        pick = np.random.default_rng(config.seed).choice(nv, min(nv, max(1, config.silhouette_vertices)), replace=False)
        sil_ids = torch.as_tensor(np.sort(pick), dtype=torch.int64)
    base = torch.unique(torch.cat([idx, sil_ids] + ([] if alt is None else [alt])))
    sel, nn_idx = base, None

    eye = silhouette.camera.center if (silhouette is not None and config.closest_point_facing) else None

    def closest_vertices(x: np.ndarray) -> np.ndarray:
        """(P,) the body vertex nearest each closest-point scan point (only among the vertices
        facing the camera, when it is known and ``closest_point_facing`` is on)."""
        if eye is None:
            return cKDTree(x).query(cp.numpy(), workers=1)[1]
        n = Mesh(x, faces, name="posed body").vertex_normals()
        ids = np.flatnonzero(((x - eye) * n).sum(1) < 0)
        if len(ids) < 3:  # a camera inside the body, or a degenerate fit: every vertex
            return cKDTree(x).query(cp.numpy(), workers=1)[1]
        return ids[cKDTree(x[ids]).query(cp.numpy(), workers=1)[1]]

    def at(ids: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sel, ids)

    i_idx, i_alt, i_sil = at(idx), None if alt is None else at(alt), at(sil_ids)

    sil_from = torch.as_tensor([int(round(n * paths[k % len(paths)])) for k in range(B)])

    def silhouette_cost(v: torch.Tensor) -> torch.Tensor:
        """(b,) the depth-image terms of the posed ``sel`` vertices ``v``."""
        r = silhouette.residuals_torch(v[:, i_sil], config.free_space_tolerance, config.silhouette_margin_px, outside=config.silhouette > 0)
        s = config.silhouette_scale
        return config.silhouette * _gm(r.outside**2, s).mean(-1) + config.free_space * _gm(r.in_front**2, s).mean(-1)

    def match_cost(v: torch.Tensor, scale: float, penalty: float | None = None) -> torch.Tensor:
        """(b, K) robust cost of every match (v: the posed ``sel`` vertices); a mirror match pays
        each candidate's own penalty, or ``penalty`` for all."""
        cost = _gm(((v[:, i_idx] - tp) ** 2).sum(-1), scale)
        if i_alt is not None:
            pen = pen_of[keep][:, None] if penalty is None else penalty
            mirrored = _gm(((v[:, i_alt] - tp) ** 2).sum(-1), scale) + pen * scale * scale
            cost = torch.minimum(cost, mirrored)
        return cost

    def refresh_partners() -> None:
        """Re-find every scan point's closest body vertex and pose only the vertices the steps read."""
        nonlocal sel, i_idx, i_alt, i_sil, nn_idx
        with torch.no_grad():
            vv = body(params, None).numpy()
        nn_t = torch.as_tensor(np.stack([closest_vertices(x) for x in vv]), dtype=torch.int64)
        sel = torch.unique(torch.cat([base, nn_t.reshape(-1)]))
        i_idx, i_alt, i_sil, nn_idx = at(idx), None if alt is None else at(alt), at(sil_ids), at(nn_t)

    def step(scale: float, closest_point: float, silhouette_on: torch.Tensor | bool) -> None:
        """One Adam step of the matches (kernel ``scale``), the closest-point term at weight
        ``closest_point`` (0: off), the depth-image terms where ``silhouette_on``, and the priors."""
        v = body(params, sel)
        loss = ((match_cost(v, scale) * w).sum(-1)).sum()
        if closest_point > 0:
            d2 = ((torch.gather(v, 1, nn_idx[..., None].expand(-1, -1, 3)) - cp) ** 2).sum(-1)
            loss = loss + closest_point * _gm(d2, s_end).mean(-1).sum()
        if use_sil:
            loss = loss + (silhouette_cost(v) * silhouette_on).sum()
        loss = loss + config.pose_prior * (params["rot"] ** 2).sum()
        if fixed_shape is None:
            loss = loss + config.shape_prior * ((phenotypes_of(params) - 0.5) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def final_energies() -> tuple[torch.Tensor, torch.Tensor]:
        """(b, Vt, 3) every fitted body and (b,) its energy per unit weight at the end scale."""
        nonlocal i_idx, i_alt, i_sil
        with torch.no_grad():
            v = body(params, None)
            i_idx, i_alt = idx, alt  # match_cost now reads every vertex
            e = (match_cost(v, s_end) * w).sum(-1) / (s_end * s_end)
            if use_sil:  # the free-space paths differ in how they got here, not in what they pay
                i_sil = sil_ids  # every vertex is posed now
                e = e + silhouette_cost(v) / (s_end * s_end)
        return v, e

    for it in range(n):
        scale = s_start * (s_end / s_start) ** (it / max(1, n - 1))
        if it == select_at:
            with torch.no_grad():
                e = (match_cost(body(params, sel), SELECT_SCALE) * w).sum(-1)
            start_energies = e.numpy().astype(np.float64) / SELECT_SCALE**2
            best = int(torch.argmin(e))
            keep = keep[best : best + 1]
            params = {k: t.detach()[best : best + 1].clone() for k, t in params.items()}
            if nn_idx is not None:
                nn_idx = nn_idx[best : best + 1]
            opt = optimiser(params)
        if it >= cp_from and (nn_idx is None or (it - cp_from) % 10 == 0):
            refresh_partners()
        step(scale, config.closest_point if it >= cp_from else 0.0, it >= sil_from[keep])
    v, e = final_energies()
    with torch.no_grad():
        score = e.numpy().astype(np.float64)
        candidates = None
        if compares and len(keep) > 1:
            sc, bodies = full_scan[np.isfinite(full_scan).all(1)], v.numpy()
            coverage = np.array([_mean_distance(x, sc) for x in bodies])
            residual = np.array([_mean_distance(sc, x) for x in bodies])
            # the match energy under one mirror penalty for all (their own penalties differ)
            energy = ((match_cost(v, s_end, config.mirror_penalty) * w).sum(-1) / (s_end * s_end)).numpy().astype(np.float64)
            score = {"coverage": coverage, "residual": residual, "combined": energy * (coverage + residual)}[config.select]
            if config.select_energy_ratio > 0:  # a candidate the matches disagree with is not kept for sitting near the scan
                score = np.where(energy <= config.select_energy_ratio * energy.min(), score, np.inf)
            candidates = FitCandidates(bodies.astype(np.float32), energy, residual, coverage, (keep // n_var).numpy(),
                                       np.asarray(pen_of[keep].numpy(), dtype=np.float64))  # fmt: skip
        b = int(np.argmin(score))
        if len(keep) > 1:
            start_energies = score
    if config.tighten_steps > 0 and cp is not None:
        # the kept candidate alone, pulled onto the scan harder: chosen first and tightened after, so
        # the pull cannot make a wrong candidate sit as near the scan as the right one
        keep = keep[b : b + 1]
        params = {name: t.detach()[b : b + 1].clone() for name, t in params.items()}
        opt = optimiser(params, config.learning_rate * config.tighten_learning_rate)
        for j in range(config.tighten_steps):
            if j % 10 == 0:
                refresh_partners()
            step(s_end, config.tighten_closest_point, True)
        v, e = final_energies()
        b = 0
    with torch.no_grad():
        k = int(keep[b])
        Rd = roma.rotvec_to_rotmat(params["glob"][b])
        Rg = (R0[k] @ Rd).numpy().astype(np.float64)
        tg = (T0[k] + params["trans"][b] + S0[k] * (c - c @ Rd.T) @ R0[k].T).numpy().astype(np.float64)
        return PoseFit(
            vertices=v[b].numpy().astype(np.float64), pose=pose_of(params)[b].numpy(),
            phenotypes=phenotypes_of(params)[b].numpy().astype(np.float64),
            rotation=Rg, translation=tg, scale=float(S0[k]), energy=float(e[b]), start=k // n_var,
            start_energies=start_energies, seconds=time.perf_counter() - t_start, candidates=candidates,
        )  # fmt: skip
