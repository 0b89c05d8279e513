"""Depth sensor noise: depth-dependent jitter, quantisation, grazing and edge dropout, flying pixels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage

from bodycorr.render.frame import Frame


@dataclass(frozen=True)
class DepthNoiseConfig:
    """A depth sensor's imperfections. ``preset("kinect_v2")`` approximates a Kinect v2.

    Attributes:
        sigma_base: axial noise std in metres at ``z_ref``.
        sigma_quadratic: growth of the std with (z - z_ref)², metres per m².
        quantisation: depth step in metres (Kinect v2 reports whole millimetres).
        grazing_deg: pixels whose surface tilts more than this from the view ray start to drop.
        edge_dropout: probability of losing a silhouette-edge pixel.
        flying_pixel_rate: probability that an edge pixel becomes a "flying pixel" (a depth
            between the person and the far background; it has no ground truth).
        holes: expected number of small dropout blobs per image.
    """

    kind: Literal["none", "kinect_v2", "custom"] = "custom"
    sigma_base: float = 0.0015
    sigma_quadratic: float = 0.0019
    z_ref: float = 0.5
    quantisation: float = 0.001
    grazing_deg: float = 75.0
    edge_dropout: float = 0.3
    flying_pixel_rate: float = 0.1
    holes: float = 2.0

    @staticmethod
    def preset(kind: Literal["none", "kinect_v2"]) -> "DepthNoiseConfig":
        if kind == "none":
            return DepthNoiseConfig(kind="none", sigma_base=0, sigma_quadratic=0, quantisation=0,
                                    grazing_deg=90, edge_dropout=0, flying_pixel_rate=0, holes=0)  # fmt: skip
        if kind == "kinect_v2":
            return DepthNoiseConfig(kind="kinect_v2")
        raise ValueError(f"unknown noise preset {kind!r}; choose 'none' or 'kinect_v2'")


def add_depth_noise(frame: Frame, config: DepthNoiseConfig, rng: np.random.Generator) -> Frame:
    """Return a noisy copy of ``frame``.

    Dropped pixels get depth 0 and face -1; flying pixels get a depth but face -1 (no truth).
    The truth of every pixel that keeps its face is unchanged.
    """
    if config.kind == "none":
        return frame
    depth = frame.depth.astype(np.float64).copy()
    face = frame.face.copy()
    mask = face >= 0
    h, w = depth.shape
    z = depth[mask]
    sigma = config.sigma_base + config.sigma_quadratic * np.maximum(z - config.z_ref, 0.0) ** 2
    depth[mask] = z + rng.normal(size=z.shape) * sigma

    drop = np.zeros_like(mask)
    # grazing angles: cos between the normal and the viewing ray
    if config.grazing_deg < 90:
        rays = frame.camera.ray_directions() @ frame.camera.R.T
        cosang = np.abs(np.einsum("hwk,hwk->hw", frame.normal, rays))
        ang = np.degrees(np.arccos(np.clip(cosang, 0, 1)))
        p = 1.0 / (1.0 + np.exp(-(ang - config.grazing_deg) / 3.0))
        drop |= mask & (rng.random((h, w)) < p)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)
    drop |= edge & (rng.random((h, w)) < config.edge_dropout)
    n_holes = rng.poisson(config.holes) if config.holes > 0 else 0
    if n_holes:
        ys, xs = np.nonzero(mask)
        if len(ys):
            yy, xx = np.mgrid[0:h, 0:w]
            for k in rng.integers(0, len(ys), n_holes):
                r = rng.uniform(1.5, 4.0)
                drop |= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 < r * r
    drop &= mask
    depth[drop] = 0.0
    face[drop] = -1

    # flying pixels just outside the silhouette: somewhere between the person and 1 m behind
    if config.flying_pixel_rate > 0:
        keep = face >= 0
        outer = ndimage.binary_dilation(keep, iterations=1) & ~keep
        fly = outer & (rng.random((h, w)) < config.flying_pixel_rate)
        if fly.any():
            near = ndimage.grey_dilation(np.where(keep, depth, 0.0), size=3)
            depth[fly] = near[fly] + rng.uniform(0.02, 1.0, size=int(fly.sum()))
    if config.quantisation > 0:
        depth = np.round(depth / config.quantisation) * config.quantisation
    bary = np.where((face >= 0)[..., None], frame.bary, 0).astype(np.float32)
    normal = np.where((face >= 0)[..., None], frame.normal, 0).astype(np.float32)
    return replace(frame, depth=depth.astype(np.float32), face=face, bary=bary, normal=normal)
