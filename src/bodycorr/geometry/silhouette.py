"""A depth image as a constraint on a surface: every point must project inside the person's silhouette and not in front of the measured depth.

Matches and closest points only pull the body towards what the camera saw. They say nothing
about a limb that the fit has put where the camera saw nothing: a leg bent out to the side
projects onto background pixels, and an arm swung towards the camera floats in front of the
measured surface. Both are cheap to measure from the depth image alone:

- ``outside``: how far (metres, at the point's depth) its projection lies outside the person's
  pixels, read from a distance transform of the background, bilinearly, so it has a gradient;
- ``in_front``: how far the point lies in front of the depth measured at its pixel (free space
  the camera looked through), beyond a noise tolerance.

Points that project outside the image are unconstrained (the person may leave the frame).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera


@dataclass(frozen=True)
class SilhouetteResiduals:
    """Per-point violations of a depth image.

    Attributes:
        outside: (..., N) metres by which each point's projection lies outside the silhouette
            (pixel distance to the nearest person pixel, less the margin, times depth / focal).
        in_front: (..., N) metres by which each point lies in front of the nearest surface measured
            within the margin of its pixel, less the tolerance (0 behind it, or where none is).
        in_image: (..., N) bool: the point lies in front of the camera and projects into the image.
    """

    outside: np.ndarray | torch.Tensor
    in_front: np.ndarray | torch.Tensor
    in_image: np.ndarray | torch.Tensor


@dataclass(frozen=True, eq=False)
class DepthSilhouette:
    """One depth frame prepared as a constraint (build with :meth:`from_depth`).

    Attributes:
        camera: the depth camera.
        depth: (H, W) float32 metres, 0 = no data (the person's pixels are the valid ones).
        outside_px: (H, W) float32 distance in pixels from each pixel centre to the nearest
            person pixel's centre (0 on the person); computed when first read (only the
            ``outside`` residual needs it).

    The residuals take two allowances: ``tolerance``, the metres a point may lie in front of the
    measured depth (sensor noise), and ``margin_px``, the pixels it may project outside the
    person's pixels (a Kinect-style sensor loses the silhouette's edge pixels: on a noisy synthetic
    frame a quarter of the true body's vertices project up to 3.5 cm outside what it kept).
    """

    camera: Camera
    depth: np.ndarray
    _tensors: dict = field(default_factory=dict, repr=False)

    @functools.cached_property
    def outside_px(self) -> np.ndarray:
        out = ndimage.distance_transform_edt(self.depth <= 0).astype(np.float32)
        out.flags.writeable = False
        return out

    def _tensor(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        key = (name, dtype)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(np.array(getattr(self, name)), dtype=dtype)
        return self._tensors[key]

    def _near_depth(self, margin_px: float, dtype: torch.dtype) -> torch.Tensor:
        """(H, W) the smallest valid depth within ``margin_px`` pixels of each pixel (0: none)."""
        key = ("near", float(margin_px), dtype)
        if key not in self._tensors:
            m = int(np.floor(margin_px))
            yy, xx = np.mgrid[-m : m + 1, -m : m + 1]
            d = np.where(self.depth > 0, self.depth, np.inf)
            near = ndimage.minimum_filter(d, footprint=yy**2 + xx**2 <= margin_px**2, mode="constant", cval=np.inf)
            self._tensors[key] = torch.tensor(np.where(np.isfinite(near), near, 0), dtype=dtype)
        return self._tensors[key]

    @classmethod
    def from_depth(cls, depth: np.ndarray, camera: Camera) -> "DepthSilhouette":
        """depth: (H, W) metres of the segmented person (0 or NaN elsewhere), in ``camera``'s image."""
        d = np.asarray(depth, dtype=np.float32)
        k = camera.intrinsics
        if d.shape != (k.height, k.width):
            raise BodycorrError(f"silhouette: depth is {d.shape} but the camera expects ({k.height}, {k.width}). Use matching intrinsics.")
        d = np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)
        if not (d > 0).any():
            raise BodycorrError("silhouette: the depth map has no valid pixel (no person). Skip this frame.")
        d.flags.writeable = False
        return cls(camera, d)

    def _project(self, points, xp):
        k = self.camera.intrinsics
        R, t = (np.array(a) if xp is np else torch.tensor(np.array(a), dtype=points.dtype) for a in (self.camera.R, self.camera.t))
        pc = points @ R.T + t
        z = pc[..., 2]
        zs = xp.clip(z, 1e-3, None) if xp is np else z.clamp_min(1e-3)
        u = k.fx * pc[..., 0] / zs + k.cx
        v = k.fy * pc[..., 1] / zs + k.cy
        in_image = (z > 1e-3) & (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
        return u, v, zs, in_image

    def residuals(self, points: np.ndarray, tolerance: float = 0.03, margin_px: float = 2.0) -> SilhouetteResiduals:
        """The slow, obvious reference: points (N, 3) world metres -> numpy residuals (loops over points)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        u, v, z, ins = self._project(p, np)
        k = self.camera.intrinsics
        f = 0.5 * (k.fx + k.fy)
        H, W = self.depth.shape
        outside = np.zeros(len(p))
        in_front = np.zeros(len(p))
        for i in range(len(p)):
            if not ins[i]:
                continue
            x, y = u[i] - 0.5, v[i] - 0.5  # pixel (c, r)'s centre is at (c + 0.5, r + 0.5)
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            val = 0.0
            for dy in (0, 1):
                for dx in (0, 1):
                    c, r = min(max(x0 + dx, 0), W - 1), min(max(y0 + dy, 0), H - 1)
                    wgt = (1 - abs(x - (x0 + dx))) * (1 - abs(y - (y0 + dy)))
                    val += wgt * float(self.outside_px[r, c])
            outside[i] = max(val - margin_px, 0.0) * z[i] / f
            # the nearest measured surface within margin_px pixels (thin parts and edges: the pixel's
            # own ray may pass beside a toe and hit the leg behind it)
            r0, c0, m = int(np.floor(v[i])), int(np.floor(u[i])), int(np.floor(margin_px))
            near = [float(self.depth[r, c]) for r in range(r0 - m, r0 + m + 1) for c in range(c0 - m, c0 + m + 1)
                    if 0 <= r < H and 0 <= c < W and (r - r0) ** 2 + (c - c0) ** 2 <= margin_px**2 and self.depth[r, c] > 0]  # fmt: skip
            in_front[i] = max(min(near) - z[i] - tolerance, 0.0) if near else 0.0
        return SilhouetteResiduals(outside, in_front, ins)

    def residuals_torch(self, points: torch.Tensor, tolerance: float = 0.03, margin_px: float = 2.0,
                        outside: bool = True) -> SilhouetteResiduals:  # fmt: skip
        """points: (B, N, 3) world metres (differentiable) -> torch residuals, each (B, N)
        (``outside=False`` skips that residual, returned as zeros)."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise BodycorrError(f"silhouette: points must be (B, N, 3), got {tuple(points.shape)}.")
        u, v, z, ins = self._project(points, torch)
        H, W = self.depth.shape
        with torch.no_grad():
            r = v.floor().long().clamp(0, H - 1)
            c = u.floor().long().clamp(0, W - 1)
            dz = self._near_depth(margin_px, points.dtype)[r, c]
        in_front = torch.where(ins & (dz > 0), (dz - z - tolerance).clamp_min(0), torch.zeros_like(z))
        if not outside:
            return SilhouetteResiduals(torch.zeros_like(z), in_front, ins)
        k = self.camera.intrinsics
        f = 0.5 * (k.fx + k.fy)
        dist = self._tensor("outside_px", points.dtype)[None, None].expand(points.shape[0], -1, -1, -1)
        grid = torch.stack([2 * u / W - 1, 2 * v / H - 1], dim=-1)[:, :, None]  # align_corners=False: pixel centres
        val = torch.nn.functional.grid_sample(dist, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0, :, 0]
        out = torch.where(ins, (val - margin_px).clamp_min(0) * z / f, torch.zeros_like(val))
        return SilhouetteResiduals(out, in_front, ins)
