"""Camera rigs: many views around a body (Wei et al. render 144) and random sensor placements."""

from __future__ import annotations

import numpy as np

from bodycorr.geometry.camera import Camera, Intrinsics


def _spherical(yaw: float, elevation: float) -> np.ndarray:
    """Unit vector from the target to the camera; Z up, yaw 0 = in front of a body facing −Y."""
    ce = np.cos(elevation)
    return np.array([np.sin(yaw) * ce, -np.cos(yaw) * ce, np.sin(elevation)])


def orbit_rig(
    intrinsics: Intrinsics,
    target: np.ndarray,
    distance: float,
    num_views: int = 144,
    elevations_deg: tuple[float, ...] = (-20.0, 0.0, 20.0, 40.0),
    up: np.ndarray = np.array([0.0, 0.0, 1.0]),
) -> list[Camera]:
    """Cameras on rings around ``target`` (3,), all looking at it.

    ``num_views`` are spread over the elevation rings (equal counts; yaw offset per ring so views
    interleave). ``up`` (3,) is the world up axis: the rig is built around it, so an input lying
    in any orientation is seen the same way once its up axis is known.
    """
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    rot = frame_from_up(up)
    rings = len(elevations_deg)
    per = max(1, num_views // rings)
    cams: list[Camera] = []
    for r, el in enumerate(elevations_deg):
        for k in range(per):
            if len(cams) == num_views:
                break
            yaw = 2 * np.pi * (k + 0.5 * (r % 2)) / per
            eye = np.asarray(target) + distance * (rot @ _spherical(yaw, np.radians(el)))
            cams.append(Camera.look_at(eye, target, up, intrinsics))
    while len(cams) < num_views:  # remainder on the equator
        yaw = 2 * np.pi * len(cams) / num_views
        cams.append(Camera.look_at(np.asarray(target) + distance * (rot @ _spherical(yaw, 0.0)), target, up, intrinsics))
    return cams


def frame_from_up(up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking world Z to ``up`` (minimal rotation)."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, up)
    c = float(z @ up)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def random_camera(
    rng: np.random.Generator,
    intrinsics: Intrinsics,
    target: np.ndarray,
    distance_range: tuple[float, float] = (1.5, 4.0),
    elevation_deg: tuple[float, float] = (-10.0, 30.0),
    target_jitter: float = 0.1,
    roll_deg: float = 5.0,
) -> Camera:
    """A sensor placed at random: any yaw, elevation in range, 1.5 to 4 m away, slight roll."""
    yaw = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(*elevation_deg))
    dist = rng.uniform(*distance_range)
    tgt = np.asarray(target, dtype=np.float64) + rng.normal(scale=target_jitter, size=3) * np.array([1, 1, 0.5])
    eye = tgt + dist * _spherical(yaw, el)
    roll = np.radians(rng.uniform(-roll_deg, roll_deg))
    up = np.array([np.sin(roll) * np.cos(yaw), np.sin(roll) * np.sin(yaw), np.cos(roll)])
    return Camera.look_at(eye, tgt, up, intrinsics)


def fit_distance(intrinsics: Intrinsics, radius: float, margin: float = 1.1) -> float:
    """Distance at which a sphere of ``radius`` metres fills the narrower image side."""
    half = 0.5 * min(intrinsics.width / intrinsics.fx, intrinsics.height / intrinsics.fy)
    return float(margin * radius / np.sin(np.arctan(half)))
