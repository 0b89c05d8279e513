"""Correspondence quality of a model on a synthetic suite: full-full, partial-full, partial-partial.

The suite runs through the generic harness (:mod:`bodycorr.evaluation.harness`) as a
:class:`SyntheticPairSuite`: its shapes share the template's topology (vertex i is template vertex
i), its views are the suite's stored Kinect v2 renders with per-pixel template-vertex truth, and
geodesics come from the template's all-pairs table scaled to each target's size (square root of
its surface-area ratio to the template), so every source point is evaluated.

The table is an approximation of geodesics on each target's own surface: against the target's own
``graph`` geodesics (two targets, 40 sources each) single distances differ by 4.6 % on average
(p95 12 %, bias +0.6 % and +1.3 %), and on 800 points of 4 pairs of the shipped model the pair's
mean error moved by -6.0 % to +0.2 % (the medians by up to 8 %). Exact own-surface geodesics for
every point would need an all-pairs table per target (~100 CPU-s each, 64 targets). Lookups read
only the needed entries (``distances``), so scoring is a small part of a run (see
:mod:`bodycorr.evaluation.harness`, "Speed"); no point is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.body.template import get_template
from bodycorr.common.fileio import ensure_dir, write_json_atomic
from bodycorr.data.suite import load_suite
from bodycorr.evaluation.harness import (
    FLIP_MIN_M,
    KINDS,
    OVERLAP_M,
    HarnessConfig,
    ModelMethod,
    PairSpec,
    PairSuite,
    Surface,
    View,
    run_benchmark,
)
from bodycorr.geometry.geodesic import all_pairs_geodesics
from bodycorr.matching.extract import DescriptorExtractor

__all__ = ["KINDS", "OVERLAP_M", "FLIP_MIN_M", "SuiteEvalConfig", "SyntheticPairSuite", "evaluate_suite", "format_table"]


@dataclass(frozen=True)
class SuiteEvalConfig:
    """What :func:`evaluate_suite` runs.

    Attributes:
        kinds: pair types; noise: depth views "clean" and/or "noisy" for partial sources/targets.
        views: renders per full mesh for per-vertex descriptors.
        max_pairs: evaluate only the first N pairs of each set (0 = all): for quick checks.
        workers: processes describing shapes (``HarnessConfig.workers``).
    """

    suite: str = "synthetic-v1"
    kinds: tuple[str, ...] = KINDS
    noise: tuple[str, ...] = ("clean", "noisy")
    views: int = 48
    max_pairs: int = 0
    workers: int = 1


class _TableRows:
    """Geodesic rows from the template's all-pairs table, scaled to one target's size."""

    def __init__(self, table: np.ndarray, scale: float):
        self.table, self.scale = table, float(scale)

    def rows(self, vertices: np.ndarray) -> np.ndarray:
        """(K,) vertices -> (K, V) float32 metres."""
        return self.table[np.asarray(vertices, dtype=np.int64)].astype(np.float32) * np.float32(self.scale)

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N,) float32 metres from vertex ``a[i]`` to ``b[i]``: ``rows(a)[i, b[i]]`` without the rows
        (a full-full pair needs 13k rows, 0.7 GB, but only one entry of each)."""
        d = self.table[np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)]
        return d.astype(np.float32) * np.float32(self.scale)


