"""Ray casting triangle meshes with warp (ships with Anny), CPU or CUDA.

Two ways to the same hits: a BVH (:meth:`RayCaster.cast`, :meth:`RayCaster.cast_camera`: any rays)
and, for the pixel-centre rays of a pinhole camera, projected triangles tested against the pixels
they may cover (:meth:`RayCaster.cast_pinhole`: no BVH, several times faster for a body).
"""

# No postponed annotations here: warp reads the native stubs' annotations in _warp's scope.
import functools
from dataclasses import dataclass

import numpy as np


# Closest hit per pixel as one 64-bit key: the hit distance's float bits (a non-negative float's
# bits order like the float) above the face id, so an atomic min keeps the nearest hit and, on an
# exact tie in distance, the lower face id.
_NO_KEY = 0x7FFFFFFFFFFFFFFF
_MARGIN_PX = 0.05  # pixels (at least; see cast_pinhole)
_FAR_PX = 1.0e4  # projections beyond this are not trusted
# The pixels of one triangle's box: edge-function pretest (pixel centres farther than the margin
# outside an edge are skipped; s = 0 turns it off), then warp's watertight ray-triangle test and a
# 64-bit atomic min of (distance bits, face). Native: a tight loop over the box.
_SCAN_BOX = """
const float ab0 = b[0] - a[0], ab1 = b[1] - a[1], bc0 = c[0] - b[0], bc1 = c[1] - b[1], ca0 = a[0] - c[0], ca1 = a[1] - c[1];
for (int i = lo_i; i <= hi_i; ++i) {
    const float y = static_cast<float>(i) + 0.5f;
    for (int j = lo_j; j <= hi_j; ++j) {
        const float x = static_cast<float>(j) + 0.5f;
        if (s != 0.0f) {
            const float e0 = s * (ab0 * (y - a[1]) - ab1 * (x - a[0]));
            const float e1 = s * (bc0 * (y - b[1]) - bc1 * (x - b[0]));
            const float e2 = s * (ca0 * (y - c[1]) - ca1 * (x - c[0]));
            if (e0 < tol0 || e1 < tol1 || e2 < tol2) continue;
        }
        const int k = (i - i0) * roi_w + (j - j0);
        float t, u, v, sign;
        if (wp::intersect_ray_tri_woop(origin, dirs[k], p, q, r, t, u, v, sign, nullptr) && t >= 0.0f && t < max_t) {
            union { float f; unsigned int i; } bits;
            bits.f = t + 0.0f;  // -0 -> +0
            wp::atomic_min(keys, k, (wp::int64)(((unsigned long long)bits.i << 32) | (unsigned int)face));
        }
    }
}
"""
_WOOP_HIT = """
float t, u, v, sign;
wp::vec3 n;
wp::intersect_ray_tri_woop(start, dir, a, b, c, t, u, v, sign, &n);
bary_out[k] = wp::vec3(u, v, 1.0f - u - v);
n_out[k] = wp::normalize(n);
return t;
"""


