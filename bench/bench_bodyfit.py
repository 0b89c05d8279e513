"""Anny body fitting: the cost of posing (full forward pass vs skinning a few vertices of a fixed
shape) and of one tracking-style fit, with its accuracy from exact matches.

Run:  .venv/bin/python bench/bench_bodyfit.py [--repeats 15] [--threads 2]

Posing: forward + backward of a batch of 2 bodies through Anny's own forward pass
(:meth:`BodyModel.forward_torch`: blend shapes, kinematics, skinning of all 13,718 vertices;
the 19 fitted bones turned)
against :meth:`BodyModel.skin` of n vertices at a fixed shape (the path a tracker with a known
person takes). Fit: :func:`fit_pose` with 60 steps, 4000 matches, 2000 scan points, one start,
shape fixed vs free, on a posed body of another shape; then the fixed-shape fit again with the
body's depth image from a Kinect v2 at 2.5 m (the free-space term at weight 3, two paths per start, as
``bodycorr track --free-space 3`` runs it); error = mean vertex distance (cm).
All figures are medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from timing import run_times


def median_ms(fn, repeats: int) -> float:
    return run_times(fn, repeats)[0] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import roma

    from bodycorr.body.anny_model import get_body_model
    from bodycorr.body.articulated import FIT_BONES, PoseFitConfig, fit_pose
    from bodycorr.body.pose import Pose, archetype_angles
    from bodycorr.body.template import get_template
    from bodycorr.geometry.camera import Camera, Intrinsics
    from bodycorr.geometry.rigid import robust_procrustes
    from bodycorr.geometry.silhouette import DepthSilhouette
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster

    m, tpl = get_body_model(), get_template()
    ph = np.array([0.8, 0.5, 0.6, 0.3, 0.7, 0.5])
    g = torch.Generator().manual_seed(0)
    bones = torch.as_tensor([m.bone_index(b) for b in FIT_BONES])
    rot = (0.2 * torch.randn(2, len(bones), 3, generator=g)).requires_grad_(True)

    def pose() -> torch.Tensor:  # the fitted bones turned, as in fit_pose
        p = torch.eye(4).expand(2, m.num_bones, 4, 4).clone()
        p[:, bones, :3, :3] = roma.rotvec_to_rotmat(rot)
        return p

    pht = torch.as_tensor(ph, dtype=torch.float32).expand(2, -1)
    rest = m.rest_body(ph)
    full = median_ms(lambda: m.forward_torch(pose(), pht).sum().backward(), a.repeats)
    print(f"posing, batch 2, forward + backward (median of {a.repeats}, {a.threads} threads)")
    print(f"  full forward pass, all {m.num_vertices} vertices: {full:7.1f} ms")
    for n in (m.num_vertices, 7000, 3000):
        ids = torch.as_tensor(np.random.default_rng(0).choice(m.num_vertices, n, replace=False))
        t = median_ms(lambda ids=ids: m.skin(pose(), rest, ids).sum().backward(), a.repeats)
        print(f"  skin {n:6d} vertices, fixed shape:      {t:7.1f} ms  ({full / t:.1f}x faster)")

    ang = archetype_angles("walk_passing") + 0.5 * archetype_angles("arms_overhead")
    truth = m(ph[None], Pose.from_angles(ang).to_anny(m)).vertices[0][tpl.template_to_full].astype(np.float64)
    rng = np.random.default_rng(0)
    si = rng.choice(tpl.num_vertices, 4000, replace=False)
    scan = truth[rng.choice(tpl.num_vertices, 2000, replace=False)]
    start = robust_procrustes(tpl.mesh.vertices[si], truth[si], np.ones(len(si)))[0]
    c = truth.mean(0)
    cam = Camera.look_at(c + np.array([0.0, -2.5, 0.0]), c, up=(0.0, 0.0, 1.0), intrinsics=Intrinsics.kinect_v2())
    sil = DepthSilhouette.from_depth(np.nan_to_num(render(RayCaster(truth, tpl.mesh.faces), cam).depth), cam)
    print("fit_pose, 60 steps, 4000 exact matches, 2000 scan points, one start")
    for label, cfg, given, depth in (("shape fixed (given)", PoseFitConfig(iterations=60, shape=False), ph, None),
                                     ("shape fitted too", PoseFitConfig(iterations=60, shape=True), None, None),
                                     ("fixed + free space", PoseFitConfig(iterations=60, shape=False, free_space=3.0), ph, sil)):  # fmt: skip
        secs, errs = [], []
        for _ in range(max(3, a.repeats // 5)):
            f = fit_pose(tpl, si, truth[si], np.ones(len(si)), start, scan=scan, config=cfg, phenotypes=given, silhouette=depth)
            secs.append(f.seconds)
            errs.append(np.linalg.norm(f.vertices - truth, axis=1).mean() * 100)
        print(f"  {label:20s} {statistics.median(secs):5.2f} s, vertex error {statistics.median(errs):.2f} cm")


if __name__ == "__main__":
    main()
