"""Engine throughput: posed + rendered + truth-labelled views per second, 1 and 2 worker processes.

Run: .venv/bin/python bench/bench_engine.py [--quick] [--only K]
Prints medians over repeats. Target from issue 2: >= 100 views/s at 256x256 on a 2-core machine.

What is timed: ``ViewGenerator.views_of_body`` for bodies 0, 1, ... of a fresh block, i.e. pose
sampling (with collision rejection), the Anny forward, rendering, per-pixel truth and noise, at
the training data's setting of 4 views per posed body. Bodies are posed in blocks of
``POSE_BLOCK``; the timed body count is a multiple of it, so every posing is paid for. The
warm-up renders a body of another block (kernel compilation, first allocations). The engine
runs Anny's forward on one torch thread (one worker process per core).

Columns: wall-clock views/s with 1 and 2 worker processes (what this machine gave, under whatever
else runs on it: the load average is printed), and views per CPU-second of one worker (CPU time
of the worker process: what one free core gives, robust to other load; two free cores give
about twice that).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np


def _work(args):
    size, framing, noise, bodies, seed, vpb = args
    from bodycorr.data.views import ViewConfig, ViewGenerator

    gen = ViewGenerator(ViewConfig(size=size, framing=framing, noise=noise, views_per_body=vpb), "train", seed)
    gen.views_of_body(1_000_000)  # warm-up in another pose block: kernels, caches
    t, c = time.perf_counter(), time.process_time()
    n = sum(len(gen.views_of_body(b)) for b in range(bodies))
    return n, time.perf_counter() - t, time.process_time() - c


def views_per_second(size: int, framing: str, noise: str, workers: int, bodies: int, repeats: int, vpb: int = 4) -> tuple[float, float]:
    """(median wall-clock views/s of all workers, median views per CPU-second of one worker)."""
    rates, per_cpu = [], []
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for r in range(repeats):
            res = pool.map(_work, [(size, framing, noise, bodies, 100 * r + w, vpb) for w in range(workers)])
            rates.append(sum(n for n, _, _ in res) / max(s for _, s, _ in res))
            per_cpu += [n / c for n, _, c in res]
    return float(np.median(rates)), float(np.median(per_cpu))


def main() -> None:
    from bodycorr.data.views import POSE_BLOCK

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", type=int, default=None, help="run only row K (0-based)")
    a = ap.parse_args()
    bodies, repeats = (POSE_BLOCK, 1) if a.quick else (2 * POSE_BLOCK, 3)
    rows = [
        ("256x256 crop, clean", 256, "crop", "none", 4),
        ("256x256 crop, Kinect noise", 256, "crop", "kinect_v2", 4),
        ("128x128 crop, mixed noise (training)", 128, "crop", "mixed", 4),
        ("Kinect v2 512x424, clean", 512, "sensor", "none", 4),
        ("Kinect v2 512x424, Kinect noise", 512, "sensor", "kinect_v2", 4),
    ]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}   "
          f"(2 cores; {bodies} bodies x 4 views per worker and repeat)")  # fmt: skip
    print(f"{'setting':40s} {'1 worker':>9s} {'2 workers':>10s} {'per CPU-s':>10s}   (views/s, median of {repeats})")
    for k, (label, size, framing, noise, vpb) in enumerate(rows):
        if a.only is not None and k != a.only:
            continue
        r1, c1 = views_per_second(size, framing, noise, 1, bodies, repeats, vpb)
        r2, c2 = views_per_second(size, framing, noise, 2, bodies, repeats, vpb)
        print(f"{label:40s} {r1:9.1f} {r2:10.1f} {np.median([c1, c2]):10.1f}", flush=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
