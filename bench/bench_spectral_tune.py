"""Spectral refiner settings compared on tuning pairs kept apart from the benchmark's: pairs of
synthetic-v1's remeshed bodies that are not among its 100 test pairs (so choosing settings here does
not tune on the figures reported).

Run:  .venv/bin/python bench/bench_spectral_tune.py [--inter 16] [--intra 8] [--variants base,k200,...]

Each variant is a :class:`~bodycorr.matching.refiners.spectral.SpectralConfig` change (see
VARIANTS); all run through the harness on the same pairs and points, with the plain map beside
them. Prints mean, worst pair and flip share per group and variant, and writes results.json.
"""

from __future__ import annotations

import argparse

import numpy as np

VARIANTS = {
    "base": {},
    "k200": {"k_final": 200},
    "k80": {"k_final": 80},
    "step5": {"step": 5},
    "ratio": {"drift": "ratio"},
    "ratio1.3": {"drift": "ratio", "drift_ratio": 1.3},
    "anchored": {"drift": "anchored"},
    "free": {"drift": "free"},
    "anchor5": {"anchor_weight": 5.0},
    "fit4000": {"fit_points": 4000},
    "kinit10": {"k_init": 10},
    "kinit30": {"k_init": 30},
    "k160": {"k_final": 160},
    "k200fit1500": {"k_final": 200, "fit_points": 1500},
    "k250": {"k_final": 250},
    "k300": {"k_final": 300},
    "k200fit4000": {"k_final": 200, "fit_points": 4000},
    "k200step20": {"k_final": 200, "step": 20},
    "k250anchor5": {"k_final": 250, "anchor_weight": 5.0},
    "k200fit4000step20": {"k_final": 200, "fit_points": 4000, "step": 20},
    "k200fit6000": {"k_final": 200, "fit_points": 6000},
}


def tuning_pairs(suite, inter: int, intra: int, seed: int = 7) -> list:
    """Pairs of remeshed shapes outside the suite's test pairs, ``inter`` of different people and ``intra`` of the same."""
    from bodycorr.evaluation.harness import PairSpec

    s = suite.suite
    test = {(int(a), int(b)) for a, b in np.r_[s.inter, s.intra]}
    shapes = suite.remeshed.shapes
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"inter": [], "intra": []}
    want = {"inter": inter, "intra": intra}
    while any(len(out[k]) < want[k] for k in out):
        a, b = (int(x) for x in rng.choice(shapes, 2, replace=False))
        kind = "intra" if s.identity[a] == s.identity[b] else "inter"
        if (a, b) not in test and len(out[kind]) < want[kind] and (a, b) not in out[kind]:
            out[kind].append((a, b))
    return [PairSpec(s.shape_name(a), s.shape_name(b), k) for k in ("inter", "intra") for a, b in out[k]]


def print_groups(res) -> None:
    """Mean over pairs, worst pair, median over points, gross (> 20 cm) and flip shares and median pair time, per method and group."""
    print(f"{'method':24s} {'group':28s} {'mean':>6s} {'worst':>6s} {'median':>7s} {'>20cm %':>8s} {'flip %':>7s} {'match s':>8s}")
    for m in res.methods:
        for g, recs in res.records[m].items():
            e = [r.errors.errors_cm.mean() for r in recs]
            allerr = np.concatenate([r.errors.errors_cm for r in recs])
            flips = np.concatenate([r.errors.flips for r in recs]).mean() * 100
            secs = np.median([r.errors.seconds["match"] for r in recs])
            gross = (allerr > 20).mean() * 100
            print(f"{m:24s} {g:28s} {np.mean(e):6.2f} {np.max(e):6.2f} {np.median(allerr):7.2f} {gross:8.2f} {flips:7.2f} {secs:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inter", type=int, default=16)
    ap.add_argument("--intra", type=int, default=8)
    ap.add_argument("--variants", default="base,ratio,anchored,free,k200")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("-o", "--out", default="out/spectral-tune")
    a = ap.parse_args()
    from bodycorr.evaluation.harness import HarnessConfig, RefinerMethod, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import RemeshedPairSuite
    from bodycorr.matching.refiners.spectral import SpectralConfig

    suite = RemeshedPairSuite("synthetic-v1")
    suite.pairs = tuning_pairs(suite, a.inter, a.intra)
    plain = make_method("shipped")
    methods = [plain]
    for v in a.variants.split(","):
        methods.append(RefinerMethod(plain.extractor, name=f"spectral {v}", refiner="spectral", config=SpectralConfig(**VARIANTS[v])))
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("full-full",), workers=a.workers), a.out, progress=True)
    print_groups(res)

if __name__ == "__main__":
    main()
