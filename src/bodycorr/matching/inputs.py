"""Loading what users match: meshes, point clouds and depth images, checked and in metres."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.geometry.camera import Camera, Intrinsics, load_intrinsics
from bodycorr.geometry.mesh import Mesh, PointCloud

MESH_EXT = {".ply", ".obj", ".off"}
CLOUD_EXT = {".xyz", ".txt", ".pts"}
DEPTH_EXT = {".png", ".npy", ".exr", ".tif", ".tiff"}


@dataclass(frozen=True, eq=False)
class ScanInput:
    """A shape to match.

    Attributes:
        kind: "mesh", "points" or "depth".
        points: (N, 3) metres: mesh vertices, cloud points, or back-projected valid pixels.
        mesh: the mesh (kind "mesh").
        depth: (H, W) metres (kind "depth"); camera: its camera (identity pose).
        name: file name for messages.
    """

    kind: Literal["mesh", "points", "depth"]
    points: np.ndarray
    name: str
    mesh: Mesh | None = None
    cloud: PointCloud | None = None
    depth: np.ndarray | None = None
    camera: Camera | None = None


def remove_flying_pixels(depth: np.ndarray, max_jump: float = 0.05, min_support: int = 3) -> np.ndarray:
    """Drop depth pixels that float between surfaces (sensor "flying pixels") or stand alone.

    A valid pixel is kept if at least ``min_support`` of its 8 neighbours are valid and within
    ``max_jump`` metres of it. depth: (H, W) metres, 0 = none -> a cleaned copy.
    """
    d = np.asarray(depth, dtype=np.float32)
    valid = d > 0
    pad = np.pad(d, 1)
    support = np.zeros(d.shape, dtype=np.int32)
    h, w = d.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                support += (nb > 0) & (np.abs(nb - d) < max_jump)
    return np.where(valid & (support >= min_support), d, 0).astype(np.float32)


def depth_input(depth: np.ndarray, intrinsics: Intrinsics | None = None, name: str = "depth map", clean: bool = True) -> ScanInput:
    """Wrap a depth map (H, W) metres with intrinsics (default Kinect v2, scaled to its size).

    ``clean`` removes flying pixels and isolated returns first (:func:`remove_flying_pixels`).
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise BodycorrError(f"{name}: a depth map must be (H, W), got {d.shape}.")
    k = intrinsics or Intrinsics.kinect_v2()
    if (k.height, k.width) != d.shape:
        if intrinsics is not None:
            raise BodycorrError(f"{name}: depth is {d.shape[1]}x{d.shape[0]} but the intrinsics are {k.width}x{k.height}. Give matching intrinsics.")
        k = k.scaled((d.shape[1], d.shape[0]))
    cam = Camera(k, np.eye(3), np.zeros(3))
    if not np.isfinite(d).all():
        d = np.where(np.isfinite(d), d, 0).astype(np.float32)
    if clean:
        d = remove_flying_pixels(d)
    valid = d > 0
    if valid.sum() < 50:
        raise BodycorrError(f"{name}: only {int(valid.sum())} valid depth pixels; no person in view.")
    pts = cam.backproject(d)[valid]
    return ScanInput(kind="depth", points=pts, name=name, depth=d, camera=cam)


def load_scan(path: str | Path, units: str = "auto", intrinsics: str | Path | None = None) -> ScanInput:
    """Load a mesh (PLY/OBJ/OFF with faces), a point cloud (PLY/OBJ/OFF without faces, XYZ/TXT/NPY
    of (N, 3)) or a depth image (16-bit PNG in mm, NPY of (H, W))."""
    from bodycorr.geometry.depth_io import load_depth
    from bodycorr.geometry.io import load_geometry

    p = check_readable(path, "input")
    ext = p.suffix.lower()
    if ext == ".npy":
        arr = np.load(p, mmap_mode="r")
        if arr.ndim == 2 and arr.shape[1] == 3:
            ext = ".xyz"
        elif arr.ndim == 2:
            ext = ".png"
    if ext in (".png", ".tif", ".tiff", ".exr") or (ext == ".npy"):
        depth = load_depth(p, units="auto" if units == "auto" else units)
        k = load_intrinsics(intrinsics) if intrinsics else None
        return depth_input(depth, k, name=str(p))
    geo = load_geometry(p, units=units)
    if isinstance(geo, Mesh) and geo.num_faces > 0:
        return ScanInput(kind="mesh", points=geo.vertices, name=str(p), mesh=geo)
    cloud = geo if isinstance(geo, PointCloud) else PointCloud(geo.vertices, name=str(p))
    if cloud.num_points < 100:
        raise BodycorrError(f"input {p}: only {cloud.num_points} points; a body needs at least 100.")
    return ScanInput(kind="points", points=cloud.points, name=str(p), cloud=cloud)
