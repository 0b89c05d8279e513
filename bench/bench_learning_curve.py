"""Learning curves of descriptor training recipes: plain nearest-neighbour error against CPU-hours.

Each run folder made with ``bodycorr train --config <recipe> --cpu-hours H --snapshot-cpu-hours h``
holds ``snapshots/cpu_<seconds>.pt``, a model every ``h`` CPU-hours (the run and its data workers).
Every snapshot is scored through the benchmark harness on the remeshed synthetic-v1 test people
(each body re-triangulated on its own, so nothing leans on vertex order), plain nearest neighbours,
no refinement: full-full and noisy partial-full pairs. Prints one table, writes ``curve.md``,
``curve.png`` (mean, median, gross share and flip share against CPU-hours, one line per recipe,
reference models as dashed lines) and ``curve.json``.

Run:  .venv/bin/python bench/bench_learning_curve.py runs/curve-paper runs/curve-dense runs/curve-dense-seg \
          [--reference shipped] [--max-pairs 10] [--workers 2] -o docs/learning_curve
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GROUP_ORDER = ("full-full inter", "full-full intra", "partial-full inter", "partial-full intra")
METRICS = (("AE_cm", "mean error (cm)"), ("median_cm", "median error (cm)"), ("gross_pct", "points > 20 cm (%)"),
           ("flip_pct", "left/right flips (% of points)"))  # fmt: skip


def snapshots(run: Path) -> list[tuple[float, Path]]:
    """(CPU-hours, model file) of each snapshot of ``run``, in CPU order."""
    snaps = sorted((run / "snapshots").glob("cpu_*.pt"))
    if not snaps:
        raise SystemExit(f"{run}: no snapshots/cpu_*.pt. Train with --snapshot-cpu-hours.")
    return [(int(p.stem.split("_")[1]) / 3600.0, p) for p in snaps]


def group_key(name: str) -> str:
    """The harness's group name reduced to kind + inter/intra (noise kept out: one level per run)."""
    words = name.replace("/", " ").split()
    kind = next((w for w in words if w in ("full-full", "partial-full", "partial-partial")), words[0])
    rel = next((w for w in words if w in ("inter", "intra")), "inter")
    return f"{kind} {rel}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="training run folders with snapshots/")
    ap.add_argument("--reference", nargs="*", default=["shipped"], help="models drawn as dashed lines (model files or 'shipped')")
    ap.add_argument("--max-pairs", type=int, default=10, help="pairs per group (the suite's first ones)")
    ap.add_argument("--kinds", default="full-full,partial-full")
    ap.add_argument("--points", type=int, default=1000, help="evaluated source points per pair")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-o", "--out", default="out/learning-curve")
    a = ap.parse_args()

    from bodycorr.evaluation.harness import HarnessConfig, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import pair_suite

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []  # (recipe, cpu_h, spec)
    for r in a.runs:
        run = Path(r)
        for cpu_h, p in snapshots(run):
            entries.append((run.name, cpu_h, str(p)))
    refs = [(f"reference {Path(s).stem if s != 'shipped' else 'shipped'}", None, s) for s in a.reference]
    # each model's rows are kept under rows/, keyed by its file's content and the settings: a rerun
    # with more snapshots scores only the new ones
    from bodycorr.common.cache import content_hash
    from bodycorr.common.fileio import file_sha256
    from bodycorr.matching.describe import DEFAULT_MODEL

    settings = (a.max_pairs, a.kinds, a.points, "noisy")
    cache_dir = out / "rows"
    cache_dir.mkdir(exist_ok=True)
    todo, rows = [], []
    for recipe, cpu_h, s in entries + refs:
        key = content_hash("curve", file_sha256(DEFAULT_MODEL if s == "shipped" else s), repr(settings))
        f = cache_dir / f"{key}.json"
        if f.exists():
            rows += [dict(r, recipe=recipe, cpu_h=cpu_h, model=s, group=group_key(r["group"])) for r in json.loads(f.read_text())]
        else:
            todo.append((recipe, cpu_h, s, f))
    if todo:
        methods = [make_method(s) for _, _, s, _ in todo]
        for m, (recipe, cpu_h, s, _) in zip(methods, todo):
            m.name = f"{recipe} @ {cpu_h:.3f} h" if cpu_h is not None else recipe
        suite = pair_suite("synthetic-v1-remeshed", a.max_pairs)
        cfg = HarnessConfig(kinds=tuple(a.kinds.split(",")), noise=("noisy",), max_points=a.points, workers=a.workers)
        res = run_benchmark(suite, methods, cfg, out / "harness", progress=True)
        summ = res.summaries()
        for m, (recipe, cpu_h, s, f) in zip(methods, todo):
            mine = []
            for g, sm in summ[m.name].items():
                if not sm.get("pairs"):
                    continue
                means = [rec.errors.errors_cm.mean() for rec in res.records[m.name][g]]
                mine.append({"recipe": recipe, "cpu_h": cpu_h, "model": s, "group": group_key(g), "pairs": sm["pairs"],
                             "AE_cm": sm["AE_cm"], "WE_cm": float(np.max(means)), "median_cm": sm["median_cm"],
                             "gross_pct": sm["gross_pct"], "flip_pct": sm.get("flip_pct") or 0.0})  # fmt: skip
            f.write_text(json.dumps(mine))
            rows += mine
    (out / "curve.json").write_text(json.dumps({"runs": a.runs, "reference": a.reference, "max_pairs": a.max_pairs,
                                                "points": a.points, "rows": rows}, indent=1))  # fmt: skip

    lines = ["| recipe | CPU-h | group | pairs | mean | worst pair | median | > 20 cm | flips |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["group"], r["recipe"], r["cpu_h"] if r["cpu_h"] is not None else 1e9)):
        cpu = f"{r['cpu_h']:.2f}" if r["cpu_h"] is not None else "–"
        lines.append(f"| {r['recipe']} | {cpu} | {r['group']} | {r['pairs']} | {r['AE_cm']:.2f} | {r['WE_cm']:.2f} | {r['median_cm']:.2f} | "
                     f"{r['gross_pct']:.1f} % | {r['flip_pct']:.1f} % |")  # fmt: skip
    table = "\n".join(lines)
    (out / "curve.md").write_text(table + "\n")
    print(table)
    plot(rows, out / "curve.png")
    print(f"wrote {out / 'curve.md'}, {out / 'curve.png'}, {out / 'curve.json'}")


def plot(rows: list[dict], path: Path) -> None:
    """One row of panels per group (full-full inter, partial-full inter, ...), one column per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUP_ORDER if any(r["group"] == g for r in rows)]
    fig, axes = plt.subplots(len(groups), len(METRICS), figsize=(4.2 * len(METRICS), 3.4 * len(groups)), squeeze=False)
    recipes = list(dict.fromkeys(r["recipe"] for r in rows if r["cpu_h"] is not None))
    refs = list(dict.fromkeys(r["recipe"] for r in rows if r["cpu_h"] is None))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for gi, g in enumerate(groups):
        for mi, (key, label) in enumerate(METRICS):
            ax = axes[gi, mi]
            for ri, rec in enumerate(recipes):
                pts = sorted((r["cpu_h"], r[key]) for r in rows if r["recipe"] == rec and r["group"] == g)
                if pts:
                    ax.plot(*zip(*pts), "o-", color=colours[ri % len(colours)], label=rec)
            for ri, rec in enumerate(refs):
                v = [r[key] for r in rows if r["recipe"] == rec and r["group"] == g]
                if v:
                    ax.axhline(v[0], ls="--", color="0.4" if ri == 0 else colours[(len(recipes) + ri) % len(colours)], label=rec)
            ax.set_xlabel("training CPU-hours")
            ax.set_ylabel(label)
            ax.set_title(f"{g}: {label.split(' (')[0]}", fontsize=10)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Plain nearest-neighbour error on remeshed synthetic-v1 test people, by training CPU time", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
