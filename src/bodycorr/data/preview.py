"""Contact sheets of generated views: depth or RGB beside ground-truth correspondence colours."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bodycorr.body.template import Template, get_template
from bodycorr.common.fileio import atomic_path
from bodycorr.data.views import View

if TYPE_CHECKING:
    from bodycorr.data.images import ImageView


def template_colours(template: Template) -> np.ndarray:
    """(Vt, 3) float in [0, 1]: template rest position as RGB (x→R, height→G, depth→B)."""
    v = template.mesh.vertices
    return ((v - v.min(0)) / np.ptp(v, axis=0)).astype(np.float32)


def colour_view(vertex: np.ndarray, colours: np.ndarray, background: float = 1.0) -> np.ndarray:
    """vertex: (H, W) template vertex per pixel (-1 = none) -> (H, W, 3) float image."""
    img = np.full(vertex.shape + (3,), background, dtype=np.float32)
    m = vertex >= 0
    img[m] = colours[vertex[m]]
    return img


def shade_depth(depth: np.ndarray, background: float = 1.0) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) grey image, near = bright, normalised per image."""
    img = np.full(depth.shape + (3,), background, dtype=np.float32)
    m = depth > 0
    if m.any():
        d = depth[m]
        lo, hi = np.percentile(d, 1), np.percentile(d, 99)
        g = 0.85 - 0.7 * np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
        img[m] = g[:, None]
    return img


def _pair_sheet(panels: list[tuple[np.ndarray, np.ndarray, str]], path: str | Path, columns: int, title: str) -> Path:
    """Save a PNG grid of (left image, right image, label) panels, two axes per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = max(1, int(np.ceil(len(panels) / columns)))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (left, right, label) in enumerate(panels):
        r, c = divmod(i, columns)
        axes[r, 2 * c].imshow(left)
        axes[r, 2 * c + 1].imshow(right)
        axes[r, 2 * c].set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


def _outfit_label(view: View) -> str:
    o = view.extras.get("outfit")
    return "" if o is None else f" {o.top.replace('_top', '')}+{o.bottom}"


def contact_sheet(views: list[View], path: str | Path, columns: int = 6, title: str = "") -> Path:
    """Save a PNG grid: for each view, its depth and its truth colours side by side."""
    cols = get_template_colours()
    panels = [(shade_depth(v.depth), colour_view(v.template_vertex, cols), f"id {v.identity}" + (" noisy" if v.noisy else "") + _outfit_label(v))
              for v in views]  # fmt: skip
    return _pair_sheet(panels, path, columns, title)


def image_contact_sheet(views: list[ImageView], path: str | Path, columns: int = 6, title: str = "") -> Path:
    """Save a PNG grid: for each RGB view, the image and its truth colours (every person) side by side."""
    cols = get_template_colours()
    panels = []
    for v in views:
        tags = [f"id {v.identity}"] + (["crowd"] if v.people > 1 else []) + (["upper"] if v.upper_body else [])
        tags += ["occl"] if v.occluded else []
        panels.append((v.rgb, colour_view(v.template_vertex, cols), " ".join(tags)))
    return _pair_sheet(panels, path, columns, title)


def get_template_colours() -> np.ndarray:
    return template_colours(get_template())
