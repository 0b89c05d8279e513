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


def _uniform(rng: np.random.Generator, h: int, w: int, box: tuple[slice, slice]) -> np.ndarray:
    """``rng.random((h, w))[box]``, leaving ``rng`` where that call leaves it.

    With a PCG64 stream (``np.random.default_rng``) only the box's rows are drawn and the rest of
    the image is skipped by advancing the state (one 64-bit step per double, as ``random`` takes).
    """
    bg = rng.bit_generator
    if type(bg) is np.random.PCG64 and not bg.state["has_uint32"]:
        r0, r1 = int(box[0].start), int(box[0].stop)
        bg.advance(r0 * int(w))
        u = rng.random((r1 - r0, w))[:, box[1]]
        bg.advance((int(h) - r1) * int(w))
        return u
    return rng.random((h, w))[box]


def _shift_or(m: np.ndarray) -> np.ndarray:
    """``m`` or any of its 4-neighbours (outside the array counts as False): a binary dilation by
    the cross, as ``ndimage.binary_dilation(m)``."""
    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


def _shift_and(m: np.ndarray) -> np.ndarray:
    """``m`` and all of its 4-neighbours (outside the array counts as False): a binary erosion by
    the cross, as ``ndimage.binary_erosion(m, border_value=0)``."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[:1], out[-1:], out[:, :1], out[:, -1:] = False, False, False, False
    return out


def add_depth_noise(frame: Frame, config: DepthNoiseConfig, rng: np.random.Generator) -> Frame:
    """Return a noisy copy of ``frame``.

    Dropped pixels get depth 0 and face -1; flying pixels get a depth but face -1 (no truth).
    The truth of every pixel that keeps its face is unchanged.

    Only the box around the seen pixels (with a margin wider than the 3x3 neighbourhoods used)
    is worked on; the random stream is used as by whole-image draws, so the result is the same.
    """
    if config.kind == "none":
        return frame
    h, w = frame.depth.shape
    seen = (frame.face >= 0) | (frame.depth != 0)  # outside: face -1 and depth 0, which noise leaves as is
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    pad = 3
    if len(rows):
        box = (slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)), slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)))
    else:
        box = (slice(0, 0), slice(0, 0))
    depth = frame.depth[box].astype(np.float64)
    face = frame.face[box].copy()
    mask = face >= 0
    z = depth[mask]
    sigma = config.sigma_base + config.sigma_quadratic * np.maximum(z - config.z_ref, 0.0) ** 2
    depth[mask] = z + rng.normal(size=z.shape) * sigma

    drop = np.zeros_like(mask)
    # grazing angles: cos between the normal and the viewing ray, both in camera coordinates
    # (Camera.ray_directions turned back by R; equal up to rounding, which cannot matter here:
    # the probability is only compared with a uniform draw)
    if config.grazing_deg < 90:
        u = _uniform(rng, h, w, box)
        k = frame.camera.intrinsics
        ii, jj = np.nonzero(mask)
        x = (jj + (box[1].start + 0.5) - k.cx) / k.fx
        y = (ii + (box[0].start + 0.5) - k.cy) / k.fy
        nb = frame.normal[box][ii, jj]
        dot = nb[:, 0] * x + nb[:, 1] * y + nb[:, 2]
        cosang = np.abs(dot) / np.sqrt(x**2 + y**2 + 1.0)
        ang = np.degrees(np.arccos(np.clip(cosang, 0, 1)))
        p = 1.0 / (1.0 + np.exp(-(ang - config.grazing_deg) / 3.0))
        drop[ii, jj] = u[ii, jj] < p
    edge = mask & ~_shift_and(mask)
    drop |= edge & (_uniform(rng, h, w, box) < config.edge_dropout)
    n_holes = rng.poisson(config.holes) if config.holes > 0 else 0
    if n_holes:
        ys, xs = np.nonzero(mask)
        if len(ys):
            for k in rng.integers(0, len(ys), n_holes):
                r = rng.uniform(1.5, 4.0)
                # the disc of radius r < 4 around the chosen pixel
                i0, i1 = max(ys[k] - 4, 0), min(ys[k] + 5, mask.shape[0])
                j0, j1 = max(xs[k] - 4, 0), min(xs[k] + 5, mask.shape[1])
                yy, xx = np.mgrid[i0:i1, j0:j1]
                drop[i0:i1, j0:j1] |= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 < r * r
    drop &= mask
    depth[drop] = 0.0
    face[drop] = -1

    # flying pixels just outside the silhouette: somewhere between the person and 1 m behind
    if config.flying_pixel_rate > 0:
        keep = face >= 0
        outer = _shift_or(keep) & ~keep
        fly = outer & (_uniform(rng, h, w, box) < config.flying_pixel_rate)
        if fly.any():
            # the nearest depth's 3x3 maximum (ndimage.grey_dilation, size 3) at the flying pixels
            src = np.where(keep, depth, 0.0)
            fi, fj = np.nonzero(fly)
            near = np.zeros(len(fi))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):  # an image edge reflects (the box touches it there)
                    near = np.maximum(near, src[np.clip(fi + di, 0, src.shape[0] - 1), np.clip(fj + dj, 0, src.shape[1] - 1)])
            depth[fly] = near + rng.uniform(0.02, 1.0, size=len(fi))
    if config.quantisation > 0:
        depth = np.round(depth / config.quantisation) * config.quantisation
    out_depth = frame.depth.astype(np.float32)  # copies
    out_face = frame.face.copy()
    out_bary = np.zeros((h, w, 3), dtype=np.float32)
    out_normal = np.zeros((h, w, 3), dtype=np.float32)
    lost = face < 0
    out_depth[box] = depth
    out_face[box] = face
    for out, a in ((out_bary, frame.bary), (out_normal, frame.normal)):
        out[box] = a[box]
        np.copyto(out[box], 0.0, where=lost[..., None])
    return replace(frame, depth=out_depth, face=out_face, bary=out_bary, normal=out_normal)
