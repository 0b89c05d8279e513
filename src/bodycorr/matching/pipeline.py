"""The main job: describe two scans with the network and write their dense correspondences."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import check_output_dir, output_run, save_npz_atomic, write_json_atomic, write_text_atomic
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.correspond import Correspondences, match
from bodycorr.matching.describe import DEFAULT_MODEL, WEIGHTS_DIR, Described, describe, load_extractor  # noqa: F401 (the public API)
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import ScanInput, load_scan
from bodycorr.matching.plausibility import check_person
from bodycorr.matching.refiners import RefineContext, get_refiner
from bodycorr.matching.refiners.template import depth_silhouette  # noqa: F401 (the public API)

DEFAULT_REFINE = "auto"
#: What :func:`write_outputs` writes: a rerun into the folder first deletes these (the fitted
#: templates too when this run fits none), so two runs never mix.
MATCH_OUTPUTS = ("correspondences.npz", "correspondences.txt", "matches.png", "source_template.ply", "target_template.ply", "summary.json")


@dataclass(frozen=True)
class MatchOptions:
    """Options of :func:`match_files`.

    Attributes:
        model: model file; None = the shipped model.
        views: renders per mesh or point cloud (Wei et al. use 144).
        up: "auto" or an axis ("z", "-y", ...) for meshes and clouds (depth maps use their camera).
            "auto" judges ± the three principal axes by describing the scan around each (8 views)
            and matching it to the template (:mod:`bodycorr.matching.up`): about 2.5 s more per
            input on 2 CPU cores, plus about 1 s once per process to describe the template.
        units: units of mesh and cloud files ("auto" detects from a body's size).
        intrinsics: intrinsics JSON for depth images (default Kinect v2).
        refine: a registered refiner (:mod:`bodycorr.matching.refiners`): "auto" (default:
            "spectral" when both scans are complete meshes or clouds, "body" when either is
            partial), "none" (nearest neighbours in descriptor space), "spectral" (ZoomOut anchored
            to the descriptors, flip-tested), "template" (the body template registered onto both
            scans, mirror-aware; the fitted templates are written as PLY files), "body" (Anny's
            pose and shape fitted onto both, then a deformation graph) or "register" (the source
            mesh deformed onto the target: Wei et al.'s refinement; the source must be a mesh).
    """

    model: str | None = None
    views: int = 48
    up: str = "auto"
    units: str = "auto"
    intrinsics: str | None = None
    device: str = "cpu"
    refine: str = DEFAULT_REFINE
    strict: bool = False


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Correspondences from ``source`` to ``target``, how they were refined, and timings (and the
    fitted templates with the template and body refiners).

    Attributes:
        match_seconds: the plain nearest-neighbour step.
        refine: the refiner asked for; refined_by: the one that made the map (``auto`` chooses).
        refine_info: what the refiner decided (:attr:`~bodycorr.matching.refiners.Refined.info`).
        refine_seconds: {"prepare": per-scan refiner work (both scans), "pair": the pair step}.
        plausibility: (source, target) :class:`~bodycorr.matching.plausibility.Plausibility`: how
            much each looks like a person; the map's confidences are already multiplied by the
            lower :attr:`~bodycorr.matching.plausibility.Plausibility.confidence_factor`.
    """

    source: Described
    target: Described
    correspondences: Correspondences
    match_seconds: float
    refine: str = "none"
    fits: tuple | None = None
    refined_by: str = "none"
    refine_info: dict = field(default_factory=dict)
    refine_seconds: dict = field(default_factory=dict)
    plausibility: tuple | None = None

    def summary(self) -> dict:
        c = self.correspondences
        return {
            "source": self.source.scan.name, "source_kind": self.source.scan.kind, "source_points": len(self.source.points),
            "target": self.target.scan.name, "target_kind": self.target.scan.kind, "target_points": len(self.target.points),
            "mutual_share": float(c.mutual.mean()), "mean_confidence": float(c.confidence.mean()),
            "source_up": [round(float(v), 4) for v in self.source.up], "target_up": [round(float(v), 4) for v in self.target.up],
            "seconds": {"describe_source": self.source.seconds, "describe_target": self.target.seconds, "match": self.match_seconds,
                        **{f"refine_{k}": v for k, v in self.refine_seconds.items()}},
            "refine": self.refine, "refined_by": self.refined_by, "refine_info": self.refine_info,
            "source_info": dict(self.source.scan.info), "target_info": dict(self.target.scan.info),
            **({"plausibility": {"source": self.plausibility[0].to_json(), "target": self.plausibility[1].to_json()}}
               if self.plausibility is not None else {}),
        }  # fmt: skip


def match_scans(source: ScanInput, target: ScanInput, extractor: DescriptorExtractor, views: int = 48, up: str = "auto",
                refine: str = DEFAULT_REFINE, strict: bool = False) -> MatchResult:  # fmt: skip
    """Describe both scans, match them and refine the map (``refine``: a registered refiner, see
    :class:`MatchOptions`).

    Each scan's :func:`~bodycorr.matching.plausibility.person_plausibility` is judged after
    describing it: ``strict`` refuses a non-person (:class:`BodycorrError`), otherwise a warning
    line goes to stderr; after the refinement every confidence is multiplied by the lower of the
    two :attr:`~bodycorr.matching.plausibility.Plausibility.confidence_factor` (1 for people,
    ``score / 0.5`` below), so a sphere's map no longer reports body-like confidence."""
    refiner = get_refiner(refine)  # an unknown name fails here, before any work
    if refine == "register" and source.kind != "mesh":
        raise BodycorrError(f"{source.name}: refine='register' deforms the source, which must be a mesh (got a {source.kind}). Use refine='auto' or 'body'.")
    a = describe(source, extractor, views, up)
    source_plaus = check_person(a, extractor, strict)  # a non-person source is refused before the target is described
    b = describe(target, extractor, views, up)
    plaus = (source_plaus, check_person(b, extractor, strict))
    t0 = time.perf_counter()
    c = match(a.descriptors, b.descriptors, a.consistency, source_points=a.points)
    t_match = time.perf_counter() - t0
    ctx = RefineContext(extractor, views)
    pa, pb = refiner.prepare(a, ctx), refiner.prepare(b, ctx)
    r = refiner.refine(pa, pb, c, ctx)
    seconds = {"prepare": round(pa.seconds + pb.seconds, 3), "pair": round(r.seconds, 3)}
    factor = min(p.confidence_factor for p in plaus)
    corr = r.correspondences
    if factor < 1.0:
        corr = dataclasses.replace(corr, confidence=(corr.confidence * factor).astype(np.float32))
    return MatchResult(a, b, corr, t_match, refine, r.fits, r.refiner, r.info, seconds, plaus)


def write_outputs(result: MatchResult, out: str | Path, extra: dict | None = None, arrays: dict | None = None) -> dict:
    """Write ``correspondences.npz``, ``correspondences.txt``, ``matches.png`` and ``summary.json``
    (and ``source_template.ply`` / ``target_template.ply`` when the refiner fitted templates) as one
    run (:func:`~bodycorr.common.fileio.output_run`: an older run's files of these kinds are deleted first).

    The npz also holds ``source_faces`` / ``target_faces`` ((F, 3) int32) for a mesh side (its
    points are its vertices), and ``arrays`` (e.g. the demo's per-source-point ``error_cm``)."""
    with output_run(out, MATCH_OUTPUTS) as folder:
        return _write_outputs(result, folder, extra, arrays)


def _write_outputs(result: MatchResult, out: Path, extra: dict | None, arrays: dict | None) -> dict:
    c = result.correspondences
    scan_faces = {f"{side}_faces": d.scan.mesh.faces.astype(np.int32) for side, d in (("source", result.source), ("target", result.target))
                  if d.scan.kind == "mesh" and d.scan.mesh is not None and d.scan.mesh.num_vertices == len(d.points)}  # fmt: skip
    save_npz_atomic(out / "correspondences.npz", source_points=result.source.points.astype(np.float32),
                    target_points=result.target.points.astype(np.float32), target_index=c.target,
                    confidence=c.confidence, mutual=c.mutual, descriptor_distance=c.distance,
                    **({"cycle_m": c.cycle} if c.cycle is not None else {}),
                    **({"source_pixels": result.source.pixels} if result.source.pixels is not None else {}), **scan_faces, **(arrays or {}))  # fmt: skip
    lines = ["# source_index target_index confidence mutual"]
    lines += [f"{i} {j} {w:.4f} {int(m)}" for i, (j, w, m) in enumerate(zip(c.target, c.confidence, c.mutual))]
    write_text_atomic(out / "correspondences.txt", "\n".join(lines) + "\n")
    from bodycorr.matching.visualize import side_by_side

    side_by_side(result, out / "matches.png")
    if result.fits is not None:
        from bodycorr.body.template import get_template
        from bodycorr.geometry.io import save_mesh

        faces = get_template().mesh.faces
        for side, fit in zip(("source", "target"), result.fits):
            if fit is None:
                continue
            save_mesh(Mesh(fit.vertices, faces, name=f"template on the {side}"), out / f"{side}_template.ply")
    summary = {**result.summary(), **(extra or {})}
    write_json_atomic(out / "summary.json", summary)
    return summary


def match_files(source: str, target: str, out: str, options: MatchOptions = MatchOptions()) -> str:
    """CLI entry: check the output folder, load both inputs, then the model; describe, match,
    write; returns a one-paragraph report."""
    check_output_dir(out)  # a wrong folder fails before the work, not after it
    a = load_scan(source, options.units, options.intrinsics)
    b = load_scan(target, options.units, options.intrinsics)
    extractor = load_extractor(options.model, options.device)
    res = match_scans(a, b, extractor, options.views, options.up, options.refine, options.strict)
    s = write_outputs(res, out)
    notes = "".join(f"; {d.scan.name}: {d.scan.info['triangulated']} polygon faces fan-triangulated"
                    for d in (res.source, res.target) if d.scan.info.get("triangulated"))  # fmt: skip
    return (f"matched {s['source_points']} {s['source_kind']} points of {source} to {s['target_kind']} {target} "
            f"({s['mutual_share'] * 100:.0f} % mutual){notes}; outputs in {out}")  # fmt: skip
