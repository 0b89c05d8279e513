"""Full-full pairs through a body fit seeded by the spectral map to the template, against the direct
spectral map, on the tuning pairs: does Anny, fitted onto each scan from its (tight) spectral map to
the template, fix the whole-limb offsets that ZoomOut leaves between different people?

Run:  .venv/bin/python bench/bench_template_probe.py [--inter 16] [--intra 8] [-o out/template-probe]

Methods (each scored through the harness: mean, worst, flips per group):
  direct   the auto refiner's map (spectral, source -> target)
  via_tpl  source -> template -> target, both spectral maps
  fit      Anny fitted onto each scan from its spectral map to the template (pose, phenotypes,
           then tightened onto the scan; ``fit_body_to_map``, with ``--descriptor-weight`` > 0 its
           descriptor matches too); each source point's place on its fit -> the same place on the
           target's fit -> nearest target point
  fit+zo   ZoomOut (the spectral refiner's map, flip test and twin) started from ``fit``
Uses the tuning pairs of ``bench_spectral_tune.py`` and the disk cache of ``bench_spectral_probe.py``
(fits cached there too, keyed by the fit's settings).

Session 18, 16 + 8 tuning pairs, inter / intra mean (worst pair), cm: direct 3.20 (5.07) / 2.55 (4.71);
via_tpl 4.81 (18.0) / 4.79 (9.98); fit from the map alone 3.02 (11.70) / 1.87 (2.80): one scan's arm,
held against the torso, was mapped onto the torso and the fit kept it there; fit+zo 3.38 (7.29) /
2.06 (3.62); fit with the descriptor matches (``--descriptor-weight 1``) **2.50 (5.11) / 1.83 (2.76)**,
flips 0.17 -> 0.03 % inter. About 10 s per scan for the fit (400 + 200 steps), 2 cores, busy.
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
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).parent))


def through_fits(a_points, fa, faces, fb, b_points) -> np.ndarray:
    """Each source point's closest place on its fit -> that place on the target's fit -> nearest target point."""
    from bodycorr.geometry.closest import SurfaceLocator

    got = SurfaceLocator(fa, faces).query(a_points)
    q = np.einsum("nk,nkd->nd", got.bary, fb[faces[got.face]])
    return cKDTree(b_points).query(q, workers=1)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inter", type=int, default=16)
    ap.add_argument("--intra", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--tighten", type=int, default=200)
    ap.add_argument("--select", default="residual")
    ap.add_argument("--descriptor-weight", type=float, default=0.0)
    ap.add_argument("--methods", default="direct,via_tpl,fit,fit+zo")
    ap.add_argument("--suite", default="synthetic-v1", help="synthetic-v1 or synthetic-v1-clothed (their remeshed bodies)")
    ap.add_argument("--cache", default="out/probe-cache")
    ap.add_argument("-o", "--out", default="out/template-probe")
    a = ap.parse_args()
    from bench_spectral_probe import cached_describe
    from bench_spectral_tune import print_groups, tuning_pairs

    from bodycorr.body.articulated import PoseFitConfig
    from bodycorr.evaluation.harness import HarnessConfig, ModelMethod, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import RemeshedPairSuite
    from bodycorr.matching.correspond import match
    from bodycorr.matching.fit import fit_body_to_map
    from bodycorr.matching.refiners import RefineContext
    from bodycorr.matching.refiners.auto import AutoRefiner
    from bodycorr.matching.refiners.spectral import agreement

    suite = RemeshedPairSuite(a.suite)
    suite.pairs = tuning_pairs(suite, a.inter, a.intra)
    plain = make_method("shipped")
    ctx = RefineContext(plain.extractor, 48)
    auto = AutoRefiner()
    template, tdesc = ctx.template()
    cfg = PoseFitConfig(iterations=a.iterations, select=a.select, tighten_steps=a.tighten)
    prepared: dict = {}
    wanted = a.methods.split(",")
    maps: dict = {}
    seconds: dict = {}
    agree: dict = {}

    def prep(shape):
        if shape.key not in prepared:
            f = Path(a.cache) / f"fit-{a.iterations}-{a.tighten}-{a.select}{'' if not a.descriptor_weight else f'-dw{a.descriptor_weight:g}'}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', shape.key)}.pkl"
            if f.exists():
                prepared[shape.key] = pickle.loads(f.read_bytes())
                return prepared[shape.key]
            d = cached_describe(shape, plain.extractor, plain.model_sha256, Path(a.cache))
            t0 = time.perf_counter()
            p = auto.prepare(d, ctx)
            u = auto._spectral_side(p, "to_template", ctx)
            if "via_tpl" in wanted:
                auto._spectral_side(p, "from_template", ctx)
            t1 = time.perf_counter()
            fit = fit_body_to_map(d.points, u, template, cfg, d.descriptors, d.consistency, tdesc, a.descriptor_weight).body
            t2 = time.perf_counter()
            seconds[shape.key] = {"spectral": round(t1 - t0, 2), "fit": round(t2 - t1, 2)}
            print(f"  {shape.key}: spectral {t1 - t0:.1f} s, fit {t2 - t1:.1f} s", flush=True)
            prepared[shape.key] = (shape.key, p, fit)
            f.write_bytes(pickle.dumps(prepared[shape.key]))
        return prepared[shape.key]

    def pair(s, t):
        key = (s[0], t[0])
        if key not in maps:
            ps, pt = s[1], t[1]
            A, B = ps.described, pt.described
            initial = match(A.descriptors, B.descriptors, A.consistency, source_points=A.points)
            out = {}
            if "direct" in wanted:
                out["direct"] = auto.refine(ps, pt, initial, ctx).correspondences.target
            if "via_tpl" in wanted:
                out["via_tpl"] = pt.data["from_template"][ps.data["to_template"]]
            out["fit"] = through_fits(A.points, s[2].vertices, template.mesh.faces, t[2].vertices, B.points)
            if "fit+zo" in wanted:
                sp = auto.spectral
                out["fit+zo"] = sp.map(A, ps.data["spectral"].data, B, pt.data["spectral"].data, out["fit"], ctx)[0]
            agree[f"{s[0]}->{t[0]}"] = {m: round(agreement(A.descriptors, B.descriptors, p), 4) for m, p in out.items()}
            maps[key] = out
        return maps[key]

    class View(ModelMethod):
        parallel_prepare = False

        def __init__(self, variant: str):
            super().__init__(plain.extractor, name=variant)
            self.variant = variant

        def prepare(self, shape):
            return prep(shape)

        def correspond(self, s, t):
            return pair(s, t)[self.variant]

    methods = [View(v) for v in wanted]
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("full-full",), workers=1), a.out, progress=True)
    print_groups(res)
    errs = {m: {r.pair: float(r.errors.errors_cm.mean()) for g in res.records[m].values() for r in g} for m in res.methods}
    pairs = sorted(errs["direct"])
    print(f"{'pair':22s} " + " ".join(f"{m:>8s}" for m in res.methods) + "  descriptor agreement of each")
    for p in pairs:
        print(f"{p:22s} " + " ".join(f"{errs[m][p]:8.2f}" for m in res.methods) + " " + " ".join(f"{agree[p][m]:8.4f}" for m in res.methods))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "probe.json").write_text(json.dumps({"errors": errs, "seconds": seconds, "agreement": agree}, indent=1))


if __name__ == "__main__":
    main()
