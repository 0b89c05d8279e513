"""Contact sheet of sampled poses: docs/poses.png (front and side view of each, coloured by part).

    .venv/bin/python bench/plot_poses.py [--n 24] [--seed 0] [--out docs/poses.png]

The global yaw is removed for the picture (each body faces the viewer in the left view, its left
side is shown in the right view); the sampler's grounding keeps the floor at the same height.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("WARP_LOG_LEVEL", "error")


def vertex_normals(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    out = np.zeros_like(V)
    for k in range(3):
        np.add.at(out, F[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def splat(ax, V, N, colors, view: str) -> None:
    """Painter's-algorithm splat of vertices; view 'front' looks along +Y, 'side' along -X."""
    if view == "front":
        x, y, depth, light = V[:, 0], V[:, 2], V[:, 1], -N[:, 1]
    else:
        x, y, depth, light = -V[:, 1], V[:, 2], -V[:, 0], N[:, 0]
    order = np.argsort(-depth)
    shade = 0.35 + 0.65 * np.clip(light, 0, 1)[:, None]
    ax.scatter(x[order], y[order], c=np.clip(colors[order] * shade[order], 0, 1), s=1.6, linewidths=0)
    ax.set_aspect("equal")
    ax.axis("off")


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bodycorr.body.anny_model import get_body_model
    from bodycorr.body.pose import PoseSampler, PoseSamplerConfig
    from bodycorr.body.template import PART_NAMES, get_template

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/poses.png")
    args = ap.parse_args()
    model, template = get_body_model(), get_template()
    sampler = PoseSampler(PoseSamplerConfig(yaw="none"), model=model)
    poses = sampler.sample(args.n, np.random.default_rng(args.seed))
    rng = np.random.default_rng(args.seed + 1)
    phen = np.clip(rng.normal(0.5, 0.15, (args.n, 6)), 0.05, 0.95)
    out = model(phen, poses.to_anny(model))
    parts = template.parts[template.full_to_template]
    cmap = plt.get_cmap("tab20")
    colors = cmap(np.arange(len(PART_NAMES)) % 20)[:, :3][parts]
    cols = 6
    rows = int(np.ceil(args.n / cols))
    fig, axs = plt.subplots(rows, 2 * cols, figsize=(2.0 * 2 * cols, 3.6 * rows))
    for ax in axs.ravel():
        ax.axis("off")
    lo = out.vertices.min(axis=(0, 1))
    hi = out.vertices.max(axis=(0, 1))
    for b in range(args.n):
        V = out.vertices[b]
        N = vertex_normals(V, model.faces)
        r, c = divmod(b, cols)
        for k, view in enumerate(("front", "side")):
            ax = axs[r, 2 * c + k]
            splat(ax, V, N, colors, view)
            ax.set_ylim(lo[2] - 0.02, hi[2] + 0.02)
        src = poses.sources[b].replace("archetype:", "").replace("interpolation:", "interp:")
        axs[r, 2 * c].set_title(src[:34], fontsize=7, loc="left")
    plt.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
