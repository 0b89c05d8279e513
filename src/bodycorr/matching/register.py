"""Registration: the body template fitted onto one scan and written in the template's topology (vertex i is the same body point on every registration)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import check_output_dir, output_run, save_npz_atomic, write_json_atomic
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.describe import Described, describe, load_extractor
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import ScanInput, load_scan


@dataclass(frozen=True)
class RegisterOptions:
    """Options of :func:`register_file`.

    Attributes:
        model: descriptor model file (None: the shipped one); views, up, units, intrinsics: as
            :class:`~bodycorr.matching.pipeline.MatchOptions`.
        fit: what deforms (:attr:`~bodycorr.matching.fit.FitConfig.model`): ``body+graph`` (Anny's
            pose and shape, then a deformation graph for the detail; default) or ``body`` (Anny alone:
            every vertex exactly on an Anny body).
        strict: refuse a scan that does not look like a person (see :class:`~bodycorr.matching.pipeline.MatchOptions`).
    """

    model: str | None = None
    views: int = 48
    up: str = "auto"
    units: str = "auto"
    intrinsics: str | None = None
    fit: str = "body+graph"
    strict: bool = False


@dataclass(frozen=True, eq=False)
class Registration:
    """The template registered onto a scan.

    Attributes:
        scan: the described scan.
        mesh: the registration: (Vt, 3) vertices on the scan in the template's faces.
        body: the Anny fit (:class:`~bodycorr.body.articulated.PoseFit`: pose, phenotypes, placement).
        face, bary: (N,) template face and (N, 3) barycentrics of each scan point (its closest point on the registration).
        residual: (N,) metres from each scan point to the registration.
        seconds: {"describe", "fit", "closest"}.
        plausibility: how much the scan looks like a person (:mod:`bodycorr.matching.plausibility`), or None.
    """

    scan: Described
    mesh: Mesh
    body: object
    face: np.ndarray
    bary: np.ndarray
    residual: np.ndarray
    seconds: dict
    plausibility: object = None


def register_scan(scan: ScanInput, extractor: DescriptorExtractor, views: int = 48, up: str = "auto", fit: str = "body+graph",
                  strict: bool = False) -> Registration:  # fmt: skip
    """Describe ``scan``, judge whether it looks like a person (``strict``: refuse one that does not,
    else warn on stderr: :func:`~bodycorr.matching.plausibility.check_person`), fit the template onto it
    (mirror-aware, :func:`~bodycorr.matching.fit.fit_template`) and locate every scan point on the registration."""
    from bodycorr.geometry.closest import SurfaceLocator
    from bodycorr.matching.fit import FitConfig, fit_template
    from bodycorr.matching.plausibility import check_person
    from bodycorr.matching.refiners import RefineContext
    from bodycorr.matching.refiners.template import depth_silhouette

    if fit not in ("body", "body+graph"):
        raise BodycorrError(f"register: fit must be 'body' or 'body+graph', got {fit!r}.")
    d = describe(scan, extractor, views, up)
    plaus = check_person(d, extractor, strict)
    t0 = time.perf_counter()
    t, tdesc = RefineContext(extractor, views).template()
    f = fit_template(d.points, d.descriptors, d.consistency, t.mesh, tdesc, t.symmetry,
                     target=scan.mesh if scan.kind == "mesh" else None, config=FitConfig(model=fit), body=t,
                     silhouette=depth_silhouette(scan))  # fmt: skip
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = SurfaceLocator(f.vertices, t.mesh.faces).query(d.points)
    mesh = Mesh(f.vertices, t.mesh.faces, name=f"template registered onto {scan.name}")
    return Registration(d, mesh, f.body, got.face, got.bary, got.distance,
                        {"describe": round(d.seconds, 3), "fit": round(t_fit, 3), "closest": round(time.perf_counter() - t0, 3)}, plaus)  # fmt: skip


def body_json(body) -> dict:
    """The Anny fit as JSON: phenotypes by name, each bone's rotation (axis-angle, degrees, Anny's
    ``local-ref`` deltas), and the body's placement in the scan's frame."""
    from scipy.spatial.transform import Rotation

    from bodycorr.body.anny_model import PHENOTYPES, get_body_model

    bones = get_body_model().bone_labels
    rot = Rotation.from_matrix(np.asarray(body.pose)[:, :3, :3]).as_rotvec(degrees=True)
    return {
        "phenotypes": {name: round(float(v), 4) for name, v in zip(PHENOTYPES, body.phenotypes)},
        "bone_rotations_deg": {name: [round(float(x), 3) for x in r] for name, r in zip(bones, rot) if np.abs(r).max() > 1e-6},
        "rotation": np.asarray(body.rotation).round(6).tolist(), "translation_m": np.asarray(body.translation).round(6).tolist(),
        "scale": round(float(body.scale), 6), "energy": round(float(body.energy), 6),
        "parameterisation": "Anny local-ref: each bone's delta rotation relative to rest, world-aligned axes, parent to child",
    }  # fmt: skip


def plot_registration(reg: Registration, path: str | Path, max_cm: float = 3.0) -> Path:
    """PNG: the scan coloured by its distance to the registration (colour bar, cm) beside the
    registration coloured by body part, front and side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bodycorr.body.template import get_template
    from bodycorr.common.fileio import atomic_path

    up = reg.scan.up / np.linalg.norm(reg.scan.up)
    pts, reg_v = reg.scan.points, reg.mesh.vertices
    c = reg_v.mean(0)
    flat = (reg_v - c) - np.outer((reg_v - c) @ up, up)
    right = np.linalg.svd(flat[::5], full_matrices=False)[2][0]
    right = right - (right @ up) * up
    right /= np.linalg.norm(right)
    depth = np.cross(right, up)
    parts = get_template().parts
    fig, axes = plt.subplots(1, 4, figsize=(14, 5.2))
    res_cm = reg.residual * 100
    for k, (h, name) in enumerate(((right, "front"), (depth, "side"))):
        for j, (x, col, title) in enumerate(((pts, res_cm, f"scan, distance to the registration ({name})"),
                                             (reg_v, parts, f"registration, body parts ({name})"))):  # fmt: skip
            ax = axes[2 * k + j]
            d = (x - c) @ (np.cross(h, up))
            order = np.argsort(d)[::-1]
            kw = dict(cmap="magma_r", vmin=0, vmax=max_cm) if j == 0 else dict(cmap="tab20")
            sc = ax.scatter(((x - c) @ h)[order], ((x - c) @ up)[order], c=col[order], s=1.2, linewidths=0, **kw)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(title, fontsize=8)
            if j == 0 and k == 0:
                cb = fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02)
                cb.set_label(f"cm (clipped at {max_cm:g})", fontsize=8)
    fig.suptitle(f"mean distance {res_cm.mean():.2f} cm, median {np.median(res_cm):.2f} cm, 95 % within {np.percentile(res_cm, 95):.2f} cm", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def _scan_topology(d: Described) -> dict:
    """``scan_faces`` (F, 3) int32 of a mesh scan (its points are its vertices) or ``scan_pixels`` (N, 2) of a depth map."""
    if d.scan.kind == "mesh" and d.scan.mesh is not None and d.scan.mesh.num_vertices == len(d.points):
        return {"scan_faces": d.scan.mesh.faces.astype(np.int32)}
    return {"scan_pixels": d.pixels.astype(np.int32)} if d.pixels is not None else {}


def write_registration(reg: Registration, out: str | Path) -> dict:
    """Write ``registration.ply`` (template topology), ``body.json``, ``scan_on_template.npz`` (per
    scan point: template face, barycentrics, nearest template vertex, residual; the scan's faces or
    pixels when it has them), ``fit.png`` and
    ``summary.json`` (last: a folder without it is incomplete)."""
    with output_run(out, REGISTER_OUTPUTS) as folder:
        return _write_registration(reg, folder)


#: What :func:`write_registration` writes (a rerun deletes the older run's first).
REGISTER_OUTPUTS = ("registration.ply", "body.json", "scan_on_template.npz", "fit.png", "summary.json")


def _write_registration(reg: Registration, out: Path) -> dict:
    from bodycorr.geometry.io import save_mesh

    save_mesh(reg.mesh, out / "registration.ply")
    tf = reg.mesh.faces[reg.face]
    vertex = tf[np.arange(len(tf)), np.argmax(reg.bary, axis=1)]
    save_npz_atomic(out / "scan_on_template.npz", points=reg.scan.points.astype(np.float32), face=reg.face.astype(np.int32),
                    bary=reg.bary.astype(np.float32), vertex=vertex.astype(np.int32), residual_m=reg.residual.astype(np.float32),
                    **_scan_topology(reg.scan))  # fmt: skip
    body = body_json(reg.body) if reg.body is not None else None
    if body is not None:
        write_json_atomic(out / "body.json", body)
    plot_registration(reg, out / "fit.png")
    r = reg.residual * 100
    summary = {"scan": reg.scan.scan.name, "scan_kind": reg.scan.scan.kind, "scan_points": len(reg.scan.points),
               "template_vertices": reg.mesh.num_vertices, "residual_cm": {"mean": float(r.mean()), "median": float(np.median(r)),
               "p95": float(np.percentile(r, 95)), "max": float(r.max())}, "phenotypes": body["phenotypes"] if body else None,
               "seconds": reg.seconds, "scan_info": dict(reg.scan.scan.info),
               **({"plausibility": reg.plausibility.to_json()} if reg.plausibility is not None else {})}  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    return summary


def register_file(path: str, out: str, options: RegisterOptions = RegisterOptions()) -> str:
    """CLI entry: load, register, write; returns a one-paragraph report."""
    check_output_dir(out)  # an unwritable folder fails before the work
    scan = load_scan(path, options.units, options.intrinsics)
    extractor = load_extractor(options.model)
    reg = register_scan(scan, extractor, options.views, options.up, options.fit, options.strict)
    s = write_registration(reg, out)
    r, t = s["residual_cm"], s["seconds"]
    tri = f", {scan.info['triangulated']} polygon faces fan-triangulated" if scan.info.get("triangulated") else ""
    return (f"registered the template ({s['template_vertices']} vertices) onto {path} ({s['scan_points']} {s['scan_kind']} points{tri}): "
            f"scan-to-registration distance mean {r['mean']:.2f} cm, median {r['median']:.2f} cm, 95 % within {r['p95']:.2f} cm; "
            f"describe {t['describe']:.1f} s, fit {t['fit']:.1f} s; outputs in {out}")  # fmt: skip
