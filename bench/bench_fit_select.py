"""How the body fit should keep one of its candidates: every rule against the truth, on scans the
correspondence benchmark does not use.

Run:  .venv/bin/python bench/bench_fit_select.py [--kind full|view] [--shapes tr_00_00,...] [--out F.csv]

For each synthetic-v1 shape outside the benchmark's first 20 inter and 20 intra pairs (30 shapes;
the same split ``PoseFitConfig.select`` was tuned on), the shipped model's matches to the template
drive :func:`~bodycorr.body.articulated.fit_pose` once per candidate: each of the 2 best rigid
starts x each of the mirror penalties (0.1, 0.3), as ``select="combined"`` fits them in one batch.
Each candidate's error is its mean vertex distance to the truth (cm; ``view``: over the vertices the
noisy Kinect view sees). A rule "misses" a shape when the candidate it keeps is more than 5 cm worse
than the best candidate. ``--kind full`` describes the complete mesh (48 views); ``view`` its
noisy depth view, where the body-to-scan distance means nothing (a view shows half the body).
One shape takes about 40 s (full) or 10 s (view) on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

RULES = {
    "energy": lambda c: min((x for x in c if x["penalty"] == 0.1), key=lambda x: x["energy"]),
    "coverage": lambda c: min(c, key=lambda x: x["body_to_scan"]),
    "residual": lambda c: min(c, key=lambda x: x["scan_to_body"]),
    "combined": lambda c: min(c, key=lambda x: x["energy"] * (x["body_to_scan"] + x["scan_to_body"])),
}


def tuning_shapes(suite) -> list[str]:
    test = {suite.shape_name(int(i)) for k in ("inter", "intra") for p in suite.pairs(k)[:20] for i in p}
    return sorted({suite.shape_name(int(i)) for k in ("inter", "intra") for p in suite.pairs(k)[20:] for i in p} - test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=["full", "view"], default="full")
    ap.add_argument("--shapes", help="comma-separated shape names (default: the 30 tuning shapes)")
    ap.add_argument("--out", help="also write every candidate to this CSV")
    ap.add_argument("--max-matches", type=int, default=None, help="FitConfig.max_matches (default: its default, 4000)")
    ap.add_argument("--round-trip", type=float, default=None, help="FitConfig.round_trip_m (default: its default)")
    ap.add_argument("--pose", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a PoseFitConfig field for every candidate (e.g. body_to_scan=1), repeatable")
    a = ap.parse_args()

    from bodycorr.body.articulated import fit_pose
    from bodycorr.body.template import get_template
    from bodycorr.data.suite import load_suite
    from bodycorr.geometry.nonrigid import rigid_starts
    from bodycorr.matching.fit import FitConfig, template_matches
    from bodycorr.matching.pipeline import load_extractor

    suite, tpl, ex = load_suite(), get_template(), load_extractor(None, "cpu")
    tdesc = ex.mesh(tpl.mesh, 48).descriptors
    cfg = FitConfig(model="body")
    overrides = {k: type(getattr(cfg.pose, k))(v) for k, v in (o.split("=", 1) for o in a.pose)}
    cfg = replace(cfg, pose=replace(cfg.pose, **overrides))
    if a.max_matches:
        cfg = replace(cfg, max_matches=a.max_matches)
    if a.round_trip is not None:
        cfg = replace(cfg, round_trip_m=a.round_trip)
    index = {suite.shape_name(i): i for i in range(len(suite))}
    names = a.shapes.split(",") if a.shapes else tuning_shapes(suite)
    cands: dict[str, list[dict]] = {}
    for n, name in enumerate(names):
        i = index[name]
        truth = suite.vertices[i].astype(np.float64)
        if a.kind == "full":
            d = ex.mesh(suite.mesh(i), 48)
            points, desc, cons, seen = truth, d.descriptors, d.consistency, np.arange(len(truth))
        else:
            depth = suite.depth_noisy[i]
            valid = np.isfinite(depth) & (depth > 0)
            d = ex.depth_map(np.where(valid, depth, 0), suite.camera(i))
            points, desc, cons = d.points, d.descriptors, None
            vert = suite.vertex_noisy[i][valid]
            seen = np.unique(vert[vert >= 0])
        si, tp, w = template_matches(points, desc, cons, tdesc, cfg, np.random.default_rng(cfg.seed))  # as fit_template takes them
        alt = tpl.symmetry[si]
        starts = rigid_starts(tpl.mesh.vertices, si, alt, tp, w, False, cfg.nonrigid.kernel)[: cfg.starts]
        tree = cKDTree(points)
        cands[name] = []
        for k, (start, _) in enumerate(starts):
            for pen in cfg.pose.coverage_penalties:
                f = fit_pose(tpl, si, tp, w, [start], alternatives=alt, scan=points, config=replace(cfg.pose, select="energy", mirror_penalty=pen))
                cands[name].append({
                    "shape": name, "start": k, "penalty": pen, "energy": f.energy,
                    "body_to_scan": float(tree.query(f.vertices, workers=1)[0].mean()),
                    "scan_to_body": float(cKDTree(f.vertices).query(points, workers=1)[0].mean()),
                    "error_cm": float(np.linalg.norm(f.vertices[seen] - truth[seen], axis=1).mean() * 100),
                })  # fmt: skip
        print(f"[{n + 1}/{len(names)}] {name}: " + "  ".join(f"{c['start']}/{c['penalty']} {c['error_cm']:.1f} cm" for c in cands[name]), flush=True)
    if a.out:
        with open(a.out, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(next(iter(cands.values()))[0]))
            wr.writeheader()
            wr.writerows(c for cs in cands.values() for c in cs)
    best = np.array([min(c["error_cm"] for c in cs) for cs in cands.values()])
    print(f"\n{len(cands)} {a.kind} scans; the best candidate's mean error {best.mean():.1f} cm")
    for rule, pick in RULES.items():
        if a.kind == "view" and rule in ("coverage", "combined"):
            continue  # a view shows half the body: the body-to-scan distance means nothing
        err = np.array([pick(cs)["error_cm"] for cs in cands.values()])
        missed = [n for n, e, b in zip(cands, err, best) if e > b + 5]
        print(f"  {rule:9s} mean {err.mean():5.1f} cm, worst {err.max():5.1f}, missed {len(missed)}: {' '.join(missed)}")


if __name__ == "__main__":
    main()
