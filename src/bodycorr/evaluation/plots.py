"""Plots of correspondence errors: cumulative curves and per-pair sorted errors (Wei et al. Fig. 8), and
errors drawn on a body surface (known at evaluated points, spread to every vertex)."""

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


def spread_to_vertices(anchors: np.ndarray, values: np.ndarray, vertices: np.ndarray, k: int = 6) -> np.ndarray:
    """Values known at points on a body, as a value per vertex of its mesh.

    anchors: (K, 3) points (metres) with values (K,); vertices: (V, 3). Each anchor goes to its
    nearest vertex, and a vertex that got some takes their mean (the per-vertex mean error when the
    anchors are the evaluated points of many pairs); every other vertex takes the inverse-distance
    weighted mean (weights 1/d², Euclidean, no geodesics) of its ``k`` nearest such vertices.
    Returns (V,) float64 (all NaN when there are no anchors).
    """
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, np.float64)
    out = np.full(len(v), np.nan)
    a = np.asarray(anchors, np.float64).reshape(-1, 3)
    val = np.asarray(values, np.float64).reshape(-1)
    if len(a) != len(val):
        raise ValueError(f"anchors {a.shape} and values {val.shape} differ in length")
    ok = np.isfinite(val) & np.isfinite(a).all(1)
    if not ok.any():
        return out
    nearest = cKDTree(v).query(a[ok], workers=1)[1]
    total = np.bincount(nearest, val[ok], minlength=len(v))
    count = np.bincount(nearest, minlength=len(v))
    known = np.flatnonzero(count > 0)
    out[known] = total[known] / count[known]
    rest = np.flatnonzero(count == 0)
    if rest.size:
        kk = min(k, known.size)
        d, j = cKDTree(v[known]).query(v[rest], k=kk, workers=1)
        d, j = d.reshape(len(rest), kk), j.reshape(len(rest), kk)
        w = 1.0 / np.maximum(d, 1e-9) ** 2
        out[rest] = (w * out[known][j]).sum(1) / w.sum(1)
    return out


def plot_errors_on_body(panels: list[tuple[str, np.ndarray]], vertices: np.ndarray, faces: np.ndarray, path: str | Path,
                        up: np.ndarray, facing: np.ndarray | None = None, max_cm: float = 20.0, title: str = "",
                        label: str = "geodesic error (cm)") -> Path:  # fmt: skip
    """Errors drawn on a body surface: per panel (title, (V,) error in cm per vertex, e.g. from
    :func:`spread_to_vertices`) the body from two opposite sides, coloured 0 to ``max_cm`` cm (over
    it: the top colour), two panels a row, one colour bar in cm.

    vertices: (V, 3) metres, faces: (F, 3). ``facing``: the way the body faces (its sides are then
    called front and back); None: unknown (seen along its least-spread horizontal direction, the
    sides called "side 1" and "side 2").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bodycorr.matching.visualize import draw_values_on_mesh, least_spread_horizontal, view_basis

    names = ("front", "back") if facing is not None else ("side 1", "side 2 (turned 180°)")
    if facing is None:
        facing = least_spread_horizontal(vertices, up)
    right, upv, _ = view_basis(up, facing)
    c = np.asarray(vertices, np.float64)
    aspect = float(np.ptp(c @ right) / max(np.ptp(c @ upv), 1e-9))
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    per_row = min(2, max(1, len(panels)))
    rows = -(-max(len(panels), 1) // per_row)
    h = 4.6  # inches of body height
    width = per_row * (2 * h * aspect + 0.4)
    fig = plt.figure(figsize=(width + 1.5, rows * (h + 1.0) + (0.6 if title else 0)), layout="constrained")
    body, side = fig.subfigures(1, 2, width_ratios=[width, 1.5])
    cells = np.atleast_1d(body.subfigures(rows, per_row)).ravel()
    for cell, (name, values) in zip(cells, panels):
        axes = cell.subplots(1, 2)
        draw_values_on_mesh(cell, axes, vertices, faces, values, label, max_cm, "turbo", up=up, facing=facing,
                            colorbar=False, side_names=names)  # fmt: skip
        cell.suptitle(name, fontsize=10)
    for cell in cells[len(panels) :]:
        cell.set_visible(False)
    cax = side.add_axes((0.15, 0.12, 0.22, 0.76))
    bar = fig.colorbar(mpl.cm.ScalarMappable(Normalize(0, max_cm), "turbo"), cax=cax, extend="max")
    bar.set_label(f"{label}\n({max_cm:g} and over: the top colour)", fontsize=10)
    if title:  # wrapped to the figure's width (about 11 characters an inch at this size)
        import textwrap

        cols = max(30, int(fig.get_figwidth() * 11))
        fig.suptitle("\n".join(textwrap.fill(line, cols) for line in title.split("\n")), fontsize=11)
    return _save(fig, path)
