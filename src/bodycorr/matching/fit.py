"""Fit the body template to a described scan (descriptor matches + non-rigid registration), and map
between scans through their fitted templates (the refinement of Wei et al.'s "CNN-S", via the template).

Wei et al. refine a nearest-neighbour map by deforming the source onto the target. Here both scans
get the template registered onto them instead: the template has a known left/right symmetry, so
every match may pull either its template vertex or that vertex's mirror (descriptors that cannot
tell the sides apart stop hurting), and the registration starts from the best rigid starts of the
matches (:func:`~bodycorr.geometry.nonrigid.rigid_starts`; front/back confusions give two), keeping
the one whose registration ends at the lower energy. A source point then maps to the target point
nearest the same template vertex on the target's fitted template.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.body.articulated import PoseFitConfig, fit_pose
from bodycorr.body.template import Template
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.geometry.nonrigid import DeformationGraph, NonRigidConfig, build_deformation_graph, register_nonrigid, rigid_starts
from bodycorr.geometry.rigid import SimilarityTransform
from bodycorr.geometry.sampling import voxel_best
from bodycorr.geometry.silhouette import DepthSilhouette
from bodycorr.matching.correspond import DISTANCE_SCALE, match


# A mesh counts as a complete scan when its boundary length over sqrt(area) is at most this
# (:meth:`~bodycorr.geometry.mesh.Mesh.openness`: 0 closed; one depth view's surface: several).
COMPLETE_OPENNESS = 1.5


@dataclass(frozen=True)
class FitConfig:
    """How the template is fitted to a scan.

    Attributes:
        nonrigid: registration settings.
        max_matches: at most this many matches, spread over the scan (:func:`template_matches`),
            drive the registration. More is not better: a finer grid gives the finely meshed
            parts more again. On the 30 tuning shapes (``bench/bench_fit_select.py
            --max-matches N``) the best body-fit candidate was 4.0 cm from the truth with 2,000
            and 4,000 matches, 5.6 cm with 8,000 (the combined rule kept 4.0 / 4.0 / 6.8).
        min_confidence: matches below this confidence are dropped.
        round_trip_m: > 0: a match's confidence is exp(-(d/0.25)²) x exp(-(c/round_trip_m)²), c its
            round trip on the scan (:attr:`~bodycorr.matching.correspond.Correspondences.cycle`),
            instead of exp(-(d/0.25)²) x the multi-view consistency (0). ``bench/bench_confidence.py``
            found the round trip the best flag of gross errors and the consistency no flag at all,
            and 0.05 m makes the 4,000 kept matches cleaner (10 tuning shapes: 7.1 cm mean error
            instead of 9.8, gross 3.1 % instead of 5.4 %), but the body fits got worse (best
            candidate 5.1 cm instead of 4.4, ``bench_fit_select.py --round-trip 0.05`` on the first 10
            tuning shapes; not explained yet: perhaps the matches it drops held coverage the fit
            needed). So 0 (off).
        max_target_points: the scan is subsampled to at most this many points for the closest-point term.
        starts: register from this many of the best distinct rigid starts and keep the lowest final
            energy (2 covers a front/back confusion; 1 is twice as fast).
        mirror: let every match pull its template vertex or that vertex's mirror (needs the symmetry).
        seed: subsampling seed.
        model: what deforms: ``graph`` (a deformation graph on the rest template), ``body`` (Anny's
            bones and phenotypes, :mod:`bodycorr.body.articulated`; needs the Anny template) or
            ``body+graph`` (the body fit, then the graph from it for the detail).
        pose: body fit settings.
        select: how the body fit keeps one of its rigid starts (sets :attr:`PoseFitConfig.select`):
            ``auto`` = ``combined`` (match energy x chamfer distance to the scan) when the target
            is a complete mesh (:data:`COMPLETE_OPENNESS`), ``energy`` for partial meshes, points
            and depth views. On the noisy depth views of 30 synthetic-v1 shapes outside the
            benchmark's pairs the scan-to-body distance kept a fit more than 5 cm worse than the
            best candidate on 1 view (8.7 cm mean), the energy on none (7.6 cm; the best
            candidate 7.3): a view's points fit a body turned round about as well as the right
            one, and the body-to-scan half means nothing there. On their complete meshes
            ``combined`` did best (:attr:`PoseFitConfig.select`).
    """

    nonrigid: NonRigidConfig = NonRigidConfig()
    max_matches: int = 4000
    min_confidence: float = 0.05
    round_trip_m: float = 0.0
    max_target_points: int = 20000
    starts: int = 2
    mirror: bool = True
    seed: int = 0
    model: Literal["graph", "body", "body+graph"] = "graph"
    pose: PoseFitConfig = field(default_factory=PoseFitConfig)
    select: Literal["auto", "energy", "coverage", "residual", "combined"] = "auto"


@dataclass(frozen=True, eq=False)
class TemplateFit:
    """The template registered onto one scan.

    Attributes:
        vertices: (Vt, 3) the template's vertices on the scan (metres, the scan's frame).
        energy: final registration energy of the kept start.
        starts_tried: registrations run (distinct rigid starts, at most ``FitConfig.starts``).
        matches: matches that drove it.
        seconds: wall time.
        body: the Anny body fit (pose, phenotypes, placement) when the model fits the body, else None;
            ``vertices`` then add the graph's detail to it (``body+graph``) or are its own.
    """

    vertices: np.ndarray
    energy: float
    starts_tried: int
    matches: int
    seconds: float
    body: object | None = None


def template_matches(points: np.ndarray, descriptors: np.ndarray, consistency: np.ndarray | None, template_descriptors: np.ndarray,
                     config: FitConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The matches that drive :func:`fit_template`: each point's nearest template descriptor, those
    with confidence >= ``config.min_confidence``, and of them at most ``config.max_matches``, spread
    over the scan: the most confident in each voxel of a grid sized to hold about that many
    (:func:`~bodycorr.geometry.sampling.voxel_best`; ties broken by ``rng``, not by point order).
    The most confident alone crowd where the scan has most points per area: on an Anny-topology
    mesh 1,900 of 4,000 fell on the hands and 750 on the head, 8 on one lower leg, and that leg
    was fitted onto the other.

    Returns (K,) template vertices, (K, 3) their scan points and (K,) confidences.
    """
    if config.round_trip_m > 0:
        corr = match(descriptors, template_descriptors, source_points=points)
        w = np.exp(-((corr.distance.astype(np.float64) / DISTANCE_SCALE) ** 2) - (corr.cycle.astype(np.float64) / config.round_trip_m) ** 2)
    else:
        corr = match(descriptors, template_descriptors, consistency)
        w = corr.confidence.astype(np.float64)
    si, tp = corr.target.astype(np.int64), points
    keep = w >= config.min_confidence
    si, tp, w = si[keep], tp[keep], w[keep]
    if len(si) < 3:
        raise BodycorrError(f"fit_template: only {len(si)} matches above confidence {config.min_confidence}; the scan does not look like a body.")
    if len(si) > config.max_matches:
        top = voxel_best(tp, w, config.max_matches, rng=rng)
        si, tp, w = si[top], tp[top], w[top]
    return si, tp, w


