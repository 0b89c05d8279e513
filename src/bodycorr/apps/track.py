"""Template performance capture from one depth camera (the tracking application of Wei et al. 2016).

Every frame is registered FROM THE REST TEMPLATE with that frame's own correspondences (learned
descriptors: pixel -> template vertex), so errors never feed forward: a bad frame cannot spoil the
next one. By default Anny's bone rotations are fitted to each frame at the person's fixed shape
(given, or estimated once from a few frames); a deformation graph can follow, or do it all for a
template of another topology. Each match may pull its template vertex or that vertex's mirror (the
descriptors confuse left and right), and each frame's rigid start is chosen among that frame's own
candidates jointly over the sequence (they confuse front and back too; a person does not turn round
between frames). Optional temporal smoothing only blends the final output with the previous output.

* :func:`synthetic_sequence` — a depth sequence of one test-split person walking, with the truth.
* :func:`track` — per frame: clean flying pixels, describe pixels, match to the template's
  descriptors, fit the body (:func:`~bodycorr.body.articulated.fit_pose`) and/or
  :func:`register_nonrigid` from the rest template.
* :func:`evaluate_track` — vertex errors (all / visible), drift slope and static-vertex jitter.
* :func:`write_track_outputs` — one PLY per frame, an error plot, an animated GIF.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from bodycorr.body.anny_model import PHENOTYPES
from bodycorr.body.articulated import PoseFitConfig, fit_pose
from bodycorr.body.template import Template
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import check_output_dir, output_run
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.geometry.nonrigid import NonRigidConfig, build_deformation_graph, register_nonrigid, rigid_starts
from bodycorr.geometry.rigid import SimilarityTransform, rotation_angle_deg
from bodycorr.geometry.sampling import voxel_best
from bodycorr.geometry.silhouette import DepthSilhouette
from bodycorr.matching.inputs import remove_flying_pixels

# (t, cleaned depth (H, W) m, camera) -> (template vertex indices (K,), target points (K, 3), weights (K,))
CorrespondencesFn = Callable[[int, np.ndarray, Camera], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TrackConfig:
    """How a sequence is tracked.

    Attributes:
        views: renders of the template for its per-vertex descriptors (computed once). 48 (as
            the matching elsewhere uses) gave no gain on the tuning walks (seeds 1, 2, 40 frames,
            shape given: visible 1.55 / 1.68 cm against 1.52 / 1.63 with 24).
        nonrigid: registration settings (every frame starts from the rest template).
        smoothing: in [0, 1): weight of the previous output in the final output (0 = off). Only
            the output is blended, never the registration input, and only after a tracked frame:
            no frame's fit starts from another's, so nothing drifts, and a wrong frame fades from
            the output by this factor per frame. 0.3 (0.2 to 0.3 best, 0.5 worse) took the visible
            error of two 40-frame tuning walks (seeds 1, 2, shape given) from 2.26 / 2.22 to 2.16 /
            2.14 cm and their static jitter from 4.1 / 6.1 to 3.4 / 4.3 mm; it lags a motion by
            about s / (1 - s) frames.
        min_valid_pixels: frames with fewer valid depth pixels (after cleaning) are skipped.
        max_matches: at most this many pixel matches enter the registration.
        match_selection: which of them, when a frame has more: ``spread`` (default) the most
            confident in each voxel of a grid sized to hold about ``max_matches``
            (:func:`~bodycorr.geometry.sampling.voxel_best`), or ``confident`` the most confident
            overall, which crowd on the parts the model is surest of and leave others with few.
            On the tuning walks (seeds 1 and 2, 40 frames, shape given) spreading took the visible
            error from 2.16 / 2.14 to 1.52 / 1.63 cm and the worst frame from 5.0 / 2.9 to 2.0 /
            2.4 cm, at the same time per frame.
        max_target_points: the frame's point cloud is subsampled to at most this many points.
        min_confidence: matches below this confidence are dropped.
        clean: remove flying pixels first.
        mirror: what to do about descriptors that confuse left and right, when :func:`track` gets
            the template's ``symmetry``. ``"per_match"`` (default): every match may pull either its
            template vertex or that vertex's mirror, whichever the current fit puts nearer its
            point (the depth model gets the side wrong for a large share of pixels, not for whole
            frames). ``"per_frame"``: register twice, with all matches as given and all mirrored,
            keep the better rigid fit (doubles the time). ``"off"``: use the matches as given.
        facing_switch_deg: with ``"per_match"``, each frame's rigid start is chosen among its own
            candidates jointly over the sequence; a turn of this many degrees between consecutive
            frames costs as much as a start 1 % worse than its frame's best. Descriptors that
            confuse front and back leave two candidates a half turn apart with near-equal costs.
        model: what deforms each frame, from rest: ``graph`` (a deformation graph on the template,
            any topology), ``body`` (Anny's bone rotations at the person's fixed shape,
            :func:`~bodycorr.body.articulated.fit_pose`; needs the Anny template) or
            ``body+graph`` (the body fit, then the graph from it for what bones cannot do).
        pose: body fit settings (``shape`` off: the shape is given or estimated once, below). The
            closest-point weight stays 2: with camera-facing closest points, weights 2 / 4 / 8 gave
            visible errors of 2.26 / 2.17 / 2.4 cm and 2.22 / 2.09 / 2.3 cm on the tuning walks
            (seeds 1, 2, 40 frames, shape given, no smoothing), but 4 did not carry over to the
            100-frame evaluation walk (visible 1.42 -> 1.56 cm with the shape given, 1.82 -> 1.87
            estimated); a longer closest-point share (0.6) gave 2.26 / 2.08 at 1.2 s/frame.
        shape_frames: with a body model and no shape given, the person's phenotypes are the
            median of shape-and-pose fits on this many tracked frames spread over the sequence.
            On four 100-frame walks other than the evaluation walk (seeds 1-4) the rest shape's
            error (centroids aligned) was 1.97 / 2.13 / 2.79 / 1.31 cm from 5 frames, 1.95 / 1.77 /
            2.73 / 1.44 from 9 and 1.86 / 1.55 / 1.96 / 1.27 from 15; each fit costs about 1.5 s.
        shape_iterations: steps of each of those fits (the shape settles slower than the pose).
    """

    views: int = 24
    nonrigid: NonRigidConfig = field(default_factory=NonRigidConfig)
    smoothing: float = 0.3
    min_valid_pixels: int = 300
    max_matches: int = 4000
    match_selection: Literal["spread", "confident"] = "spread"
    max_target_points: int = 20000
    min_confidence: float = 0.05
    clean: bool = True
    mirror: Literal["per_match", "per_frame", "off"] = "per_match"
    facing_switch_deg: float = 60.0
    model: Literal["graph", "body", "body+graph"] = "body"
    pose: PoseFitConfig = field(default_factory=lambda: PoseFitConfig(
        iterations=60, shape=False, closest_point=2.0, max_scan_points=2000))  # fmt: skip
    shape_frames: int = 15
    shape_iterations: int = 150

    def check(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise BodycorrError(f"TrackConfig.smoothing {self.smoothing}: must be in [0, 1). Use 0 to turn it off.")
        if self.mirror not in ("per_match", "per_frame", "off"):
            raise BodycorrError(f"TrackConfig.mirror {self.mirror!r}: use 'per_match', 'per_frame' or 'off'.")
        if self.match_selection not in ("spread", "confident"):
            raise BodycorrError(f"TrackConfig.match_selection {self.match_selection!r}: use 'spread' or 'confident'.")
        if self.model not in ("graph", "body", "body+graph"):
            raise BodycorrError(f"TrackConfig.model {self.model!r}: use 'graph', 'body' or 'body+graph'.")
        if self.model != "graph" and self.mirror == "per_frame":
            raise BodycorrError("TrackConfig: mirror='per_frame' works with model='graph' only; the body fit reads mirrors per match.")
        if self.views < 1 or self.min_valid_pixels < 3 or self.max_matches < 3 or self.max_target_points < 3:
            raise BodycorrError("TrackConfig: views >= 1, min_valid_pixels, max_matches and max_target_points >= 3.")


@dataclass(frozen=True, eq=False)
class TrackResult:
    """A tracked sequence.

    Attributes:
        vertices: (T, V, 3) float64 template vertices per frame (world metres of ``camera``).
        seconds: (T,) processing time of each frame.
        status: per frame ``"ok"`` or ``"skipped: <reason>"`` (then the vertices are the previous
            output, or the rest template before the first tracked frame).
        faces: (F, 3) template faces.
        depths: (T, H, W) the cleaned depth maps (0 = no data).
        camera: the camera of the depth maps.
        num_matches: (T,) correspondences used per frame.
        phenotypes: (6,) the body's shape (given or estimated) with a body model, else None.
    """

    vertices: np.ndarray
    seconds: np.ndarray
    status: tuple[str, ...]
    faces: np.ndarray
    depths: np.ndarray
    camera: Camera
    num_matches: np.ndarray
    phenotypes: np.ndarray | None = None

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)

    def mesh(self, t: int) -> Mesh:
        return Mesh(self.vertices[t], self.faces, name=f"frame {t}")


# ------------------------------------------------------------------------------------------------
# Synthetic input
# ------------------------------------------------------------------------------------------------


def synthetic_sequence(
    num_frames: int,
    seed: int = 0,
    noise: bool = True,
    intrinsics: Intrinsics | None = None,
    fps: float = 30.0,
    distance: float = 2.5,
) -> tuple[np.ndarray, Camera, np.ndarray, np.ndarray]:
    """A test-split person walking on the spot in front of a fixed Kinect v2, rendered from the engine.

    Returns:
        depths (T, H, W) float32 metres (0 = no data), the camera, truth (T, Vt, 3) template-topology
        vertices, and the person's phenotypes (6,).
    """
    from bodycorr.body.anny_model import get_body_model
    from bodycorr.body.motion import walk_cycle
    from bodycorr.body.shape import sample_identity
    from bodycorr.body.template import get_template
    from bodycorr.render.frame import render
    from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
    from bodycorr.render.raycast import RayCaster

    if num_frames <= 0:
        raise BodycorrError(f"synthetic_sequence: num_frames must be positive, got {num_frames}.")
    rng = np.random.default_rng(seed)
    model = get_body_model()
    template = get_template()
    person = sample_identity("test", int(seed))
    pose = walk_cycle(num_frames, fps=fps, model=model, start_frame=float(rng.uniform(0, 40)))
    anny = pose.to_anny(model)
    ph = np.repeat(person.phenotypes[None], num_frames, 0)
    verts = np.concatenate([model(ph[i : i + 8], anny[i : i + 8]).vertices for i in range(0, num_frames, 8)])
    lo, hi = verts.reshape(-1, 3).min(0), verts.reshape(-1, 3).max(0)
    centre = 0.5 * (lo + hi)
    k = intrinsics or Intrinsics.kinect_v2()
    # the body faces -Y: the camera stands in front of it, on -Y
    camera = Camera.look_at(centre + np.array([0.0, -distance, 0.0]), centre, up=(0.0, 0.0, 1.0), intrinsics=k)
    caster = RayCaster(verts[0], model.faces)
    depths = np.zeros((num_frames, k.height, k.width), dtype=np.float32)
    cfg = DepthNoiseConfig.preset("kinect_v2" if noise else "none")
    for i in range(num_frames):
        caster.update(verts[i])
        fr = render(caster, camera)
        if noise:
            fr = add_depth_noise(fr, cfg, rng)
        d = np.where(np.isfinite(fr.depth) & (fr.depth > 0), fr.depth, 0)
        depths[i] = d
    truth = verts[:, template.template_to_full].astype(np.float64)
    return depths, camera, truth, np.asarray(person.phenotypes, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Tracking
# ------------------------------------------------------------------------------------------------


def _note(show: bool, message: str) -> None:
    """One progress line on stderr (when ``show``)."""
    if show:
        print(f"track: {message}", file=sys.stderr, flush=True)


def _bar(show: bool, total: int, desc: str, unit: str = "frame"):
    """A tqdm bar on stderr redrawn after every item (frames take seconds), or None."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"track: {desc}", unit=unit, mininterval=0, file=sys.stderr, dynamic_ncols=True)


