"""Loading what users match: meshes, point clouds and depth images, checked and in metres."""

from __future__ import annotations

from dataclasses import dataclass, field
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
        info: what loading did to the file that a user should know, e.g. ``{"triangulated": 12}``
            (12 polygon faces fan-triangulated); written to the outputs' summary.
    """

    kind: Literal["mesh", "points", "depth"]
    points: np.ndarray
    name: str
    mesh: Mesh | None = None
    cloud: PointCloud | None = None
    depth: np.ndarray | None = None
    camera: Camera | None = None
    info: dict = field(default_factory=dict)


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


MIN_POINTS = 100  #: fewest points (mesh vertices, cloud points) a scan of a body may have
MIN_EXTENT_M = 0.01  #: smallest bounding-box side (metres) a scan of a body may have


def load_scan(path: str | Path, units: str = "auto", intrinsics: str | Path | None = None) -> ScanInput:
    """Load a mesh (PLY/OBJ/OFF with faces), a point cloud (PLY/OBJ/OFF without faces, XYZ/TXT/NPY
    of (N, 3)) or a depth image (16-bit PNG in mm, NPY of (H, W)).

    Polygon faces (quads, n-gons) are fan-triangulated; ``info["triangulated"]`` counts them. A
    mesh or cloud needs :data:`MIN_POINTS` points spanning at least :data:`MIN_EXTENT_M`.
    """
    from bodycorr.geometry.depth_io import load_depth
    from bodycorr.geometry.io import MESH_SUFFIXES, geometry_from_data, load_geometry, read_mesh_data, read_npy
    from bodycorr.geometry.units import extent

    p = check_readable(path, "input")
    ext = p.suffix.lower()
    if ext == ".npy":
        shape = read_npy(p, "input", "Save it with numpy.save as an (H, W) depth map or (N, 3) points.").shape
        ext = ".xyz" if len(shape) == 2 and shape[1] == 3 else ".npy"
    if ext in (".png", ".tif", ".tiff", ".exr", ".npy"):
        depth = load_depth(p, units="auto" if units == "auto" else units)
        k = load_intrinsics(intrinsics) if intrinsics else None
        if k is not None and (k.height, k.width) != depth.shape:
            raise BodycorrError(f"intrinsics {intrinsics}: {k.width}x{k.height} pixels, but depth map {p} is {depth.shape[1]}x{depth.shape[0]}. "
                                "Give the intrinsics of this camera at this resolution.")  # fmt: skip
        return depth_input(depth, k, name=str(p))
    info = {}
    if ext in MESH_SUFFIXES:
        data = read_mesh_data(p, triangulate=True, what="geometry")
        geo = geometry_from_data(data, units, p)
        if data.polygons:
            info["triangulated"] = data.polygons
    else:
        geo = load_geometry(p, units=units)
    pts = geo.vertices if isinstance(geo, Mesh) else geo.points
    noun = "vertices" if isinstance(geo, Mesh) else "points"
    if len(pts) < MIN_POINTS:
        have = f"{len(pts)} {noun}" if len(pts) != 1 else ("1 vertex" if isinstance(geo, Mesh) else "1 point")
        raise BodycorrError(f"input {p}: only {have}; a body needs at least {MIN_POINTS} {noun}. Give a scan of a whole or partial body.")
    if extent(pts) < MIN_EXTENT_M:
        raise BodycorrError(f"input {p}: its {noun} span only {extent(pts) * 1000:.3g} mm (read as {units if units != 'auto' else 'detected units'}); "
                            "a body spans 0.1-2.6 m. Check --units or the file.")  # fmt: skip
    if isinstance(geo, Mesh) and geo.num_faces > 0:
        return ScanInput(kind="mesh", points=geo.vertices, name=str(p), mesh=geo, info=info)
    cloud = geo if isinstance(geo, PointCloud) else PointCloud(geo.vertices, name=str(p))
    return ScanInput(kind="points", points=cloud.points, name=str(p), cloud=cloud, info=info)
