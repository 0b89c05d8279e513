"""Matching speed: descriptor extraction, per-vertex descriptors of a 7k-vertex scan, the NN step.

Run: .venv/bin/python bench/bench_matching.py [--model FILE] [--threads 2] [--only-matching]
Prints medians. Targets (issue 3): matching two full scans with precomputed descriptors <= 50 ms.
The matching step is timed for every nearest-neighbour variant in one interleaved run, with the
load average before and after (the machine's cores are shared: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from timing import run_times


def median_time(fn, repeats: int = 5) -> float:
    return run_times(fn, repeats)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only-matching", action="store_true", help="skip the extraction timings")
    ap.add_argument("--repeats", type=int, default=11)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from bodycorr.data.suite import load_suite
    from bodycorr.matching.pipeline import load_extractor

    ex = load_extractor(a.model)
    print(f"model input {ex.size}x{ex.size}, {a.threads} threads, device {ex.device}")
    suite = load_suite("synthetic-v1")
    if not a.only_matching:
        bench_extraction(ex, suite)
    da = ex.mesh(suite.mesh(0), 48).descriptors
    db = ex.mesh(suite.mesh(1), 48).descriptors
    bench_matching_step(da, db, a.threads, a.repeats)
    if not a.only_matching:
        d = suite.depth_noisy[0]
        t = median_time(lambda: ex.depth_map(d, suite.camera(0)))
        print(f"Kinect depth map -> per-pixel descriptors: {t * 1000:.0f} ms")


def bench_extraction(ex, suite) -> None:
    from bodycorr.geometry.mesh import Mesh

    for size in (ex.size, 256):
        batch = np.full((8, size, size), 0.0, np.float32)
        batch[:, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 2.5
        ex_s = type(ex)(ex.model, size=size)
        t = median_time(lambda: ex_s.dense(batch))
        print(f"descriptor extraction {size}x{size}: {t / 8 * 1000:7.1f} ms/image (batch 8)")
    full = suite.mesh(0)
    scan = _decimate(full, 7000)  # a 7k-vertex scan in its own topology
    print(f"scan: {scan.num_vertices} vertices, {scan.num_faces} faces (from {full.num_vertices} by vertex clustering)")
    for views in (12, 48, 144):
        t = median_time(lambda: ex.mesh(scan, views), repeats=3)
        print(f"per-vertex descriptors, {views:3d} views: {t:6.2f} s")


def _decimate(mesh, target: int):
    """Vertex clustering on a cubic grid whose cell is bisected until about ``target`` vertices
    remain: each cell's vertices merge at their mean, faces that collapse are dropped."""
    from bodycorr.geometry.mesh import Mesh

    v, f = mesh.vertices, mesh.faces
    lo, hi = 1e-4, 0.2
    for _ in range(30):
        h = 0.5 * (lo + hi)
        _, cid = np.unique(np.floor((v - v.min(0)) / h).astype(np.int64), axis=0, return_inverse=True)
        cid = cid.ravel()
        n = int(cid.max()) + 1
        if abs(n - target) < 0.01 * target:
            break
        lo, hi = (h, hi) if n > target else (lo, h)
    verts = np.zeros((n, 3))
    np.add.at(verts, cid, v)
    verts /= np.bincount(cid, minlength=n)[:, None]
    g = cid[f]
    g = g[(g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])]
    g = np.unique(g, axis=0)
    return Mesh(verts, g)


def bench_matching_step(da: np.ndarray, db: np.ndarray, threads: int, repeats: int) -> None:
    """Both directions with confidence, every variant interleaved in one run (same load for all)."""
    from bodycorr.matching.correspond import match
    from bodycorr.matching.nearest import nearest_both

    def before_issue_3():  # what match() did before: faiss flat L2 over every pair, both ways
        fw, bw = nearest_both(da, db, threads=threads, backend="faiss")
        tgt = fw.index[:, 0]
        return bw.index[tgt, 0] == np.arange(len(tgt))

    variants = {
        "faiss flat, both directions in full (before)": before_issue_3,
        "match(backend='faiss'), backward from hit targets": lambda: match(da, db, backend="faiss"),
        "match(backend='blocks'), backward from hit targets": lambda: match(da, db, backend="blocks"),
        "blocks, both directions in full": lambda: nearest_both(da, db, backend="blocks", backward="all"),
    }
    hit = len(np.unique(match(da, db).target)) / len(db)
    times = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    load0 = os.getloadavg()
    for _ in range(repeats):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    load1 = os.getloadavg()
    base = float(np.median(times["faiss flat, both directions in full (before)"]))
    print(f"matching step, {len(da)} x {len(db)} descriptors, {repeats} interleaved repeats, "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} cores; {hit * 100:.0f} % of targets hit")  # fmt: skip
    for k, ts in times.items():
        m = float(np.median(ts))
        print(f"  {k:52s} median {m * 1000:7.1f} ms  (x{m / base:.2f} of before)")


if __name__ == "__main__":
    main()
