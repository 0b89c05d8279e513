"""How the plain matching error falls with the number of views a full mesh is described from.

Run:  .venv/bin/python bench/bench_views.py [--model F] [--views 6,12,24,48,96] [--max-pairs N] [--plot F.png]

Every synthetic-v1 full-full pair (clean) is matched by nearest neighbours of per-vertex
descriptors averaged over N rendered views (``DescriptorExtractor.mesh``), for each N. Prints AE,
AEa (area-weighted), the worst pair and the describe time per mesh (half the median pair's
describe time: one process), and
plots AE and AEa against N. About 2 minutes per view count on 2 cores (all 100 pairs).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--views", default="6,12,24,48,96", help="comma-separated view counts")
    ap.add_argument("--max-pairs", type=int, default=None, help="pairs per group (default: all)")
    ap.add_argument("--plot", default="out/bench_views.png", help="where to write the plot ('' = none)")
    a = ap.parse_args()

    from bodycorr.evaluation.harness import HarnessConfig, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import SyntheticPairSuite

    counts = [int(v) for v in a.views.split(",")]
    suite = SyntheticPairSuite("synthetic-v1", a.max_pairs)
    cfg = HarnessConfig(kinds=("full-full",), noise=("clean",))
    rows = []
    print(f"{'views':>5} {'group':>6} {'pairs':>5} {'AE cm':>7} {'AEa cm':>7} {'WE cm':>7} {'med cm':>7} {'gross %':>7} {'describe s':>10}")
    for n in counts:
        method = make_method(a.model, views=n)
        res = run_benchmark(suite, [method], cfg, progress=False)
        summaries = res.summaries()[method.name]
        for gkey in res.groups:
            s = summaries[gkey]
            group = gkey.split("/")[1]
            rows.append((n, group, s))
            print(f"{n:>5} {group:>6} {s['pairs']:>5} {s['AE_cm']:>7.2f} {s['AE_area_cm']:>7.2f} {s['WE_cm']:>7.2f} "
                  f"{s['median_cm']:>7.2f} {s['gross_pct']:>7.1f} {s.get('median_describe_s', float('nan')) / 2:>10.2f}", flush=True)  # fmt: skip
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for group, style in (("inter", "-"), ("intra", "--")):
            r = [x for x in rows if x[1] == group]
            if not r:
                continue
            ax.plot([x[0] for x in r], [x[2]["AE_cm"] for x in r], "o" + style, color="C0", label=f"AE, {group}-subject")
            ax.plot([x[0] for x in r], [x[2]["AE_area_cm"] for x in r], "s" + style, color="C1", label=f"AEa (area-weighted), {group}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("views per mesh")
        ax.set_ylabel("mean geodesic error (cm)")
        ax.set_title("synthetic-v1 full-full, plain nearest neighbours")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