def fit_template(
    points: np.ndarray,
    descriptors: np.ndarray,
    consistency: np.ndarray | None,
    template: Mesh,
    template_descriptors: np.ndarray,
    symmetry: np.ndarray | None,
    target: Mesh | PointCloud | None = None,
    config: FitConfig = FitConfig(),
    graph: DeformationGraph | None = None,
    body: Template | None = None,
    silhouette: DepthSilhouette | None = None,
) -> TemplateFit:
    """Register ``template`` onto a scan from descriptor matches.

    Args:
        points: (N, 3) the scan's points (metres); descriptors: (N, D); consistency: (N,) or None.
        template: the rest template mesh (Vt vertices); template_descriptors: (Vt, D).
        symmetry: (Vt,) mirror vertex of each template vertex (``Template.symmetry``), or None.
        target: the scan's surface for the closest-point term (a mesh; None: the points as a cloud).
        graph: the template's deformation graph, to reuse across scans.
        body: the Anny :class:`~bodycorr.body.template.Template` whose mesh ``template`` is
            (needed when ``config.model`` fits the body).
        silhouette: when the scan is one depth frame, that frame and its camera: the body fit then
            seeks closest points among the body vertices facing the camera
            (:attr:`~bodycorr.body.articulated.PoseFitConfig.closest_point_facing`) and may add the
            depth-image terms.
    """
    t0 = time.perf_counter()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) != len(descriptors):
        raise BodycorrError(f"fit_template: points {points.shape} and descriptors {np.shape(descriptors)} must be (N, 3) and (N, D).")
    if len(template_descriptors) != template.num_vertices:
        raise BodycorrError(f"fit_template: {len(template_descriptors)} template descriptors for {template.num_vertices} template vertices.")
    rng = np.random.default_rng(config.seed)
    si, tp, w = template_matches(points, descriptors, consistency, template_descriptors, config, rng)
    if target is None:
        pts = points if len(points) <= config.max_target_points else points[rng.choice(len(points), config.max_target_points, replace=False)]
        target = PointCloud(pts, name="scan")
    nr = config.nonrigid
    uses_body = config.model in ("body", "body+graph")
    if uses_body and (body is None or body.num_vertices != template.num_vertices):
        raise BodycorrError(f"fit_template: model={config.model!r} fits the Anny body and needs its Template (pass body=get_template()); "
                            "use model='graph' for a template of another topology.")  # fmt: skip
    if graph is None and config.model != "body":
        graph = build_deformation_graph(template, nr.num_nodes, nr.node_sampling, nr.nearest_nodes, nr.seed)
    alt = np.asarray(symmetry)[si] if (config.mirror and symmetry is not None) else None
    starts = rigid_starts(template.vertices, si, si if alt is None else alt, tp, w, nr.rigid_init == "similarity", nr.kernel)[: max(1, config.starts)]
    if uses_body:
        scan = target.vertices if isinstance(target, Mesh) else target.points
        select = config.select
        if select == "auto":  # openness walks the mesh's edges: only when asked to choose
            select = "combined" if isinstance(target, Mesh) and target.openness() <= COMPLETE_OPENNESS else "energy"
        kept = fit_pose(body, si, tp, w, [tr for tr, _ in starts], alternatives=alt, scan=scan, config=replace(config.pose, select=select),
                        silhouette=silhouette)  # fmt: skip
        vertices, energy = kept.vertices, kept.energy
        if config.model == "body+graph":
            posed = Mesh(kept.vertices, template.faces, name="posed template")
            res = register_nonrigid(posed, target, si, tp, w, nr, graph=graph.moved(kept.vertices), alternatives=alt,
                                    rigid_start=SimilarityTransform.identity())  # fmt: skip
            if np.isfinite(res.vertices).all():  # else the body fit stands
                vertices, energy = np.asarray(res.vertices), float(res.energies[-1])
        return TemplateFit(vertices, energy, len(starts), len(si), time.perf_counter() - t0, body=kept)
    best = None
    for tr, _ in starts:
        res = register_nonrigid(template, target, si, tp, w, nr, graph=graph, alternatives=alt, rigid_start=tr)
        if np.isfinite(res.vertices).all() and (best is None or res.energies[-1] < best.energies[-1]):
            best = res
    if best is None:
        raise BodycorrError("fit_template: the registration diverged (non-finite vertices) from every start.")
    return TemplateFit(np.asarray(best.vertices), float(best.energies[-1]), len(starts), len(si), time.perf_counter() - t0)


