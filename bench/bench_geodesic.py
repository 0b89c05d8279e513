"""Geodesics on the Anny template body: speed and accuracy of each method, all-pairs table, segmentations.

Run:  .venv/bin/python bench/bench_geodesic.py [--sources 30] [--workers N] [--skip-all-pairs]

Accuracy: mean over (source, vertex) pairs with exact distance > 2 cm of |d - d_exact| / d_exact,
for ``--sources`` random sources (seed 0), exact = MMP (pygeodesic). Times are medians (wall clock).
Builds use a fresh temporary cache folder, so "cold" is really cold.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time

import numpy as np


def body_mesh():
    import anny
    import torch

    from bodycorr.geometry.geodesic import vertex_components
    from bodycorr.geometry.mesh import Mesh

    m = anny.Anny().to(torch.float32)
    with torch.no_grad():
        out = m()
    full = Mesh(out["vertices"][0].numpy().astype(np.float64), m.faces.numpy(), "anny template")
    lab = vertex_components(full)
    keep = lab == np.argmax(np.bincount(lab))
    new = -np.ones(full.num_vertices, dtype=np.int64)
    new[keep] = np.arange(keep.sum())
    faces = new[full.faces[keep[full.faces].all(1)]]
    return Mesh(full.vertices[keep], faces, "anny body component")


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (worker pools)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=30)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-all-pairs", action="store_true")
    args = ap.parse_args()

    cache = tempfile.mkdtemp(prefix="bodycorr-bench-geodesic-")
    os.environ["BODYCORR_CACHE_DIR"] = cache
    from bodycorr.geometry.geodesic import GeodesicSolver, all_pairs_geodesics
    from bodycorr.geometry.segmentation import SegmentationConfig, random_segmentations

    try:
        mesh = body_mesh()
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        print(f"mesh: {mesh.name}, {mesh.num_vertices} vertices, {mesh.num_faces} faces, "
              f"mean edge {mesh.mean_edge_length() * 1000:.1f} mm; cores: {len(os.sched_getaffinity(0))}")
        src = np.random.default_rng(0).choice(mesh.num_vertices, args.sources, replace=False)

        rows = []  # (what, median time s, mean rel err, p95 rel err, note)
        exact = GeodesicSolver(mesh, "exact")
        ref, times = [], []
        for s in src:
            d, t = timed(exact.from_source, int(s))
            ref.append(d)
            times.append(t)
        ref = np.array(ref)
        mask = ref > 0.02
        rows.append(("exact (MMP, pygeodesic)", statistics.median(times), 0.0, 0.0, "reference"))

        variants = [
            ("graph, 3-ring (default)", dict(method="graph", rings=3)),
            ("graph, 4-ring", dict(method="graph", rings=4)),
            ("heat, t_coef=2 (default)", dict(method="heat", t_coef=2.0)),
            ("heat, t_coef=1", dict(method="heat", t_coef=1.0)),
            ("dijkstra on edges", dict(method="dijkstra")),
        ]
        for name, kw in variants:
            solver, t_init = timed(GeodesicSolver, mesh, workers=args.workers, **kw)
            times, out = [], []
            for s in src:
                d, t = timed(solver.from_source, int(s))
                out.append(d)
                times.append(t)
            rel = np.abs(np.array(out) - ref)[mask] / ref[mask]
            note = f"setup {t_init:.1f} s" if t_init > 0.5 else ""
            rows.append((name, statistics.median(times), rel.mean(), np.percentile(rel, 95), note))

        print()
        print(f"one source -> all vertices ({args.sources} sources; error over pairs with exact > 2 cm)")
        print(f"{'method':28s} {'median':>10s} {'mean err':>9s} {'p95 err':>8s}  note")
        for name, t, e, p, note in rows:
            print(f"{name:28s} {t * 1e3:8.2f} ms {e * 100:8.2f}% {p * 100:7.2f}%  {note}")

        if args.skip_all_pairs:
            return
        print()
        print("all-pairs table (graph, 3-ring, float16) and segmentations")
        shutil.rmtree(cache, ignore_errors=True)  # really cold: the graph edges are rebuilt too
        c0 = cpu_seconds()
        D, t_cold = timed(all_pairs_geodesics, mesh, workers=args.workers, progress=False)
        cpu_cold = cpu_seconds() - c0
        loads = [timed(all_pairs_geodesics, mesh, progress=False)[1] for _ in range(3)]
        rel = np.abs(D[src].astype(np.float64) - ref)[mask] / ref[mask]
        print(f"{'all-pairs build (cold, incl. graph)':40s} {t_cold:8.1f} s   (CPU {cpu_cold:.0f} s; "
              f"{D.nbytes / 2**20:.0f} MiB; mean err {rel.mean() * 100:.2f}%)")
        print(f"{'all-pairs cache load (median of 3)':40s} {statistics.median(loads):8.2f} s")
        cfg = SegmentationConfig(num_segmentations=100, num_patches=500, num_random_seeds=10, seed=0)
        labels, t_seg = timed(random_segmentations, mesh, cfg, progress=False)
        loads = [timed(random_segmentations, mesh, cfg, progress=False)[1] for _ in range(3)]
        print(f"{'segmentations K=100 P=500 (table warm)':40s} {t_seg:8.1f} s   -> {labels.shape} {labels.dtype}")
        print(f"{'segmentations cache load (median of 3)':40s} {statistics.median(loads):8.2f} s")
        print(f"{'cold total: table + segmentations':40s} {t_cold + t_seg:8.1f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":  # required: the all-pairs build spawns worker processes
    main()
