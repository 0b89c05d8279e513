"""Pinhole cameras (OpenCV convention): intrinsics, pose, projection and depth back-projection.

Conventions:
    * Camera axes: x right, y down, z forward (OpenCV). ``R``, ``t`` map world to camera:
      ``p_cam = R @ p_world + t``.
    * Pixel coordinates are continuous: pixel (column i, row j) covers ``[i, i+1) x [j, j+1)``
      and its centre is ``(i + 0.5, j + 0.5)``. So ``floor(uv)`` is the pixel index and an image of
      width W with ``cx = W / 2`` is centred. :meth:`Camera.ray_directions`,
      :meth:`Camera.backproject` and :meth:`Camera.project` all use it.
    * Depth is the camera z coordinate (not the ray length), in metres; 0 means no data.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import write_json_atomic

MAX_IMAGE_SIZE = 8192
_KEYS = ("fx", "fy", "cx", "cy", "width", "height")


def _intrinsics_problem(fx, fy, cx, cy, width, height) -> str | None:
    """Why these values are not valid intrinsics, or None."""
    for k, val in zip(_KEYS, (fx, fy, cx, cy, width, height)):
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)) or not math.isfinite(val):
            return f"{k} must be a finite number, got {val!r}"
    if fx <= 0 or fy <= 0:
        return f"focal lengths must be positive, got fx={fx:g}, fy={fy:g}"
    if fx < 1 or fy < 1:  # a pinhole camera with a focal length under a pixel sees almost 180 degrees: not a depth camera
        return f"focal lengths must be positive, in pixels (at least 1), got fx={fx:g}, fy={fy:g}"
    for k, val in (("width", width), ("height", height)):
        if val != int(val) or not 0 < val <= MAX_IMAGE_SIZE:
            return f"{k} must be a whole number of pixels in 1..{MAX_IMAGE_SIZE}, got {val:g}"
    if not (0 <= cx <= width and 0 <= cy <= height):
        return f"the principal point ({cx:g}, {cy:g}) is outside the {int(width)}x{int(height)} image"
    return None


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (see the module docstring for the pixel-centre convention).

    Attributes:
        fx, fy: focal lengths in pixels (> 0).
        cx, cy: principal point in continuous pixel coordinates, inside the image.
        width, height: image size in pixels (1..8192).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        problem = _intrinsics_problem(self.fx, self.fy, self.cx, self.cy, self.width, self.height)
        if problem:
            raise BodycorrError(f"intrinsics: {problem}. Fix the camera parameters.")
        for k in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, k, float(getattr(self, k)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def kinect_v2(cls) -> "Intrinsics":
        """Kinect v2 depth camera: 512x424, fx = fy = 365, principal point (256, 212)."""
        return cls(365.0, 365.0, 256.0, 212.0, 512, 424)

    @classmethod
    def square(cls, size: int = 512, fov_deg: float = 45.0) -> "Intrinsics":
        """Square ``size`` x ``size`` view with field of view ``fov_deg`` (both axes), centred.

        The default 45 deg frames 2.07 m at 2.5 m distance: a standing person seen from ~2.5 m.
        """
        if not 0 < fov_deg < 180:
            raise BodycorrError(f"intrinsics: field of view must be in (0, 180) degrees, got {fov_deg:g}.")
        f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
        return cls(f, f, size / 2, size / 2, size, size)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, size: int | tuple[int, int]) -> "Intrinsics":
        """The same camera for a resized image.

        Args:
            size: new width (height follows the aspect ratio, rounded) or (width, height).
        """
        w, h = (size, round(self.height * size / self.width)) if np.isscalar(size) else size
        sx, sy = w / self.width, h / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h)

    def pixel_centers(self) -> np.ndarray:
        """(H, W, 2) float64 continuous (u, v) coordinates of every pixel centre."""
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        return np.stack([u, v], axis=-1)

    def camera_rays(self) -> np.ndarray:
        """(H, W, 3) float64 camera-space rays through the pixel centres, z = 1 (read-only, cached)."""
        return _camera_rays(self)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _KEYS}

    @classmethod
    def from_matrix(cls, K: np.ndarray, width: int, height: int) -> "Intrinsics":
        """From a (3, 3) camera matrix and the image size (skew must be 0)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise BodycorrError(f"intrinsics: the camera matrix must be 3x3, got {K.shape}.")
        return cls(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)


@functools.lru_cache(maxsize=16)
def _camera_rays(k: Intrinsics) -> np.ndarray:
    uv = k.pixel_centers()
    rays = np.stack([(uv[..., 0] - k.cx) / k.fx, (uv[..., 1] - k.cy) / k.fy, np.ones(uv.shape[:2])], axis=-1)
    rays.flags.writeable = False
    return rays


