"""Remeshed full meshes of a suite: every body re-triangulated on its own, truth as (template face, barycentrics).

synthetic-v1's meshes share the template's vertex order, so a method that leans on vertex order
(a spectral refinement does, through identical Laplacians) scores near zero for reasons unrelated
to correspondence. Here each test body is remeshed isotropically on its own (gpytoolbox's
Botsch-Kobbelt remeshing, MIT), which changes both the connectivity and where the vertices sit;
each new vertex keeps its truth as the template triangle and barycentrics of the body point it
lies on (closest point on the posed body, 0 mm away: the remesher projects onto the input).

Frozen like the suite itself: ``data/suites/<name>-remeshed.npz`` holds each remeshed body's faces
and per-vertex (template face, barycentrics) (delta-coded, ~45 KB a body), and a machine only re-poses
Anny and evaluates those points on the posed body, so every machine gets the same meshes without
re-running the remesher (whose output may depend on the last bit of its input).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bodycorr.body.template import get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.data.suite import PARAMETERS_DIR, Suite, load_suite
from bodycorr.geometry.mesh import Mesh

REMESH_VERTICES = 6000  # target vertex count per body (the edge length is chosen from the body's area)
_BARY_SCALE = 255.0  # barycentrics stored as uint8: 1/255 of a ~2.3 cm edge is 0.1 mm


@dataclass(frozen=True, eq=False)
class RemeshedSuite:
    """A suite's bodies, each remeshed on its own.

    Attributes:
        suite: the suite whose bodies these are (poses, views, pairs).
        shapes: (R,) suite shape indices that have a remeshed body (every shape in a pair).
        faces: R arrays (F_r, 3) int64, each body's own triangles.
        truth_face: R arrays (V_r,) int64 template face under each vertex.
        truth_bary: R arrays (V_r, 3) float64 barycentrics in that face (non-negative, sum 1).
        parameters_sha256: sha256 of the frozen file.
    """

    suite: Suite
    shapes: np.ndarray
    faces: tuple[np.ndarray, ...]
    truth_face: tuple[np.ndarray, ...]
    truth_bary: tuple[np.ndarray, ...]
    parameters_sha256: str = ""

    def _slot(self, i: int) -> int:
        pos = np.flatnonzero(self.shapes == int(i))
        if not len(pos):
            raise BodycorrError(f"{self.suite.name}-remeshed: shape {i} ({self.suite.shape_name(i)}) has no remeshed body; "
                                "only shapes in the suite's pairs were remeshed.")  # fmt: skip
        return int(pos[0])

    def mesh(self, i: int) -> Mesh:
        """Suite shape ``i`` as its own remeshed body (metres, the suite's frame)."""
        k = self._slot(i)
        tri = self.suite.vertices[i].astype(np.float64)[self.suite.faces[self.truth_face[k]]]  # (V, 3, 3)
        v = np.einsum("vk,vkd->vd", self.truth_bary[k], tri)
        return Mesh(v, self.faces[k], name=f"{self.suite.name}-remeshed/{self.suite.shape_name(i)}")

    def canonical(self, i: int) -> np.ndarray:
        """(V, 3) each vertex of shape ``i``'s remeshed body as a point on the rest template (metres)."""
        k = self._slot(i)
        t = get_template().mesh
        return np.einsum("vk,vkd->vd", self.truth_bary[k], t.vertices[t.faces[self.truth_face[k]]])


def remesh_body(mesh: Mesh, vertices: int = REMESH_VERTICES, iterations: int = 10) -> tuple[Mesh, np.ndarray, np.ndarray]:
    """Isotropic remeshing of ``mesh`` to about ``vertices`` vertices (gpytoolbox, an optional
    dependency needed only to freeze a suite), and each new vertex's closest face and barycentrics
    on ``mesh``.

    Returns the remeshed :class:`Mesh`, (V,) int64 faces of ``mesh`` and (V, 3) barycentrics.
    """
    try:
        import gpytoolbox as gp
    except ImportError:  # pragma: no cover - the freeze step's optional dependency
        raise BodycorrError("remeshing needs gpytoolbox: pip install -e '.[freeze]' (only to freeze a suite anew).") from None
    area = float(mesh.face_areas().sum())
    h = float(np.sqrt(area / (np.sqrt(3) / 2 * vertices)))  # an equilateral mesh of edge h has ~area / (0.87 h²) vertices
    v, f = gp.remesh_botsch(mesh.vertices, mesh.faces.astype(np.int32), iterations, h=h)
    _, face, bary = gp.squared_distance(v, mesh.vertices, mesh.faces.astype(np.int32), use_cpp=True, use_aabb=True)
    bary = np.clip(np.asarray(bary, dtype=np.float64), 0, None)
    return Mesh(v, np.asarray(f, dtype=np.int64), name=f"{mesh.name} (remeshed)"), np.asarray(face, dtype=np.int64), bary / bary.sum(1, keepdims=True)


def _encode_faces(faces: np.ndarray) -> np.ndarray:
    """(F, 3) faces -> (F, 3) int16: each face rotated to start at its smallest index (orientation
    kept), faces sorted, then the first index as a difference from the previous face's and the
    other two as differences from the first (small numbers: about 40 % of the raw size compressed)."""
    f = np.asarray(faces, dtype=np.int64)
    r = np.argmin(f, axis=1)
    f = np.stack([f[np.arange(len(f)), (r + j) % 3] for j in range(3)], axis=1)
    f = f[np.lexsort((f[:, 2], f[:, 1], f[:, 0]))]
    return np.column_stack([np.diff(f[:, 0], prepend=0), f[:, 1] - f[:, 0], f[:, 2] - f[:, 0]]).astype(np.int16)


def _decode_faces(code: np.ndarray) -> np.ndarray:
    c = np.asarray(code, dtype=np.int64)
    first = np.cumsum(c[:, 0])
    return np.column_stack([first, first + c[:, 1], first + c[:, 2]])


def freeze_remeshed(name: str = "synthetic-v1", vertices: int = REMESH_VERTICES) -> dict[str, np.ndarray]:
    """Remesh every shape of suite ``name`` that appears in a pair: what ``<name>-remeshed.npz``
    holds (``python -m bodycorr.data.suite freeze-remeshed NAME``). Vertices are stored sorted by
    their template face (it compresses better), faces remapped to that order."""
    suite = load_suite(name)
    shapes = np.unique(np.concatenate([suite.intra.ravel(), suite.inter.ravel()]))
    out: dict[str, list] = {"nv": [], "nf": [], "faces": [], "tface": [], "tbary": []}
    for i in shapes:
        m, face, bary = remesh_body(suite.mesh(int(i)), vertices)
        order = np.lexsort((bary[:, 1], bary[:, 0], face))
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        if len(order) > np.iinfo(np.int16).max:
            raise BodycorrError(f"freeze_remeshed: {len(order)} vertices do not fit the int16 face code; ask for fewer.")
        q = np.round(bary[order, :2] * _BARY_SCALE).astype(np.uint8)
        for key, val in (("nv", len(order)), ("nf", m.num_faces), ("faces", _encode_faces(inv[m.faces])),
                         ("tface", np.diff(face[order], prepend=0).astype(np.int16)), ("tbary", q)):  # fmt: skip
            out[key].append(val)
    return {"shapes": shapes.astype(np.int64), "nv": np.array(out["nv"]), "nf": np.array(out["nf"]),
            "faces": np.concatenate(out["faces"]), "tface": np.concatenate(out["tface"]), "tbary": np.concatenate(out["tbary"]),
            "vertices_target": np.array(vertices)}  # fmt: skip


def remeshed_path(name: str) -> Path:
    return PARAMETERS_DIR / f"{name}-remeshed.npz"


@lru_cache(maxsize=2)
def load_remeshed(name: str = "synthetic-v1") -> RemeshedSuite:
    """Suite ``name``'s remeshed bodies from the shipped frozen file (one line when it is missing)."""
    path = remeshed_path(name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BodycorrError(f"suite {name!r}: no remeshed bodies at {path}; reinstall bodycorr, or remesh anew with "
                            f"`python -m bodycorr.data.suite freeze-remeshed {name}` (needs gpytoolbox; a new suite).") from None  # fmt: skip
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        nv, nf = a["nv"].astype(np.int64), a["nf"].astype(np.int64)
        ov, of = np.r_[0, np.cumsum(nv)], np.r_[0, np.cumsum(nf)]
        b2 = a["tbary"].astype(np.float64) / _BARY_SCALE
        bary = np.column_stack([b2, np.clip(1.0 - b2.sum(1), 0, None)])
        bary /= bary.sum(1, keepdims=True)
        parts = [(_decode_faces(a["faces"][of[k] : of[k + 1]]), np.cumsum(a["tface"][ov[k] : ov[k + 1]].astype(np.int64)), bary[ov[k] : ov[k + 1]])
                 for k in range(len(nv))]  # fmt: skip
    except (OSError, ValueError, KeyError) as e:
        raise BodycorrError(f"suite {name!r}: cannot read {path} ({e}); reinstall bodycorr to restore it.") from None
    return RemeshedSuite(load_suite(name), a["shapes"].astype(np.int64), tuple(p[0] for p in parts), tuple(p[1] for p in parts),
                         tuple(p[2] for p in parts), hashlib.sha256(data).hexdigest())  # fmt: skip
