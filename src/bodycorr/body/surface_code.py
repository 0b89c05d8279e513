"""Surface colour codes (BodyMap): one RGB colour per template vertex, smooth over the surface, decodable back to a surface point.

A code maps every template vertex to a point ``values`` in the colour cube ``[0, 255]^3``; the
training target of a vertex is its quantised colour ``colours = rint(values)`` (3 x 256 classes),
a point inside a triangle has the barycentric blend of its corners' values (:meth:`SurfaceCode.encode_points`),
and :meth:`SurfaceCode.decode` inverts that: nearest vertex in colour space, then the closest
point of the triangles around it.

Codes (``get_surface_code(method)``), every axis scaled to fill 0..255:

``position``
    Rest-pose template xyz. Smooth, but wherever the rest pose brings geodesically far surfaces
    close (toes side by side, lips, eyelids and the eye sockets, the mouth, finger webs) they get
    close colours.
``geodesic`` (default)
    The rest-pose template relaxed by stress majorisation (SMACOF) towards the all-pairs geodesic
    distances: every vertex keeps its 12 geodesic nearest neighbours at their geodesic distance
    (weights ``d^-2``), and every "shortcut" pair, closer than 4 cm in the current embedding but
    more than ``1.5 x that + 1 cm`` apart on the surface, is pushed to ``min(geodesic, 5 cm)``;
    3 rounds of 15 iterations, shortcut pairs found again each round. The shape stays that of the
    rest pose (bounding box within 3 %), only touching or nearly touching surfaces come apart.
``mds``
    Classical (pivot) MDS of the geodesics into 3-D, 1000 farthest-point pivots. Measured and
    rejected: the three largest modes (height, arm span, leg split) cannot separate the front of
    the body from its back, so front and back share colours.

Measured on the template with :func:`code_quality` (shares of vertices; "own colour": the vertex's
quantised colour decodes to a vertex more than 1 / 5 cm away on the surface; "±k": every channel of
every vertex colour moved by a uniform value in ``[-k, k]`` levels, decoded to the nearest vertex:
mean geodesic error and share of errors over 10 cm)::

    code      own >1cm  own >5cm  ±1 mean   ±3 mean  ±3 >10cm  ±8 mean  ±8 >10cm
    position   0.76 %    0.06 %   0.26 cm   1.19 cm   0.40 %   3.33 cm   3.17 %
    geodesic   0.79 %    0.00 %   0.25 cm   0.99 cm   0.00 %   3.07 cm   2.28 %
    mds       48.8 %    24.6 %    4.71 cm   6.76 cm  22.0 %    8.99 cm  34.7 %

"geodesic" is the default: as fine as "position" locally, and no far-apart surfaces share or nearly
share a colour. Reproduce: ``code_quality(get_surface_code(m), all_pairs_geodesics(get_template().mesh))``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg, eigsh
from scipy.spatial import cKDTree

from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.closest import SurfaceLocator
from bodycorr.geometry.mesh import Mesh

__all__ = [
    "CodeMethod",
    "CODE_METHODS",
    "DEFAULT_CODE",
    "SurfacePoints",
    "SurfaceCode",
    "CodeQuality",
    "code_values",
    "make_surface_code",
    "get_surface_code",
    "code_quality",
]

CodeMethod = Literal["position", "geodesic", "mds"]
CODE_METHODS: tuple[str, ...] = get_args(CodeMethod)
DEFAULT_CODE: CodeMethod = "geodesic"
CODE_VERSION = {"position": 1, "geodesic": 1, "mds": 2}  # bump a method's entry when its algorithm changes

# geodesic relaxation (metres; tuned on the template, see the module docstring)
_NEIGHBOURS = 12
_SHORTCUT_RADIUS = 0.04
_SHORTCUT_RATIO = 1.5
_SHORTCUT_SLACK = 0.01
_SHORTCUT_CAP = 0.05
_ROUNDS = 3
_ITERS = 15
_CG_ITERS = 10
_MDS_PIVOTS = 1000


@dataclass(frozen=True, eq=False)
class SurfacePoints:
    """Decoded surface points, one per query colour.

    Attributes:
        vertex: (N,) int64 template vertex nearest in colour space.
        face: (N,) int64 template face holding the decoded point.
        bary: (N, 3) float32 barycentrics of the point in ``face`` (non-negative, sum 1).
        uv: (N, 2) float32 template UV of the point (from the per-corner ``face_uv``).
        distance: (N,) float32 colour-space distance (levels) from the query to the decoded point.
    """

    vertex: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    uv: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.vertex.shape[0])


@dataclass(frozen=True, eq=False)
class SurfaceCode:
    """A colour per template vertex, and the encoding/decoding of surface points.

    Attributes:
        method: how the code was made (one of :data:`CODE_METHODS`, or a label for a custom code).
        colours: (Vt, 3) uint8 quantised colour of each vertex, ``rint(values)``: the training targets.
        values: (Vt, 3) float32 unquantised code in ``[0, 255]``; points and decoding use it, so a
            triangle stays a proper triangle in colour space even where quantisation merges corners.
        faces: (Ft, 3) int64 template faces.
        face_uv: (Ft, 3, 2) float32 UV per face corner.
    """

    method: str
    colours: np.ndarray
    values: np.ndarray
    faces: np.ndarray
    face_uv: np.ndarray

    def __post_init__(self) -> None:
        vals = np.asarray(self.values, dtype=np.float32)
        faces = np.asarray(self.faces)
        face_uv = np.asarray(self.face_uv, dtype=np.float32)
        if vals.ndim != 2 or vals.shape[1] != 3 or len(vals) == 0 or not np.isfinite(vals).all():
            raise BodycorrError(f"surface code {self.method!r}: values must be finite (Vt, 3), got {vals.shape}.")
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer) or len(faces) == 0:
            raise BodycorrError(f"surface code {self.method!r}: faces must be (Ft, 3) integers, got {faces.shape}.")
        if faces.min() < 0 or faces.max() >= len(vals):
            raise BodycorrError(f"surface code {self.method!r}: a face refers to a vertex outside [0, {len(vals)}).")
        if face_uv.shape != (len(faces), 3, 2):
            raise BodycorrError(
                f"surface code {self.method!r}: face_uv must be (Ft, 3, 2) = {(len(faces), 3, 2)}, got {face_uv.shape}."
            )
        colours = np.asarray(self.colours)
        if colours.shape != vals.shape or colours.dtype != np.uint8:
            raise BodycorrError(f"surface code {self.method!r}: colours must be (Vt, 3) uint8 like values.")
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "faces", faces.astype(np.int64, copy=False))
        object.__setattr__(self, "face_uv", face_uv)

    @classmethod
    def from_values(cls, method: str, values: np.ndarray, faces: np.ndarray, face_uv: np.ndarray) -> "SurfaceCode":
        """A code from unquantised values (Vt, 3) in [0, 255]; colours are ``rint(values)``."""
        v = np.asarray(values, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != 3 or v.size == 0 or not np.isfinite(v).all():
            raise BodycorrError(f"surface code {method!r}: values must be finite (Vt, 3), got {v.shape}.")
        if v.min() < -1e-3 or v.max() > 255 + 1e-3:
            raise BodycorrError(f"surface code {method!r}: values must lie in [0, 255]. Normalise them first.")
        v = np.clip(v, 0, 255)
        return cls(method, np.rint(v).astype(np.uint8), v, faces, face_uv)

    @property
    def num_vertices(self) -> int:
        return int(self.values.shape[0])

    # ------------------------------------------------------------------------------ encoding

    def encode_vertices(self, vertex: np.ndarray) -> np.ndarray:
        """vertex: (N,) int template vertex ids -> (N, 3) uint8 colours."""
        v = self._check_ids(vertex, self.num_vertices, "vertex")
        return self.colours[v]

    def encode_points(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """face: (N,) int template faces, bary: (N, 3) barycentrics -> (N, 3) float32 colours in [0, 255]."""
        f = self._check_ids(face, len(self.faces), "face")
        b = np.asarray(bary, dtype=np.float32)
        if b.shape != (len(f), 3) or not np.isfinite(b).all():
            raise BodycorrError(f"encode_points: bary must be finite ({len(f)}, 3), got {b.shape}. Give one row per face id.")
        return np.einsum("nk,nkc->nc", b, self.values[self.faces[f]]).astype(np.float32)

    # ------------------------------------------------------------------------------ decoding

    @functools.cached_property
    def _locator(self) -> SurfaceLocator:
        return SurfaceLocator(self.values, self.faces)

    def decode(self, colours: np.ndarray, chunk: int = 16384) -> SurfacePoints:
        """Colours (N, 3) float (or uint8) -> the surface points they encode.

        The closest point of the coded surface in colour space
        (:class:`~bodycorr.geometry.closest.SurfaceLocator`: the nearest vertex is ``vertex``). A colour on the
        coded surface (``encode_points``) decodes back to its point up to ~0.3 levels where two
        triangles nearly touch in colour space; any colour decodes to the nearest coded point.
        Memory is bounded by working in chunks of ``chunk`` colours.
        """
        c = np.asarray(colours)
        if c.ndim != 2 or c.shape[1] != 3 or not (np.issubdtype(c.dtype, np.number)):
            raise BodycorrError(f"decode: colours must be an (N, 3) array of numbers, got shape {c.shape}.")
        c = c.astype(np.float64)
        if not np.isfinite(c).all():
            raise BodycorrError("decode: colours contain NaN or infinite values. Mask those pixels out first.")
        got = self._locator.query(c, chunk)
        b = got.bary.astype(np.float32)
        uv = np.einsum("nk,nkc->nc", b, self.face_uv[np.maximum(got.face, 0)]).astype(np.float32)
        return SurfacePoints(vertex=got.vertex, face=got.face, bary=b, uv=uv, distance=got.distance.astype(np.float32))

    @staticmethod
    def _check_ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise BodycorrError(f"surface code: {what} ids must be a 1-D integer array, got {a.dtype} {a.shape}.")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise BodycorrError(f"surface code: a {what} id is outside [0, {n}). Use template {what} ids.")
        return a


# ---------------------------------------------------------------------------------------- building


def _fill_cube(x: np.ndarray) -> np.ndarray:
    """Scale every axis of (V, 3) to [0, 255]."""
    lo, hi = x.min(0), x.max(0)
    return (x - lo) / np.maximum(hi - lo, 1e-12) * 255.0


def _geodesic_neighbours(geodesics: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    n = len(geodesics)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(0, n, block):
        rows = np.asarray(geodesics[i : i + block], dtype=np.float32).copy()
        rows[np.arange(len(rows)), np.arange(i, i + len(rows))] = -1.0  # self first, dropped below
        out[i : i + block] = np.argpartition(rows, k, axis=1)[:, 1 : k + 1] if k < n - 1 else np.argsort(rows, 1)[:, 1:]
    return out


def _relax(vertices: np.ndarray, geodesics: np.ndarray) -> np.ndarray:
    """Rest pose relaxed by sparse stress majorisation towards the geodesics (see the module docstring)."""
    n = len(vertices)
    x = np.asarray(vertices, dtype=np.float64).copy()
    if n < 3:
        return x
    nbr = _geodesic_neighbours(geodesics, _NEIGHBOURS)
    for _ in range(_ROUNDS):
        pairs = cKDTree(x).query_pairs(_SHORTCUT_RADIUS, output_type="ndarray").reshape(-1, 2)
        g = np.asarray(geodesics[pairs[:, 0], pairs[:, 1]], dtype=np.float64)
        e = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
        pairs = pairs[g > _SHORTCUT_RATIO * e + _SHORTCUT_SLACK]
        i = np.concatenate([np.repeat(np.arange(n), nbr.shape[1]), pairs[:, 0]])
        j = np.concatenate([nbr.ravel(), pairs[:, 1]])
        key = np.unique(np.minimum(i, j) * n + np.maximum(i, j))
        i, j = np.concatenate([key // n, key % n]), np.concatenate([key % n, key // n])  # both directions
        d = np.minimum(np.asarray(geodesics[i, j], dtype=np.float64), _SHORTCUT_CAP if len(pairs) else np.inf)
        near = np.isin(key, np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1]))
        # only shortcut pairs are capped; neighbour pairs keep their geodesic length
        d = np.where(np.concatenate([near, near]), d, np.asarray(geodesics[i, j], dtype=np.float64))
        w = np.maximum(d, 1e-4) ** -2.0
        w /= w.mean()
        lw = (sp.diags(np.bincount(i, weights=w, minlength=n)) - sp.coo_matrix((w, (i, j)), shape=(n, n))).tocsr()
        for _ in range(_ITERS):  # Guttman transform: L_w x' = L_Z(x) x, solved by warm-started CG
            diff = x[i] - x[j]
            coef = w * d / np.maximum(np.linalg.norm(diff, axis=1), 1e-12)
            rhs = np.stack([np.bincount(i, weights=coef * diff[:, c], minlength=n) for c in range(3)], 1)
            x = np.stack([cg(lw, rhs[:, c], x0=x[:, c], maxiter=_CG_ITERS, rtol=1e-10)[0] for c in range(3)], 1)
    return x


def _pivot_mds(geodesics: np.ndarray) -> np.ndarray:
    from bodycorr.geometry.sampling import farthest_point_sampling

    n = len(geodesics)
    piv = np.arange(n) if n <= _MDS_PIVOTS else farthest_point_sampling(geodesics, _MDS_PIVOTS, seed=0)
    c = np.asarray(geodesics[:, piv], dtype=np.float64) ** 2
    c = -0.5 * (c - c.mean(0) - c.mean(1, keepdims=True) + c.mean())
    k = c.shape[1]
    gram = c.T @ c
    if k > 8:  # top right singular vectors by Lanczos (fixed start vector: deterministic)
        vals, vecs = eigsh(gram, k=3, v0=np.linspace(1.0, 2.0, k))
    else:
        vals, vecs = np.linalg.eigh(gram)
    vecs = vecs[:, np.argsort(vals)[::-1][:3]]
    x = c @ vecs  # = U S, largest mode first
    if x.shape[1] < 3:
        x = np.pad(x, ((0, 0), (0, 3 - x.shape[1])))
    # deterministic signs: each axis correlates positively with the vertex index order
    return x * np.where((x * (np.arange(n) - n / 2)[:, None]).sum(0) < 0, -1.0, 1.0)


def code_values(method: CodeMethod, mesh: Mesh, geodesics: np.ndarray | None = None) -> np.ndarray:
    """Unquantised code of every vertex of ``mesh``: (V, 3) float64 in [0, 255], every axis filling it.

    ``geodesics``: (V, V) vertex geodesics in metres (``all_pairs_geodesics(mesh)`` when None);
    used by "geodesic" and "mds", ignored by "position".
    """
    if method not in CODE_METHODS:
        raise BodycorrError(f"surface code {method!r}: unknown method. Use one of {', '.join(CODE_METHODS)}.")
    if method == "position":
        return _fill_cube(mesh.vertices)
    if geodesics is None:
        from bodycorr.geometry.geodesic import all_pairs_geodesics

        geodesics = all_pairs_geodesics(mesh, progress=False)
    if geodesics.shape != (mesh.num_vertices, mesh.num_vertices):
        raise BodycorrError(
            f"surface code {method!r}: geodesics must be (V, V) = {(mesh.num_vertices,) * 2}, got {geodesics.shape}."
        )
    if method == "mds":
        if not np.isfinite(geodesics).all():
            raise BodycorrError("surface code 'mds': the mesh has several components (infinite geodesics). Use 'geodesic'.")
        return _fill_cube(_pivot_mds(geodesics))
    return _fill_cube(_relax(mesh.vertices, geodesics))


def make_surface_code(method: CodeMethod, mesh: Mesh, face_uv: np.ndarray, geodesics: np.ndarray | None = None) -> SurfaceCode:
    """The code ``method`` for any mesh (uncached). face_uv: (F, 3, 2) UV per face corner."""
    return SurfaceCode.from_values(method, code_values(method, mesh, geodesics), mesh.faces, face_uv)


def get_surface_code(method: CodeMethod = DEFAULT_CODE) -> SurfaceCode:
    """The template's code ``method`` (memory + disk cache keyed by the template and the algorithm).

    Cold: "position" is instant; "geodesic" takes ~1 min on 2 busy cores (plus the all-pairs
    geodesics if they are not cached yet), "mds" ~5 s. Warm: one small file read, then shared.
    """
    if method not in CODE_METHODS:
        raise BodycorrError(f"surface code {method!r}: unknown method. Use one of {', '.join(CODE_METHODS)}.")
    return _template_code(method)


@functools.lru_cache(maxsize=None)
def _template_code(method: CodeMethod) -> SurfaceCode:
    from bodycorr.body.template import get_template

    t = get_template()
    consts = (_NEIGHBOURS, _SHORTCUT_RADIUS, _SHORTCUT_RATIO, _SHORTCUT_SLACK, _SHORTCUT_CAP, _ROUNDS, _ITERS,
              _CG_ITERS, _MDS_PIVOTS)  # fmt: skip
    key = content_hash("surface_code", CODE_VERSION[method], method, consts, t.mesh.vertices, t.mesh.faces)
    a = cached_arrays("surface_code", key, lambda: {"values": code_values(method, t.mesh).astype(np.float32)})
    return SurfaceCode.from_values(method, a["values"], t.mesh.faces, t.face_uv)


# ---------------------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class CodeQuality:
    """How well a code separates the surface (geodesic errors in cm; shares in %).

    unique_1cm, unique_5cm: % of vertices whose own quantised colour decodes (nearest vertex) to a
        vertex more than 1 / 5 cm away on the surface.
    noise: per noise level k: (mean error cm, 99th percentile cm, % of errors > 10 cm) after moving
        every channel by a uniform value in [-k, k] levels.
    """

    method: str
    unique_1cm: float
    unique_5cm: float
    noise: dict[int, tuple[float, float, float]]

    def __str__(self) -> str:
        s = f"{self.method}: >1cm {self.unique_1cm:.2f}%, >5cm {self.unique_5cm:.2f}%"
        for k, (m, p99, far) in self.noise.items():
            s += f"; ±{k}: mean {m:.2f} cm, p99 {p99:.1f} cm, >10cm {far:.2f}%"
        return s


def code_quality(code: SurfaceCode, geodesics: np.ndarray, levels: tuple[int, ...] = (1, 3, 8), seed: int = 0) -> CodeQuality:
    """Measure ``code`` against vertex geodesics (V, V) in metres (see :class:`CodeQuality`)."""
    n = code.num_vertices
    if geodesics.shape != (n, n):
        raise BodycorrError(f"code_quality: geodesics must be ({n}, {n}), got {geodesics.shape}.")
    rows = np.arange(n)
    q = code.colours.astype(np.float64)
    _, u = code._locator._tree.query(q)
    g = np.asarray(geodesics[rows, u], dtype=np.float64)
    rng = np.random.default_rng(seed)
    noise = {}
    for k in levels:
        _, u = code._locator._tree.query(q + rng.uniform(-k, k, q.shape))
        e = np.asarray(geodesics[rows, u], dtype=np.float64) * 100
        noise[int(k)] = (float(e.mean()), float(np.percentile(e, 99)), float((e > 10).mean() * 100))
    return CodeQuality(code.method, float((g > 0.01).mean() * 100), float((g > 0.05).mean() * 100), noise)
