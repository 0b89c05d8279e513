"""Training views made on the device from packed posed bodies: random cameras, torch rasterisation, Kinect noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.data.views import ViewConfig
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise_torch
from bodycorr.render.torch_raster import PinholeCameras, rasterize

#: Vertex quantisation step of a pack (metres): positions are kept to within an eighth of a millimetre.
PACK_STEP_M = 0.00025


@dataclass(frozen=True, eq=False)
class PackedBodies:
    """N posed bodies of one topology, vertices quantised and delta-coded for a small compressed file.

    Vertex ``v`` of body ``n`` is ``origin[n] + step * q`` with ``q`` the running sum over vertices
    of the int16 deltas whose low and high bytes are ``lo[n, :, v]`` and ``hi[n, :, v]`` (neighbouring
    vertices lie close, so the deltas are small and the byte planes compress well).

    Attributes:
        origin: (N, 3) float32 metres, each body's lowest corner.
        lo, hi: (N, 3, V) uint8 byte planes of the deltas, per axis.
        step: quantisation step in metres.
        phenotypes: (N, 6) float32 each body's shape; identity: (N,) int32 its identity in its split;
            body: (N,) int32 its body index in the split (``ViewGenerator.body``).
    """

    origin: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    step: float
    phenotypes: np.ndarray
    identity: np.ndarray
    body: np.ndarray

    def __len__(self) -> int:
        return int(self.origin.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.lo.shape[2])

    @staticmethod
    def encode(vertices: np.ndarray, phenotypes: np.ndarray, identity: np.ndarray, body: np.ndarray,
               step: float = PACK_STEP_M) -> "PackedBodies":  # fmt: skip
        """Quantise (N, V, 3) vertices (metres) to ``step``; raises one line for a body over 8 m across."""
        v = np.asarray(vertices, dtype=np.float64)
        if v.ndim != 3 or v.shape[2] != 3:
            raise BodycorrError(f"packed bodies: vertices must be (N, V, 3), got {v.shape}.")
        origin = v.min(1).astype(np.float32)
        q = np.round((v - origin[:, None].astype(np.float64)) / step).astype(np.int64)
        if q.size and q.max() > 32767:
            raise BodycorrError(f"packed bodies: a body spans {q.max() * step:.1f} m, over the {32767 * step:.1f} m a pack holds at "
                                f"a {step * 1000:g} mm step. Pass a larger step.")  # fmt: skip
        d = np.diff(q.transpose(0, 2, 1), axis=2, prepend=0).astype(np.int16)  # (N, 3, V), |d| < 2^15
        planes = d.view(np.uint16)
        n = len(v)
        return PackedBodies(origin=origin, lo=(planes & 0xFF).astype(np.uint8), hi=(planes >> 8).astype(np.uint8), step=float(step),
                            phenotypes=np.asarray(phenotypes, np.float32).reshape(n, -1), identity=np.asarray(identity, np.int32).reshape(n),
                            body=np.asarray(body, np.int32).reshape(n))  # fmt: skip

    def vertices(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """(N, V, 3) float32 positions in metres, decoded on ``device``."""
        lo = torch.as_tensor(self.lo, device=device).to(torch.int32)
        hi = torch.as_tensor(self.hi, device=device).to(torch.int32)
        d = (hi << 8) | lo
        d = torch.where(d >= 32768, d - 65536, d)
        q = torch.cumsum(d, dim=2)
        origin = torch.as_tensor(self.origin, device=device)
        return (q.double() * self.step).float().transpose(1, 2) + origin[:, None]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("origin", "lo", "hi", "phenotypes", "identity", "body")} | {
            f"{prefix}step": np.float64(self.step)}  # fmt: skip

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray], prefix: str) -> "PackedBodies":
        return PackedBodies(**{k: a[f"{prefix}{k}"] for k in ("origin", "lo", "hi", "phenotypes", "identity", "body")},
                            step=float(a[f"{prefix}step"]))  # fmt: skip


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :meth:`bodycorr.geometry.camera.Camera.look_at`: eye, target, up (B, 3) -> R (B, 3, 3), t (B, 3)."""
    z = _normalise(target - eye)
    x = _normalise(torch.linalg.cross(z, up))
    y = torch.linalg.cross(z, x)  # image down
    R = torch.stack([x, y, z], 1)
    return R, -torch.einsum("bij,bj->bi", R, eye)


def crop_cameras(vertices: torch.Tensor, R: torch.Tensor, t: torch.Tensor, size: int, fill: torch.Tensor, shift: torch.Tensor) -> PinholeCameras:
    """Batched :func:`bodycorr.data.views.crop_intrinsics`: square ``size`` crops in which each body spans ``fill`` of the side.

    vertices: (B, V, 3) world metres; R (B, 3, 3), t (B, 3) the camera poses (kept); fill: (B,);
    shift: (B, 2) in [-1, 1], the random offset as a fraction of the free margin (``rng.uniform(-1, 1, 2)`` there).
    """
    dev = vertices.device
    pc = torch.einsum("bij,bvj->bvi", R.double(), vertices.double()) + t.double()[:, None]
    front = pc[..., 2] > 1e-3
    zs = pc[..., 2].clamp(min=1e-3)
    x, y = pc[..., 0] / zs, pc[..., 1] / zs
    inf = torch.tensor(float("inf"), device=dev, dtype=torch.float64)
    lo = torch.stack([torch.where(front, x, inf).amin(1), torch.where(front, y, inf).amin(1)], 1)
    hi = torch.stack([torch.where(front, x, -inf).amax(1), torch.where(front, y, -inf).amax(1)], 1)
    fill = fill.double()
    f = fill * size / (hi - lo).amax(1).clamp(min=1e-6)
    mid = 0.5 * (lo + hi)
    off = shift.double() * (0.5 * (1 - fill) * size)[:, None]
    cx = (size / 2 - f * mid[:, 0] + off[:, 0]).clamp(0, size)
    cy = (size / 2 - f * mid[:, 1] + off[:, 1]).clamp(0, size)
    return PinholeCameras(f.float(), f.float(), cx.float(), cy.float(), R.float(), t.float(), size, size)


