"""Plots of correspondence errors: cumulative curves and per-pair sorted errors (Wei et al. Fig. 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycorr.common.fileio import atomic_path
from bodycorr.evaluation.metrics import cumulative_curve


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Path(path)


def plot_cumulative(curves: dict[str, np.ndarray], path: str | Path, max_cm: float = 20.0) -> Path:
    """One curve per method or group: share of points with geodesic error below x cm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, e in curves.items():
        x, y = cumulative_curve(e, max_cm)
        ax.plot(x, y * 100, label=f"{name} (mean {np.mean(e):.1f} cm)")
    ax.set_xlabel("geodesic error (cm)")
    ax.set_ylabel("% of points")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sorted_pairs(groups: dict[str, list], path: str | Path) -> Path:
    """Per group, the pairs' mean errors sorted ascending."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, pairs in groups.items():
        m = np.sort([p.errors_cm.mean() for p in pairs])
        ax.plot(np.arange(1, len(m) + 1), m, marker=".", label=name)
    ax.set_xlabel("pair (sorted)")
    ax.set_ylabel("mean geodesic error (cm)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
