"""The demo: a noisy Kinect-style partial scan of one synthetic person matched to another's full mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.body.template import get_template
from bodycorr.common.fileio import check_output_dir, output_run
from bodycorr.data.remeshed import load_remeshed
from bodycorr.data.suite import load_suite
from bodycorr.geometry.depth_io import save_depth
from bodycorr.geometry.geodesic import all_pairs_geodesics
from bodycorr.geometry.io import save_mesh
from bodycorr.matching.inputs import ScanInput, depth_input
from bodycorr.matching.pipeline import load_extractor, match_scans, write_outputs
from bodycorr.matching.visualize import side_by_side


def run_demo(out: str | Path = "out/demo", seed: int = 0, model: str | None = None, views: int = 48, refine: str = "auto") -> str:
    """Match suite shape A's noisy Kinect view to shape B's full mesh (different people and poses).

    The target is B remeshed on its own (:mod:`bodycorr.data.remeshed`: its own vertices and
    triangles, as a real scan has), so no step can lean on the template's vertex order. Writes the
    usual match outputs plus the inputs (``source_depth.png``, ``target.ply``) and the error against
    the truth (template geodesics between each pixel's true template vertex and the template vertex
    nearest its match's true body point); returns a short report. ``refine``: as ``bodycorr match --refine``
    (default ``auto``: the source is a partial view, so Anny's pose and shape are fitted onto both
    first, about 15 s more; ``none``: the plain map).
    """
    out = check_output_dir(out)  # before the work
    suite = load_suite("synthetic-v1")
    a, b = (int(x) for x in suite.inter[seed % len(suite.inter)])
    extractor = load_extractor(model)
    src = depth_input(suite.depth_noisy[a], suite.camera(a).intrinsics, name=f"{suite.shape_name(a)} (noisy Kinect view)")
    remeshed = load_remeshed(suite.name)
    mesh = remeshed.mesh(b)
    tgt = ScanInput(kind="mesh", points=mesh.vertices, name=f"{suite.shape_name(b)} (full mesh, own triangulation)", mesh=mesh)
    res = match_scans(src, tgt, extractor, views=views, up="z", refine=refine)
    # truth: template vertex of each source pixel; a target vertex's template vertex: the one nearest its canonical point
    truth = suite.vertex_noisy[a][res.source.pixels[:, 0], res.source.pixels[:, 1]]
    ok = truth >= 0
    template = get_template()
    target_vertex = cKDTree(template.mesh.vertices).query(remeshed.canonical(b), workers=1)[1]
    geo = all_pairs_geodesics(template.mesh)
    err = np.full(len(truth), np.nan, dtype=np.float32)
    err[ok] = geo[truth[ok], target_vertex[res.correspondences.target[ok]]].astype(np.float32) * 100
    e = err[ok]
    stats = {"mean_cm": float(e.mean()), "median_cm": float(np.median(e)), "within_5cm_pct": float((e < 5).mean() * 100),
             "within_10cm_pct": float((e < 10).mean() * 100), "gross_20cm_pct": float((e > 20).mean() * 100),
             "pixels_with_truth": int(ok.sum())}  # fmt: skip
    with output_run(out, ("matches_error.png", "source_depth.png", "target.ply")):  # with write_outputs': one run
        summary = write_outputs(res, out, {"error_vs_truth": stats}, arrays={"error_cm": err})  # NaN: no truth at that pixel
        side_by_side(res, out / "matches_error.png", errors_cm=np.nan_to_num(err, nan=0.0))
        save_depth(out / "source_depth.png", suite.depth_noisy[a])
        save_mesh(mesh, out / "target.ply")
    t = summary["seconds"]
    how = "plain nearest neighbours" if refine == "none" else (
        f"refine {refine} -> {res.refined_by}, {t.get('refine_prepare', 0) + t.get('refine_pair', 0):.1f} s")
    return (f"demo: {suite.shape_name(a)} noisy partial view ({len(truth)} px) -> {suite.shape_name(b)} full mesh "
            f"({mesh.num_vertices} vertices, its own triangulation): mean error {stats['mean_cm']:.1f} cm, median {stats['median_cm']:.1f} cm, "
            f"{stats['within_5cm_pct']:.0f} % within 5 cm, {stats['gross_20cm_pct']:.1f} % over 20 cm ({how}); "
            f"descriptors {t['describe_source']:.2f} s + {t['describe_target']:.2f} s, matching {t['match'] * 1000:.0f} ms; "
            f"outputs in {out}")  # fmt: skip


def run_image_demo(out: str | Path = "out/demo", seed: int = 0, model: str | None = None, size: int = 256) -> str:
    """BodyMap on a synthetic test person's RGB image: writes ``image_input.png`` and the
    ``bodycorr image`` outputs under ``out/image``, plus the error against the truth; returns a report."""
    from PIL import Image

    from bodycorr.common.fileio import atomic_path
    from bodycorr.data.images import ImageConfig, ImageViewGenerator
    from bodycorr.matching.image import run_image

    out = check_output_dir(out)
    gen = ImageViewGenerator(ImageConfig(size=size, views_per_body=1, poses_per_identity=1, multi_person_share=0.0), "test", seed + 303)
    view = gen.views_of_body(0)[0]
    with output_run(out, ("image_input.png",)):
        with atomic_path(out / "image_input.png") as tmp:
            Image.fromarray(view.rgb).save(tmp, format="PNG")
        summary = run_image(out / "image_input.png", out / "image", model=model)
    with np.load(out / "image" / "correspondence.npz") as z:
        pred, sil = z["vertex"].astype(np.int64), z["silhouette"]
    truth = np.where(view.instance == 0, view.template_vertex, -1)
    both = (truth >= 0) & (pred >= 0)
    geo = all_pairs_geodesics(get_template().mesh)
    e = geo[truth[both], pred[both]].astype(np.float32) * 100
    iou = float(((truth >= 0) & sil).sum() / max(((truth >= 0) | sil).sum(), 1))
    if not len(e):
        return f"image demo: no person found in {out / 'image_input.png'}; outputs in {out / 'image'}"
    return (f"image demo: {size}x{size} RGB of a test person -> template: silhouette IoU {iou:.2f}, template-geodesic error "
            f"mean {e.mean():.1f} cm, median {np.median(e):.1f} cm, {(e < 10).mean() * 100:.0f} % within 10 cm; "
            f"{summary['seconds']:.2f} s; outputs in {out / 'image'}")  # fmt: skip