def fit_body_to_map(points: np.ndarray, template_vertex: np.ndarray, body: Template, config: PoseFitConfig,
                    descriptors: np.ndarray | None = None, consistency: np.ndarray | None = None,
                    template_descriptors: np.ndarray | None = None, descriptor_weight: float = 1.0,
                    max_matches: int = 4000, descriptor_matches: int = 2000, starts: int = 2, seed: int = 0) -> TemplateFit:  # fmt: skip
    """Anny fitted onto a complete scan from a dense map of the scan onto the template (the spectral
    map, :class:`~bodycorr.matching.refiners.spectral.SpectralRefiner`) rather than from descriptor
    matches alone: the map is tight and whole-body consistent, and the fit adds what a map between
    two bodies of different build lacks, each body's own limb lengths and pose.

    Where the map went wrong over a whole region (an arm held against the torso mapped onto the
    torso), no match pulls the template's arm to the scan's, and the fit inherits the error. So the
    scan's descriptor matches (:func:`template_matches`, each pulling its template vertex or that
    vertex's mirror) join the map's, at ``descriptor_weight`` times their confidence: where the two
    disagree the robust kernel sides with the matches the rest of the body can satisfy (measured on
    the tuning pairs of ``bench/bench_template_probe.py``: :class:`~bodycorr.matching.refiners.auto.AutoRefiner`).

    Args:
        points: (N, 3) the scan's points (metres), also the closest-point term's target.
        template_vertex: (N,) each point's template vertex.
        body: the Anny :class:`~bodycorr.body.template.Template`.
        config: the body fit's settings (its ``select`` should compare the fits with the scan).
        descriptors, consistency, template_descriptors: (N, D), (N,) or None, (Vt, D): the
            descriptor matches' inputs (None: the map's matches alone).
        max_matches, descriptor_matches: how many of each drive the fit, spread over the scan
            (:func:`~bodycorr.geometry.sampling.voxel_best`).
        starts: rigid starts fitted (:func:`~bodycorr.geometry.nonrigid.rigid_starts`).
    """
    t0 = time.perf_counter()
    points = np.asarray(points, dtype=np.float64)
    u = np.asarray(template_vertex, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] != 3 or u.shape != (len(points),):
        raise BodycorrError(f"fit_body_to_map: points {points.shape} and template_vertex {u.shape} must be (N, 3) and (N,).")
    if len(u) < 3 or u.min() < 0 or u.max() >= body.num_vertices:
        raise BodycorrError(f"fit_body_to_map: need at least 3 points mapped to template vertices in [0, {body.num_vertices}).")
    sel = voxel_best(points, np.ones(len(u)), max_matches, rng=np.random.default_rng(seed))
    si, tp, w = u[sel], points[sel], np.ones(len(sel))
    alt = si.copy()
    if descriptors is not None and template_descriptors is not None and descriptor_weight > 0 and body.symmetry is not None:
        di, dp, dw = template_matches(points, descriptors, consistency, template_descriptors, FitConfig(max_matches=descriptor_matches),
                                      np.random.default_rng(seed + 1))  # fmt: skip
        si, tp, w, alt = np.r_[si, di], np.r_[tp, dp], np.r_[w, descriptor_weight * dw], np.r_[alt, np.asarray(body.symmetry)[di]]
    found = rigid_starts(body.mesh.vertices, si, alt, tp, w)[: max(1, starts)]
    kept = fit_pose(body, si, tp, w, [tr for tr, _ in found], alternatives=alt, scan=points, config=config)
    return TemplateFit(kept.vertices, kept.energy, len(found), len(si), time.perf_counter() - t0, body=kept)


def map_via_template(source_points: np.ndarray, source_fit: TemplateFit, target_points: np.ndarray,
                     target_fit: TemplateFit, faces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Map every source point through the fitted templates: source point -> nearest vertex of the
    source's fitted template (with the template's ``faces`` (F, 3): its closest place on that
    surface, as a face and barycentrics) -> the same vertex (place) on the target's fitted template
    -> nearest target point.

    Returns (N_source,) int64 target point indices and (N_source,) distances (m) from each chosen
    target point to the template point it stands for (how well the target's fit reaches it).
    """
    src = np.asarray(source_points, dtype=np.float64)
    if faces is None:
        q = target_fit.vertices[cKDTree(source_fit.vertices).query(src, workers=1)[1]]
    else:
        from bodycorr.geometry.closest import SurfaceLocator

        faces = np.asarray(faces, dtype=np.int64)
        got = SurfaceLocator(source_fit.vertices, faces).query(src)
        q = np.einsum("nk,nkd->nd", got.bary, np.asarray(target_fit.vertices, dtype=np.float64)[faces[got.face]])
    d, idx = cKDTree(np.asarray(target_points, dtype=np.float64)).query(q, workers=1)
    return idx.astype(np.int64), d
