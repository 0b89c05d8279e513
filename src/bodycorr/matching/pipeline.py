"""The main job: describe two scans with the network and write their dense correspondences."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import atomic_path, ensure_dir, save_npz_atomic, write_json_atomic, write_text_atomic
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.correspond import Correspondences, match
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import ScanInput, load_scan
from bodycorr.matching.up import estimate_up, parse_up
from bodycorr.models.io import load_model_file, read_torch_file

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "depth-unet.pt"


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
        refine: "none" (nearest neighbours in descriptor space); "register": deform the source
            mesh onto the target from the matches and read the map off the aligned surfaces (Wei
            et al.'s refinement; the source must be a mesh); "template": register the body
            template onto both scans (each match may pull its template vertex or its mirror) and
            map through the two fitted templates, which are written as PLY files too; "body": the
            same through Anny fitted onto both scans (bone rotations and phenotypes, mirror-aware,
            then a deformation graph for the detail: :mod:`bodycorr.body.articulated`).
    """

    model: str | None = None
    views: int = 48
    up: str = "auto"
    units: str = "auto"
    intrinsics: str | None = None
    device: str = "cpu"
    refine: Literal["none", "register", "template", "body"] = "none"


@dataclass(frozen=True, eq=False)
class Described:
    """A scan with a descriptor per point.

    Attributes:
        scan: the input.
        points: (N, 3) metres (mesh vertices, cloud points, valid depth pixels).
        descriptors: (N, D) unit descriptors.
        consistency: (N,) multi-view agreement in [0, 1] (1 for depth pixels).
        up: (3,) up axis used.
        seconds: time spent.
    """

    scan: ScanInput
    points: np.ndarray
    descriptors: np.ndarray
    consistency: np.ndarray
    up: np.ndarray
    seconds: float
    pixels: np.ndarray | None = None


@functools.lru_cache(maxsize=4)
def load_extractor(model: str | None = None, device: str = "cpu") -> DescriptorExtractor:
    """A :class:`DescriptorExtractor` for a model file (the shipped one by default)."""
    path = Path(model) if model else DEFAULT_MODEL
    if not model and not path.exists():
        raise BodycorrError(f"no shipped model at {path}. Train one with 'bodycorr train' and pass --model runs/NAME/model.pt.")
    net = load_model_file(path, device)
    meta = read_torch_file(path, "model file").get("meta", {})
    return DescriptorExtractor(net, size=int(meta.get("size", 128)), device=device)


