"""Correspondence error statistics: per-pair means, worst pair, accuracy within radii, curves, flips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLDS_CM = (2.0, 5.0, 10.0)
GROSS_CM = 20.0


@dataclass(frozen=True, eq=False)
class PairErrors:
    """Errors of one matched pair.

    Attributes:
        name: "source->target".
        errors_cm: (N,) geodesic error of every evaluated source point, centimetres.
        flips: (N,) bool, the match is nearer the mirror of the truth than the truth (a left/right flip).
        outside_overlap: (N,) bool (partial pairs), the source point's truth is not visible in the target.
        seconds: timings (``describe``, ``match``).
        weights: (N,) the surface area (m²) each evaluated point stands for, or None (every point
            counts the same). A complete mesh's vertices are far from evenly spread (Anny's head,
            hands and feet hold 72 % of its vertices and 27 % of its area), so its per-vertex mean
            mostly measures those parts; weighted by area it is the mean over the surface. A
            depth view's pixels already sample the visible surface by area.
    """

    name: str
    errors_cm: np.ndarray
    flips: np.ndarray
    outside_overlap: np.ndarray | None = None
    seconds: dict | None = None
    weights: np.ndarray | None = None

    def area_mean_cm(self) -> float:
        """The mean error over the surface: weighted by ``weights`` (plain mean without them)."""
        if self.weights is None or not np.sum(self.weights) > 0:
            return float(self.errors_cm.mean())
        return float(np.average(self.errors_cm, weights=self.weights))


def summarize(pairs: list[PairErrors]) -> dict:
    """AE (mean over pairs of the pair mean), WE (worst pair mean), their area-weighted forms
    (``AE_area_cm``, ``WE_area_cm``: :meth:`PairErrors.area_mean_cm`), within 2/5/10 cm, gross
    rate, flip share of the gross errors, area under the cumulative curve to 10 cm (1 = perfect)."""
    if not pairs:
        return {"pairs": 0}
    means = np.array([p.errors_cm.mean() for p in pairs])
    area_means = np.array([p.area_mean_cm() for p in pairs])
    allerr = np.concatenate([p.errors_cm for p in pairs])
    flips = np.concatenate([p.flips for p in pairs])
    gross = allerr > GROSS_CM
    out = {
        "pairs": len(pairs),
        "points": int(allerr.size),
        "AE_cm": float(means.mean()),
        "WE_cm": float(means.max()),
        "worst_pair": pairs[int(means.argmax())].name,
        "AE_area_cm": float(area_means.mean()),
        "WE_area_cm": float(area_means.max()),
        "median_cm": float(np.median(allerr)),
        **{f"within_{t:g}cm_pct": float((allerr < t).mean() * 100) for t in THRESHOLDS_CM},
        "gross_pct": float(gross.mean() * 100),
        "flip_share_of_gross_pct": float(flips[gross].mean() * 100) if gross.any() else 0.0,
        "auc_10cm": float(auc(allerr, 10.0)),
    }
    if pairs[0].outside_overlap is not None:
        out["outside_overlap_pct"] = float(np.concatenate([p.outside_overlap for p in pairs]).mean() * 100)
    secs = [p.seconds for p in pairs if p.seconds]
    if secs:
        for k in secs[0]:
            out[f"median_{k}_s"] = float(np.median([s[k] for s in secs]))
    return out


def cumulative_curve(errors_cm: np.ndarray, max_cm: float = 20.0, steps: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): share of points with error below x, x from 0 to ``max_cm``."""
    x = np.linspace(0, max_cm, steps)
    e = np.sort(np.asarray(errors_cm))
    return x, np.searchsorted(e, x, side="right") / max(len(e), 1)


def auc(errors_cm: np.ndarray, max_cm: float = 10.0) -> float:
    """Normalised area under the cumulative error curve up to ``max_cm``."""
    x, y = cumulative_curve(errors_cm, max_cm)
    return float(np.trapezoid(y, x) / max_cm)