@functools.lru_cache(maxsize=1)
def _warp():
    from bodycorr.common.quiet import init_warp

    wp = init_warp()  # no CUDA-driver warning on machines without one

    @wp.kernel
    def cast_kernel(
        mesh: wp.uint64,
        origins: wp.array(dtype=wp.vec3),
        dirs: wp.array(dtype=wp.vec3),
        max_t: float,
        t_out: wp.array(dtype=float),
        face_out: wp.array(dtype=int),
        u_out: wp.array(dtype=float),
        v_out: wp.array(dtype=float),
        n_out: wp.array(dtype=wp.vec3),
    ):
        i = wp.tid()
        q = wp.mesh_query_ray(mesh, origins[i], dirs[i], max_t)
        if q.result:
            t_out[i] = q.t
            face_out[i] = q.face
            u_out[i] = q.u
            v_out[i] = q.v
            n_out[i] = q.normal
        else:
            t_out[i] = 0.0
            face_out[i] = -1

    @wp.kernel
    def camera_kernel(
        mesh: wp.uint64,
        origin: wp.vec3,
        R: wp.mat33,
        rays_cam: wp.array(dtype=wp.vec3),
        max_t: float,
        depth_out: wp.array(dtype=float),
        face_out: wp.array(dtype=int),
        u_out: wp.array(dtype=float),
        v_out: wp.array(dtype=float),
        n_out: wp.array(dtype=wp.vec3),
    ):
        i = wp.tid()
        dc = wp.normalize(rays_cam[i])
        q = wp.mesh_query_ray(mesh, origin, wp.transpose(R) * dc, max_t)
        if q.result:
            depth_out[i] = q.t * dc[2]
            face_out[i] = q.face
            u_out[i] = q.u
            v_out[i] = q.v
            n = R * q.normal
            if wp.dot(n, dc) > 0.0:
                n = -n
            n_out[i] = n
        else:
            depth_out[i] = 0.0
            face_out[i] = -1

    # -- pinhole rendering by projected triangles (see RayCaster.cast_pinhole) -------------------
    # The per-pixel ray and its intersection use exactly the arithmetic of camera_kernel and of
    # wp.mesh_query_ray (warp's own watertight Woop test), so hits are bit-identical to the BVH's.

    @wp.func_native(_SCAN_BOX)
    def scan_box(lo_i: int, hi_i: int, lo_j: int, hi_j: int, i0: int, j0: int, roi_w: int, s: float, a: wp.vec3, b: wp.vec3,
                 c: wp.vec3, tol0: float, tol1: float, tol2: float, origin: wp.vec3, p: wp.vec3, q: wp.vec3, r: wp.vec3,
                 face: int, max_t: float, dirs: wp.array(dtype=wp.vec3), keys: wp.array(dtype=wp.int64)): ...  # fmt: skip

    @wp.func_native(_WOOP_HIT)
    def woop_hit(start: wp.vec3, dir: wp.vec3, a: wp.vec3, b: wp.vec3, c: wp.vec3, k: int, bary_out: wp.array(dtype=wp.vec3),
                 n_out: wp.array(dtype=wp.vec3)) -> float: ...  # fmt: skip

    @wp.func
    def pixel_ray(k: int, roi_w: int, rx: wp.array(dtype=float), ry: wp.array(dtype=float)):
        # Intrinsics.camera_rays (computed in float64 per column and row, then float32),
        # normalised as camera_kernel does.
        return wp.normalize(wp.vec3(rx[k % roi_w], ry[k // roi_w], 1.0))

    @wp.kernel
    def pinhole_setup_kernel(
        R: wp.mat33, roi_w: int, rx: wp.array(dtype=float), ry: wp.array(dtype=float), dirs: wp.array(dtype=wp.vec3),
        keys: wp.array(dtype=wp.int64),
    ):  # fmt: skip
        k = wp.tid()
        dirs[k] = wp.transpose(R) * pixel_ray(k, roi_w, rx, ry)
        keys[k] = wp.int64(_NO_KEY)

    @wp.kernel
    def pinhole_project_kernel(
        points: wp.array(dtype=wp.vec3), origin: wp.vec3, R: wp.mat33, fx: float, fy: float, cx: float, cy: float,
        uvz: wp.array(dtype=wp.vec3), bounds: wp.array(dtype=float),
    ):  # fmt: skip
        # Pixel coordinates (u, v) and depth z of each vertex; z = -1 marks a vertex whose
        # projection is not trusted to well under the margin: at or behind the camera plane, or
        # projected beyond _FAR_PX (float32 error grows with |u|).
        i = wp.tid()
        a = R * (points[i] - origin)
        z = a[2]
        u = float(0.0)
        v = float(0.0)
        if z > 1.0e-6:
            u = fx * a[0] / z + cx
            v = fy * a[1] / z + cy
        if z > 1.0e-6 and wp.abs(u) <= _FAR_PX and wp.abs(v) <= _FAR_PX:
            uvz[i] = wp.vec3(u, v, z)
            wp.atomic_min(bounds, 0, u)
            wp.atomic_max(bounds, 1, u)
            wp.atomic_min(bounds, 2, v)
            wp.atomic_max(bounds, 3, v)
        else:
            uvz[i] = wp.vec3(0.0, 0.0, -1.0)
            wp.atomic_add(bounds, 4, 1.0)

    @wp.kernel
    def pinhole_triangle_kernel(
        points: wp.array(dtype=wp.vec3), tris: wp.array(dtype=wp.vec3i), uvz: wp.array(dtype=wp.vec3), origin: wp.vec3,
        i0: int, i1: int, j0: int, j1: int, margin: float, dirs: wp.array(dtype=wp.vec3), max_t: float,
        keys: wp.array(dtype=wp.int64),
    ):  # fmt: skip
        f = wp.tid()
        tri = tris[f]
        a = uvz[tri[0]]
        b = uvz[tri[1]]
        c = uvz[tri[2]]
        # Pixel centres the triangle can cover: the box of its projected corners, widened by a
        # margin far above float32 error. A triangle with an untrusted corner may cover any.
        lo_j = j0
        hi_j = j1
        lo_i = i0
        hi_i = i1
        # Pixel centres farther than the margin outside one of the projected edges are skipped
        # too (edge functions: s * e >= -margin * edge length inside). Off for such triangles and
        # for projected slivers.
        s = float(0.0)
        if wp.min(a[2], wp.min(b[2], c[2])) > 0.0:
            lo_j = wp.max(int(wp.ceil(wp.min(a[0], wp.min(b[0], c[0])) - 0.5 - margin)), j0)
            hi_j = wp.min(int(wp.floor(wp.max(a[0], wp.max(b[0], c[0])) - 0.5 + margin)), j1)
            lo_i = wp.max(int(wp.ceil(wp.min(a[1], wp.min(b[1], c[1])) - 0.5 - margin)), i0)
            hi_i = wp.min(int(wp.floor(wp.max(a[1], wp.max(b[1], c[1])) - 0.5 + margin)), i1)
            area2 = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
            if wp.abs(area2) > 1.0e-3:
                s = wp.sign(area2)
        if lo_i <= hi_i and lo_j <= hi_j:
            tol0 = -margin * wp.length(wp.vec2(b[0] - a[0], b[1] - a[1]))
            tol1 = -margin * wp.length(wp.vec2(c[0] - b[0], c[1] - b[1]))
            tol2 = -margin * wp.length(wp.vec2(a[0] - c[0], a[1] - c[1]))
            scan_box(lo_i, hi_i, lo_j, hi_j, i0, j0, j1 - j0 + 1, s, a, b, c, tol0, tol1, tol2, origin,
                     points[tri[0]], points[tri[1]], points[tri[2]], f, max_t, dirs, keys)  # fmt: skip

    @wp.kernel
    def pinhole_resolve_kernel(
        points: wp.array(dtype=wp.vec3), tris: wp.array(dtype=wp.vec3i), origin: wp.vec3, R: wp.mat33,
        rx: wp.array(dtype=float), ry: wp.array(dtype=float), i0: int, j0: int, roi_w: int, width: int,
        dirs: wp.array(dtype=wp.vec3), keys: wp.array(dtype=wp.int64), depth_out: wp.array(dtype=float),
        face_out: wp.array(dtype=int), bary_out: wp.array(dtype=wp.vec3), n_out: wp.array(dtype=wp.vec3),
    ):  # fmt: skip
        k = wp.tid()
        key = keys[k]
        if key != wp.int64(_NO_KEY):
            i = i0 + k // roi_w
            j = j0 + k % roi_w
            o = i * width + j
            f = int(key & wp.int64(0xFFFFFFFF))
            tri = tris[f]
            t = woop_hit(origin, dirs[k], points[tri[0]], points[tri[1]], points[tri[2]], o, bary_out, n_out)
            dc = pixel_ray(k, roi_w, rx, ry)
            depth_out[o] = t * dc[2]
            face_out[o] = f
            n = R * n_out[o]
            if wp.dot(n, dc) > 0.0:
                n = -n
            n_out[o] = n

    return wp, cast_kernel, camera_kernel, (pinhole_project_kernel, pinhole_setup_kernel, pinhole_triangle_kernel, pinhole_resolve_kernel)


@dataclass(frozen=True, eq=False)
class RayHits:
    """Closest hits of N rays.

    Attributes:
        t: (N,) float32 distance along the (unit) ray, 0 where nothing was hit.
        face: (N,) int32 hit triangle, -1 for a miss.
        bary: (N, 3) float32 barycentrics of the hit in the triangle's corner order.
        normal: (N, 3) float32 unit face normal of the hit triangle (geometric, as wound).
    """

    t: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    normal: np.ndarray


class RayCaster:
    """A triangle mesh whose vertices may move (same faces), ray-cast by a BVH (built once, refit
    per pose) or, for pinhole cameras, by projecting its triangles onto the pixels (no BVH needed).

    Args:
        vertices: (V, 3) float positions.
        faces: (F, 3) int triangles.
        device: "cpu" or "cuda".
        bvh: build the BVH now (True, the default) or on the first :meth:`cast` /
            :meth:`cast_camera` (False: callers that only use :meth:`cast_pinhole` never pay for it).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, device: str = "cpu", bvh: bool = True):
        wp, self._kernel, self._camera_kernel, self._pinhole_kernels = _warp()
        self._wp = wp
        self.device = device
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        self._vertices = np.ascontiguousarray(vertices, dtype=np.float32).copy()
        self._points = wp.array(self._vertices, dtype=wp.vec3, device=device)
        self._tris = None
        self._mesh = None
        if bvh:
            self._build()

    def _build(self):
        wp = self._wp
        self._mesh = wp.Mesh(points=self._points, indices=wp.array(self.faces.ravel(), dtype=wp.int32, device=self.device))
        return self._mesh

    @property
    def mesh(self):
        """The warp mesh (with its BVH), built on first use."""
        return self._build() if self._mesh is None else self._mesh

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) float32 current vertex positions (read-only view)."""
        v = self._vertices.view()
        v.flags.writeable = False
        return v

    def update(self, vertices: np.ndarray) -> None:
        """Move the vertices (V, 3) and refit the BVH (about 0.3 ms for a body, versus 8 ms to build)."""
        v = np.ascontiguousarray(vertices, dtype=np.float32)
        if v.shape != tuple(self._points.shape) + (3,):
            raise ValueError(f"vertices must be {tuple(self._points.shape) + (3,)}, got {v.shape}")
        self._vertices[...] = v
        self._points.assign(v)
        if self._mesh is not None:
            self._mesh.refit()

    def cast(self, origins: np.ndarray, directions: np.ndarray, max_t: float = 1e3) -> RayHits:
        """Cast rays. origins: (N, 3) or (3,), directions: (N, 3) unit vectors -> :class:`RayHits`."""
        wp = self._wp
        d = np.ascontiguousarray(directions, dtype=np.float32).reshape(-1, 3)
        n = d.shape[0]
        o = np.ascontiguousarray(np.broadcast_to(np.asarray(origins, dtype=np.float32), (n, 3)))
        dev = self.device
        t = wp.empty(n, dtype=float, device=dev)
        face = wp.empty(n, dtype=int, device=dev)
        u = wp.zeros(n, dtype=float, device=dev)
        v = wp.zeros(n, dtype=float, device=dev)
        nrm = wp.zeros(n, dtype=wp.vec3, device=dev)
        wp.launch(
            self._kernel,
            dim=n,
            inputs=[self.mesh.id, wp.array(o, dtype=wp.vec3, device=dev), wp.array(d, dtype=wp.vec3, device=dev), float(max_t)],
            outputs=[t, face, u, v, nrm],
            device=dev,
        )
        un, vn = u.numpy(), v.numpy()
        # warp's barycentrics: p = u * p0 + v * p1 + (1 - u - v) * p2
        bary = np.stack([un, vn, 1.0 - un - vn], axis=1).astype(np.float32)
        f = face.numpy()
        bary[f < 0] = 0.0
        return RayHits(t=t.numpy(), face=f, bary=bary, normal=nrm.numpy())


    def cast_camera(self, origin: np.ndarray, R: np.ndarray, rays_cam: np.ndarray, max_t: float = 1e3) -> RayHits:
        """Cast one camera's rays, fused in one kernel.

        Args:
            origin: (3,) camera centre (world).
            R: (3, 3) world-to-camera rotation.
            rays_cam: (N, 3) camera-space rays through pixel centres (any length, z > 0).
        Returns:
            :class:`RayHits` whose ``t`` is the camera z-depth (not the ray length) and whose
            ``normal`` is in camera coordinates, turned to face the camera.
        """
        wp = self._wp
        dev = self.device
        rays = np.ascontiguousarray(rays_cam, dtype=np.float32).reshape(-1, 3)
        n = rays.shape[0]
        depth = wp.empty(n, dtype=float, device=dev)
        face = wp.empty(n, dtype=int, device=dev)
        u = wp.zeros(n, dtype=float, device=dev)
        v = wp.zeros(n, dtype=float, device=dev)
        nrm = wp.zeros(n, dtype=wp.vec3, device=dev)
        wp.launch(
            self._camera_kernel,
            dim=n,
            inputs=[self.mesh.id, wp.vec3(*np.asarray(origin, dtype=np.float32)), wp.mat33(*np.asarray(R, dtype=np.float32).ravel()),
                    wp.array(rays, dtype=wp.vec3, device=dev), float(max_t)],  # fmt: skip
            outputs=[depth, face, u, v, nrm],
            device=dev,
        )
        un, vn = u.numpy(), v.numpy()
        bary = np.stack([un, vn, 1.0 - un - vn], axis=1)
        f = face.numpy()
        bary[f < 0] = 0.0
        return RayHits(t=depth.numpy(), face=f, bary=bary, normal=nrm.numpy())


    def cast_pinhole(self, origin: np.ndarray, R: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                     width: int, height: int, max_t: float = 1e3) -> RayHits:  # fmt: skip
        """Cast the rays of every pixel centre of a pinhole camera without a BVH.

        Each triangle is projected and tested against the rays of the pixel centres inside its
        projected box (widened by a margin far above float32 error); a per-pixel atomic minimum
        keeps the nearest hit. The rays (``Intrinsics.camera_rays``) and the hit test (warp's
        watertight one) are computed exactly as in :meth:`cast_camera`, so every pixel gets the
        same bits; only an exact tie in distance between two triangles may resolve to another
        (equally near) triangle: here the lower face id. For a body filling part of the image this
        is several times faster than the BVH, which is never built for it.

        Args:
            origin: (3,) camera centre (world). R: (3, 3) world-to-camera rotation.
            fx, fy, cx, cy, width, height: the intrinsics (OpenCV, pixel centres at +0.5).
        Returns:
            :class:`RayHits` of the H * W pixels, row-major, like :meth:`cast_camera`: ``t`` is the
            camera z-depth and ``normal`` is in camera coordinates, turned to face the camera.
        """
        wp = self._wp
        dev = self.device
        project, setup, per_triangle, resolve = self._pinhole_kernels
        n = width * height
        depth = np.zeros(n, dtype=np.float32)
        face = np.full(n, -1, dtype=np.int32)
        bary = np.zeros((n, 3), dtype=np.float32)
        normal = np.zeros((n, 3), dtype=np.float32)
        o = wp.vec3(*np.asarray(origin, dtype=np.float32))
        Rw = wp.mat33(*np.asarray(R, dtype=np.float32).ravel())
        f32 = [float(fx), float(fy), float(cx), float(cy)]
        nv = self._points.shape[0]
        if self._tris is None:
            self._tris = wp.array(self.faces, dtype=wp.vec3i, device=dev)
            self._uvz = wp.empty(nv, dtype=wp.vec3, device=dev)
        # Float32 rounding moves a projected point or a ray's hit by about 1e-6 * fx pixels (and
        # by 1e-7 * |u| through u itself, hence _FAR_PX): the margin stays 10x above that.
        margin = max(_MARGIN_PX, 1e-5 * max(fx, fy))
        bounds = wp.array(np.array([np.inf, -np.inf, np.inf, -np.inf, 0.0], dtype=np.float32), dtype=float, device=dev)
        wp.launch(project, dim=nv, inputs=[self._points, o, Rw, *f32], outputs=[self._uvz, bounds], device=dev)
        # The pixels the mesh may cover: the box of the projected vertices (what every triangle's
        # own box lies in), or the whole image if a vertex's projection is not trusted.
        u0, u1, v0, v1, behind = bounds.numpy().astype(np.float64)
        if behind > 0:
            i0, i1, j0, j1 = 0, height - 1, 0, width - 1
        else:
            m = 2 * margin
            j0, j1 = max(int(np.ceil(u0 - 0.5 - m)), 0), min(int(np.floor(u1 - 0.5 + m)), width - 1)
            i0, i1 = max(int(np.ceil(v0 - 0.5 - m)), 0), min(int(np.floor(v1 - 0.5 + m)), height - 1)
            if j1 < j0 or i1 < i0:
                return RayHits(t=depth, face=face, bary=bary, normal=normal)
        roi_w = j1 - j0 + 1
        npx = (i1 - i0 + 1) * roi_w
        # the pixel-centre rays' x and y (Intrinsics.camera_rays: float64, then float32 as cast_camera takes them)
        rx = wp.array(((np.arange(j0, j1 + 1) + 0.5 - cx) / fx).astype(np.float32), dtype=float, device=dev)
        ry = wp.array(((np.arange(i0, i1 + 1) + 0.5 - cy) / fy).astype(np.float32), dtype=float, device=dev)
        dirs = wp.empty(npx, dtype=wp.vec3, device=dev)
        keys = wp.empty(npx, dtype=wp.int64, device=dev)
        wp.launch(setup, dim=npx, inputs=[Rw, roi_w, rx, ry], outputs=[dirs, keys], device=dev)
        wp.launch(per_triangle, dim=len(self.faces), inputs=[self._points, self._tris, self._uvz, o, i0, i1, j0, j1, float(margin), dirs, float(max_t)],
                  outputs=[keys], device=dev)  # fmt: skip
        arrays = ((depth, float), (face, int), (bary, wp.vec3), (normal, wp.vec3))
        # on the CPU the kernel writes straight into the numpy arrays
        outs = [wp.array(a, dtype=dt, device=dev, copy=(dev != "cpu")) for a, dt in arrays]
        wp.launch(resolve, dim=npx, inputs=[self._points, self._tris, o, Rw, rx, ry, i0, j0, roi_w, width, dirs, keys], outputs=outs, device=dev)
        if dev != "cpu":
            depth, face, bary, normal = (x.numpy() for x in outs)
        return RayHits(t=depth, face=face, bary=bary, normal=normal)


def cast_rays_reference(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, directions: np.ndarray) -> RayHits:
    """Slow, obvious reference: Möller–Trumbore against every triangle for every ray (tests only).

    vertices: (V, 3), faces: (F, 3), origin: (3,), directions: (N, 3) unit.
    """
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    p0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = len(directions)
    t_best = np.full(n, np.inf)
    f_best = -np.ones(n, dtype=np.int64)
    bary = np.zeros((n, 3))
    for r, d in enumerate(np.asarray(directions, dtype=np.float64)):
        h = np.cross(d, e2)
        a = np.einsum("fk,fk->f", e1, h)
        ok = np.abs(a) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
        s = origin - p0
        b1 = inv * np.einsum("fk,fk->f", s, h)
        q = np.cross(s, e1)
        b2 = inv * (q @ d)
        t = inv * np.einsum("fk,fk->f", e2, q)
        hit = ok & (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1) & (t > 1e-9)
        if hit.any():
            k = np.flatnonzero(hit)[np.argmin(t[hit])]
            t_best[r], f_best[r] = t[k], k
            bary[r] = (1 - b1[k] - b2[k], b1[k], b2[k])
    nrm = np.cross(e1, e2)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-30
    return RayHits(
        t=np.where(f_best >= 0, t_best, 0).astype(np.float32),
        face=f_best.astype(np.int32),
        bary=bary.astype(np.float32),
        normal=np.where(f_best[:, None] >= 0, nrm[np.maximum(f_best, 0)], 0).astype(np.float32),
    )