def describe(scan: ScanInput, extractor: DescriptorExtractor, views: int = 48, up: str = "auto") -> Described:
    """Descriptors for every point of a scan (per pixel for depth maps, multi-view for meshes/clouds)."""
    t0 = time.perf_counter()
    if scan.kind == "depth":
        pd = extractor.depth_map(scan.depth, scan.camera, scan.name)
        upv = -scan.camera.R[1]
        return Described(scan, pd.points, pd.descriptors, np.ones(len(pd.points), np.float32), upv, time.perf_counter() - t0, pd.pixels)
    upv = parse_up(up) if up != "auto" else estimate_up(scan, extractor)
    vd = extractor.mesh(scan.mesh, views, upv) if scan.kind == "mesh" else extractor.point_cloud(scan.cloud, views, upv)
    return Described(scan, scan.points, vd.descriptors, vd.consistency, upv, time.perf_counter() - t0)


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Correspondences from ``source`` to ``target`` plus timings (and the fitted templates with
    ``refine="template"`` or ``"body"``)."""

    source: Described
    target: Described
    correspondences: Correspondences
    match_seconds: float
    refine: str = "none"
    fits: tuple | None = None

    def summary(self) -> dict:
        c = self.correspondences
        return {
            "source": self.source.scan.name, "source_kind": self.source.scan.kind, "source_points": len(self.source.points),
            "target": self.target.scan.name, "target_kind": self.target.scan.kind, "target_points": len(self.target.points),
            "mutual_share": float(c.mutual.mean()), "mean_confidence": float(c.confidence.mean()),
            "source_up": [round(float(v), 4) for v in self.source.up], "target_up": [round(float(v), 4) for v in self.target.up],
            "seconds": {"describe_source": self.source.seconds, "describe_target": self.target.seconds, "match": self.match_seconds},
            "refine": self.refine,
        }  # fmt: skip


def match_scans(source: ScanInput, target: ScanInput, extractor: DescriptorExtractor, views: int = 48, up: str = "auto",
                refine: str = "none") -> MatchResult:  # fmt: skip
    """Describe both scans and match them (``refine``: see :class:`MatchOptions`)."""
    if refine not in ("none", "register", "template", "body"):
        raise BodycorrError(f"match: refine {refine!r}; use 'none', 'register', 'template' or 'body'.")
    if refine == "register" and source.kind != "mesh":
        raise BodycorrError(f"{source.name}: refine='register' deforms the source, which must be a mesh (got a {source.kind}). Use refine='template'.")
    a = describe(source, extractor, views, up)
    b = describe(target, extractor, views, up)
    t0 = time.perf_counter()
    c = match(a.descriptors, b.descriptors, a.consistency, source_points=a.points)
    fits = None
    if refine == "register":
        from bodycorr.geometry.mesh import PointCloud
        from bodycorr.geometry.nonrigid import refine_correspondences

        # driven by distance x consistency weights, as the harness's refine: (weighing by the round
        # trip instead flags gross errors better but registered worse: 5 inter pairs 16.6 -> 19.9 cm,
        # 5 intra 27.1 -> 27.2: shipped model, the first 5 synthetic-v1 full-full pairs, clean)
        seed = match(a.descriptors, b.descriptors, a.consistency)
        c = refine_correspondences(source.mesh, target.mesh if target.kind == "mesh" else PointCloud(b.points, name=target.name), seed)
    elif refine in ("template", "body"):
        c, fits = _via_template(a, b, extractor, views, model="graph" if refine == "template" else "body+graph")
    return MatchResult(a, b, c, time.perf_counter() - t0, refine, fits)


def depth_silhouette(scan: ScanInput):
    """The :class:`~bodycorr.geometry.silhouette.DepthSilhouette` of a depth-map scan (its frame and
    camera, for the body fit), else None."""
    if scan.kind != "depth" or scan.depth is None or scan.camera is None:
        return None
    from bodycorr.geometry.silhouette import DepthSilhouette

    return DepthSilhouette.from_depth(scan.depth, scan.camera)  # NaN and 0 both read as no data


def _via_template(a: Described, b: Described, extractor: DescriptorExtractor, views: int, sigma: float = 0.02, model: str = "graph"):
    """Correspondences through the template fitted onto both scans (``model``: see
    :class:`~bodycorr.matching.fit.FitConfig`); distance = how far (m) the target point lies from
    the template point it stands for, confidence exp(−(d/σ)²)."""
    from bodycorr.body.template import get_template
    from bodycorr.matching.fit import FitConfig, fit_template, map_via_template

    t = get_template()
    tdesc = extractor.mesh(t.mesh, views).descriptors
    fits = tuple(fit_template(d.points, d.descriptors, d.consistency, t.mesh, tdesc, t.symmetry,
                              target=d.scan.mesh if d.scan.kind == "mesh" else None, config=FitConfig(model=model), body=t,
                              silhouette=depth_silhouette(d.scan))
                 for d in (a, b))  # fmt: skip
    fwd, d = map_via_template(a.points, fits[0], b.points, fits[1])
    back, _ = map_via_template(b.points, fits[1], a.points, fits[0])
    corr = Correspondences(target=fwd, distance=d.astype(np.float32), confidence=np.exp(-((d / sigma) ** 2)).astype(np.float32),
                           mutual=back[fwd] == np.arange(len(fwd)),
                           cycle=np.linalg.norm(a.points[back[fwd]] - a.points, axis=1).astype(np.float32))  # fmt: skip
    return corr, fits


def write_outputs(result: MatchResult, out: str | Path, extra: dict | None = None) -> dict:
    """Write ``correspondences.npz``, ``correspondences.txt``, ``matches.png`` and ``summary.json``."""
    out = ensure_dir(out)
    c = result.correspondences
    save_npz_atomic(out / "correspondences.npz", source_points=result.source.points.astype(np.float32),
                    target_points=result.target.points.astype(np.float32), target_index=c.target,
                    confidence=c.confidence, mutual=c.mutual, descriptor_distance=c.distance,
                    **({"cycle_m": c.cycle} if c.cycle is not None else {}),
                    **({"source_pixels": result.source.pixels} if result.source.pixels is not None else {}))  # fmt: skip
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
            save_mesh(Mesh(fit.vertices, faces, name=f"template on the {side}"), out / f"{side}_template.ply")
    summary = {**result.summary(), **(extra or {})}
    write_json_atomic(out / "summary.json", summary)
    return summary


def match_files(source: str, target: str, out: str, options: MatchOptions = MatchOptions()) -> str:
    """CLI entry: load, describe, match, write; returns a one-paragraph report."""
    extractor = load_extractor(options.model, options.device)
    a = load_scan(source, options.units, options.intrinsics)
    b = load_scan(target, options.units, options.intrinsics)
    res = match_scans(a, b, extractor, options.views, options.up, options.refine)
    s = write_outputs(res, out)
    return (f"matched {s['source_points']} {s['source_kind']} points of {source} to {s['target_kind']} {target} "
            f"({s['mutual_share'] * 100:.0f} % mutual); outputs in {out}")  # fmt: skip
