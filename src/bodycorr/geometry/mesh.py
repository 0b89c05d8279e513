"""Triangle meshes and point clouds: typed containers checked at the boundary, in metres."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bodycorr.common.errors import BodycorrError


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: (V, 3) float64, metres.
        faces: (F, 3) int64 vertex indices.
        name: where it came from (a file path or a label), used in error messages.
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "mesh"

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise BodycorrError(f"{self.name}: vertices must have shape (V, 3), got {v.shape}.")
        if v.shape[0] == 0:
            raise BodycorrError(f"{self.name}: the mesh has no vertices. Give a non-empty mesh.")
        if f.size == 0:
            f = np.zeros((0, 3), dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise BodycorrError(
                f"{self.name}: faces must be triangles with shape (F, 3), got {f.shape}. Triangulate the mesh first."
            )
        if not np.issubdtype(f.dtype, np.integer):
            raise BodycorrError(f"{self.name}: face indices must be integers.")
        f = f.astype(np.int64, copy=False)
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise BodycorrError(
                f"{self.name}: {int(bad.sum())} vertices have NaN or infinite coordinates. Clean the file or drop them."
            )
        if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
            raise BodycorrError(
                f"{self.name}: a face refers to vertex {int(f.max())} but the mesh has {v.shape[0]} vertices. The file is corrupt."
            )
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def face_normals(self) -> np.ndarray:
        """(F, 3) unit face normals (zero for degenerate faces)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    def face_areas(self) -> np.ndarray:
        """(F,) triangle areas in m²."""
        tri = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)

    def vertex_areas(self) -> np.ndarray:
        """(V,) each vertex's share of the surface: a third of every incident triangle's area, m²
        (they sum to the mesh's area; unreferenced vertices get 0)."""
        a = np.repeat(self.face_areas() / 3.0, 3)
        return np.bincount(self.faces.reshape(-1), a, minlength=self.num_vertices)

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) area-weighted unit vertex normals."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2*area
        nv, idx = self.num_vertices, self.faces.T.reshape(-1)  # each face's normal goes to its 3 corners
        vn = np.stack([np.bincount(idx, np.tile(n[:, j], 3), minlength=nv) for j in range(3)], 1)
        norm = np.linalg.norm(vn, axis=1, keepdims=True)
        return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0)

    def _face_edges(self) -> np.ndarray:
        """(3F, 2) every face's three edges, sorted per row (shared edges appear once per face)."""
        e = np.concatenate([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]])
        e.sort(axis=1)
        return e

    def edges(self) -> np.ndarray:
        """(E, 2) unique undirected edges, sorted per row."""
        return np.unique(self._face_edges(), axis=0)

    def boundary_edges(self) -> np.ndarray:
        """(B, 2) edges used by exactly one face (the rims of holes and of an open surface)."""
        u, count = np.unique(self._face_edges(), axis=0, return_counts=True)
        return u[count == 1]

    def openness(self) -> float:
        """The longest connected boundary (one hole's or the open rim's length) over the square
        root of the area: 0 for a closed surface, a few tenths for a full scan with holes (under
        the feet, in the armpits: each short), several for one depth view's surface (its rim
        runs round the whole outline)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        area = float(self.face_areas().sum())
        if area <= 0:
            return float("inf")
        b = self.boundary_edges()
        if len(b) == 0:
            return 0.0
        length = np.linalg.norm(self.vertices[b[:, 0]] - self.vertices[b[:, 1]], axis=1)
        n = self.num_vertices
        _, label = connected_components(coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n, n)), directed=False)
        return float(np.bincount(label[b[:, 0]], weights=length).max() / np.sqrt(area))

    def mean_edge_length(self) -> float:
        e = self.edges()
        return float(np.linalg.norm(self.vertices[e[:, 0]] - self.vertices[e[:, 1]], axis=1).mean())

    def bounding_box_diagonal(self) -> float:
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))

    def surface_points(self, face_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        """Points on the surface. face_ids: (N,), barycentrics: (N, 3) -> (N, 3)."""
        tri = self.vertices[self.faces[np.asarray(face_ids)]]
        return np.einsum("nk,nkd->nd", np.asarray(barycentrics, dtype=np.float64), tri)

    def require_faces(self) -> None:
        if self.num_faces == 0:
            raise BodycorrError(f"{self.name}: the mesh has no faces. Give a triangle mesh, or load it as a point cloud.")

    def with_vertices(self, vertices: np.ndarray) -> "Mesh":
        return Mesh(vertices, self.faces, self.name)


@dataclass(frozen=True, eq=False)
class PointCloud:
    """A point cloud.

    Attributes:
        points: (N, 3) float64, metres.
        normals: optional (N, 3) unit normals.
        name: where it came from, used in error messages.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    name: str = "point cloud"
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = np.asarray(self.points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise BodycorrError(f"{self.name}: points must have shape (N, 3), got {p.shape}.")
        if p.shape[0] == 0:
            raise BodycorrError(f"{self.name}: the point cloud is empty.")
        bad = ~np.isfinite(p).all(axis=1)
        if bad.any():
            raise BodycorrError(f"{self.name}: {int(bad.sum())} points have NaN or infinite coordinates. Clean the file.")
        object.__setattr__(self, "points", p)
        if self.normals is not None:
            n = np.asarray(self.normals, dtype=np.float64)
            if n.shape != p.shape:
                raise BodycorrError(f"{self.name}: normals shape {n.shape} does not match points {p.shape}.")
            object.__setattr__(self, "normals", n)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])
