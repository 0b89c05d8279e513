"""Engine throughput: posed + rendered + truth-labelled views per second, 1 and 2 worker processes.

Run: .venv/bin/python bench/bench_engine.py [--quick]
Prints medians over repeats. Target from issue 2: >= 100 views/s at 256x256 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np


def _work(args):
    size, framing, noise, bodies, seed = args
    from bodycorr.data.views import ViewConfig, ViewGenerator

    gen = ViewGenerator(ViewConfig(size=size, framing=framing, noise=noise, views_per_body=4), "train", seed)
    gen.views_of_body(0)  # warm-up: BVH build, kernels
    t = time.perf_counter()
    n = sum(len(gen.views_of_body(b)) for b in range(1, bodies + 1))
    return n, time.perf_counter() - t


def views_per_second(size: int, framing: str, noise: str, workers: int, bodies: int, repeats: int) -> float:
    rates = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for r in range(repeats):
            res = pool.map(_work, [(size, framing, noise, bodies, 100 * r + w) for w in range(workers)])
            rates.append(sum(n for n, _ in res) / max(s for _, s in res))
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    bodies, repeats = (4, 1) if a.quick else (12, 3)
    print(f"{'setting':44s} {'1 worker':>10s} {'2 workers':>10s}   (views/s, median of {repeats})")
    for label, size, framing, noise in [
        ("256x256 crop, clean", 256, "crop", "none"),
        ("256x256 crop, Kinect noise", 256, "crop", "kinect_v2"),
        ("128x128 crop, mixed noise (training)", 128, "crop", "mixed"),
        ("Kinect v2 512x424, clean", 512, "sensor", "none"),
    ]:
        r1 = views_per_second(size, framing, noise, 1, bodies, repeats)
        r2 = views_per_second(size, framing, noise, 2, bodies, repeats)
        print(f"{label:44s} {r1:10.1f} {r2:10.1f}")


if __name__ == "__main__":
    main()
