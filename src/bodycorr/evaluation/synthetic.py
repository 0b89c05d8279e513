"""Correspondence quality of a model on a synthetic suite: full-full, partial-full, partial-partial."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.body.template import get_template
from bodycorr.common.fileio import ensure_dir, write_json_atomic
from bodycorr.data.suite import Suite, load_suite
from bodycorr.evaluation.metrics import PairErrors, summarize
from bodycorr.geometry.geodesic import all_pairs_geodesics
from bodycorr.matching.correspond import match
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import remove_flying_pixels

KINDS = ("full-full", "partial-full", "partial-partial")
OVERLAP_M = 0.03
FLIP_MIN_M = 0.10  # truth and its mirror must be this far apart for a match to count as a flip


@dataclass(frozen=True)
class SuiteEvalConfig:
    """What :func:`evaluate_suite` runs.

    Attributes:
        kinds: pair types; noise: depth views "clean" and/or "noisy" for partial sources/targets.
        views: renders per full mesh for per-vertex descriptors.
        max_pairs: evaluate only the first N pairs of each set (0 = all): for quick checks.
    """

    suite: str = "synthetic-v1"
    kinds: tuple[str, ...] = KINDS
    noise: tuple[str, ...] = ("clean", "noisy")
    views: int = 48
    max_pairs: int = 0


class _Shapes:
    """Descriptors of the suite's shapes, computed once and reused across pairs."""

    def __init__(self, suite: Suite, extractor: DescriptorExtractor, views: int):
        self.suite, self.ex, self.views = suite, extractor, views
        self.full: dict[int, tuple[np.ndarray, float]] = {}
        self.partial: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, float]] = {}

    def full_desc(self, i: int) -> tuple[np.ndarray, float]:
        if i not in self.full:
            t0 = time.perf_counter()
            vd = self.ex.mesh(self.suite.mesh(i), self.views, np.array([0.0, 0.0, 1.0]))
            self.full[i] = (vd.descriptors, time.perf_counter() - t0)
        return self.full[i]

    def partial_desc(self, i: int, noise: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(descriptors (N, D), truth template vertex (N,) -1 = none, seconds) of the valid pixels."""
        if (i, noise) not in self.partial:
            depth = self.suite.depth_clean[i] if noise == "clean" else self.suite.depth_noisy[i]
            vert = self.suite.vertex_clean[i] if noise == "clean" else self.suite.vertex_noisy[i]
            t0 = time.perf_counter()
            depth = remove_flying_pixels(depth)  # as `bodycorr match` does for depth input
            pd = self.ex.depth_map(depth, self.suite.camera(i), f"{self.suite.shape_name(i)} ({noise})")
            truth = vert[pd.pixels[:, 0], pd.pixels[:, 1]]
            self.partial[(i, noise)] = (pd.descriptors, truth, time.perf_counter() - t0)
        return self.partial[(i, noise)]


def _scale(suite: Suite, i: int, template_area: float) -> float:
    """Geodesic scale of shape i relative to the template: sqrt of the surface-area ratio."""
    return float(np.sqrt(suite.mesh(i).face_areas().sum() / template_area))


def evaluate_suite(extractor: DescriptorExtractor, config: SuiteEvalConfig = SuiteEvalConfig(), out: str | Path | None = None,
                   progress: bool = True) -> dict:  # fmt: skip
    """Match every pair of the suite and summarise errors per (kind, intra/inter, noise).

    Geodesic error is measured on the template (all shapes share its topology, so the true target
    point of every source point is known exactly) and scaled to each target's size (square root of
    its area ratio to the template). Returns a nested dict, also written to ``out/results.json``.
    """
    suite = load_suite(config.suite)
    template = get_template()
    D = all_pairs_geodesics(template.mesh, progress=progress)
    sym = template.symmetry
    t_area = float(template.mesh.face_areas().sum())
    shapes = _Shapes(suite, extractor, config.views)
    results: dict = {"suite": suite.name, "views": config.views, "groups": {}}
    per_pair: dict = {}
    jobs = []
    for kind in config.kinds:
        for pairset in ("inter", "intra"):
            pairs = suite.pairs(pairset)
            if config.max_pairs:
                pairs = pairs[: config.max_pairs]
            for noise in (("clean",) if kind == "full-full" else config.noise):
                jobs.append((kind, pairset, noise, pairs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(j[3]) for j in jobs), desc="pairs", unit="pair")
    for kind, pairset, noise, pairs in jobs:
        errs = []
        for a, b in pairs:
            a, b = int(a), int(b)
            s_b = _scale(suite, b, t_area)
            outside = None
            if kind.startswith("full"):
                src, ts = shapes.full_desc(a)
                truth = np.arange(len(src))
            else:
                src, truth, ts = shapes.partial_desc(a, noise)
            if kind.endswith("full"):
                tgt, tt = shapes.full_desc(b)
                tgt_truth = np.arange(len(tgt))
            else:
                tgt, tgt_truth, tt = shapes.partial_desc(b, noise)
            t0 = time.perf_counter()
            c = match(src, tgt)
            tm = time.perf_counter() - t0
            keep = truth >= 0
            pred = tgt_truth[c.target[keep]]
            tr = truth[keep]
            ok = pred >= 0  # a match onto a target pixel without truth (flying pixel) counts as gross
            d = np.where(ok, D[tr, np.maximum(pred, 0)].astype(np.float32), 1.0)
            d_mirror = np.where(ok, D[sym[tr], np.maximum(pred, 0)].astype(np.float32), 1.0)
            flips = (d_mirror < d) & (D[tr, sym[tr]].astype(np.float32) > FLIP_MIN_M)
            if kind == "partial-partial":
                seen_t = np.unique(tgt_truth[tgt_truth >= 0])
                ut, inv = np.unique(tr, return_inverse=True)
                near = D[np.ix_(ut, seen_t)].astype(np.float32).min(1) < OVERLAP_M
                outside = ~near[inv]
            name = f"{suite.shape_name(a)}->{suite.shape_name(b)}"
            errs.append(PairErrors(name, d * s_b * 100, flips, outside, {"describe": ts + tt, "match": tm}))
            bar and bar.update()
        key = f"{kind}/{pairset}/{noise}"
        results["groups"][key] = summarize(errs)
        per_pair[key] = errs
    bar and bar.close()
    if out is not None:
        out = ensure_dir(out)
        write_json_atomic(out / "results.json", results)
        from bodycorr.evaluation.plots import plot_cumulative, plot_sorted_pairs

        plot_cumulative({k: np.concatenate([p.errors_cm for p in v]) for k, v in per_pair.items()}, out / "cumulative.png")
        plot_sorted_pairs(per_pair, out / "pairs_sorted.png")
    results["_per_pair"] = per_pair
    return results


def format_table(results: dict) -> str:
    """A terminal table of the groups."""
    cols = ("AE_cm", "WE_cm", "median_cm", "within_5cm_pct", "within_10cm_pct", "gross_pct", "flip_share_of_gross_pct")
    head = f"{'group':34s}" + "".join(f"{c.replace('_pct', ' %').replace('_cm', ' cm'):>14s}" for c in cols)
    lines = [head, "-" * len(head)]
    for k, g in results["groups"].items():
        lines.append(f"{k:34s}" + "".join(f"{g.get(c, float('nan')):14.2f}" for c in cols))
    return "\n".join(lines)
