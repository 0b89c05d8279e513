"""Spectral refiner internals on the tuning pairs: each step's map scored and timed separately, so
rules (when to run the anchored twin, extra steps) can be chosen offline from one run.

Run:  .venv/bin/python bench/bench_spectral_probe.py [--inter 16] [--intra 8] [-o out/spectral-probe]

Uses the tuning pairs of ``bench_spectral_tune.py`` (outside the benchmark's test pairs). Described
shapes are cached on disk (``--cache``, keyed by the model's sha256), so a second run only pays for the
refinement. Every variant below is scored through the harness (mean, worst, flips per group) and
``probe.json`` records per pair: the free and anchored maps' coverage, each variant's error and time.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def cached_describe(shape, extractor, sha: str, cache: Path):
    """``describe(shape.scan)`` with 48 views, kept on disk under ``cache`` keyed by the model's sha256 and the shape."""
    f = cache / f"{sha[:12]}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', shape.key)}.pkl"
    if f.exists():
        return pickle.loads(f.read_bytes())
    from bodycorr.matching.describe import describe

    d = describe(shape.scan, extractor, 48, shape.up_hint)
    cache.mkdir(parents=True, exist_ok=True)
    f.write_bytes(pickle.dumps(d))
    return d


class Probe:
    """Describes (disk-cached), builds eigenbases, and computes every variant's map of a pair once."""

    def __init__(self, extractor, sha: str, cache: Path, variants: list[str]):
        from bodycorr.matching.refiners import RefineContext
        from bodycorr.matching.refiners.spectral import SpectralRefiner

        self.extractor, self.sha, self.cache, self.variants = extractor, sha, cache, variants
        self.ctx = RefineContext(extractor, 48)
        self.refiner = SpectralRefiner()
        self.prepared: dict = {}
        self.maps: dict = {}
        self.records: list[dict] = []

    def prepare(self, shape):
        if shape.key in self.prepared:
            return self.prepared[shape.key]
        d = cached_describe(shape, self.extractor, self.sha, self.cache)
        t0 = time.perf_counter()
        p = self.refiner.prepare(d, self.ctx)
        self.prepared[shape.key] = (shape.key, p, time.perf_counter() - t0)
        return self.prepared[shape.key]

    def pair(self, a, b) -> dict:
        key = (a[0], b[0])
        if key not in self.maps:
            self.maps[key] = self._compute(a, b)
        return self.maps[key]

    def _compute(self, a, b) -> dict:
        from bodycorr.matching.correspond import match
        from bodycorr.matching.refiners.spectral import agreement, mirrored_map, zoomout

        cfg = self.refiner.config
        A, B = a[1].described, b[1].described
        sb, tb = a[1].data, b[1].data
        sd, td = A.descriptors[sb.sample].astype(np.float32), B.descriptors[tb.sample].astype(np.float32)
        fit = (sb.fit, tb.fit)
        full = lambda p: tb.sample[p[sb.nearest]]  # noqa: E731
        run = lambda p, k0, k1, w, step=cfg.step, f=fit: zoomout(p, sb.evecs, tb.evecs, sd, td, k0, k1, step, w, f)  # noqa: E731
        rec: dict = {"pair": f"{a[0]}->{b[0]}"}
        out: dict = {}
        initial = match(A.descriptors, B.descriptors, A.consistency, source_points=A.points).target
        out["plain"] = initial
        t = {}
        t0 = time.perf_counter()
        start = tb.nearest[np.asarray(initial)[sb.sample]]
        template, tdesc = self.ctx.template()
        starts = {"start": start, "mirror": mirrored_map(sd, td, tdesc, template.symmetry)}
        judged = {n: run(p, cfg.k_init, min(cfg.judge_k, cfg.k_final), 0.0) for n, p in starts.items()}
        score = {n: agreement(sd, td, p) for n, p in judged.items()}
        start = starts[min(score, key=score.get)]
        t["flip_test"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        free = run(start, cfg.k_init, cfg.k_final, 0.0)
        t["free"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        anch = run(start, cfg.k_init, cfg.k_final, cfg.anchor_weight)
        t["anchored"] = time.perf_counter() - t0
        cover = {n: len(np.unique(p)) / len(tb.sample) for n, p in (("free", free), ("anchored", anch))}
        rec["coverage"] = cover
        rec["agreement"] = {"free": agreement(sd, td, free), "anchored": agreement(sd, td, anch)}
        out["free"], out["anchored"] = full(free), full(anch)
        out["coverage"] = out["anchored"] if cover["anchored"] > cover["free"] else out["free"]
        for v in self.variants:
            t0 = time.perf_counter()
            got = VARIANTS[v](run=run, start=start, free=free, anch=anch, sb=sb, tb=tb, sd=sd, td=td, cfg=cfg, A=A, B=B)
            t[v] = time.perf_counter() - t0
            out[v] = full(got)
            cover[v] = len(np.unique(got)) / len(tb.sample)
            # the twin rule with this variant as the anchored map
            out[f"{v}+rule"] = out[v] if cover[v] > cover["free"] else out["free"]
        rec["seconds"] = t
        self.records.append(rec)
        return out


def _judge_first(run, start, cfg, **_):
    return run(start, cfg.k_init, cfg.k_final, 0.0)


def _zoomout_bijective(p2p, source, target, k_init, k_final, step, fit):
    """ZoomOut whose functional maps are fitted to the forward and the backward point map together."""
    import scipy.linalg

    from bodycorr.matching.nearest import knn
    from bodycorr.matching.refiners.spectral import _nearest_in

    k_final = min(k_final, source.shape[1], target.shape[1])
    ks = list(range(min(k_init, k_final), k_final, step)) + [k_final]
    rs, rt = (np.asarray(f, dtype=np.int64) for f in fit)
    cur = _nearest_in(target, rt, np.asarray(p2p, dtype=np.int64)[rs])
    back = None
    for i, k in enumerate(ks):
        last = i == len(ks) - 1
        A, Bm = source[rs, :k], target[rt[cur], :k]
        if back is not None:
            A, Bm = np.vstack([A, source[rs[back], :k]]), np.vstack([Bm, target[rt, :k]])
        C = scipy.linalg.lstsq(A, Bm)[0]
        qs, qt = (np.arange(len(source)), np.arange(len(target))) if last else (rs, rt)
        emb_t, emb_s = (target[qt, :k] @ C.T).astype(np.float32), source[qs, :k].astype(np.float32)
        cur = knn(emb_s, emb_t, k=1, backend="faiss").index[:, 0]
        if not last:
            back = knn(emb_t, emb_s, k=1, backend="faiss").index[:, 0]
    return cur


def _fewer(basis, points: np.ndarray, m: int) -> np.ndarray:
    """At most ``m`` farthest samples of the basis's fit samples (sorted positions in its sample)."""
    from bodycorr.geometry.sampling import farthest_point_sampling_euclidean

    fit = np.asarray(basis.fit)
    return fit if len(fit) <= m else np.sort(fit[farthest_point_sampling_euclidean(np.asarray(points, np.float64)[basis.sample[fit]], m, seed=0)])


VARIANTS = {
    "anch_s20": lambda run, start, cfg, **_: run(start, cfg.k_init, cfg.k_final, cfg.anchor_weight, 20),
    "anch_f2000": lambda run, start, cfg, sb, tb, A, B, **_: run(start, cfg.k_init, cfg.k_final, cfg.anchor_weight, cfg.step,
                                                                   (_fewer(sb, A.points, 2000), _fewer(tb, B.points, 2000))),
    "bijective": lambda start, sb, tb, cfg, **_: _zoomout_bijective(start, sb.evecs, tb.evecs, cfg.k_init, cfg.k_final, cfg.step, (sb.fit, tb.fit)),
    "polish1": lambda run, free, cfg, **_: run(free, cfg.k_final, cfg.k_final, 1.0),
    "polish3": lambda run, free, cfg, **_: run(free, cfg.k_final, cfg.k_final, 3.0),
    "polish3x3": lambda run, free, cfg, **_: run(run(run(free, cfg.k_final, cfg.k_final, 3.0), cfg.k_final, cfg.k_final, 3.0), cfg.k_final, cfg.k_final, 3.0),
    # free run in steps of 10 to 100, then 20
    "free_fast": lambda run, start, cfg, **_: run(run(start, cfg.k_init, 100, 0.0), 100, cfg.k_final, 0.0, 20),
    # k_init 30
    "free_kinit40": lambda run, start, cfg, **_: run(start, 40, cfg.k_final, 0.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inter", type=int, default=16)
    ap.add_argument("--intra", type=int, default=8)
    ap.add_argument("--variants", default="")
    ap.add_argument("--cache", default="out/probe-cache")
    ap.add_argument("-o", "--out", default="out/spectral-probe")
    a = ap.parse_args()
    from bench_spectral_tune import print_groups, tuning_pairs

    from bodycorr.evaluation.harness import HarnessConfig, ModelMethod, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import RemeshedPairSuite

    suite = RemeshedPairSuite("synthetic-v1")
    suite.pairs = tuning_pairs(suite, a.inter, a.intra)
    plain = make_method("shipped")
    variants = [v for v in a.variants.split(",") if v]
    probe = Probe(plain.extractor, plain.model_sha256, Path(a.cache), variants)

    class View(ModelMethod):
        parallel_prepare = False

        def __init__(self, variant: str):
            super().__init__(plain.extractor, name=variant)
            self.variant = variant

        def prepare(self, shape):
            return probe.prepare(shape)

        def correspond(self, s, t):
            return probe.pair(s, t)[self.variant]

    methods = [View(v) for v in ["plain", "free", "anchored", "coverage", *[x for v in variants for x in (v, f"{v}+rule")]]]
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("full-full",), workers=1), a.out, progress=True)
    print_groups(res)
    errs = {m: {r.pair: float(r.errors.errors_cm.mean()) for g in res.records[m].values() for r in g} for m in res.methods}
    for rec in probe.records:
        rec["error_cm"] = {m: round(errs[m].get(rec["pair"], float("nan")), 3) for m in res.methods}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "probe.json").write_text(json.dumps(probe.records, indent=1))
    print(f"{'pair':22s} " + " ".join(f"{'cov ' + c:>10s}" for c in probe.records[0]["coverage"]) + " " + " ".join(f"{m:>10s}" for m in res.methods))
    for rec in probe.records:
        print(f"{rec['pair']:22s} " + " ".join(f"{c:10.3f}" for c in rec["coverage"].values()) + " "
              + " ".join(f"{rec['error_cm'][m]:10.2f}" for m in res.methods))  # fmt: skip
    sec = {k: np.mean([r["seconds"][k] for r in probe.records]) for k in probe.records[0]["seconds"]}
    print("mean seconds per pair:", {k: round(v, 2) for k, v in sec.items()})


if __name__ == "__main__":
    main()
