"""Descriptors from a trained network: per pixel for depth maps, per vertex/point for meshes and clouds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from bodycorr.common.errors import BodycorrError
from bodycorr.data.views import crop_intrinsics
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.models.inputs import depth_to_input
from bodycorr.render.frame import render
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import orbit_rig


RIG_ELEVATIONS = (-10.0, 5.0, 20.0, 35.0)  # within the training views' elevation range
RIG_FILL = 0.85  # share of the image side the body spans, as in training crops (0.7 to 0.95)


@dataclass(frozen=True, eq=False)
class PixelDescriptors:
    """Descriptors of a depth map's pixels.

    Attributes:
        descriptors: (N, D) float32 unit descriptors of the valid pixels.
        pixels: (N, 2) int (row, col) of each valid pixel.
        points: (N, 3) the pixels back-projected (camera or world coordinates of ``camera``).
    """

    descriptors: np.ndarray
    pixels: np.ndarray
    points: np.ndarray


@dataclass(frozen=True, eq=False)
class VertexDescriptors:
    """Per-vertex (or per-point) descriptors from multi-view rendering.

    Attributes:
        descriptors: (V, D) float32 unit descriptors.
        seen: (V,) int number of views that saw each vertex (0 = filled from neighbours).
        consistency: (V,) float in [0, 1]: norm of the mean of the unit descriptors over views
            (1 = all views agree); a confidence.
    """

    descriptors: np.ndarray
    seen: np.ndarray
    consistency: np.ndarray


def _crop_box(mask: np.ndarray, margin: float = 0.08) -> tuple[int, int, int]:
    """Square box (row0, col0, side) around the foreground, with a margin."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(np.ceil(max(r1 - r0, c1 - c0) * (1 + 2 * margin))) + 1
    return int((r0 + r1) // 2 - side // 2), int((c0 + c1) // 2 - side // 2), side


class DescriptorExtractor:
    """Runs a descriptor network on depth maps (cropped around the person and resized to ``size``).

    Args:
        model: a descriptor network (``forward((B, 2, S, S)) -> (B, D, S, S)``).
        size: the square input side the model was trained on.
        batch_size: views per forward pass.
        vote_iters: multi-view aggregation of meshes and clouds: 0 = the plain mean of the views'
            descriptors; n > 0 = the mean, then ``n`` reweightings in which each view's contribution
            to a vertex is weighted by its agreement with the current estimate (``max(cos, 0)^vote_power``),
            so views that disagree (a left descriptor where most views say right) are outvoted, not mixed.
        vote_power: sharpness of that weighting.
    """

    def __init__(self, model: torch.nn.Module, size: int = 128, device: str = "cpu", batch_size: int = 8,
                 vote_iters: int = 0, vote_power: float = 4.0):  # fmt: skip
        self.model = model.to(device).eval()
        self.size = size
        self.device = torch.device(device)
        self.batch_size = batch_size
        if vote_iters < 0 or vote_power <= 0:
            raise BodycorrError(f"DescriptorExtractor: vote_iters must be >= 0 and vote_power > 0, got {vote_iters}, {vote_power}.")
        self.vote_iters, self.vote_power = int(vote_iters), float(vote_power)

    @torch.no_grad()
    def dense(self, depths: np.ndarray) -> np.ndarray:
        """depths: (B, S, S) metres (already framed) -> (B, S, S, D) float32 descriptors."""
        out = []
        for i in range(0, len(depths), self.batch_size):
            x = depth_to_input(torch.from_numpy(np.ascontiguousarray(depths[i : i + self.batch_size], dtype=np.float32)).to(self.device))
            out.append(self.model(x).permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(out)

    def depth_map(self, depth: np.ndarray, camera: Camera | None = None, name: str = "depth map") -> PixelDescriptors:
        """Descriptors for every valid pixel of a sensor depth map.

        depth: (H, W) metres, 0 = no data. The person is cropped (square box around the valid
        pixels), resampled to ``size`` (nearest), described, and read back at each pixel.
        """
        d = np.asarray(depth, dtype=np.float32)
        if d.ndim != 2:
            raise BodycorrError(f"{name}: depth must be (H, W), got {d.shape}.")
        valid = np.isfinite(d) & (d > 0)
        if valid.sum() < 50:
            raise BodycorrError(f"{name}: only {int(valid.sum())} valid pixels; no person found. Check the depth map and its units.")
        d = np.where(valid, d, 0)
        r0, c0, side = _crop_box(valid)
        s = self.size
        # nearest resampling of the crop to s x s
        src = r0 + (np.arange(s) + 0.5) * side / s
        srcc = c0 + (np.arange(s) + 0.5) * side / s
        ri, ci = np.floor(src).astype(int), np.floor(srcc).astype(int)
        inside_r = (ri >= 0) & (ri < d.shape[0])
        inside_c = (ci >= 0) & (ci < d.shape[1])
        crop = np.zeros((s, s), dtype=np.float32)
        crop[np.ix_(inside_r, inside_c)] = d[np.ix_(ri[inside_r], ci[inside_c])]
        desc = self.dense(crop[None])[0]  # (s, s, D)
        rows, cols = np.nonzero(valid)
        # bilinear read-back at each valid pixel centre
        fr = (rows + 0.5 - r0) * s / side - 0.5
        fc = (cols + 0.5 - c0) * s / side - 0.5
        out = np.stack([ndimage.map_coordinates(desc[..., k], [fr, fc], order=1, mode="nearest") for k in range(desc.shape[-1])], 1)
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
        pts = camera.backproject(np.where(valid, d, 0))[rows, cols] if camera is not None else np.zeros((len(rows), 3))
        return PixelDescriptors(descriptors=out.astype(np.float32), pixels=np.stack([rows, cols], 1), points=pts)

    def rig(self, points: np.ndarray, num_views: int, up: np.ndarray, elevations=RIG_ELEVATIONS) -> list[Camera]:
        """Cameras around ``points`` (N, 3) about ``up``, each framed like the training crops:
        the points span ``RIG_FILL`` of the image, seen from the training elevations."""
        centre = 0.5 * (points.min(0) + points.max(0))
        radius = float(np.linalg.norm(points - centre, axis=1).max())
        k = Intrinsics.square(self.size, fov_deg=30.0)
        cams = orbit_rig(k, centre, 2.5 * radius + 0.5, num_views, tuple(elevations), up)
        sub = points[:: max(1, len(points) // 4000)]
        return [Camera(crop_intrinsics(sub, c, self.size, RIG_FILL), c.R, c.t) for c in cams]

    def views_of(self, vertices: np.ndarray, caster: RayCaster, num_views: int, up: np.ndarray):
        """Framed renders of a surface around ``up``: yields (camera, frame) pairs."""
        for cam in self.rig(vertices, num_views, up):
            yield cam, render(caster, cam)

    def mesh(self, mesh: Mesh, num_views: int = 48, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> VertexDescriptors:
        """Per-vertex descriptors of a triangle mesh by averaging over ``num_views`` renders.

        Each pixel's descriptor is spread to its triangle's three corners by barycentric weight;
        vertices no view sees (armpits, between fingers) are filled from their neighbours.
        """
        mesh.require_faces()
        caster = RayCaster(mesh.vertices, mesh.faces)
        frames = list(self.views_of(mesh.vertices, caster, num_views, up))
        desc = self.dense(np.stack([f.depth for _, f in frames]))
        seen = np.zeros(mesh.num_vertices, dtype=np.int64)
        contrib = []
        for (_, fr), dsc in zip(frames, desc):
            m = fr.face >= 0
            tri = mesh.faces[fr.face[m]]  # (n, 3)
            # each pixel's descriptor goes to its triangle's corners by barycentric weight
            contrib.append((tri.T.ravel(), fr.bary[m].T.ravel().astype(np.float64), np.tile(dsc[m], (3, 1))))
            seen[np.unique(tri.ravel())] += 1
        mean, wsum, consistency = aggregate_views(contrib, mesh.num_vertices, self.vote_iters, self.vote_power)
        return _finish(mean, wsum, seen, mesh.edges(), mesh.vertices, consistency)

    def point_cloud(self, cloud: PointCloud, num_views: int = 48, up: np.ndarray = np.array([0.0, 0.0, 1.0]),
                    splat: int = 0) -> VertexDescriptors:  # fmt: skip
        """Per-point descriptors of a point cloud: points are splatted into framed depth views (z-buffer,
        holes closed), and each point takes the descriptor of its pixel in the views where it is visible.
        """
        pts = cloud.points
        if len(pts) < 100:
            raise BodycorrError(f"{cloud.name}: only {len(pts)} points; need at least 100 to describe a body.")
        cams = self.rig(pts, num_views, up)
        # splat radius: typical point spacing in pixels
        from scipy.spatial import cKDTree

        spacing = float(np.median(cKDTree(pts).query(pts[:: max(1, len(pts) // 2000)], k=2)[0][:, 1]))
        depths, pix, vis = [], [], []
        for cam in cams:
            k = cam.intrinsics
            dist = float(np.linalg.norm(cam.center - pts.mean(0)))
            pr = cam.project(pts)
            uv = np.floor(np.nan_to_num(pr.uv, nan=-1)).astype(int)
            ok = pr.inside
            z = pr.z
            zbuf = np.full((k.height, k.width), np.inf)
            np.minimum.at(zbuf, (uv[ok, 1], uv[ok, 0]), z[ok])
            r = splat or max(1, int(round(0.7 * spacing * k.fx / dist)))
            zb = np.where(np.isinf(zbuf), 1e9, zbuf)
            if r > 1:  # close the holes between splatted points: a minimum filter keeps the nearest surface
                zb = ndimage.minimum_filter(zb, size=2 * r + 1)
            zb = np.where(zb < 1e8, zb, 0.0)
            depths.append(zb.astype(np.float32))
            tol = max(0.02, 3 * spacing)
            zz = np.where(ok, zb[np.clip(uv[:, 1], 0, k.height - 1), np.clip(uv[:, 0], 0, k.width - 1)], 0)
            vis.append(ok & (zz > 0) & (z <= zz + tol))
            pix.append(uv)
        desc = self.dense(np.stack(depths))
        seen = np.zeros(len(pts), dtype=np.int64)
        contrib = []
        for dsc, uv, v in zip(desc, pix, vis):
            idx = np.flatnonzero(v)
            contrib.append((idx, np.ones(len(idx)), dsc[uv[v, 1], uv[v, 0]]))
            seen[v] += 1
        mean, wsum, consistency = aggregate_views(contrib, len(pts), self.vote_iters, self.vote_power)
        tree = cKDTree(pts)
        nbr = tree.query(pts, k=min(8, len(pts)))[1]
        edges = np.stack([np.repeat(np.arange(len(pts)), nbr.shape[1] - 1), nbr[:, 1:].ravel()], 1)
        return _finish(mean, wsum, seen, edges, pts, consistency)


def _accumulate(contrib: list, n: int, weights: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``w * desc`` and ``w`` per point over views' contributions (idx (m,), w (m,), desc (m, D));
    ``weights`` (one (m,) array per view) multiply the ``w``s."""
    dim = contrib[0][2].shape[1] if contrib else 1
    acc, wsum = np.zeros((n, dim)), np.zeros(n)
    for k, (idx, w, d) in enumerate(contrib):
        ww = w if weights is None else w * weights[k]
        np.add.at(acc, idx, ww[:, None] * d)
        np.add.at(wsum, idx, ww)
    return acc, wsum


def aggregate_views(contrib: list, n: int, vote_iters: int = 0, vote_power: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-point descriptor from several views' contributions.

    contrib: one (idx (m,) int, w (m,) float, desc (m, D) unit) triple per view. Returns the unit
    mean (n, D) (zeros where no view contributes), the weight sum (n,) and the consistency (n,): the
    norm of the plain mean of the unit descriptors (1 = all views agree). With ``vote_iters`` > 0
    the mean is re-estimated that many times with each contribution also weighted by
    ``max(cos(desc, estimate), 0)^vote_power``: views that disagree with the majority (a left
    descriptor among right ones) are outvoted instead of averaged in. Where every view disagrees
    the plain mean is kept.
    """
    acc, wsum = _accumulate(contrib, n)
    mean = acc / np.maximum(wsum, 1e-12)[:, None]
    consistency = np.linalg.norm(mean, axis=1)
    mean = mean / np.maximum(consistency, 1e-12)[:, None]
    for _ in range(vote_iters):
        agree = [np.clip((d * mean[idx]).sum(1), 0.0, None) ** vote_power for idx, _, d in contrib]
        acc2, wsum2 = _accumulate(contrib, n, agree)
        ok = wsum2 > 1e-6 * np.maximum(wsum, 1e-12)
        m2 = acc2[ok] / wsum2[ok, None]
        mean[ok] = m2 / np.maximum(np.linalg.norm(m2, axis=1), 1e-12)[:, None]
    return mean, wsum, consistency


def _finish(mean: np.ndarray, wsum: np.ndarray, seen: np.ndarray, edges: np.ndarray, points: np.ndarray,
            consistency: np.ndarray, iters: int = 50) -> VertexDescriptors:  # fmt: skip
    """Fill unseen vertices (``wsum`` 0) of the unit ``mean`` descriptors by neighbour averaging over
    ``edges``, and any still unreached (isolated vertices, separate components) from the nearest filled point."""
    desc = mean.copy()
    known = wsum > 0
    if not known.any():
        raise BodycorrError("descriptors: no view saw the surface. Check the input's scale and that it is not empty.")
    if not known.all():
        n = len(desc)
        import scipy.sparse as sp

        a = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n)).tocsr()
        filled = known.copy()
        for _ in range(iters):
            if filled.all():
                break
            s = a @ np.where(filled[:, None], desc, 0)
            cnt = a @ filled.astype(float)
            new = ~filled & (cnt > 0)
            desc[new] = s[new] / cnt[new, None]
            desc[new] /= np.linalg.norm(desc[new], axis=1, keepdims=True) + 1e-12
            filled |= new
        if not filled.all():
            from scipy.spatial import cKDTree

            src = np.flatnonzero(filled)
            near = cKDTree(points[src]).query(points[~filled])[1]
            desc[~filled] = desc[src[near]]
    return VertexDescriptors(descriptors=desc.astype(np.float32), seen=seen, consistency=consistency.astype(np.float32))
