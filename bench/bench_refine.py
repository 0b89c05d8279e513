"""Speed and memory of the refiners after describing, and of `bodycorr register` (issue #19's targets: <= 5 s
per full-full pair, <= 10 s per registered scan, bounded memory on a 100k-vertex scan).

Run:  .venv/bin/python bench/bench_refine.py [--pairs 3] [--repeats 2]

Inputs: the first ``--pairs`` inter-subject pairs of synthetic-v1's remeshed bodies (each ~5.7k
vertices, its own triangulation), described once with the shipped model (48 views). Timed: the
spectral refiner's per-scan step (eigenbasis) and pair step (flip test, free and anchored ZoomOut,
the drift test), the auto refiner on the same pair (per scan: eigenbasis, spectral map to the template and
Anny's fit; per pair: the map through the two fits), and `register` (describe excluded: its fit and
closest points). The 100k-vertex scan is a remeshed body subdivided twice (each triangle into 4),
refined spectrally in a child process whose peak resident memory is read from the OS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each triangle into four (edge midpoints, shared)."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    mid = len(v) + inv.reshape(3, -1).T  # (F, 3): midpoints of edges 01, 12, 20
    v2 = np.concatenate([v, v[uniq].mean(1)])
    a, b, c = f.T
    m01, m12, m20 = mid.T
    f2 = np.concatenate([np.c_[a, m01, m20], np.c_[b, m12, m01], np.c_[c, m20, m12], np.c_[m01, m12, m20]])
    return v2, f2


def big_scan_child() -> None:
    """In a child process: describe a 100k-vertex body, refine spectrally against a 5.7k one; print JSON."""
    import resource

    from bodycorr.data.remeshed import load_remeshed
    from bodycorr.geometry.mesh import Mesh
    from bodycorr.matching.correspond import match
    from bodycorr.matching.describe import describe, load_extractor
    from bodycorr.matching.inputs import ScanInput
    from bodycorr.matching.refiners import RefineContext, get_refiner

    r = load_remeshed("synthetic-v1")
    a, b = (int(x) for x in r.suite.inter[0])
    m = r.mesh(a)
    v, f = subdivide(*subdivide(m.vertices, m.faces))
    big = Mesh(v, f, name="big")
    ex = load_extractor()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    da = describe(ScanInput("mesh", big.vertices, "big", mesh=big), ex, 48, "z")
    t_desc = time.perf_counter() - t0
    mb = r.mesh(b)
    db = describe(ScanInput("mesh", mb.vertices, "b", mesh=mb), ex, 48, "z")
    ctx = RefineContext(ex, 48)
    ctx.template()
    ref = get_refiner("spectral")
    t0 = time.perf_counter()
    pa, pb = ref.prepare(da, ctx), ref.prepare(db, ctx)
    out = ref.refine(pa, pb, match(da.descriptors, db.descriptors, da.consistency, source_points=da.points), ctx)
    t_ref = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    auto = get_refiner("auto")
    t0 = time.perf_counter()
    auto.refine(auto.prepare(da, ctx), auto.prepare(db, ctx), match(da.descriptors, db.descriptors, da.consistency, source_points=da.points), ctx)
    t_auto = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"vertices": big.num_vertices, "describe_s": t_desc, "refine_s": t_ref, "auto_s": t_auto, "peak_rss_mb": rss / 1024,
                      "rss_after_spectral_mb": rss1 / 1024, "rss_before_refine_mb": rss0 / 1024, "laplacian": out.info["laplacian"]}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--big-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.big_child:
        big_scan_child()
        return
    from bodycorr.data.remeshed import load_remeshed
    from bodycorr.matching.correspond import match
    from bodycorr.matching.describe import describe, load_extractor
    from bodycorr.matching.inputs import ScanInput
    from bodycorr.matching.refiners import RefineContext, get_refiner
    from bodycorr.matching.register import register_scan

    r = load_remeshed("synthetic-v1")
    ex = load_extractor()
    ctx = RefineContext(ex, 48)
    ctx.template()
    times: dict[str, list[float]] = {"spectral prepare (per scan)": [], "spectral pair step": [], "spectral pair total": [],
                                     "auto per scan (basis, map to template, fit)": [], "auto pair step (through fits)": [],
                                     "auto pair total": [], "register (fit + closest)": []}  # fmt: skip
    for a_idx, b_idx in r.suite.inter[: a.pairs]:
        ms, mt = r.mesh(int(a_idx)), r.mesh(int(b_idx))
        da, db = (describe(ScanInput("mesh", m.vertices, m.name, mesh=m), ex, 48, "z") for m in (ms, mt))
        init = match(da.descriptors, db.descriptors, da.consistency, source_points=da.points)
        ref = get_refiner("spectral")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            pa, pb = ref.prepare(da, ctx), ref.prepare(db, ctx)
            t1 = time.perf_counter()
            ref.refine(pa, pb, init, ctx)
            t2 = time.perf_counter()
            times["spectral prepare (per scan)"].append((t1 - t0) / 2)
            times["spectral pair step"].append(t2 - t1)
            times["spectral pair total"].append(t2 - t0)
        auto = get_refiner("auto")
        t0 = time.perf_counter()
        pa, pb = auto.prepare(da, ctx), auto.prepare(db, ctx)
        auto._fit(pa, ctx), auto._fit(pb, ctx)
        t1 = time.perf_counter()
        auto.refine(pa, pb, init, ctx)
        t2 = time.perf_counter()
        times["auto per scan (basis, map to template, fit)"].append((t1 - t0) / 2)
        times["auto pair step (through fits)"].append(t2 - t1)
        times["auto pair total"].append(t2 - t0)
        reg = register_scan(ScanInput("mesh", ms.vertices, ms.name, mesh=ms), ex, 48, "z")
        times["register (fit + closest)"].append(reg.seconds["fit"] + reg.seconds["closest"])
    print(f"{'step':34s} {'median s':>9s} {'min s':>7s}  (n)")
    for k, v in times.items():
        print(f"{k:34s} {statistics.median(v):9.2f} {min(v):7.2f}  ({len(v)})")
    got = subprocess.run([sys.executable, __file__, "--big-child"], capture_output=True, text=True, check=True)
    big = json.loads(got.stdout.strip().splitlines()[-1])
    print(f"100k-vertex scan ({big['vertices']} vertices, {big['laplacian'][0]} Laplacian of a farthest-point sample): "
          f"describe {big['describe_s']:.1f} s, spectral refine {big['refine_s']:.1f} s, auto refine {big['auto_s']:.1f} s, "
          f"peak memory {big['peak_rss_mb']:.0f} MB ({big['rss_before_refine_mb']:.0f} MB before refining, "
          f"{big['rss_after_spectral_mb']:.0f} MB after the spectral one)")  # fmt: skip


if __name__ == "__main__":
    main()