class SyntheticPairSuite(PairSuite):
    """A synthetic suite (``synthetic-v1``) as a harness suite: pairs grouped ``inter`` then ``intra``
    (the first ``max_pairs`` of each when > 0), z up, the template's left/right symmetry."""

    default_points = 0  # the table makes every point cheap: evaluate all

    def __init__(self, name: str = "synthetic-v1", max_pairs: int = 0, progress: bool = True):
        self.suite = load_suite(name)
        self.name = self.suite.name
        template = get_template()
        self.table = all_pairs_geodesics(template.mesh, progress=progress)
        self.symmetry = template.symmetry
        self.template_area = float(template.mesh.face_areas().sum())
        self.names = [self.suite.shape_name(i) for i in range(len(self.suite))]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.pairs = []
        for pairset in ("inter", "intra"):
            pairs = self.suite.pairs(pairset)
            if max_pairs:
                pairs = pairs[:max_pairs]
            self.pairs += [PairSpec(self.names[int(a)], self.names[int(b)], pairset) for a, b in pairs]
        self.issues = []
        self.meta = {"format": "synthetic", "geodesic": "template all-pairs table (graph), scaled by sqrt(area ratio)",
                     "symmetry": {"available": True, "from": "template"}, "units": {"m": len(self.suite)}}  # fmt: skip
        self._surfaces: dict[str, Surface] = {}

    def surface(self, name: str) -> Surface:
        if name not in self._surfaces:
            mesh = self.suite.mesh(self.index[name])
            self._surfaces[name] = Surface(name, mesh, None, self.symmetry, np.array([0.0, 0.0, 1.0]), "z",
                                           str(self.suite.identity[self.index[name]]))  # fmt: skip
        return self._surfaces[name]

    def view(self, name: str, noise: str) -> View:
        i = self.index[name]
        depth = self.suite.depth_clean[i] if noise == "clean" else self.suite.depth_noisy[i]
        vert = self.suite.vertex_clean[i] if noise == "clean" else self.suite.vertex_noisy[i]
        valid = np.isfinite(depth) & (depth > 0)
        return View(np.where(valid, depth, 0).astype(np.float32), self.suite.camera(i), vert[valid].astype(np.int64),
                    f"{name} ({noise})")  # fmt: skip

    def geodesics(self, name: str) -> _TableRows:
        area = float(self.surface(name).mesh.face_areas().sum())
        return _TableRows(self.table, np.sqrt(area / self.template_area))


def evaluate_suite(extractor: DescriptorExtractor, config: SuiteEvalConfig = SuiteEvalConfig(), out: str | Path | None = None,
                   progress: bool = True) -> dict:  # fmt: skip
    """Match every pair of the suite and summarise errors per (kind, intra/inter, noise).

    Geodesic error is measured on the template (all shapes share its topology, so the true target
    point of every source point is known exactly) and scaled to each target's size (square root of
    its area ratio to the template). Returns a nested dict, also written to ``out/results.json``;
    ``"_per_pair"`` holds the :class:`~bodycorr.evaluation.metrics.PairErrors` of each group.
    """
    suite = SyntheticPairSuite(config.suite, config.max_pairs, progress)
    method = ModelMethod(extractor, name="model", views=config.views, up="z")
    cfg = HarnessConfig(kinds=tuple(config.kinds), noise=tuple(config.noise), max_points=0, workers=config.workers)
    res = run_benchmark(suite, [method], cfg, progress=progress)
    per_pair = {g: [r.errors for r in res.records["model"][g]] for g in res.groups}
    results: dict = {"suite": suite.name, "views": config.views, "groups": res.summaries()["model"]}
    if res.issues:
        results["errors"] = res.issues
    if out is not None:
        out = ensure_dir(out)
        write_json_atomic(out / "results.json", results)
        from bodycorr.evaluation.plots import plot_cumulative, plot_sorted_pairs

        nonempty = {k: v for k, v in per_pair.items() if v}
        plot_cumulative({k: np.concatenate([p.errors_cm for p in v]) for k, v in nonempty.items()}, out / "cumulative.png")
        plot_sorted_pairs(nonempty, out / "pairs_sorted.png")
    results["_per_pair"] = per_pair
    return results


def format_table(results: dict) -> str:
    """A terminal table of the groups."""
    cols = ("AE_cm", "WE_cm", "median_cm", "within_5cm_pct", "within_10cm_pct", "gross_pct", "flip_share_of_gross_pct")
    head = f"{'group':34s}" + "".join(f"{c.replace('_pct', ' %').replace('_cm', ' cm'):>14s}" for c in cols)
    lines = [head, "-" * len(head)]
    for k, g in results["groups"].items():
        lines.append(f"{k:34s}" + "".join(f"{_num(g.get(c)):14.2f}" for c in cols))
    return "\n".join(lines)


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")
