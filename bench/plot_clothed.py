"""Picture of the clothed test suite: docs/clothed_depth.png (synthetic-v1-clothed beside synthetic-v1).

    .venv/bin/python bench/plot_clothed.py [--shapes 3 14 25 36 47 58 69 72 83 94] [--out docs/clothed_depth.png]

For each shape: the bare body's Kinect view, the same view of the person in its outfit (both
shaded from the depth map's own normals, so the cloth shows), the clothed view with sensor noise,
and the clothed view's truth (template position as colour: the body point under the cloth).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("WARP_LOG_LEVEL", "error")


def shaded(depth: np.ndarray, camera) -> np.ndarray:
    """(H, W) metres -> (H, W) grey in [0, 1]: Lambert shading of the depth map's normals, white background."""
    p = camera.backproject(depth)  # (H, W, 3) world, NaN where empty
    du, dv = np.gradient(p, axis=1), np.gradient(p, axis=0)
    n = np.cross(du, dv)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)
    view = camera.center - p
    view /= np.maximum(np.linalg.norm(view, axis=2, keepdims=True), 1e-12)
    n *= np.where((n * view).sum(2, keepdims=True) < 0, -1.0, 1.0)
    light = view * 0.8 + np.array([0.0, 0.0, 0.6])
    light /= np.linalg.norm(light, axis=2, keepdims=True)
    g = 0.15 + 0.85 * np.clip((n * light).sum(2), 0, 1)
    return np.where(np.isfinite(g) & (depth > 0), g, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=int, nargs="+", default=[3, 14, 25, 36, 47, 58, 69, 72, 83, 94])
    ap.add_argument("--out", default="docs/clothed_depth.png")
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bodycorr.data.preview import colour_view, get_template_colours
    from bodycorr.data.suite import load_suite

    bare, dressed = load_suite("synthetic-v1"), load_suite("synthetic-v1-clothed")
    cols = get_template_colours()
    n = len(a.shapes)
    per_row = 2
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, 4 * per_row, figsize=(4 * per_row * 1.45, rows * 2.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, s in enumerate(a.shapes):
        cam = dressed.camera(s)
        m = (dressed.depth_clean[s] > 0) | (bare.depth_clean[s] > 0)
        r, c = np.nonzero(m)
        pad = 6
        box = (slice(max(r.min() - pad, 0), r.max() + pad), slice(max(c.min() - pad, 0), c.max() + pad))
        o = dressed.outfits[int(dressed.identity[s])]
        panels = [(shaded(bare.depth_clean[s], cam), "bare"),
                  (shaded(dressed.depth_clean[s], cam), f"{o.top.replace('_top', ' top')}, {o.bottom}"),
                  (shaded(dressed.depth_noisy[s], cam), "clothed, Kinect noise"),
                  (colour_view(dressed.vertex_clean[s], cols), "truth under the cloth")]  # fmt: skip
        row, col0 = divmod(k, per_row)
        for j, (img, label) in enumerate(panels):
            ax = axes[row, 4 * col0 + j]
            ax.imshow(img[box], cmap="gray", vmin=0, vmax=1) if img.ndim == 2 else ax.imshow(img[box])
            ax.set_title(f"{bare.shape_name(s)}: {label}" if j == 0 else label, fontsize=7)
    fig.suptitle("synthetic-v1-clothed: the test people in their frozen outfits (Kinect v2 views; truth = the body under the cloth)", fontsize=9)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