def random_crop_cameras(vertices: torch.Tensor, config: ViewConfig, generator: torch.Generator) -> PinholeCameras:
    """One random camera per body, drawn as :class:`bodycorr.data.views.ViewGenerator` draws them.

    :func:`bodycorr.render.rig.random_camera` (any yaw, elevation and distance in the config's
    ranges, the target jittered around the body's box centre, a slight roll), then the intrinsics of
    a square crop (:func:`crop_cameras`) in which the body spans a random ``fill`` of the side,
    shifted a little at random. vertices: (B, V, 3) metres on the generator's device.
    """
    if config.framing != "crop":
        raise BodycorrError(f"views on the device: framing {config.framing!r} is not supported; use framing 'crop'.")
    dev, b = vertices.device, vertices.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand((b, *shape), generator=generator, device=dev, dtype=torch.float64)

    verts = vertices.double()
    centre = 0.5 * (verts.amin(1) + verts.amax(1))  # (B, 3)
    yaw = u(0.0, 2 * math.pi)
    el = torch.deg2rad(u(*config.elevation_deg))
    dist = u(*config.distance_range)
    jitter = torch.randn((b, 3), generator=generator, device=dev, dtype=torch.float64) * 0.1
    tgt = centre + jitter * torch.tensor([1.0, 1.0, 0.5], device=dev, dtype=torch.float64)
    ce = torch.cos(el)
    eye = tgt + dist[:, None] * torch.stack([torch.sin(yaw) * ce, -torch.cos(yaw) * ce, torch.sin(el)], 1)
    roll = torch.deg2rad(u(-5.0, 5.0))
    up = torch.stack([torch.sin(roll) * torch.cos(yaw), torch.sin(roll) * torch.sin(yaw), torch.cos(roll)], 1)
    R, t = look_at(eye, tgt, up)
    return crop_cameras(verts, R, t, config.size, u(*config.fill), u(-1.0, 1.0, 2))


class DeviceViews:
    """Random depth views of packed bodies, made on ``device`` in batches.

    Each view shows a random body (uniformly, with replacement) through its own random camera
    (:func:`random_crop_cameras`), noisy as the config says ("mixed": each view with probability
    ``noisy_share``), with the template vertex of every pixel as in :func:`bodycorr.render.truth.body_truth`
    (the corner of the seen triangle with the largest barycentric, through ``full_to_template``).

    Args:
        vertices: (N, V, 3) float32 bodies (e.g. :meth:`PackedBodies.vertices`).
        faces: (F, 3) triangles of the bodies' topology; full_to_template: (V,) template vertex of each vertex.
    """

    def __init__(self, vertices: torch.Tensor, faces: np.ndarray | torch.Tensor, full_to_template: np.ndarray | torch.Tensor,
                 config: ViewConfig):  # fmt: skip
        if vertices.ndim != 3 or vertices.shape[0] < 1:
            raise BodycorrError(f"device views: vertices must be (N, V, 3) with N >= 1, got {tuple(vertices.shape)}.")
        self.device = vertices.device
        self.vertices = vertices
        self.faces = torch.as_tensor(np.asarray(faces), device=self.device).long()
        self.full_to_template = torch.as_tensor(np.asarray(full_to_template), device=self.device).long()
        if self.full_to_template.shape != (vertices.shape[1],):
            raise BodycorrError(f"device views: full_to_template must be ({vertices.shape[1]},), got {tuple(self.full_to_template.shape)}.")
        self.config = config
        self.noise = DepthNoiseConfig.preset("kinect_v2")

    def sample(self, n: int, generator: torch.Generator, bodies: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``n`` views: ``depth`` (n, 1, S, S) float32 metres (0 = none), ``vertex`` (n, S, S) int64
        template vertex (-1 = none), ``body`` (n,) which body, ``noisy`` (n,) bool. ``bodies`` (n,)
        picks the bodies instead of drawing them. ``generator`` lives on the views' device."""
        dev = self.device
        if bodies is None:
            bodies = torch.randint(0, self.vertices.shape[0], (n,), generator=generator, device=dev)
        verts = self.vertices[bodies]
        cams = random_crop_cameras(verts, self.config, generator)
        frames = rasterize(verts, self.faces, cams)
        cfg = self.config
        if cfg.noise == "kinect_v2":
            noisy = torch.ones(n, dtype=torch.bool, device=dev)
        elif cfg.noise == "mixed":
            noisy = torch.rand(n, generator=generator, device=dev) < cfg.noisy_share
        else:
            noisy = torch.zeros(n, dtype=torch.bool, device=dev)
        if bool(noisy.any()):
            frames = add_depth_noise_torch(frames, cams, self.noise, generator, noisy)
        face = frames.face
        seen = face >= 0
        corner = frames.bary.argmax(-1)
        full_vertex = self.faces[face.clamp(min=0), corner]
        vertex = torch.where(seen, self.full_to_template[full_vertex], torch.full_like(face, -1))
        return {"depth": frames.depth[:, None], "vertex": vertex, "body": bodies, "noisy": noisy}
