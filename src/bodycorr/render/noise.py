"""Depth sensor noise: depth-dependent jitter, quantisation, grazing and edge dropout, flying pixels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

from bodycorr.render.frame import Frame

if TYPE_CHECKING:
    import torch

    from bodycorr.render.torch_raster import PinholeCameras, RasterFrames


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


def _shift_or_t(m: torch.Tensor) -> torch.Tensor:
    """:func:`_shift_or` on (B, H, W) bool tensors (a 4-neighbour dilation per image)."""
    out = m.clone()
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out


def _shift_and_t(m: torch.Tensor) -> torch.Tensor:
    """:func:`_shift_and` on (B, H, W) bool tensors (a 4-neighbour erosion per image, outside = False)."""
    out = m.clone()
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[:, :, 1:] &= m[:, :, :-1]
    out[:, :, :-1] &= m[:, :, 1:]
    out[:, :1], out[:, -1:], out[:, :, :1], out[:, :, -1:] = False, False, False, False
    return out


MAX_HOLES = 16  # holes per image at most in the batched model (Poisson(2) exceeds it with probability ~1e-9)


def add_depth_noise_torch(frames: RasterFrames, cameras: PinholeCameras, config: DepthNoiseConfig, generator: torch.Generator,
                          apply: torch.Tensor | None = None) -> RasterFrames:  # fmt: skip
    """:func:`add_depth_noise` for a batch of torch frames, on their device (CPU or CUDA).

    The same model, step by step: depth jitter growing with distance, grazing-angle and
    silhouette-edge dropout, small hole blobs, flying pixels just outside the silhouette (a depth
    but no truth: face -1), whole-millimetre quantisation. The random draws differ from the numpy
    version's (one stream for the batch, from ``generator``, which must live on the frames' device).

    Args:
        frames: B views (:class:`bodycorr.render.torch_raster.RasterFrames`).
        cameras: their cameras (the grazing angle needs each pixel's ray).
        apply: (B,) bool, which views get noise (default all); the others are returned unchanged.
    Returns:
        New frames: dropped pixels have depth 0 and face -1; bary and normal are zeroed where the face is lost.
    """
    import torch
    import torch.nn.functional as F

    from bodycorr.render.torch_raster import RasterFrames

    if config.kind == "none":
        return frames
    depth, face = frames.depth.clone(), frames.face.clone()
    b, h, w = depth.shape
    dev = depth.device
    on = torch.ones(b, dtype=torch.bool, device=dev) if apply is None else apply.to(dev).bool()
    mask = (face >= 0) & on[:, None, None]

    def uniform() -> torch.Tensor:
        return torch.rand((b, h, w), generator=generator, device=dev)

    sigma = config.sigma_base + config.sigma_quadratic * (depth - config.z_ref).clamp(min=0.0) ** 2
    noise = torch.randn((b, h, w), generator=generator, device=dev) * sigma
    depth = torch.where(mask, depth + noise, depth)
    drop = torch.zeros_like(mask)
    if config.grazing_deg < 90:
        jj = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
        ii = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
        x = (jj[None, None, :] - cameras.cx.to(dev)[:, None, None]) / cameras.fx.to(dev)[:, None, None]
        y = (ii[None, :, None] - cameras.cy.to(dev)[:, None, None]) / cameras.fy.to(dev)[:, None, None]
        nrm = frames.normal
        dot = nrm[..., 0] * x + nrm[..., 1] * y + nrm[..., 2]
        cosang = dot.abs() / torch.sqrt(x**2 + y**2 + 1.0)
        ang = torch.rad2deg(torch.arccos(cosang.clamp(0.0, 1.0)))
        p = torch.sigmoid((ang - config.grazing_deg) / 3.0)
        drop |= mask & (uniform() < p)
    edge = mask & ~_shift_and_t(mask)
    drop |= edge & (uniform() < config.edge_dropout)
    if config.holes > 0:
        counts = torch.poisson(torch.full((b,), float(config.holes), device=dev), generator=generator).long().clamp(max=MAX_HOLES)
        flat = mask.reshape(b, -1)
        has = flat.any(1)
        weights = torch.where(has[:, None], flat.float(), torch.ones_like(flat, dtype=torch.float32))
        centres = torch.multinomial(weights, MAX_HOLES, replacement=True, generator=generator)  # (B, K)
        radius = 1.5 + 2.5 * torch.rand((b, MAX_HOLES), generator=generator, device=dev)
        yy = torch.arange(h, device=dev)[None, :, None]
        xx = torch.arange(w, device=dev)[None, None, :]
        for k in range(MAX_HOLES):
            active = (k < counts) & has
            cy_, cx_ = (centres[:, k] // w)[:, None, None], (centres[:, k] % w)[:, None, None]
            r = radius[:, k][:, None, None]
            drop |= active[:, None, None] & (((yy - cy_) ** 2 + (xx - cx_) ** 2).float() < r * r)
    drop &= mask
    depth = torch.where(drop, torch.zeros_like(depth), depth)
    face = torch.where(drop, torch.full_like(face, -1), face)
    if config.flying_pixel_rate > 0:
        keep = face >= 0
        outer = _shift_or_t(keep) & ~keep & on[:, None, None]
        fly = outer & (uniform() < config.flying_pixel_rate)
        src = torch.where(keep, depth, torch.zeros_like(depth))[:, None]
        near = F.max_pool2d(F.pad(src, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]  # 3x3 max, edges replicated
        jump = 0.02 + 0.98 * uniform()
        depth = torch.where(fly, near + jump, depth)
    if config.quantisation > 0:
        q = config.quantisation
        depth = torch.where(on[:, None, None], torch.round(depth / q) * q, depth)
    lost = (face < 0)[..., None]
    bary = torch.where(lost, torch.zeros_like(frames.bary), frames.bary)
    normal = torch.where(lost, torch.zeros_like(frames.normal), frames.normal)
    return RasterFrames(depth=depth, face=face, bary=bary, normal=normal)