def _tick(bar, status: str | None = None) -> None:
    if bar is not None:
        if status is not None:
            bar.set_postfix_str(status, refresh=False)
        bar.update()


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _frame_problem(depth: np.ndarray, min_valid: int) -> str | None:
    bad = ~np.isfinite(depth)
    if bad.any():
        return f"{int(bad.sum())} NaN/inf depth values"
    n = int((depth > 0).sum())
    if n == 0:
        return "no person (no valid depth pixel)"
    if n < min_valid:
        return f"only {n} valid pixels (< {min_valid})"
    return None


def learned_correspondences(extractor, template_desc) -> CorrespondencesFn:
    """Pixel -> template vertex matches from descriptors (the default of :func:`track`)."""
    from bodycorr.matching.correspond import match

    def fn(t: int, depth: np.ndarray, camera: Camera):
        px = extractor.depth_map(depth, camera, name=f"frame {t}")
        c = match(px.descriptors, template_desc.descriptors)
        w = c.confidence * np.clip(template_desc.consistency[c.target], 0, 1)
        return c.target, px.points, w

    return fn


def track(
    depths: np.ndarray,
    camera: Camera,
    template_mesh: Mesh,
    extractor=None,
    config: TrackConfig = TrackConfig(),
    correspondences_fn: CorrespondencesFn | None = None,
    progress: Callable[[int, str, float], None] | bool | None = None,
    symmetry: np.ndarray | None = None,
    body: Template | None = None,
    phenotypes: np.ndarray | None = None,
) -> TrackResult:
    """Track ``template_mesh`` through a depth sequence.

    Args:
        depths: (T, H, W) metres (0 = no data), one camera for all frames.
        camera: the depth camera (its pose defines the output's world frame).
        template_mesh: the rest template (every frame is registered from it).
        extractor: a :class:`DescriptorExtractor` (needed unless ``correspondences_fn`` is given).
        config: :class:`TrackConfig`.
        correspondences_fn: replaces the learned matches (e.g. an oracle in tests):
            ``fn(t, cleaned_depth, camera) -> (template_indices, points, weights)``.
        progress: called as ``progress(t, status, seconds)`` after each frame; or True: progress
            bars on stderr for each phase (matching the frames, the shape fits, fitting the
            frames), one update per frame. None / False (the default for library callers): silent.
        symmetry: (V,) mirror vertex of each template vertex (``Template.symmetry``): enables
            ``config.mirror``.
        body: the Anny :class:`~bodycorr.body.template.Template` (``template_mesh`` is its mesh),
            needed by ``config.model`` ``body`` and ``body+graph``.
        phenotypes: (6,) the person's shape for the body model (None: estimated from
            ``config.shape_frames`` frames).
    """
    config.check()
    show = progress is True
    callback = progress if callable(progress) else None
    uses_body = config.model != "graph"
    if uses_body and (body is None or body.num_vertices != template_mesh.num_vertices):
        raise BodycorrError(f"track: model={config.model!r} fits the Anny body and needs its Template (body=get_template()); "
                            "use model='graph' for a template mesh of another topology.")  # fmt: skip
    d = np.asarray(depths)
    if d.ndim == 2:
        d = d[None]
    k = camera.intrinsics
    if d.ndim != 3 or d.shape[1:] != (k.height, k.width):
        raise BodycorrError(f"track: depths must be (T, {k.height}, {k.width}) for the camera, got {d.shape}. Use matching intrinsics.")
    if correspondences_fn is None:
        if extractor is None:
            raise BodycorrError("track: give a descriptor extractor (or a correspondences_fn).")
        _note(show, f"describing the template from {config.views} views")
        template_desc = extractor.mesh(template_mesh, config.views)
        correspondences_fn = learned_correspondences(extractor, template_desc)
    nr = config.nonrigid
    graph = None if config.model == "body" else build_deformation_graph(template_mesh, nr.num_nodes, nr.node_sampling, nr.nearest_nodes, nr.seed)
    rng = np.random.default_rng(nr.seed)
    T = d.shape[0]
    rest = np.asarray(template_mesh.vertices, dtype=np.float64)
    out = np.zeros((T,) + rest.shape)
    seconds = np.zeros(T)
    nmatch = np.zeros(T, dtype=np.int64)
    status: list[str] = []
    cleaned = np.zeros(d.shape, dtype=np.float32)
    mirror = config.mirror if symmetry is not None else "off"
    with_starts = mirror == "per_match" or uses_body  # rigid starts per frame, chosen over the sequence
    fit_symmetry = symmetry if mirror != "off" else None  # the body fit's mirror alternatives
    # pass 1: each frame's own matches and, with per-match mirrors or the body fit, its distinct rigid starts
    frames: list[_FrameMatches | str] = []
    bar = _bar(show, T, "matching frames")
    for t in range(T):
        t0 = time.perf_counter()
        raw = d[t].astype(np.float32)
        problem = _frame_problem(raw, config.min_valid_pixels)
        if problem is None:
            dep = remove_flying_pixels(raw) if config.clean else raw
            cleaned[t] = dep
            n_valid = int((dep > 0).sum())
            if n_valid < config.min_valid_pixels:
                problem = f"only {n_valid} valid pixels after cleaning (< {config.min_valid_pixels})"
        if problem is None:
            try:
                fm = _frame_matches(t, dep, camera, correspondences_fn, config, rng)
                if with_starts:
                    fm.starts = rigid_starts(rest, fm.si, fm.si if fit_symmetry is None else np.asarray(fit_symmetry)[fm.si], fm.tp, fm.w, nr.rigid_init == "similarity", nr.kernel)
                frames.append(fm)
            except BodycorrError as e:
                problem = str(e)
        if problem is not None:
            frames.append(problem)
        seconds[t] = time.perf_counter() - t0
        _tick(bar)
    _close(bar)
    choice = _choose_starts(frames, config.facing_switch_deg) if with_starts else {}
    if uses_body and phenotypes is None:
        phenotypes = _estimate_shape(frames, choice, body, fit_symmetry, config, seconds, show)
    if phenotypes is not None:
        phenotypes = np.asarray(phenotypes, dtype=np.float64)
    # pass 2: register every frame from the rest template, from its chosen start
    prev: np.ndarray | None = None
    bar = _bar(show, T, "fitting frames")
    for t in range(T):
        t0 = time.perf_counter()
        fm = frames[t]
        verts, problem = None, fm if isinstance(fm, str) else None
        if problem is None:
            try:
                if uses_body:
                    verts = _fit_frame(fm, template_mesh, graph, config, body, fit_symmetry, choice[t], phenotypes)
                else:
                    verts = _register_frame(fm, template_mesh, graph, config, symmetry, mirror, choice.get(t))
                nmatch[t] = len(fm.si)
            except BodycorrError as e:
                problem = str(e)
        if verts is None:
            status.append(f"skipped: {problem}")
            out[t] = prev if prev is not None else rest
        else:
            if config.smoothing > 0 and prev is not None and t > 0 and status[-1] == "ok":
                verts = (1 - config.smoothing) * verts + config.smoothing * prev
            status.append("ok")
            out[t] = verts
            prev = verts
        seconds[t] += time.perf_counter() - t0
        _tick(bar, "ok" if status[-1] == "ok" else "skipped")
        if callback is not None:
            callback(t, status[-1], float(seconds[t]))
    _close(bar)
    return TrackResult(out, seconds, tuple(status), np.asarray(template_mesh.faces), cleaned, camera, nmatch, phenotypes)


