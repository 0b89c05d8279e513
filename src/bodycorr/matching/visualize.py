"""Pictures of correspondences: source and target side by side, coloured by where points match; bodies
drawn as surfaces (the template in its colour code, a value per vertex with its colour bar); the image
overlay with the template colour code as its legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycorr.body.template import TEMPLATE_FACING, TEMPLATE_UP
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
        bar.set_label("geodesic error (cm; 20 and over: black)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# bodies drawn as surfaces: the template's colour code, a value per vertex with its colour bar
# ----------------------------------------------------------------------------------------------


def least_spread_horizontal(points: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3,) unit horizontal direction along which ``points`` (N, 3) spread least: front-to-back
    for a standing person (its sign is arbitrary). For bodies whose front is not known."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    c = np.asarray(points, np.float64) - np.mean(points, 0)
    flat = c - np.outer(c @ up, up)
    _, _, vt = np.linalg.svd(flat[:: max(1, len(flat) // 5000)], full_matrices=False)
    right = vt[0] - (vt[0] @ up) * up
    d = np.cross(right / np.linalg.norm(right), up)
    return d / np.linalg.norm(d)


def view_basis(up: np.ndarray = TEMPLATE_UP, facing: np.ndarray = TEMPLATE_FACING, side: str = "front") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, toward viewer), each (3,) unit, of a camera looking at a body that faces
    ``facing`` from its front (``side="front"``) or from behind (``"back"``). Seen from the front,
    the body's left is on the picture's right."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    toward = np.asarray(facing, np.float64) - (np.asarray(facing, np.float64) @ up) * up
    toward /= np.linalg.norm(toward)
    if side == "back":
        toward = -toward
    elif side != "front":
        raise ValueError(f"side must be 'front' or 'back', got {side!r}")
    return np.cross(up, toward), up, toward


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, side: str = "front",
              up: np.ndarray = TEMPLATE_UP, facing: np.ndarray = TEMPLATE_FACING, shade: float = 0.3, title: str | None = None):  # fmt: skip
    """Draw a mesh as a picture (orthographic, triangles painted far to near) on a matplotlib axis.

    vertices: (V, 3); faces: (F, 3) int; colours: (V, 3) per-vertex RGB in [0, 1] (averaged over each
    triangle's corners) or (F, 3) per triangle. ``shade`` in [0, 1]: how much a triangle seen edge-on
    is darkened (Lambert on the triangle's normal, so the body's form shows; 0 = flat colours).
    Returns the ``PolyCollection`` (its face colours are in drawing order: :func:`draw_order`).
    """
    from matplotlib.collections import PolyCollection

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    col = np.asarray(colours, np.float64)[:, :3]
    fc = col[f].mean(1) if len(col) == len(v) and len(col) != len(f) else col
    if len(fc) != len(f):
        raise ValueError(f"colours: expected ({len(v)}, 3) per vertex or ({len(f)}, 3) per triangle, got {col.shape}")
    right, upv, toward = view_basis(up, facing, side)
    c = v - v.mean(0)
    x, y = c @ right, c @ upv
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    lit = np.abs(n @ toward) / np.maximum(np.linalg.norm(n, axis=1), 1e-20)
    fc = np.clip(fc * ((1 - shade) + shade * lit)[:, None], 0, 1)
    order = draw_order(v, f, side, up, facing)
    xy = np.stack([x[f], y[f]], -1)[order]
    pc = PolyCollection(xy, facecolors=fc[order], edgecolors=fc[order], linewidths=0.2)
    ax.add_collection(pc)
    pad = 0.03 * max(np.ptp(x), np.ptp(y))
    ax.set_xlim(x.min() - pad, x.max() + pad)
    ax.set_ylim(y.min() - pad, y.max() + pad)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return pc


def draw_order(vertices: np.ndarray, faces: np.ndarray, side: str = "front", up: np.ndarray = TEMPLATE_UP,
               facing: np.ndarray = TEMPLATE_FACING) -> np.ndarray:  # fmt: skip
    """(F,) triangle indices in the order :func:`draw_mesh` paints them (farthest first)."""
    _, _, toward = view_basis(up, facing, side)
    return np.argsort(np.asarray(vertices, np.float64)[np.asarray(faces)].mean(1) @ toward, kind="stable")


def draw_template_code(axes, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray,
                       up: np.ndarray = TEMPLATE_UP, facing: np.ndarray = TEMPLATE_FACING) -> None:  # fmt: skip
    """The template in its surface colour code on two axes, front and back (the legend of a colour-coded
    correspondence picture). colours: (V, 3) uint8 or [0, 255] floats, the code of each vertex."""
    rgb = np.asarray(colours, np.float64) / 255.0
    for ax, side in zip(axes, ("front", "back")):
        draw_mesh(ax, vertices, faces, rgb, side, up, facing, shade=0.25, title=f"template colour code: {side}")


def draw_values_on_mesh(fig, axes, vertices: np.ndarray, faces: np.ndarray, values: np.ndarray, label: str,
                        vmax: float, cmap: str = "turbo", sides: tuple[str, ...] = ("front", "back"),
                        up: np.ndarray = TEMPLATE_UP, facing: np.ndarray = TEMPLATE_FACING, colorbar: bool = True,
                        side_names: tuple[str, ...] | None = None):  # fmt: skip
    """A value per vertex drawn on the mesh, one axis per side, coloured 0 to ``vmax`` (over it: the
    top colour), with a colour bar labelled ``label`` (say the units) beside the axes.

    values: (V,) (NaN = no value: drawn light grey). Each triangle takes its corners' mean value.
    Returns the colour bar (None when ``colorbar`` is False).
    """
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    cm = mpl.colormaps[cmap]
    norm = Normalize(0.0, float(vmax))
    val = np.asarray(values, np.float64)[np.asarray(faces)].mean(1)  # (F,)
    fc = np.where(np.isfinite(val)[:, None], cm(norm(np.nan_to_num(val)))[:, :3], 0.85)
    for ax, side, name in zip(axes, sides, side_names or sides):
        draw_mesh(ax, vertices, faces, fc, side, up, facing, shade=0.25, title=name)
    if not colorbar:
        return None
    bar = fig.colorbar(mpl.cm.ScalarMappable(norm, cm), ax=list(axes), fraction=0.05, pad=0.03, extend="max")
    bar.set_label(label, fontsize=10)
    return bar


def image_overlay_figure(rgb: np.ndarray, overlay: np.ndarray, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray,
                         path: str | Path, note: str = "") -> Path:  # fmt: skip
    """PNG a person can read: the input photo, the colour-coded correspondence over it, and as its
    legend the template in the same colour code, front and back.

    rgb, overlay: (H, W, 3) uint8; vertices (V, 3), faces (F, 3): the template; colours: (V, 3) uint8,
    the surface colour code of each template vertex (the colours the overlay shows). ``note``: one
    line under the panels (person pixels, confidence).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = rgb.shape[:2]
    photo = float(np.clip(w / h, 0.4, 2.5))
    right, upv, _ = view_basis()
    c = np.asarray(vertices, np.float64)
    body = float(np.ptp(c @ right) / max(np.ptp(c @ upv), 1e-9))
    fig, axes = plt.subplots(1, 4, figsize=(4.2 * (2 * photo + 2 * body) + 0.8, 5.4), layout="constrained",
                             gridspec_kw={"width_ratios": [photo, photo, body, body]})  # fmt: skip
    axes[0].imshow(rgb)
    axes[0].set_title("input", fontsize=10)
    axes[1].imshow(overlay)
    axes[1].set_title("correspondence: each person pixel\nin its template point's colour", fontsize=10)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    draw_template_code(axes[2:], vertices, faces, colours)
    axes[2].set_title("template colour code:\nfront", fontsize=10)
    axes[3].set_title("template colour code:\nback", fontsize=10)
    if note:
        fig.supxlabel(note, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
