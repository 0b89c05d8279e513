"""The partial-scan body fit's candidates, each scored against the truth, so the rule that keeps one
can be chosen offline: on the noisy views of the partial tuning pairs (``bench_partial_tune.py``'s,
outside the benchmark's test pairs).

Run:  .venv/bin/python bench/bench_partial_probe.py [--views 16] [--variants cp0.5,cp5] [-o out/partial-probe]

For every view and body-fit variant (:data:`VARIANTS`: PoseFitConfig changes on AutoRefiner's
partial fit) it records each candidate's (rigid start x mirror penalty) match energy, residual
(scan-to-body), coverage (body-to-scan) and its view -> template error: each view point's nearest
fitted template vertex against its true rest-template point (rest-template distance, cm; the part
of a partial pair's error the fit owns). Then prints each selection rule's mean and worst view.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = {
    "cp0.5": {},
    "cp2": {"closest_point": 2.0},
    "cp5": {"closest_point": 5.0},
    "t100": {"tighten_steps": 100},
    "t200": {"tighten_steps": 200},
}
RATIOS = (1.1, 1.25, 1.5, 2.0, 3.0)


def rules(c: dict) -> dict[str, int]:
    """The candidate each selection rule keeps (c: one view's candidate record)."""
    e, r, cov = (np.asarray(c[k]) for k in ("energy", "residual", "coverage"))
    out = {"residual": int(np.argmin(r)), "energy": int(np.argmin(e)), "combined": int(np.argmin(np.asarray(c["own_energy"]) * (r + cov))),
           "oracle": int(np.argmin(c["error_cm"]))}  # fmt: skip
    for g in RATIOS:
        out[f"residual|energy<={g}"] = int(np.argmin(np.where(e <= g * e.min(), r, np.inf)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--variants", default="cp0.5,cp5")
    ap.add_argument("--cache", default="out/probe-cache")
    ap.add_argument("-o", "--out", default="out/partial-probe")
    a = ap.parse_args()
    from bench_spectral_probe import cached_describe
    from bench_spectral_tune import tuning_pairs
    from tqdm.auto import tqdm

    from bodycorr.body.articulated import PoseFitConfig
    from bodycorr.evaluation.harness import HarnessConfig, _Runner, make_method
    from bodycorr.evaluation.synthetic import RemeshedPairSuite
    from bodycorr.matching.refiners import RefineContext
    from bodycorr.matching.refiners.body import BodyRefiner

    suite = RemeshedPairSuite("synthetic-v1")
    names = list(dict.fromkeys(p.source for p in tuning_pairs(suite, 12, 8, seed=11)))[: a.views]
    runner = _Runner(suite, [], HarnessConfig(kinds=("partial-full",), noise=("noisy",)))
    plain = make_method("shipped")
    ctx = RefineContext(plain.extractor, 48)
    template, _ = ctx.template()
    tv = np.asarray(template.mesh.vertices)
    cache = Path(a.cache)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name in tqdm(names, desc="views"):
        shape = runner.shape(name, True, "noisy")
        d = cached_describe(shape, plain.extractor, plain.model_sha256, cache)
        truth = np.asarray(suite.surface(name).canonical)[shape.vertex]  # (N, 3) rest-template point of each view point
        mirror = truth * np.array([-1.0, 1.0, 1.0])
        from scipy.spatial import cKDTree

        for v in a.variants.split(","):
            ref = BodyRefiner("body", "residual", PoseFitConfig(iterations=400, **VARIANTS[v]))
            fit = ref.prepare(d, ctx).data.body
            c = fit.candidates
            errs, flips = [], []
            for x in c.vertices:
                u = cKDTree(x).query(d.points, workers=1)[1]
                e = np.linalg.norm(tv[u] - truth, axis=1)
                errs.append(float(e.mean() * 100))
                flips.append(float((np.linalg.norm(tv[u] - mirror, axis=1) < e).mean() * 100))
            u = cKDTree(fit.vertices).query(d.points, workers=1)[1]
            final = float(np.linalg.norm(tv[u] - truth, axis=1).mean() * 100)
            own = np.asarray(fit.start_energies) if fit.start_energies is not None else np.full(len(errs), np.nan)
            records.append({"view": name, "variant": v, "error_cm": errs, "flip_pct": flips, "energy": c.energy.tolist(),
                            "residual": c.residual.tolist(), "coverage": c.coverage.tolist(), "penalty": c.penalty.tolist(),
                            "start": c.start.tolist(), "own_energy": own.tolist(), "seconds": fit.seconds, "final_cm": final})  # fmt: skip
            (out / "probe.json").write_text(json.dumps(records, indent=1))
    for v in a.variants.split(","):
        recs = [r for r in records if r["variant"] == v]
        picks = [rules(r) for r in recs]
        print(f"\n{v}: {len(recs)} views, median fit {np.median([r['seconds'] for r in recs]):.1f} s")
        fin = [r["final_cm"] for r in recs]
        print(f"  {'kept fit (final)':22s} mean {np.mean(fin):5.2f}  worst {np.max(fin):5.2f}  views > 8 cm: {sum(x > 8 for x in fin)}")
        for rule in picks[0]:
            e = [r["error_cm"][p[rule]] for r, p in zip(recs, picks)]
            print(f"  {rule:22s} mean {np.mean(e):5.2f}  worst {np.max(e):5.2f}  views > 8 cm: {sum(x > 8 for x in e)}")
        for r, p in zip(recs, picks):
            print(f"  {r['view']:10s} " + " ".join(f"{x:6.2f}{'*' if i == p['residual'] else ' '}" for i, x in enumerate(r["error_cm"]))
                  + "   E " + " ".join(f"{x:.4f}" for x in r["energy"]) + "   R " + " ".join(f"{x * 100:.2f}" for x in r["residual"]))  # fmt: skip


if __name__ == "__main__":
    main()
