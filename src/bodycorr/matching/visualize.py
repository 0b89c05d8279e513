"""Pictures of correspondences: source and target side by side, coloured by where points match."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycorr.common.fileio import atomic_path


def position_colours(points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N, 3) RGB in [0, 1] from their normalised position (robust to outliers)."""
    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    return np.clip((points - lo) / np.maximum(hi - lo, 1e-9), 0, 1)


def _view(ax, points: np.ndarray, colours: np.ndarray, up: np.ndarray, title: str):
    up = up / np.linalg.norm(up)
    c = points - points.mean(0)
    # a horizontal axis: the principal direction orthogonal to up
    flat = c - np.outer(c @ up, up)
    _, _, vt = np.linalg.svd(flat[:: max(1, len(flat) // 5000)], full_matrices=False)
    right = vt[0] - (vt[0] @ up) * up
    right /= np.linalg.norm(right)
    depth = np.cross(right, up)
    order = np.argsort(c @ depth)[::-1]  # far first, near drawn last
    sc = ax.scatter((c @ right)[order], (c @ up)[order], c=colours[order], s=1.5, linewidths=0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    return sc


def side_by_side(result, path: str | Path, errors_cm: np.ndarray | None = None) -> Path:
    """PNG: the target coloured by position, the source coloured by its matches' colours
    (and, if ``errors_cm`` is given, the source coloured by error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tgt = result.target
    src = result.source
    tc = position_colours(tgt.points)
    sc = tc[result.correspondences.target]
    n = 3 if errors_cm is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 5))
    _view(axes[0], src.points, sc, src.up, f"source ({src.scan.kind}): colours of its matches")
    _view(axes[1], tgt.points, tc, tgt.up, f"target ({tgt.scan.kind}): position colours")
    if errors_cm is not None:
        import matplotlib.cm as cm
        from matplotlib.colors import Normalize

        ec = cm.magma_r(np.clip(errors_cm / 20.0, 0, 1))[:, :3]
        _view(axes[2], src.points, ec, src.up, f"geodesic error: mean {errors_cm.mean():.1f} cm, median {np.median(errors_cm):.1f} cm")
        bar = fig.colorbar(cm.ScalarMappable(Normalize(0, 20), "magma_r"), ax=axes[2], fraction=0.04, pad=0.02)
        bar.set_label("cm (20 and over: black)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