@dataclass(eq=False)
class _FrameMatches:
    t: int
    si: np.ndarray
    tp: np.ndarray
    w: np.ndarray
    cloud: PointCloud
    silhouette: DepthSilhouette | None = None
    starts: list = field(default_factory=list)


def _frame_matches(t, depth, camera, correspondences_fn, config, rng) -> _FrameMatches:
    si, tp, w = correspondences_fn(t, depth, camera)
    si = np.asarray(si, dtype=np.int64)
    tp = np.asarray(tp, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    keep = np.isfinite(tp).all(1) & np.isfinite(w) & (w >= config.min_confidence)
    si, tp, w = si[keep], tp[keep], w[keep]
    if len(si) < 3:
        raise BodycorrError(f"only {len(si)} usable correspondences")
    if len(si) > config.max_matches:  # ties broken at random: equal weights give a uniform subset
        if config.match_selection == "spread":
            top = voxel_best(tp, w, config.max_matches, rng=rng)
        else:
            perm = rng.permutation(len(w))
            top = perm[np.argsort(-w[perm], kind="stable")[: config.max_matches]]
        si, tp, w = si[top], tp[top], w[top]
    pts = camera.backproject(depth)[depth > 0]
    if len(pts) > config.max_target_points:
        pts = pts[rng.choice(len(pts), config.max_target_points, replace=False)]
    return _FrameMatches(t, si, tp, w, PointCloud(pts, name=f"frame {t}"), DepthSilhouette.from_depth(depth, camera))


def _choose_starts(frames: list, switch_deg: float) -> dict[int, object]:
    """One rigid start per tracked frame, chosen jointly over the sequence (Viterbi).

    Each frame offers the distinct optima of its own matches (:func:`rigid_starts`; descriptors
    that confuse front and back give two, a half turn apart, whose costs differ by about 1 %).
    A path pays each start's cost above its frame's best (in %) plus the turn between consecutive
    frames' starts over ``switch_deg``: a person does not turn round between two frames, so the
    sequence settles which way it faces. Only the frames' own starts are chosen from; no
    registration result is carried to another frame. Skipped frames cut the chain.
    """
    choice: dict[int, object] = {}
    run: list = []

    def solve(run: list) -> None:
        if not run:
            return
        unary = [np.array([(c / fm.starts[0][1] - 1) * 100 for _, c in fm.starts]) for fm in run]
        acc, back = [unary[0]], []
        for i in range(1, len(run)):
            turn = np.array([[rotation_angle_deg(a.rotation, b.rotation) / switch_deg for b, _ in run[i].starts] for a, _ in run[i - 1].starts])
            tot = acc[-1][:, None] + turn
            back.append(tot.argmin(0))
            acc.append(tot.min(0) + unary[i])
        k = int(acc[-1].argmin())
        for i in range(len(run) - 1, -1, -1):
            choice[run[i].t] = run[i].starts[k][0]
            if i:
                k = int(back[i - 1][k])

    for fm in frames:
        if isinstance(fm, _FrameMatches) and fm.starts:
            run.append(fm)
        else:
            solve(run)
            run = []
    solve(run)
    return choice


def _estimate_shape(frames: list, choice: dict, body: Template, symmetry, config: TrackConfig, seconds: np.ndarray,
                    show: bool = False) -> np.ndarray:  # fmt: skip
    """(6,) the median phenotypes of shape-and-pose fits on ``config.shape_frames`` tracked frames
    spread over the sequence (their time is added to those frames)."""
    ok = [fm for fm in frames if isinstance(fm, _FrameMatches) and fm.t in choice]
    if not ok:
        return np.full(len(PHENOTYPES), 0.5)
    picks = [ok[i] for i in np.unique(np.linspace(0, len(ok) - 1, max(1, config.shape_frames)).round().astype(int))]
    cfg = replace(config.pose, shape=True, iterations=config.shape_iterations)
    fits = []
    bar = _bar(show, len(picks), "estimating the shape", unit="fit")
    for fm in picks:
        t0 = time.perf_counter()
        alt = None if symmetry is None else np.asarray(symmetry)[fm.si]
        fits.append(fit_pose(body, fm.si, fm.tp, fm.w, choice[fm.t], alternatives=alt, scan=fm.cloud.points, config=cfg,
                             silhouette=fm.silhouette).phenotypes)  # fmt: skip
        seconds[fm.t] += time.perf_counter() - t0
        _tick(bar)
    _close(bar)
    return np.median(np.stack(fits), axis=0)


def _fit_frame(fm: _FrameMatches, template_mesh: Mesh, graph, config: TrackConfig, body: Template, symmetry,
               start: SimilarityTransform, phenotypes: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """The body fitted to one frame from rest (its shape fixed), then optionally the graph from it."""
    alt = None if symmetry is None else np.asarray(symmetry)[fm.si]
    cfg = replace(config.pose, shape=False)
    fit = fit_pose(body, fm.si, fm.tp, fm.w, start, alternatives=alt, scan=fm.cloud.points, config=cfg, phenotypes=phenotypes,
                   silhouette=fm.silhouette)  # fmt: skip
    v = fit.vertices
    if config.model == "body+graph":
        posed = Mesh(v, template_mesh.faces, name="posed template")
        res = register_nonrigid(posed, fm.cloud, fm.si, fm.tp, fm.w, config.nonrigid, graph=graph.moved(v), alternatives=alt,
                                rigid_start=SimilarityTransform.identity())  # fmt: skip
        if np.isfinite(res.vertices).all():  # else the body fit stands
            v = np.asarray(res.vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        raise BodycorrError("body fit diverged (non-finite vertices)")
    return v


def _register_frame(fm: _FrameMatches, template_mesh, graph, config, symmetry, mirror, start=None) -> np.ndarray:
    si, tp, w, cloud = fm.si, fm.tp, fm.w, fm.cloud
    alternatives = np.asarray(symmetry)[si] if mirror == "per_match" else None
    res = register_nonrigid(template_mesh, cloud, si, tp, w, config.nonrigid, graph=graph, alternatives=alternatives, rigid_start=start)
    if mirror == "per_frame":
        sj = np.asarray(symmetry)[si]
        alt = register_nonrigid(template_mesh, cloud, sj, tp, w, config.nonrigid, graph=graph)
        rv = np.asarray(template_mesh.vertices)
        r0 = np.median(np.linalg.norm(res.rigid.apply(rv[si]) - tp, axis=1))
        r1 = np.median(np.linalg.norm(alt.rigid.apply(rv[sj]) - tp, axis=1))
        if np.isfinite(alt.vertices).all() and r1 < r0:
            res = alt
    v = np.asarray(res.vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        raise BodycorrError("registration diverged (non-finite vertices)")
    return v


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


def visible_vertices(vertices: np.ndarray, depth: np.ndarray, camera: Camera, tolerance: float = 0.03) -> np.ndarray:
    """(V,) bool: vertices whose projection lands on a depth pixel within ``tolerance`` m of their depth."""
    pr = camera.project(vertices)
    uv = np.nan_to_num(pr.uv, nan=-1.0)
    c = np.floor(uv[:, 0]).astype(int)
    r = np.floor(uv[:, 1]).astype(int)
    ins = pr.inside & (r >= 0) & (c >= 0) & (r < depth.shape[0]) & (c < depth.shape[1])
    vis = np.zeros(len(vertices), dtype=bool)
    dz = depth[r[ins], c[ins]]
    vis[ins] = (dz > 0) & (np.abs(dz - pr.z[ins]) < tolerance)
    return vis


def evaluate_track(result: TrackResult, truth: np.ndarray, static_threshold: float = 0.005) -> dict:
    """Errors against the truth (T, V, 3) in template topology, in cm (overall stats over tracked frames).

    Returns a dict: per_frame_cm / per_frame_visible_cm (lists, NaN where skipped), mean_cm,
    visible_mean_cm, slope_cm_per_frame (error-vs-time, visible vertices), static_jitter_mm (mean
    over static vertices of the std of their frame-to-frame displacement), static_vertices, frames,
    tracked.
    """
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != result.vertices.shape:
        raise BodycorrError(f"evaluate_track: truth is {truth.shape}, the result {result.vertices.shape}. Give truth per frame in template topology.")
    ok = result.ok
    err = np.linalg.norm(result.vertices - truth, axis=-1) * 100  # (T, V) cm
    T = len(truth)
    per = np.full(T, np.nan)
    per_vis = np.full(T, np.nan)
    for t in np.flatnonzero(ok):
        per[t] = err[t].mean()
        vis = visible_vertices(truth[t], result.depths[t], result.camera)
        per_vis[t] = err[t][vis].mean() if vis.any() else np.nan
    okt = np.flatnonzero(ok & np.isfinite(per_vis))
    slope = float(np.polyfit(okt, per_vis[okt], 1)[0]) if len(okt) >= 2 else float("nan")
    jitter, n_static = float("nan"), 0
    idx = np.flatnonzero(ok)
    pairs = idx[:-1][np.diff(idx) == 1] if len(idx) > 1 else np.zeros(0, int)
    if len(pairs) >= 2:
        tmove = np.linalg.norm(truth[1:] - truth[:-1], axis=-1).max(0)  # (V,) largest truth step
        static = np.flatnonzero(tmove < static_threshold)
        if len(static) < 10:
            static = np.argsort(tmove)[: max(10, len(tmove) // 50)]
        n_static = len(static)
        step = np.linalg.norm(result.vertices[pairs + 1][:, static] - result.vertices[pairs][:, static], axis=-1)
        jitter = float(step.std(0).mean() * 1000)
    nan = lambda a: [None if not np.isfinite(x) else round(float(x), 3) for x in a]  # noqa: E731
    return {
        "frames": int(T),
        "tracked": int(ok.sum()),
        "mean_cm": float(np.nanmean(per)) if ok.any() else float("nan"),
        "visible_mean_cm": float(np.nanmean(per_vis)) if np.isfinite(per_vis).any() else float("nan"),
        "per_frame_cm": nan(per),
        "per_frame_visible_cm": nan(per_vis),
        "slope_cm_per_frame": slope,
        "static_jitter_mm": jitter,
        "static_vertices": int(n_static),
    }


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------


def write_track_outputs(result: TrackResult, out_dir: str | Path, metrics: dict | None = None,
                        gif_every: int = 2, gif_px: int = 320, fps: float = 5.0, plausibility: dict | None = None) -> dict[str, Path]:  # fmt: skip
    """Write ``frame_%04d.ply`` per frame, ``errors.png`` (when ``metrics`` from :func:`evaluate_track`
    are given), ``track.gif`` and ``track.json`` (status, seconds, metrics, the first frame's
    ``plausibility`` when given). Returns the paths."""
    with output_run(out_dir, TRACK_OUTPUTS) as out:
        return _write_track_outputs(result, out, metrics, gif_every, gif_px, fps, plausibility)


#: What :func:`write_track_outputs` writes: a rerun deletes the older run's (a longer sequence's
#: extra frames, a synthetic run's error plot) first.
TRACK_OUTPUTS = ("frame_[0-9][0-9][0-9][0-9].ply", "frame_[0-9][0-9][0-9][0-9][0-9].ply", "errors.png", "track.gif", "track.json")


def _write_track_outputs(result: TrackResult, out: Path, metrics: dict | None, gif_every: int, gif_px: int, fps: float,
                         plausibility: dict | None = None) -> dict[str, Path]:  # fmt: skip
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from bodycorr.geometry.io import save_mesh

    paths: dict[str, Path] = {}
    for t in range(len(result.vertices)):
        save_mesh(result.mesh(t), out / f"frame_{t:04d}.ply")
    paths["meshes"] = out
    T = len(result.vertices)
    if metrics is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        x = np.arange(T)
        ax.plot(x, [np.nan if v is None else v for v in metrics["per_frame_cm"]], "o-", label="all vertices")
        ax.plot(x, [np.nan if v is None else v for v in metrics["per_frame_visible_cm"]], "s-", label="visible vertices")
        for t in np.flatnonzero(~result.ok):
            ax.axvline(t, color="r", alpha=0.3)
        ax.set_xlabel("frame")
        ax.set_ylabel("mean vertex error (cm)")
        ax.set_title("tracking error (red: skipped frames)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "errors.png")
        plt.close(fig)
        paths["errors"] = out / "errors.png"
    # side view in camera axes: horizontal = depth (z), vertical = up (-y)
    cam = result.camera
    frames = []
    all_pts = []
    for t in range(0, T, max(1, gif_every)):
        pts = cam.backproject(result.depths[t])[result.depths[t] > 0]
        all_pts.append((t, cam.world_to_camera(pts) if len(pts) else np.zeros((0, 3)), cam.world_to_camera(result.vertices[t])))
    stack = np.concatenate([np.concatenate([p, v]) for _, p, v in all_pts])
    lo, hi = np.percentile(stack, 1, 0), np.percentile(stack, 99, 0)
    half = 0.55 * max(hi[2] - lo[2], hi[1] - lo[1]) + 0.05
    cz, cy = 0.5 * (lo[2] + hi[2]), 0.5 * (lo[1] + hi[1])
    for t, p, v in all_pts:
        fig = plt.figure(figsize=(gif_px / 80, gif_px / 80), dpi=80)
        ax = fig.add_axes([0, 0, 1, 0.93])
        if len(p):
            sub = p[:: max(1, len(p) // 3000)]
            ax.scatter(sub[:, 2], -sub[:, 1], s=0.8, c="0.65", lw=0)
        vs = v[:: max(1, len(v) // 2500)]
        ax.scatter(vs[:, 2], -vs[:, 1], s=1.5, c="tab:red" if result.status[t] != "ok" else "tab:blue", lw=0)
        ax.set_xlim(cz - half, cz + half)
        ax.set_ylim(-cy - half, -cy + half)
        ax.set_aspect("equal")
        ax.axis("off")
        fig.suptitle(f"frame {t}: {result.status[t][:30]}", fontsize=7)
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).convert("P", palette=Image.ADAPTIVE))
        plt.close(fig)
    frames[0].save(out / "track.gif", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    paths["gif"] = out / "track.gif"
    summary = {"status": list(result.status), "seconds": [round(float(s), 3) for s in result.seconds],
               "num_matches": result.num_matches.tolist(), "metrics": metrics, "plausibility": plausibility}  # fmt: skip
    (out / "track.json").write_text(json.dumps(summary, indent=1, default=lambda o: None if o != o else o))
    paths["json"] = out / "track.json"
    return paths


# ------------------------------------------------------------------------------------------------
# Input folder
# ------------------------------------------------------------------------------------------------


def load_depth_sequence(folder: str | Path, frames: int | None = None, intrinsics: str | Path | None = None) -> tuple[np.ndarray, Camera]:
    """Depth images (``.png`` mm / ``.npy`` m) of a folder, sorted by name, and an identity-pose camera."""
    from bodycorr.geometry.camera import load_intrinsics
    from bodycorr.geometry.depth_io import load_depth

    p = Path(folder)
    if not p.is_dir():
        raise BodycorrError(f"depth sequence {p}: not a folder. Give a folder of depth images or the word 'synthetic'.")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".npy"))
    if frames:
        files = files[:frames]
    if not files:
        raise BodycorrError(f"depth sequence {p}: no .png or .npy depth images. Add depth frames (PNG mm, NPY m).")
    ds = [load_depth(f) for f in files]
    shapes = {d.shape for d in ds}
    if len(shapes) != 1:
        raise BodycorrError(f"depth sequence {p}: frames have different sizes {sorted(shapes)}. Give one size.")
    h, w = ds[0].shape
    k = load_intrinsics(intrinsics) if intrinsics else Intrinsics.kinect_v2().scaled((w, h))
    if (k.height, k.width) != (h, w):
        raise BodycorrError(f"intrinsics {intrinsics}: {k.width}x{k.height}, but the depth images are {w}x{h}. Give matching intrinsics.")
    return np.stack(ds), Camera(k, np.eye(3), np.zeros(3))


def parse_phenotypes(text: str | None) -> np.ndarray | None:
    """``"0.5,0.5,0.5,0.5,0.5,0.5"`` (gender, age, muscle, weight, height, proportions, each in [0, 1]) -> (6,); None -> None."""
    if text is None:
        return None
    try:
        ph = np.array([float(x) for x in text.split(",")])
    except ValueError:
        ph = np.zeros(0)
    if ph.shape != (6,) or not ((ph >= 0) & (ph <= 1)).all():
        raise BodycorrError(f"--phenotypes {text!r}: give 6 comma-separated values in [0, 1] (gender, age, muscle, weight, height, proportions).")
    return ph


def _check_first_frame(depths: np.ndarray, camera: Camera, extractor, strict: bool):
    """Plausibility of the sequence's first frame with enough data (None when no frame has any)."""
    from bodycorr.matching.describe import describe
    from bodycorr.matching.inputs import ScanInput
    from bodycorr.matching.plausibility import check_person

    for t, d in enumerate(depths):
        if _frame_problem(d, 50) is None:
            pts = camera.backproject(d)[d > 0]
            scan = ScanInput(kind="depth", points=pts, name=f"frame {t}", depth=d, camera=camera)
            return check_person(describe(scan, extractor), extractor, strict)
    return None


def run_track(seq: str, out: str | Path, model: str | None = None, frames: int | None = None,
              intrinsics: str | Path | None = None, config: TrackConfig = TrackConfig(), seed: int = 0,
              phenotypes: str | None = None, progress: bool = False, strict: bool = False) -> str:  # fmt: skip
    """The ``bodycorr track`` command: returns a short report.

    The first frame with data is checked for looking like a person
    (:func:`~bodycorr.matching.plausibility.check_person`) before any tracking: a warning on
    stderr, or with ``strict`` a refusal; its score goes into ``track.json``.

    ``progress``: progress lines and per-frame bars on stderr (the command turns it on; off by
    default for library callers).

    ``phenotypes``: the person's shape as 6 comma-separated values, ``"truth"`` (synthetic
    sequences: the person's own), or None (estimated from the sequence when a body model deforms).
    """
    from bodycorr.body.template import get_template
    from bodycorr.matching.pipeline import load_extractor

    if phenotypes == "truth" and seq != "synthetic":
        raise BodycorrError("--phenotypes truth: only a synthetic sequence knows its person's shape. Give 6 values or leave it out.")
    ph = None if phenotypes == "truth" else parse_phenotypes(phenotypes)
    check_output_dir(out)  # before the frames are tracked, not after
    truth, true_ph = None, None
    if seq == "synthetic":
        _note(progress, f"rendering {frames or 20} synthetic frames")
        depths, camera, truth, true_ph = synthetic_sequence(frames or 20, seed=seed, noise=True)
        ph = true_ph if phenotypes == "truth" else ph
    else:
        depths, camera = load_depth_sequence(seq, frames, intrinsics)
    _note(progress, f"{len(depths)} frames; loading the model")
    extractor = load_extractor(model)
    plaus = _check_first_frame(depths, camera, extractor, strict)
    template = get_template()
    res = track(depths, camera, template.mesh, extractor, config, symmetry=template.symmetry, body=template, phenotypes=ph,
                progress=bool(progress))  # fmt: skip
    metrics = evaluate_track(res, truth) if truth is not None else None
    _note(progress, f"writing outputs to {out}")
    write_track_outputs(res, out, metrics, plausibility=None if plaus is None else plaus.to_json())
    ok = int(res.ok.sum())
    lines = [f"tracked {ok}/{len(res.status)} frames ({config.model}), {np.median(res.seconds):.2f} s/frame median, "
             f"{np.mean(res.seconds):.2f} mean; outputs in {out}"]  # fmt: skip
    if res.phenotypes is not None:
        how = "given" if ph is not None else "estimated"
        lines.append(f"  shape ({how}): " + ", ".join(f"{k} {v:.2f}" for k, v in zip(PHENOTYPES, res.phenotypes)))
        if true_ph is not None and ph is None:
            from bodycorr.body.anny_model import get_body_model

            rest = get_body_model()(np.stack([true_ph, res.phenotypes])).vertices
            rest = rest - rest.mean(1, keepdims=True)  # Anny's rest body sits differently per shape; the fit places it anyway
            lines.append(f"  shape error against the truth: {np.linalg.norm(rest[1] - rest[0], axis=1).mean() * 100:.1f} cm mean vertex distance at rest, centroids aligned")
    for t, s in enumerate(res.status):
        if s != "ok":
            lines.append(f"  frame {t}: {s}")
    if metrics is not None:
        lines.append(f"  error: mean {metrics['mean_cm']:.1f} cm (all vertices), {metrics['visible_mean_cm']:.1f} cm (visible); "
                     f"drift {metrics['slope_cm_per_frame']:+.3f} cm/frame; static jitter {metrics['static_jitter_mm']:.1f} mm")  # fmt: skip
    return "\n".join(lines)


__all__ = ["TrackConfig", "TrackResult", "synthetic_sequence", "track", "evaluate_track", "write_track_outputs",
           "learned_correspondences", "visible_vertices", "load_depth_sequence", "parse_phenotypes", "run_track"]  # fmt: skip

