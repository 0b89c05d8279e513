"""Batched pinhole z-buffer rasterisation in torch (CPU or CUDA): depth, triangle, barycentrics and normal per pixel for many meshes at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera

_NO_KEY = 0x7FFFFFFFFFFFFFFF
#: Candidate (triangle, pixel) pairs tested at once; more are done in chunks (about 60 bytes each).
MAX_CANDIDATES = 1 << 24


@dataclass(frozen=True, eq=False)
class PinholeCameras:
    """B pinhole cameras sharing one image size, OpenCV axes (as :class:`bodycorr.geometry.camera.Camera`).

    Attributes:
        fx, fy, cx, cy: (B,) float32 intrinsics in pixels (pixel (j, i) covers [j, j+1) x [i, i+1)).
        R: (B, 3, 3) float32 world-to-camera rotations; t: (B, 3) float32, ``p_cam = R @ p + t``.
        width, height: image size in pixels.
    """

    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        b = self.R.shape[0]
        if self.R.shape != (b, 3, 3) or self.t.shape != (b, 3) or any(x.shape != (b,) for x in (self.fx, self.fy, self.cx, self.cy)):
            raise BodycorrError(f"cameras: R must be (B, 3, 3), t (B, 3) and fx, fy, cx, cy (B,), got R {tuple(self.R.shape)}, "
                                f"t {tuple(self.t.shape)}, fx {tuple(self.fx.shape)}.")  # fmt: skip
        if not (1 <= self.width <= 8192 and 1 <= self.height <= 8192):
            raise BodycorrError(f"cameras: image size {self.width}x{self.height} must lie within 1..8192 pixels.")

    @property
    def batch(self) -> int:
        return int(self.R.shape[0])

    @staticmethod
    def from_cameras(cameras: list[Camera], device: str | torch.device = "cpu") -> "PinholeCameras":
        """From :class:`Camera` objects of one image size."""
        sizes = {c.intrinsics.size for c in cameras}
        if len(sizes) != 1:
            raise BodycorrError(f"cameras: all must share one image size, got {sorted(sizes)}.")
        w, h = sizes.pop()

        def f32(a) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        k = [c.intrinsics for c in cameras]
        return PinholeCameras(f32([x.fx for x in k]), f32([x.fy for x in k]), f32([x.cx for x in k]), f32([x.cy for x in k]),
                              f32([c.R for c in cameras]), f32([c.t for c in cameras]), w, h)  # fmt: skip


@dataclass(frozen=True, eq=False)
class RasterFrames:
    """B rendered views (the batched counterpart of :class:`bodycorr.render.frame.Frame`).

    Attributes:
        depth: (B, H, W) float32 camera z in metres, 0 = no surface.
        face: (B, H, W) int64 triangle seen at the pixel centre, -1 = background.
        bary: (B, H, W, 3) float32 barycentrics of the seen point in that triangle (corner order).
        normal: (B, H, W, 3) float32 unit face normal in camera coordinates, turned to the camera.
    """

    depth: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    normal: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: pixels that see the surface."""
        return self.face >= 0


