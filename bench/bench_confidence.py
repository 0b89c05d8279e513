"""Which per-match score flags the gross errors of plain nearest-neighbour matching?

Run:  .venv/bin/python bench/bench_confidence.py [--model F] [--max-pairs N] [--views 48] [--plot F.png]

Every synthetic-v1 full-full pair (clean; the first ``--max-pairs`` of each group) is matched with
:func:`bodycorr.matching.correspond.match` as ``bodycorr match`` does, and each score is judged by
how well it ranks the matches: AUROC for telling gross errors (> 20 cm) from the rest (0.5 =
chance), and the mean error and gross share of the most confident 75 / 50 / 25 % (sparsification:
what a user gets by keeping only the surest matches). Scores, higher = surer:

* ``confidence``: ``Correspondences.confidence`` as ``bodycorr match`` gives it (the source points
  known): exp(-(d/0.25)^2) x exp(-(cycle/0.1 m)^2);
* ``dist x consistency``: exp(-(d/0.25)^2) x consistency, the confidence before the round trip
  (still what ``match`` gives without source points);
* ``distance``: minus the descriptor distance d alone;
* ``consistency``: the source vertex's multi-view descriptor agreement alone;
* ``mutual``: the match is mutual (ties broken by descriptor distance);
* ``cycle``: minus ``Correspondences.cycle``, the round trip on the source (metres);
* ``oracle``: minus the error itself (the best any score can do).

Errors are geodesic on the target, read from the template's all-pairs table scaled by the square
root of the area ratio (cheap lookups for every vertex; within a few per cent of the harness's
own-surface geodesics, and the same for every score, which is what is compared).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

GROSS_CM = 20.0
KEEP = (1.0, 0.75, 0.5, 0.25)
SCORES = ("confidence", "dist x consistency", "distance", "consistency", "mutual", "cycle", "oracle")


def auroc(score: np.ndarray, bad: np.ndarray) -> float:
    """P(a random good match scores above a random bad one), ties counted half (Mann-Whitney U)."""
    from scipy.stats import rankdata

    good = ~bad
    ng, nb = int(good.sum()), int(bad.sum())
    if ng == 0 or nb == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[good].sum() - ng * (ng + 1) / 2) / (ng * nb))


def sparsify(score: np.ndarray, err: np.ndarray) -> list[tuple[float, float]]:
    """(mean error cm, gross %) of the top ``KEEP`` fractions by score."""
    order = np.argsort(-score, kind="stable")
    out = []
    for k in KEEP:
        sel = order[: max(1, int(round(k * len(order))))]
        out.append((float(err[sel].mean()), float(100 * (err[sel] > GROSS_CM).mean())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--max-pairs", type=int, default=10, help="pairs per group (0 = all 40 inter + 60 intra)")
    ap.add_argument("--views", type=int, default=48)
    ap.add_argument("--plot", default="out/bench_confidence.png", help="sparsification plot ('' = none)")
    a = ap.parse_args()

    from bodycorr.evaluation.harness import make_method
    from bodycorr.evaluation.synthetic import SyntheticPairSuite
    from bodycorr.matching.correspond import match

    suite = SyntheticPairSuite("synthetic-v1", a.max_pairs, progress=False, geodesic="template")
    method = make_method(a.model, views=a.views)
    up = np.array([0.0, 0.0, 1.0])
    described: dict = {}
    t0 = time.perf_counter()

    def describe(name: str):
        if name not in described:
            described[name] = method.extractor.mesh(suite.surface(name).mesh, a.views, up)
        return described[name]

    groups: dict[str, dict[str, list[np.ndarray]]] = {}
    for i, p in enumerate(suite.pairs):
        s, t = describe(p.source), describe(p.target)
        pts = suite.surface(p.source).mesh.vertices
        c = match(s.descriptors, t.descriptors, s.consistency, source_points=pts)
        n = len(c.target)
        err = suite.geodesics(p.target).distances(np.arange(n), c.target) * 100.0  # same topology: truth = vertex i
        g = groups.setdefault(p.group, {})
        for key, v in (("error", err), ("confidence", c.confidence), ("distance", -c.distance), ("consistency", s.consistency),
                       ("mutual", c.mutual + 1e-3 * np.exp(-((c.distance / 0.25) ** 2))), ("cycle", -c.cycle),
                       ("dist x consistency", np.exp(-((c.distance / 0.25) ** 2)) * np.clip(s.consistency, 0, 1)), ("oracle", -err)):  # fmt: skip
            g.setdefault(key, []).append(np.asarray(v, dtype=np.float64))
        print(f"\r{i + 1}/{len(suite.pairs)} pairs, {time.perf_counter() - t0:.0f} s", end="", flush=True)
    print()

    curves = {}
    for group, g in groups.items():
        err = np.concatenate(g["error"])
        print(f"\n{group}-subject: {len(g['error'])} pairs, {len(err)} matches, AE {err.mean():.2f} cm, "
              f"gross (> {GROSS_CM:.0f} cm) {100 * (err > GROSS_CM).mean():.1f} %")  # fmt: skip
        head = "".join(f"  keep {int(100 * k)} %: AE / gross" for k in KEEP[1:])
        print(f"{'score':>18} {'AUROC':>6}{head}")
        for key in SCORES:
            sc = np.concatenate(g[key])
            sp = sparsify(sc, err)
            curves[(group, key)] = sp
            cols = "".join(f"  {ae:9.2f} / {gr:4.1f} %    " for ae, gr in sp[1:])
            print(f"{key:>18} {auroc(sc, err > GROSS_CM):6.3f}{cols}")
        cyc = -np.concatenate(g["cycle"])
        for th in (0.05, 0.10):
            ok = cyc <= th
            print(f"  round trip <= {100 * th:.0f} cm: keeps {100 * ok.mean():.1f} % of matches, AE {err[ok].mean():.2f} cm, "
                  f"gross {100 * (err[ok] > GROSS_CM).mean():.1f} %; the rest AE {err[~ok].mean():.2f} cm")  # fmt: skip
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
        for ax, group in zip(axes[0], groups):
            for j, key in enumerate(SCORES):
                style = {"color": "k", "linestyle": "--"} if key == "oracle" else {"color": f"C{j}", "marker": "o"}
                ax.plot([100 * k for k in KEEP], [ae for ae, _ in curves[(group, key)]], label=key, **style)
            ax.invert_xaxis()
            ax.set_xlabel("matches kept, most confident first (%)")
            ax.set_ylabel("mean geodesic error (cm)")
            ax.set_title(f"synthetic-v1 full-full {group}-subject")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
