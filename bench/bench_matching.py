"""Matching speed: descriptor extraction, per-vertex descriptors of a 7k-vertex scan, the NN step.

Run: .venv/bin/python bench/bench_matching.py [--model FILE] [--threads 2]
Prints medians. Targets (issue 3): matching two full scans with precomputed descriptors <= 50 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def median_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from bodycorr.data.suite import load_suite
    from bodycorr.geometry.mesh import Mesh
    from bodycorr.matching.correspond import match
    from bodycorr.matching.pipeline import load_extractor

    ex = load_extractor(a.model)
    print(f"model input {ex.size}x{ex.size}, {a.threads} threads, device {ex.device}")
    for size in (ex.size, 256):
        batch = np.full((8, size, size), 0.0, np.float32)
        batch[:, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 2.5
        ex_s = type(ex)(ex.model, size=size)
        t = median_time(lambda: ex_s.dense(batch))
        print(f"descriptor extraction {size}x{size}: {t / 8 * 1000:7.1f} ms/image (batch 8)")
    suite = load_suite("synthetic-v1")
    full = suite.mesh(0)
    # a 7k-vertex scan: every other face of the template topology, re-indexed
    keep = np.unique(full.faces[::2])
    remap = -np.ones(full.num_vertices, int)
    remap[keep] = np.arange(len(keep))
    f = remap[full.faces[::2]]
    scan = Mesh(full.vertices[keep], f[(f >= 0).all(1)])
    print(f"scan: {scan.num_vertices} vertices, {scan.num_faces} faces")
    for views in (12, 48, 144):
        t = median_time(lambda: ex.mesh(scan, views), repeats=3)
        print(f"per-vertex descriptors, {views:3d} views: {t:6.2f} s")
    da = ex.mesh(suite.mesh(0), 48).descriptors
    db = ex.mesh(suite.mesh(1), 48).descriptors
    t = median_time(lambda: match(da, db), repeats=7)
    print(f"matching step alone, {len(da)} x {len(db)} (both directions): {t * 1000:.1f} ms")
    d = suite.depth_noisy[0]
    t = median_time(lambda: ex.depth_map(d, suite.camera(0)))
    print(f"Kinect depth map -> per-pixel descriptors: {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