def _screen_barycentrics(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Screen-space barycentrics and inverse depth at pixel centres.

    tri: (N, 9) per candidate [u_a, v_a, u_b - u_a, v_b - v_a, u_c - u_a, v_c - v_a, 1/z_a, 1/z_b, 1/z_c];
    px, py: (N,) pixel centres. Returns l0, l1, l2 (N,) and 1/z (N,) interpolated (linear in screen space).
    """
    x, y = px - tri[:, 0], py - tri[:, 1]
    bu, bv, cu, cv = tri[:, 2], tri[:, 3], tri[:, 4], tri[:, 5]
    det = bu * cv - bv * cu
    l1 = (x * cv - y * cu) / det
    l2 = (bu * y - bv * x) / det
    l0 = 1.0 - l1 - l2
    return l0, l1, l2, l0 * tri[:, 6] + l1 * tri[:, 7] + l2 * tri[:, 8]


def _keep_min(keys: torch.Tensor, index: torch.Tensor, values: torch.Tensor, by_sort: bool = False) -> None:
    """``keys[i] = min(keys[i], values[index == i])`` in place: a 64-bit ``scatter_reduce`` min, or
    (``by_sort``, or where that reduction is not available) a sort by value, then by index."""
    if not by_sort:
        try:
            keys.scatter_reduce_(0, index, values, "amin")
            return
        except (RuntimeError, NotImplementedError):
            pass
    order = torch.argsort(values)
    idx, val = index[order], values[order]
    order = torch.argsort(idx, stable=True)  # each index's smallest value first
    idx, val = idx[order], val[order]
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]
    idx, val = idx[first], val[first]
    keys[idx] = torch.minimum(keys[idx], val)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cameras: PinholeCameras, near: float = 0.05,
              max_candidates: int = MAX_CANDIDATES) -> RasterFrames:  # fmt: skip
    """Render B meshes of one topology, each through its own camera, with a z-buffer.

    A triangle covers a pixel when the pixel centre lies inside (or on) its projection; of the
    triangles covering a pixel the nearest wins (then the lowest id), as the pixel-centre rays of
    :meth:`bodycorr.render.raycast.RayCaster.cast_pinhole` see it, up to float rounding on edges.
    Every triangle is tested against the pixel centres of its projected box: pairs are listed
    (``repeat_interleave``), tested by edge functions, and the nearest kept per pixel by a 64-bit
    ``scatter_reduce`` min over (depth bits, triangle id).

    Args:
        vertices: (B, V, 3) or (V, 3) world positions in metres (one mesh per view, or one for all).
        faces: (F, 3) int triangles.
        cameras: B cameras.
        near: triangles with a corner closer than this (metres, camera z) are not drawn (the
            scenes here keep the camera metres away; clipping is not implemented).
        max_candidates: (triangle, pixel) pairs tested at once (memory), more in chunks.
    Returns:
        :class:`RasterFrames` of size (B, height, width) on ``vertices``' device.
    """
    dev = vertices.device
    b, h, w = cameras.batch, cameras.height, cameras.width
    if vertices.ndim == 2:
        vertices = vertices.unsqueeze(0).expand(b, -1, -1)
    if vertices.ndim != 3 or vertices.shape[0] != b or vertices.shape[2] != 3:
        raise BodycorrError(f"rasterize: vertices must be (B, V, 3) or (V, 3) with B = {b} cameras, got {tuple(vertices.shape)}.")
    faces = torch.as_tensor(faces, device=dev).long()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise BodycorrError(f"rasterize: faces must be (F, 3), got {tuple(faces.shape)}.")
    nf = faces.shape[0]
    R, t = cameras.R.to(dev).float(), cameras.t.to(dev).float()
    fx, fy, cx, cy = (a.to(dev).float()[:, None] for a in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    pc = torch.einsum("bij,bvj->bvi", R, vertices.float()) + t[:, None]  # (B, V, 3) camera coordinates
    z = pc[..., 2]
    zs = z.clamp(min=near)
    u = fx * pc[..., 0] / zs + cx
    v = fy * pc[..., 1] / zs + cy
    fu, fv, fz = u[:, faces], v[:, faces], z[:, faces]  # (B, F, 3)
    # pixel centres (j + 0.5, i + 0.5) in each triangle's box
    big = float(4 * max(w, h) + 16)
    umin, umax = fu.amin(-1).clamp(-big, big), fu.amax(-1).clamp(-big, big)
    vmin, vmax = fv.amin(-1).clamp(-big, big), fv.amax(-1).clamp(-big, big)
    j0 = torch.ceil(umin - 0.5).clamp(min=0).long()
    j1 = torch.floor(umax - 0.5).clamp(max=w - 1).long()
    i0 = torch.ceil(vmin - 0.5).clamp(min=0).long()
    i1 = torch.floor(vmax - 0.5).clamp(max=h - 1).long()
    bw, bh = (j1 - j0 + 1).clamp(min=0), (i1 - i0 + 1).clamp(min=0)
    det = (fu[..., 1] - fu[..., 0]) * (fv[..., 2] - fv[..., 0]) - (fv[..., 1] - fv[..., 0]) * (fu[..., 2] - fu[..., 0])
    ok = (fz.amin(-1) > near) & (det.abs() > 1e-12)
    count = torch.where(ok, bw * bh, torch.zeros_like(bw)).reshape(-1)
    sel = torch.nonzero(count > 0, as_tuple=False)[:, 0]  # (T,) into B*F
    keys = torch.full((b * h * w,), _NO_KEY, dtype=torch.int64, device=dev)
    if sel.numel():
        fu2, fv2, fz2 = fu.reshape(-1, 3)[sel], fv.reshape(-1, 3)[sel], fz.reshape(-1, 3)[sel]
        packed = torch.stack([fu2[:, 0], fv2[:, 0], fu2[:, 1] - fu2[:, 0], fv2[:, 1] - fv2[:, 0], fu2[:, 2] - fu2[:, 0],
                              fv2[:, 2] - fv2[:, 0], 1 / fz2[:, 0], 1 / fz2[:, 1], 1 / fz2[:, 2]], 1)  # fmt: skip
        cnt = count[sel]
        box = torch.stack([j0.reshape(-1)[sel], i0.reshape(-1)[sel], bw.reshape(-1)[sel]], 1)
        ends = torch.cumsum(cnt, 0)
        total = int(ends[-1])
        # chunks of whole triangles holding at most max_candidates pairs each (one triangle may exceed it alone)
        cuts = [0]
        if total > max_candidates:
            marks = torch.arange(max_candidates, total, max_candidates, device=dev)
            cuts += sorted(set(torch.searchsorted(ends, marks, right=True).tolist()) - {0})
        cuts.append(int(sel.numel()))
        for a, z_ in zip(cuts[:-1], cuts[1:]):
            if z_ <= a:
                continue
            c = cnt[a:z_]
            n = int(c.sum())
            tri = torch.repeat_interleave(torch.arange(a, z_, device=dev), c, output_size=n)
            k = torch.arange(n, device=dev) - (ends[a:z_] - c - (ends[a] - cnt[a]))[tri - a]
            bx = box[tri]
            col, row = bx[:, 0] + k % bx[:, 2], bx[:, 1] + k // bx[:, 2]
            l0, l1, l2, iz = _screen_barycentrics(packed[tri], col.float() + 0.5, row.float() + 0.5)
            inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (iz > 0)
            tri, col, row, iz = tri[inside], col[inside], row[inside], iz[inside]
            g = sel[tri]  # index into B*F
            view, face = g // nf, g % nf
            depth_bits = (1.0 / iz).contiguous().view(torch.int32).long()  # a positive float's bits order like the float
            key = (depth_bits << 32) | face
            _keep_min(keys, (view * h + row) * w + col, key)
    hit = torch.nonzero(keys != _NO_KEY, as_tuple=False)[:, 0]
    depth = torch.zeros(b * h * w, device=dev)
    face_out = torch.full((b * h * w,), -1, dtype=torch.int64, device=dev)
    bary = torch.zeros(b * h * w, 3, device=dev)
    normal = torch.zeros(b * h * w, 3, device=dev)
    if hit.numel():
        f = keys[hit] & 0xFFFFFFFF
        view, rest = hit // (h * w), hit % (h * w)
        row, col = rest // w, rest % w
        g = view * nf + f
        fu2, fv2, fz2 = fu.reshape(-1, 3)[g], fv.reshape(-1, 3)[g], fz.reshape(-1, 3)[g]
        packed = torch.stack([fu2[:, 0], fv2[:, 0], fu2[:, 1] - fu2[:, 0], fv2[:, 1] - fv2[:, 0], fu2[:, 2] - fu2[:, 0],
                              fv2[:, 2] - fv2[:, 0], 1 / fz2[:, 0], 1 / fz2[:, 1], 1 / fz2[:, 2]], 1)  # fmt: skip
        l0, l1, l2, iz = _screen_barycentrics(packed, col.float() + 0.5, row.float() + 0.5)
        # perspective-correct: world barycentrics are the screen ones weighted by 1/z
        wb = torch.stack([l0 * packed[:, 6], l1 * packed[:, 7], l2 * packed[:, 8]], 1) / iz[:, None]
        depth[hit] = 1.0 / iz
        face_out[hit] = f
        bary[hit] = wb
        corners = pc[view[:, None], faces[f]]  # (N, 3, 3) camera coordinates
        n = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        n = n / n.norm(dim=1, keepdim=True).clamp(min=1e-30)
        ray = torch.stack([(col.float() + 0.5 - cx[view, 0]) / fx[view, 0], (row.float() + 0.5 - cy[view, 0]) / fy[view, 0],
                           torch.ones_like(iz)], 1)  # fmt: skip
        n = torch.where(((n * ray).sum(1) > 0)[:, None], -n, n)
        normal[hit] = n
    return RasterFrames(depth=depth.reshape(b, h, w), face=face_out.reshape(b, h, w), bary=bary.reshape(b, h, w, 3),
                        normal=normal.reshape(b, h, w, 3))  # fmt: skip