def load_intrinsics(path: str | Path, size: tuple[int, int] | None = None) -> Intrinsics:
    """Read intrinsics from JSON or from a 3x3 matrix text file.

    Args:
        path: ``.json`` with keys fx, fy, cx, cy, width, height; any other extension is read as
            a whitespace-separated 3x3 matrix K (rows on lines), which needs ``size``.
        size: (width, height) in pixels, for a matrix file.
    """
    p = check_readable(path, "intrinsics")
    where = f"intrinsics {p}"
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BodycorrError(f"{where}: not valid JSON ({str(e).splitlines()[0][:80]}). Fix or rewrite the file.") from None
        if not isinstance(d, dict):
            raise BodycorrError(f"{where}: expected a JSON object with keys {', '.join(_KEYS)}.")
        missing = [k for k in _KEYS if k not in d]
        if missing:
            raise BodycorrError(f"{where}: missing key(s) {', '.join(missing)}. Write all of {', '.join(_KEYS)}.")
        vals = [d[k] for k in _KEYS]
    else:
        try:
            with warnings.catch_warnings():  # a file of only comments: "input contained no data", refused below
                warnings.simplefilter("ignore", UserWarning)
                K = np.loadtxt(p, dtype=np.float64, ndmin=2)
        except ValueError as e:
            detail = str(e).splitlines()[0][:80]
            raise BodycorrError(f"{where}: cannot read a 3x3 matrix ({detail}). Write K as 3 lines of 3 numbers.") from None
        if K.shape != (3, 3):
            raise BodycorrError(f"{where}: expected a 3x3 matrix, got shape {K.shape}. Write K as 3 lines of 3 numbers.")
        if size is None:
            raise BodycorrError(f"{where}: a matrix file has no image size. Pass size=(width, height), or use a JSON file.")
        vals = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], size[0], size[1]]
    problem = _intrinsics_problem(*vals)
    if problem:
        raise BodycorrError(f"{where}: {problem}. Fix the file.")
    return Intrinsics(*vals)


def save_intrinsics(intrinsics: Intrinsics, path: str | Path) -> Path:
    """Write intrinsics atomically as JSON ``{"fx", "fy", "cx", "cy", "width", "height"}``."""
    return write_json_atomic(path, intrinsics.to_dict())


@dataclass(frozen=True, eq=False)
class Projection:
    """Result of :meth:`Camera.project`.

    Attributes:
        uv: (..., 2) float64 continuous pixel coordinates (NaN for points with z <= 0).
        z: (...,) float64 camera-space depth in metres.
        inside: (...,) bool, z > 0 and uv inside the image.
    """

    uv: np.ndarray
    z: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True, eq=False)
class Camera:
    """A posed pinhole camera, OpenCV axes (x right, y down, z forward).

    Attributes:
        intrinsics: :class:`Intrinsics`.
        R: (3, 3) float64 world-to-camera rotation.
        t: (3,) float64 world-to-camera translation: ``p_cam = R @ p_world + t``.
    """

    intrinsics: Intrinsics
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64)
        t = np.array(self.t, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,) or not (np.isfinite(R).all() and np.isfinite(t).all()):
            raise BodycorrError(f"camera: R must be a finite 3x3 matrix and t a finite 3-vector, got {R.shape} and {t.shape}.")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise BodycorrError("camera: R is not a rotation (orthonormal, det +1). Fix the camera pose.")
        R.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @classmethod
    def look_at(
        cls,
        eye: np.ndarray,
        target: np.ndarray,
        up: np.ndarray = (0.0, 1.0, 0.0),
        intrinsics: Intrinsics | None = None,
    ) -> "Camera":
        """A camera at ``eye`` looking at ``target``, with world ``up`` pointing up in the image.

        Args:
            eye, target, up: (3,) world coordinates in metres (``up`` is a direction).
            intrinsics: defaults to :meth:`Intrinsics.square`.
        """
        eye, target, up = (np.asarray(a, dtype=np.float64).reshape(3) for a in (eye, target, up))
        forward = target - eye
        if np.linalg.norm(forward) < 1e-12:
            raise BodycorrError("camera: eye and target are the same point. Move the camera away from the target.")
        z = forward / np.linalg.norm(forward)
        x = np.cross(z, up)
        if np.linalg.norm(x) <= 1e-6 * np.linalg.norm(up):
            raise BodycorrError("camera: the view direction is parallel to 'up'. Choose another up vector.")
        x /= np.linalg.norm(x)
        y = np.cross(z, x)  # image down
        R = np.stack([x, y, z])
        return cls(intrinsics or Intrinsics.square(), R, -R @ eye)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates, metres."""
        return -self.R.T @ self.t

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """points: (..., 3) world metres -> (..., 3) camera coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        """points: (..., 3) camera coordinates -> (..., 3) world metres."""
        return (np.asarray(points, dtype=np.float64) - self.t) @ self.R

    def project(self, points_world: np.ndarray) -> Projection:
        """Project world points. points_world: (..., 3) metres -> :class:`Projection` (uv (..., 2), z (...))."""
        pc = self.world_to_camera(points_world)
        z = pc[..., 2]
        k = self.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([k.fx * pc[..., 0] / z + k.cx, k.fy * pc[..., 1] / z + k.cy], axis=-1)
        uv[z <= 0] = np.nan
        inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < k.width) & (uv[..., 1] >= 0) & (uv[..., 1] < k.height)
        return Projection(uv, z, inside)

    def ray_directions(self) -> np.ndarray:
        """(H, W, 3) float64 world-space unit ray directions through the pixel centres."""
        d = self.intrinsics.camera_rays() @ self.R
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """Lift a depth map to world points.

        Args:
            depth: (H, W) metres, camera z (not ray length); 0 or NaN = no data.

        Returns:
            (H, W, 3) float64 world points in metres, NaN where there is no data.
        """
        d = np.asarray(depth, dtype=np.float64)
        k = self.intrinsics
        if d.shape != (k.height, k.width):
            raise BodycorrError(
                f"depth map is {d.shape} but the camera expects (height, width) = ({k.height}, {k.width}). "
                "Use matching intrinsics (Intrinsics.scaled) or resize the depth map."
            )
        d = np.where(np.isfinite(d) & (d > 0), d, np.nan)
        return self.camera_to_world(self.intrinsics.camera_rays() * d[..., None])
