"""Benchmark the pose sampler (CPU): speed, rejection rates, coverage of the range of motion.

Prints the load average, then: accepted poses/s (median and best of --repeats runs of --batch
poses; also one pose per call, as the data pipeline asks), capsule collision checks/s, the
rejection rate overall and per mode (and the archetypes rejected most after perturbation), the time
to make a key-pose sequence and the walk cycle, and the coverage table (per joint and axis: the
table's range, the sampled min..max, and the share of 10° bins hit) over --coverage poses.

    .venv/bin/python bench/bench_pose.py [--batch 500] [--repeats 5] [--coverage 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import numpy as np

os.environ.setdefault("WARP_LOG_LEVEL", "error")


def main() -> None:
    from bodycorr.body import motion, rom
    from bodycorr.body.anny_model import get_body_model
    from bodycorr.body.pose import PoseSampler, PoseSamplerConfig, coverage_report, format_coverage

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--coverage", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus")
    model = get_body_model()
    t = time.perf_counter()
    sampler = PoseSampler(PoseSamplerConfig(), model=model)
    print(f"sampler construction {time.perf_counter() - t:.2f} s (rest skeleton, ROM frames, capsules)")
    rng = np.random.default_rng(args.seed)
    sampler.sample(16, rng)
    sampler.reset_stats()

    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        sampler.sample(args.batch, rng)
        rates.append(args.batch / (time.perf_counter() - t))
    print(f"\nsampling, batches of {args.batch}: median {statistics.median(rates):.0f} accepted poses/s, best {max(rates):.0f}")
    singles = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _ in range(50):
            sampler.sample(1, rng)
        singles.append(50 / (time.perf_counter() - t))
    print(f"sampling, one pose per call: median {statistics.median(singles):.0f} accepted poses/s")

    p = PoseSampler(PoseSamplerConfig(collision="off"), model=model).sample(4000, rng)
    D = rom.angles_to_local(p.angles, sampler.frames)
    t = time.perf_counter()
    sampler.capsules.check(D)
    print(f"capsule collision test: {4000 / (time.perf_counter() - t):.0f} poses/s "
          f"({len(sampler.capsules.specs)} capsules, {len(sampler.capsules.pairs)} pairs, FK included)")  # fmt: skip

    st = sampler.stats
    print(f"\nrejection rate overall {100 * st['rejection_rate']:.1f} % ({st['candidates']} candidates, {st['accepted']} accepted)")
    for mode, r in st["per_mode"].items():
        print(f"  {mode:14s} {100 * r['rejection_rate']:5.1f} %  ({r['candidates']} candidates)")
    # Archetypes: which ones the collision test rejects most once perturbed.
    off = PoseSampler(PoseSamplerConfig(mode_weights=(1, 0, 0), collision="off", yaw="none"), model=model)
    q = off.sample(6000, rng)
    ok, _ = sampler.evaluate(q)
    per = defaultdict(list)
    for s, o in zip(q.sources, ok):
        per[s.split(":")[1]].append(o)
    worst = sorted(per.items(), key=lambda kv: np.mean(kv[1]))[:8]
    print("  most rejected perturbed archetypes: " + ", ".join(f"{k} {100 * (1 - np.mean(v)):.0f} %" for k, v in worst))

    t = time.perf_counter()
    motion.key_pose_sequence(sampler, 300, 30.0, 120.0, rng)
    print(f"\nkey_pose_sequence: 300 frames (10 s at 30 fps) in {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    motion.walk_cycle(300, 30.0, model=model)
    print(f"walk_cycle: 300 frames in {time.perf_counter() - t:.2f} s")

    sampler.reset_stats()
    cov = sampler.sample(args.coverage, rng)
    rep = coverage_report(cov)
    hits = [r["coverage"] for axes in rep.values() for r in axes.values()]
    print(f"\ncoverage over {args.coverage} accepted poses (10° bins): mean {100 * np.mean(hits):.0f} %, min {100 * min(hits):.0f} %")
    print(format_coverage(rep))


if __name__ == "__main__":
    main()
