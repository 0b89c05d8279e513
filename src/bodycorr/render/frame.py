"""Rendering a triangle mesh into a typed depth frame with per-pixel triangle and barycentrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bodycorr.geometry.camera import Camera
from bodycorr.render.raycast import RayCaster


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered view.

    Attributes:
        depth: (H, W) float32 z-depth in metres (distance along the optical axis), 0 = no data.
        face: (H, W) int32 triangle seen at each pixel of the rendered mesh, -1 = background.
        bary: (H, W, 3) float32 barycentrics of the seen point in that triangle.
        normal: (H, W, 3) float32 unit surface normal in camera coordinates, facing the camera.
        camera: the camera (intrinsics + pose) that took the view.
    """

    depth: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    normal: np.ndarray
    camera: Camera

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels that see the surface."""
        return self.face >= 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.depth.shape)  # type: ignore[return-value]


def render(caster: RayCaster, camera: Camera, method: Literal["bvh", "pinhole"] = "bvh") -> Frame:
    """Ray-cast ``caster``'s mesh through every pixel centre of ``camera``.

    Args:
        method: "bvh" (:meth:`RayCaster.cast_camera`) or "pinhole" (:meth:`RayCaster.cast_pinhole`:
            the same hits bit for bit, bar exact ties in distance, without a BVH; faster).
    Returns:
        :class:`Frame` of size (camera.intrinsics.height, camera.intrinsics.width).
    """
    k = camera.intrinsics
    if method == "pinhole":
        hits = caster.cast_pinhole(camera.center, camera.R, k.fx, k.fy, k.cx, k.cy, k.width, k.height)
    elif method == "bvh":
        hits = caster.cast_camera(camera.center, camera.R, k.camera_rays().reshape(-1, 3))
    else:
        raise ValueError(f"render: method must be 'bvh' or 'pinhole', got {method!r}")
    shape = (k.height, k.width)
    return Frame(
        depth=hits.t.reshape(shape),
        face=hits.face.reshape(shape).astype(np.int32, copy=False),
        bary=hits.bary.reshape(shape + (3,)),
        normal=hits.normal.reshape(shape + (3,)),
        camera=camera,
    )

