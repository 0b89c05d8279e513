"""Correspondence refinement by non-rigid registration ("CNN-S") on the Anny template: runtime per
pair and map error before/after.

Run:  nice -n 10 .venv/bin/python bench/bench_registration.py [--poses 3] [--repeats 2] [--nodes 300] [--partial]

Source: the template (13,348 vertices, rest pose). Targets: the same neutral body posed differently
(arms, legs, spine, head), in template topology, so vertex i ↔ vertex i is the ground truth.
Correspondences are corrupted like a descriptor map: each vertex goes to the target vertex nearest
to its true position plus Gaussian noise (``--noise``, m), ``--outliers`` of them to random
vertices, and patches (6 cm radius) covering ``--swaps`` of the body to their left/right mirror
vertex (``Template.symmetry``); confidences are uniform in [0.3, 1] (uninformative).
Error: mean Euclidean distance (cm) on the target between the matched and the true vertex.
``--partial``: the target keeps only the front-facing part (normal · view > 0.1, view from −Y, the
way the body faces; no self-occlusion test), as from one depth camera. Every source vertex still
gets a match (the visible target vertex nearest its noisy true position: hidden parts land on the
wrong side), and the error is measured on the visible vertices.
Times (wall clock, medians over poses × repeats; CPU seconds of this process as well, which a busy
machine inflates less): "cold" builds the deformation graph (and the fixed sparse system) in the
call; "warm" reuses a graph built once for the template, as a performance-capture loop would.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.spatial import cKDTree


def posed_targets(n: int) -> list[tuple[str, np.ndarray]]:
    from bodycorr.body.anny_model import get_body_model
    from bodycorr.body.template import get_template
    from bodycorr.geometry.rigid import rotation_from_vector

    tpl, m = get_template(), get_body_model()
    poses = [
        ("arms", {"upperarm01.L": ((0, 1, 0), -50), "upperarm01.R": ((1, 0, 0), 40), "lowerarm01.L": ((1, 0, 0), 60)}),
        ("legs", {"upperleg01.R": ((1, 0, 0), 40), "lowerleg01.R": ((1, 0, 0), -60), "upperleg01.L": ((0, 1, 0), 20)}),
        ("twist", {"spine03": ((0, 0, 1), 30), "neck01": ((0, 0, 1), 40), "upperarm01.R": ((0, 1, 0), 45), "lowerleg01.L": ((1, 0, 0), -40)}),
    ]
    out = []
    for name, rots in poses[:n]:
        pose = np.tile(np.eye(4, dtype=np.float32), (1, m.num_bones, 1, 1))
        for bone, (axis, deg) in rots.items():
            pose[0, m.bone_index(bone), :3, :3] = rotation_from_vector(np.deg2rad(deg) * np.asarray(axis, float))
        v = m(np.full((1, 6), 0.5), pose).vertices[0][tpl.template_to_full].astype(np.float64)
        out.append((name, v))
    return out


def corrupt(target: np.ndarray, symmetry: np.ndarray, noise: float, outliers: float, swaps: float, seed: int, kept: np.ndarray):
    """Matches of every vertex into the ``kept`` target vertices (all for a full target)."""
    rng = np.random.default_rng(seed)
    n = len(target)
    tree = cKDTree(target[kept])
    _, ti = tree.query(target + rng.normal(0, noise, (n, 3)))
    swapped = np.zeros(n, dtype=bool)
    while swapped.mean() < swaps:
        c = rng.integers(n)
        swapped |= np.linalg.norm(target - target[c], axis=1) < 0.06
    _, ti[swapped] = tree.query(target[symmetry[swapped]])
    bad = rng.random(n) < outliers
    ti[bad] = rng.integers(0, len(kept), bad.sum())
    conf = rng.uniform(0.3, 1.0, n).astype(np.float32)
    return ti.astype(np.int64), conf, swapped, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--outliers", type=float, default=0.10)
    ap.add_argument("--swaps", type=float, default=0.05)
    ap.add_argument("--partial", action="store_true", help="one-sided target (front-facing part)")
    args = ap.parse_args()

    from bodycorr.body.template import get_template
    from bodycorr.geometry.mesh import Mesh
    from bodycorr.geometry.nonrigid import NonRigidConfig, build_deformation_graph, refine_correspondences
    from bodycorr.matching.correspond import Correspondences

    tpl = get_template()
    src = tpl.mesh
    cfg = NonRigidConfig(num_nodes=args.nodes)
    print(f"source: template, {src.num_vertices} vertices; target: {'front-facing part' if args.partial else 'full'}; graph: {args.nodes} nodes; "
          f"corruption: noise {args.noise * 100:.0f} cm, {args.outliers:.0%} outliers, {args.swaps:.0%} left/right swaps")
    t = time.perf_counter()
    graph = build_deformation_graph(src, cfg.num_nodes, cfg.node_sampling, cfg.nearest_nodes, cfg.seed)
    print(f"deformation graph: {time.perf_counter() - t:.2f} s, node spacing {graph.spacing * 100:.1f} cm, {len(graph.edges)} edges")

    cold, warm, warm_cpu, rows = [], [], [], []
    for p, (name, tv) in enumerate(posed_targets(args.poses)):
        full = Mesh(tv, src.faces, f"posed ({name})")
        if args.partial:
            seen = full.vertex_normals() @ np.array([0.0, -1.0, 0.0]) > 0.1
            faces = src.faces[seen[src.faces].all(1)]
            kept = np.unique(faces)
            new = -np.ones(len(tv), dtype=np.int64)
            new[kept] = np.arange(len(kept))
            target = Mesh(tv[kept], new[faces], f"front of posed ({name})")
        else:
            kept = np.arange(len(tv))
            target = full
        seen = np.zeros(len(tv), dtype=bool)
        seen[kept] = True
        ti, conf, swapped, bad = corrupt(tv, tpl.symmetry, args.noise, args.outliers, args.swaps, p, kept)
        corr = Correspondences(ti, np.zeros(len(ti), np.float32), conf, np.zeros(len(ti), bool))
        for r in range(args.repeats):
            t = time.perf_counter()
            out = refine_correspondences(src, target, corr, cfg) if r == 0 else None
            if r == 0:
                cold.append(time.perf_counter() - t)
            t, c = time.perf_counter(), time.process_time()
            out_w = refine_correspondences(src, target, corr, cfg, graph=graph)
            warm.append(time.perf_counter() - t)
            warm_cpu.append(time.process_time() - c)
            out = out if out is not None else out_w
        e0 = np.linalg.norm(tv[kept][ti] - tv, axis=1)[seen]
        e1 = np.linalg.norm(tv[kept][out.target] - tv, axis=1)[seen]
        swapped, bad = swapped[seen], bad[seen]
        rows.append((e0.mean(), e1.mean()))
        print(f"  {name:6s}: mean error {e0.mean() * 100:5.2f} -> {e1.mean() * 100:5.2f} cm "
              f"(median {np.median(e0) * 100:.2f} -> {np.median(e1) * 100:.2f}; within 5 cm {np.mean(e0 < 0.05):.1%} -> {np.mean(e1 < 0.05):.1%}; "
              f"swapped {e0[swapped].mean() * 100:.1f} -> {e1[swapped].mean() * 100:.1f}; outliers {e0[bad].mean() * 100:.1f} -> {e1[bad].mean() * 100:.1f})")
    before = float(np.mean([r[0] for r in rows]))
    after = float(np.mean([r[1] for r in rows]))
    drop = 1 - after / before
    print(f"time per pair: cold {statistics.median(cold):.2f} s (graph built in the call), warm {statistics.median(warm):.2f} s "
          f"(graph reused; {statistics.median(warm_cpu):.2f} CPU-s); median over {len(cold)} / {len(warm)} runs")
    print(f"mean error over {len(rows)} pairs: {before * 100:.2f} -> {after * 100:.2f} cm ({drop:.0%} lower; target >= 25 %: "
          f"{'met' if drop >= 0.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
