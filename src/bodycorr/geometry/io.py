"""Read and write meshes and point clouds: PLY (ASCII / binary), OBJ, OFF, and XYZ / TXT / NPY point arrays."""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import write_bytes_atomic
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.geometry.units import resolve_units, to_metres

MESH_SUFFIXES = (".ply", ".obj", ".off")
ARRAY_SUFFIXES = (".xyz", ".txt", ".npy")

_FLOAT_FMT = "%.17g"  # enough digits for float64 to round-trip exactly through text


@dataclass(frozen=True, eq=False)
class MeshData:
    """Everything read from a mesh file, in the file's own units (no unit conversion).

    Attributes:
        vertices: (V, 3) float64, in file order.
        faces: (F, 3) int64, 0-based (F may be 0).
        normals: (V, 3) float64 per-vertex normals (PLY nx/ny/nz, OFF "NOFF"), or None.
        colors: (V, 3) or (V, 4) uint8 per-vertex colors (PLY red/green/blue[/alpha], OFF "COFF"), or None.
        vt: (T, 2) float64 OBJ texture coordinates, or None (only with ``obj_attributes=True``).
        face_vt: (F, 3) int64 per-corner index into ``vt``, -1 where a corner has none, or None.
        vn: (N, 3) float64 OBJ normals, or None (only with ``obj_attributes=True``).
        face_vn: (F, 3) int64 per-corner index into ``vn``, -1 where a corner has none, or None.
        polygons: how many of the file's faces had more than 3 corners (fan-triangulated into
            ``faces`` when read with ``triangulate=True``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    vt: np.ndarray | None = None
    face_vt: np.ndarray | None = None
    vn: np.ndarray | None = None
    face_vn: np.ndarray | None = None
    polygons: int = 0


class _Corrupt(Exception):
    """Internal: the parser found the file malformed; the message says how (no file name)."""


@dataclass
class _Raw:
    """Internal parser output: polygon faces as a flat index list plus per-face lengths."""

    vertices: np.ndarray
    face_flat: np.ndarray
    face_len: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    vt: np.ndarray | None = None
    vt_flat: np.ndarray | None = None
    vn: np.ndarray | None = None
    vn_flat: np.ndarray | None = None


# ----------------------------------------------------------------------------------------- loading


def read_mesh_data(
    path: str | Path, triangulate: bool = False, obj_attributes: bool = False, what: str = "mesh"
) -> MeshData:
    """Parse a PLY, OBJ or OFF file without unit conversion.

    Args:
        path: a ``.ply`` (ASCII, binary little or big endian), ``.obj`` or ``.off`` file.
        triangulate: fan-triangulate polygon faces; if False, a polygon face is an error.
        obj_attributes: also return OBJ ``vt`` / ``vn`` and their per-corner indices.
        what: noun used in error messages ("mesh", "point cloud").

    Returns:
        :class:`MeshData` in file units, vertices in file order.

    Raises:
        BodycorrError: one line naming the file: missing, empty, unknown extension, corrupt or
        truncated, non-finite coordinates, face index out of range, or non-triangular faces.
    """
    p = check_readable(path, what)
    suffix = p.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise BodycorrError(f"{what} {p}: unknown format {suffix or '(no extension)'!r}. Use .ply, .obj or .off.")
    parser = {".ply": _parse_ply, ".obj": _parse_obj, ".off": _parse_off}[suffix]
    try:
        raw = parser(p.read_bytes(), obj_attributes)
    except _Corrupt as e:
        raise BodycorrError(f"{what} {p}: {e}. The file is corrupt or truncated; re-export it.") from None
    except (ValueError, IndexError, OverflowError, struct.error) as e:
        detail = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise BodycorrError(f"{what} {p}: cannot parse it ({detail}). The file is corrupt; re-export it.") from None
    return _finalize(raw, triangulate, f"{what} {p}")


def load_mesh(path: str | Path, units: str = "auto", triangulate: bool = False) -> Mesh:
    """Load a triangle mesh from PLY, OBJ or OFF, in metres.

    Args:
        path: mesh file. Vertex order is kept exactly as in the file.
        units: "auto" (see :func:`bodycorr.geometry.units.detect_units`), "m", "cm" or "mm".
        triangulate: fan-triangulate polygon faces instead of raising.

    Returns:
        :class:`Mesh` with vertices (V, 3) float64 metres, faces (F, 3) int64 (F may be 0 for a
        file without faces), ``name`` = the path.
    """
    return _mesh_from(read_mesh_data(path, triangulate=triangulate), units, Path(path))


def load_point_cloud(path: str | Path, units: str = "auto") -> PointCloud:
    """Load points from PLY/OBJ/OFF vertices (faces ignored) or an (N, 3) .xyz/.txt/.npy array.

    Args:
        path: geometry file. ``.xyz`` / ``.txt``: whitespace or comma separated rows, the first
            three columns are x y z (extra columns ignored, ``#`` comments allowed).
            ``.npy``: a float (N, 3) array.
        units: "auto", "m", "cm" or "mm".

    Returns:
        :class:`PointCloud` with points (N, 3) float64 metres, PLY/OFF normals when present and
        ``extras["colors"]`` (N, 3|4) uint8 when the file has vertex colors.
    """
    p = Path(path)
    if p.suffix.lower() in ARRAY_SUFFIXES:
        pts = _read_point_array(p)
        u = resolve_units(pts, units, f"point cloud {p}")
        return PointCloud(to_metres(pts, u), name=str(p))
    return _point_cloud_from(read_mesh_data(p, triangulate=True, what="point cloud"), units, p)


def load_geometry(path: str | Path, units: str = "auto", triangulate: bool = False) -> Mesh | PointCloud:
    """Load a file as a :class:`Mesh` if it has faces, else as a :class:`PointCloud` (metres).

    Arguments as in :func:`load_mesh`; .xyz/.txt/.npy files always give a point cloud.
    """
    p = Path(path)
    if p.suffix.lower() in ARRAY_SUFFIXES:
        return load_point_cloud(p, units)
    d = read_mesh_data(p, triangulate=triangulate, what="geometry")
    return geometry_from_data(d, units, p)


def geometry_from_data(d: MeshData, units: str, path: str | Path) -> Mesh | PointCloud:
    """What :func:`load_geometry` returns for data read by :func:`read_mesh_data`: a :class:`Mesh`
    (metres) if it has faces, else a :class:`PointCloud`."""
    p = Path(path)
    return _point_cloud_from(d, units, p) if d.faces.shape[0] == 0 else _mesh_from(d, units, p)


def _mesh_from(d: MeshData, units: str, p: Path) -> Mesh:
    u = resolve_units(d.vertices, units, f"mesh {p}")
    return Mesh(to_metres(d.vertices, u), d.faces, name=str(p))


def _point_cloud_from(d: MeshData, units: str, p: Path) -> PointCloud:
    u = resolve_units(d.vertices, units, f"point cloud {p}")
    extras = {} if d.colors is None else {"colors": d.colors}
    return PointCloud(to_metres(d.vertices, u), normals=d.normals, name=str(p), extras=extras)


def _read_point_array(p: Path) -> np.ndarray:
    check_readable(p, "point cloud")
    is_npy = p.suffix.lower() == ".npy"
    try:
        if is_npy:
            arr = _load_npy(p, "point cloud")
        else:
            text = p.read_text(encoding="utf-8", errors="replace").replace(",", " ")
            rows = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
            rows = [r[:3] for r in rows if r]
            if any(len(r) < 3 for r in rows):
                raise BodycorrError(f"point cloud {p}: a line has fewer than 3 values. Write one 'x y z' point per line.")
            arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
    except (ValueError, OSError, EOFError) as e:
        detail = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise BodycorrError(f"point cloud {p}: cannot read it ({detail}). The file is corrupt; re-export it.") from None
    if is_npy and (arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.number)):
        raise BodycorrError(f"point cloud {p}: expected a numeric (N, 3) array, got {arr.dtype} {arr.shape}. Save the points as (N, 3).")
    pts = np.asarray(arr, dtype=np.float64)
    if pts.shape[0] == 0:
        raise BodycorrError(f"point cloud {p}: the file has no points. Regenerate or re-export it.")
    _check_finite(pts, f"point cloud {p}", "points")
    return pts


def _load_npy(p: Path, what: str) -> np.ndarray:
    return read_npy(p, what, "Save it with numpy.save as a plain numeric array.")


def read_npy(path: str | Path, what: str, fix: str) -> np.ndarray:
    """``np.load`` of a plain ``.npy`` array (no pickles) that never crashes: a broken header, a
    header promising more data than the file holds (read before anything is allocated), an object
    array or a truncated file raise one line, ``"<what> <path>: ... <fix>"``."""
    p = check_readable(path, what)
    fmt = np.lib.format
    try:
        with open(p, "rb") as fh:
            version = fmt.read_magic(fh)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = header(fh)
            offset = fh.tell()
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, tokenize errors, ...
        raise BodycorrError(f"{what} {p}: not a valid .npy array file ({type(e).__name__}). {fix}") from None
    if dtype.hasobject:
        raise BodycorrError(f"{what} {p}: the .npy file holds Python objects, not numbers. {fix}")
    need = int(np.prod([int(n) for n in shape], dtype=object)) * dtype.itemsize
    have = p.stat().st_size - offset
    if need > have:
        raise BodycorrError(f"{what} {p}: the .npy header promises {need} bytes of data but the file holds {have}; it is truncated. {fix}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise BodycorrError(f"{what} {p}: not a valid .npy array file ({type(e).__name__}). {fix}") from None


def _check_finite(v: np.ndarray, where: str, noun: str) -> None:
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise BodycorrError(f"{where}: {int(bad.sum())} {noun} have NaN or infinite coordinates. Clean the file or drop them.")


def _finalize(raw: _Raw, triangulate: bool, where: str) -> MeshData:
    """Check a parsed file and turn its polygon faces into triangles."""
    v = raw.vertices
    if v.shape[0] == 0:
        raise BodycorrError(f"{where}: the file has no vertices. Re-export it with its geometry.")
    _check_finite(v, where, "vertices")
    flat, lens = raw.face_flat.astype(np.int64), raw.face_len.astype(np.int64)
    if (lens < 3).any():
        raise BodycorrError(f"{where}: {int((lens < 3).sum())} faces have fewer than 3 vertices. The file is corrupt; re-export it.")
    bad = (flat < 0) | (flat >= v.shape[0])
    if bad.any():
        k = int(np.argmax(bad))
        face = int(np.searchsorted(np.cumsum(lens), k, side="right"))
        raise BodycorrError(
            f"{where}: face {face} refers to vertex index {int(flat[k])} (counting from 0) but the file has "
            f"{v.shape[0]} vertices. The file is corrupt; re-export it."
        )
    poly = lens != 3
    if poly.any() and not triangulate:
        raise BodycorrError(
            f"{where}: the mesh is not triangular ({int(poly.sum())} of {lens.size} faces have up to {int(lens.max())} "
            "vertices). Triangulate it in your mesh tool and re-export it (from Python: read it with triangulate=True)."
        )

    def triangles(corners: np.ndarray | None) -> np.ndarray | None:
        if corners is None:
            return None
        return _fan_triangulate(corners, lens) if poly.any() else corners.reshape(-1, 3)

    faces, face_vt, face_vn = triangles(flat), triangles(raw.vt_flat), triangles(raw.vn_flat)
    for name, idx, table in (("texture coordinate", face_vt, raw.vt), ("normal", face_vn, raw.vn)):
        if idx is not None and ((idx < -1) | (idx >= len(table))).any():
            raise BodycorrError(
                f"{where}: a face refers to a missing {name} (vt/vn index out of range). The file is corrupt; re-export it."
            )
    return MeshData(v, faces, raw.normals, raw.colors, raw.vt, face_vt, raw.vn, face_vn, int(poly.sum()))


def _fan_triangulate(corners: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons, keeping face order. corners: (sum(lens),) per-corner values -> (T, 3)."""
    ntri = lens - 2
    starts = np.repeat(np.cumsum(lens) - lens, ntri)
    k = np.arange(int(ntri.sum())) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    return corners[np.stack([starts, starts + k + 1, starts + k + 2], axis=1)]


# --------------------------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}
_END_HEADER = re.compile(rb"(?:^|\n)end_header[ \t]*(?:\r?\n|$)")


@dataclass
class _Prop:
    name: str
    type: str  # numpy type code without byte order, e.g. "f4"
    count_type: str | None = None  # list properties only


def _ply_type(t: str) -> str:
    if t not in _PLY_TYPES:
        raise _Corrupt(f"unknown PLY property type {t!r}")
    return _PLY_TYPES[t]


def _parse_ply_header(data: bytes) -> tuple[str, list[tuple[str, int, list[_Prop]]], int]:
    if not re.match(rb"ply[ \t]*\r?\n", data):
        raise _Corrupt("it does not start with a 'ply' line")
    m = _END_HEADER.search(data)
    if m is None:
        raise _Corrupt("the PLY header has no 'end_header' line")
    fmt, elements = None, []
    for line in data[: m.start()].decode("latin-1").splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            count = int(parts[2])
            if count < 0:
                raise _Corrupt(f"element {parts[1]} has a negative count")
            elements.append((parts[1], count, []))
        elif parts[0] == "property" and elements and len(parts) == 5 and parts[1] == "list":
            elements[-1][2].append(_Prop(parts[4], _ply_type(parts[3]), _ply_type(parts[2])))
        elif parts[0] == "property" and elements and len(parts) == 3:
            elements[-1][2].append(_Prop(parts[2], _ply_type(parts[1])))
        else:
            raise _Corrupt(f"bad PLY header line {line.strip()[:60]!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _Corrupt(f"unknown PLY format {fmt!r}")
    return fmt, elements, m.end()


def _parse_ply(data: bytes, _obj_attributes: bool = False) -> _Raw:
    fmt, elements, offset = _parse_ply_header(data)
    wanted = {"vertex", "face"} & {e[0] for e in elements}
    found: dict[str, dict] = {}
    if fmt == "ascii":
        lines = [ln for ln in data[offset:].decode("latin-1").splitlines() if ln.strip()]
        cursor = 0
    for name, count, props in elements:
        if not wanted - found.keys():
            break  # everything needed is read; ignore trailing elements
        if fmt == "ascii":
            rows = lines[cursor : cursor + count]
            if len(rows) < count:
                raise _Corrupt(f"the header declares {count} {name} elements but only {len(rows)} lines follow")
            found[name] = _ply_ascii_element(rows, props, name)
            cursor += count
        else:
            found[name], offset = _ply_binary_element(data, offset, count, props, name, "<" if "little" in fmt else ">")
    if "vertex" not in found:
        raise _Corrupt("it has no vertex element")
    vert = found["vertex"]
    if not {"x", "y", "z"} <= vert.keys():
        raise _Corrupt("its vertex element has no x, y, z properties")
    normals = None
    with np.errstate(invalid="ignore"):  # a signalling NaN in the file (refused below, by _finalize, for x y z)
        xyz = np.stack([np.asarray(vert[c], np.float64) for c in "xyz"], axis=1)
        if {"nx", "ny", "nz"} <= vert.keys():
            normals = np.stack([vert[c].astype(np.float64) for c in ("nx", "ny", "nz")], axis=1)
    if normals is not None and not np.isfinite(normals).all():  # optional data: broken normals are dropped, not trusted
        normals = None
    colors = None
    cnames = [c for c in ("red", "green", "blue", "alpha") if c in vert]
    if cnames[:3] == ["red", "green", "blue"]:
        c = np.stack([vert[n] for n in cnames], axis=1)
        if np.issubdtype(c.dtype, np.floating):  # float colors are in [0, 1]
            c = c * 255.0
        colors = np.clip(np.rint(c), 0, 255).astype(np.uint8)
    flat, lens = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if "face" in found:
        key = next((k for k in ("vertex_indices", "vertex_index") if k in found["face"]), None)
        if key is None or not isinstance(found["face"][key], tuple):
            raise _Corrupt("its face element has no vertex_indices list")
        flat, lens = found["face"][key]
    return _Raw(xyz, flat, lens, normals, colors)


def _ply_ascii_element(rows: list[str], props: list[_Prop], name: str) -> dict:
    """Parse ``len(rows)`` ASCII rows: scalar props -> (n,) arrays, list props -> (flat, lengths)."""
    out: dict = {}
    if not any(p.count_type for p in props):
        vals = np.array(" ".join(rows).split(), dtype=np.float64) if rows else np.zeros(0)
        if vals.size != len(rows) * len(props):
            raise _Corrupt(f"a {name} line does not have {len(props)} values")
        vals = vals.reshape(len(rows), len(props))
        return {p.name: _ply_cast(vals[:, i], p.type, name) for i, p in enumerate(props)}
    tokens = [r.split() for r in rows]
    widths = {len(t) for t in tokens}
    if len(widths) == 1:  # fast path: every row has the same layout (e.g. all triangles)
        arr = np.array(tokens, dtype=np.float64).reshape(len(rows), -1)
        col = 0
        for p in props:
            if p.count_type is None:
                out[p.name] = _ply_cast(arr[:, col], p.type, name)
                col += 1
                continue
            n = _ply_cast(arr[:, col], "i8", name)
            if (n != n[0]).any():
                break  # same width but different layouts: use the slow path
            out[p.name] = (_ply_cast(arr[:, col + 1 : col + 1 + n[0]], p.type, name).ravel(), n)
            col += 1 + int(n[0])
        else:
            if col == arr.shape[1]:
                return out
    rows_vals: dict[str, list] = {p.name: [] for p in props}
    for t in tokens:
        pos = 0
        for p in props:
            if p.count_type is None:
                rows_vals[p.name].append(t[pos])
                pos += 1
            else:
                n = int(t[pos])
                if n < 0 or pos + 1 + n > len(t):
                    raise _Corrupt(f"a {name} line is shorter than its list length says")
                rows_vals[p.name].append(t[pos + 1 : pos + 1 + n])
                pos += 1 + n
        if pos != len(t):
            raise _Corrupt(f"a {name} line has extra values")
    return {p.name: _ply_collect(rows_vals[p.name], p, name) for p in props}


def _ply_cast(x: np.ndarray, t: str, name: str) -> np.ndarray:
    """Values read from text as float64 -> PLY type ``t``; an integer property holding NaN, inf or
    a value outside its type's range is corrupt (a cast would make up an index)."""
    if np.dtype(t).kind in "iu":
        info = np.iinfo(t)
        ok = np.isfinite(x) & (x >= info.min) & (x <= info.max)
        if not ok.all():
            raise _Corrupt(f"a {name} value {float(x[~ok].flat[0])!r} is not an integer of the declared type")
    return x.astype(t)


def _ply_collect(vals: list, p: _Prop, name: str = "element"):
    if p.count_type is None:
        return _ply_cast(np.array(vals, dtype=np.float64), p.type, name)
    lens = np.array([len(v) for v in vals], dtype=np.int64)
    flat = [x for v in vals for x in v]
    return _ply_cast(np.array(flat, dtype=np.float64), p.type, name), lens


def _ply_binary_element(data: bytes, offset: int, count: int, props: list[_Prop], name: str, bo: str) -> tuple[dict, int]:
    """Read ``count`` binary rows at ``offset``. Returns the parsed element and the new offset."""

    def truncated(need: int) -> _Corrupt:
        have = max(len(data) - offset, 0)
        return _Corrupt(f"the header declares {count} {name} elements (at least {need} bytes) but only {have} bytes follow")

    # Fast path: every row has the list lengths of the first row (e.g. all faces are triangles).
    fields, pos, fixed = [], offset, True
    for p in props:
        if p.count_type is None:
            fields.append((p.name, bo + p.type))
            pos += np.dtype(p.type).itemsize
            continue
        size = np.dtype(p.count_type).itemsize
        if count == 0 or pos + size > len(data):
            fixed = False
            break
        n = int(np.frombuffer(data, bo + p.count_type, 1, pos)[0])
        if n <= 0:
            fixed = False
            break
        fields += [(p.name + " count", bo + p.count_type), (p.name, bo + p.type, (n,))]
        pos += size + n * np.dtype(p.type).itemsize
    lists = [p for p in props if p.count_type]
    if fixed:
        dt = np.dtype(fields)
        need = count * dt.itemsize
        if offset + need > len(data) and not lists:
            raise truncated(need)
        if offset + need <= len(data):
            arr = np.frombuffer(data, dt, count, offset)
            if all((arr[p.name + " count"] == dt[p.name].shape[0]).all() for p in lists):
                out = {p.name: arr[p.name].astype(p.type) for p in props if p.count_type is None}
                for p in lists:
                    out[p.name] = (arr[p.name].astype(p.type).ravel(), arr[p.name + " count"].astype(np.int64))
                return out, offset + need
    # Slow path: list lengths vary from row to row (mixed polygons), or the data is short.
    vals: dict[str, list] = {p.name: [] for p in props}
    pos = offset
    for _ in range(count):
        for p in props:
            if p.count_type is None:
                fmt = bo + _STRUCT[p.type]
                if pos + struct.calcsize(fmt) > len(data):
                    raise truncated(pos - offset + struct.calcsize(fmt))
                vals[p.name].append(struct.unpack_from(fmt, data, pos)[0])
                pos += struct.calcsize(fmt)
                continue
            cfmt = bo + _STRUCT[p.count_type]
            if pos + struct.calcsize(cfmt) > len(data):
                raise truncated(pos - offset + struct.calcsize(cfmt))
            (n,) = struct.unpack_from(cfmt, data, pos)
            pos += struct.calcsize(cfmt)
            if n < 0:
                raise _Corrupt(f"a {name} has a negative list length")
            ifmt = f"{bo}{n}{_STRUCT[p.type]}"
            if pos + struct.calcsize(ifmt) > len(data):
                raise truncated(pos - offset + struct.calcsize(ifmt))
            vals[p.name].append(struct.unpack_from(ifmt, data, pos))
            pos += struct.calcsize(ifmt)
    return {p.name: _ply_collect(vals[p.name], p) for p in props}, pos


# --------------------------------------------------------------------------------------------- OBJ

# Vectorised fast path for the common files (positive-index triangles); anything else takes the
# line-by-line path, which also produces the precise error messages.
_XYZ = r"(\S+)[ \t]+(\S+)[ \t]+(\S+)"
_OBJ_V = re.compile(r"^[ \t]*v[ \t]+" + _XYZ, re.M)
_OBJ_CORNER = r"[ \t]+([1-9]\d*)(?:/\d*){0,2}"
_OBJ_F3 = re.compile(r"^[ \t]*f" + 3 * _OBJ_CORNER + r"[ \t\r]*$", re.M)
_OBJ_VF_TAG = re.compile(r"^[ \t]*(v|f)(?:[ \t]|$)", re.M)


def _parse_obj(data: bytes, obj_attributes: bool = False) -> _Raw:
    text = data.decode("utf-8", errors="replace").replace("\\\r\n", " ").replace("\\\n", " ")
    if not obj_attributes:
        v, f, tags = _OBJ_V.findall(text), _OBJ_F3.findall(text), _OBJ_VF_TAG.findall(text)
        if len(v) + len(f) == len(tags) and len(v) == tags.count("v"):
            faces = np.array(f, dtype=np.int64).reshape(-1) - 1
            return _Raw(np.array(v, dtype=np.float64).reshape(-1, 3), faces, np.full(len(f), 3, np.int64))
    v, vt, vn, faces, counts = [], [], [], [], []  # counts: (#v, #vt, #vn) seen before each face
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        if tag == "v":
            if len(parts) < 4:
                raise _Corrupt(f"a 'v' line has fewer than 3 coordinates: {line.strip()[:60]!r}")
            v.append(parts[1:4])
        elif tag == "f":
            if len(parts) < 4:
                raise _Corrupt(f"an 'f' line has fewer than 3 vertices: {line.strip()[:60]!r}")
            faces.append(parts[1:])
            counts.append((len(v), len(vt), len(vn)))
        elif obj_attributes and tag == "vt":
            vt.append((parts[1:3] + ["0"])[:2])
        elif obj_attributes and tag == "vn":
            vn.append(parts[1:4])
        # Everything else (vt/vn unless asked, o, g, s, usemtl, mtllib, l, p, ...) is ignored.
    vertices = np.array(v, dtype=np.float64).reshape(-1, 3)
    lens = np.array([len(f) for f in faces], dtype=np.int64)
    corners = [c.split("/") for f in faces for c in f]
    seen = np.repeat(np.array(counts, dtype=np.int64).reshape(-1, 3), lens, axis=0)

    def resolve(col: int, strings: list[str]) -> np.ndarray:
        """OBJ indices are 1-based; negative ones count back from the items read so far."""
        idx = np.array([int(s) if s else 0 for s in strings], dtype=np.int64)
        out = np.where(idx < 0, seen[:, col] + idx, idx - 1)
        return np.where(idx == 0, -1, out)

    vi_strings = [c[0] for c in corners]
    if any(s in ("", "0") for s in vi_strings):
        raise _Corrupt("a face has an empty or zero vertex index (OBJ indices start at 1)")
    raw = _Raw(vertices, resolve(0, vi_strings), lens)
    if obj_attributes:
        raw.vt = np.array(vt, dtype=np.float64).reshape(-1, 2)
        raw.vn = np.array(vn, dtype=np.float64).reshape(-1, 3)
        raw.vt_flat = resolve(1, [c[1] if len(c) > 1 else "" for c in corners])
        raw.vn_flat = resolve(2, [c[2] if len(c) > 2 else "" for c in corners])
    return raw


# --------------------------------------------------------------------------------------------- OFF

_OFF_V = re.compile(r"^[ \t]*" + _XYZ, re.M)
_OFF_F3 = re.compile(r"^[ \t]*3[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)(?:[ \t].*)?$", re.M)


def _parse_off(data: bytes, _obj_attributes: bool = False) -> _Raw:
    text = data.decode("latin-1")
    if "#" in text:
        text = re.sub(r"#[^\r\n]*", "", text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = lines[0].split() if lines else [""]
    if not first[0].endswith("OFF"):
        raise _Corrupt("it does not start with an 'OFF' line")
    prefix, rest = first[0][: -len("OFF")], first[1:]
    if set(prefix) - {"C", "N"} or rest[:1] == ["BINARY"]:
        raise _Corrupt(f"the OFF variant {' '.join(first)!r} is not supported (use plain ASCII OFF, COFF or NOFF)")
    body = lines[1:]
    head = rest if rest else (body.pop(0).split() if body else [])
    if len(head) < 2:
        raise _Corrupt("the OFF counts line 'vertices faces edges' is missing")
    nv, nf = int(head[0]), int(head[1])
    if nv < 0 or nf < 0:
        raise _Corrupt("the OFF counts are negative")
    if len(body) < nv + nf:
        raise _Corrupt(f"the header declares {nv} vertices and {nf} faces but only {len(body)} lines follow")
    vlines, flines = body[:nv], body[nv : nv + nf]
    normals = colors = None
    fast = _OFF_V.findall("\n".join(vlines)) if not prefix else []
    if len(fast) == nv and not prefix:
        xyz = np.array(fast, dtype=np.float64).reshape(nv, 3)
    else:
        width = 3 + 3 * ("N" in prefix)
        vrows = [ln.split() for ln in vlines]
        if any(len(r) < width for r in vrows):
            raise _Corrupt(f"a vertex line has fewer than {width} values")
        vals = np.array([r[:width] for r in vrows], dtype=np.float64).reshape(nv, width)
        xyz, normals = vals[:, :3], (vals[:, 3:6] if "N" in prefix else None)
        ncol = min((len(r) for r in vrows), default=0) - width
        if "C" in prefix and ncol >= 3:
            c = np.array([r[width : width + min(ncol, 4)] for r in vrows], dtype=np.float64)
            colors = np.clip(np.rint(c * 255.0 if c.max() <= 1.0 else c), 0, 255).astype(np.uint8)
    fast = _OFF_F3.findall("\n".join(flines))
    if len(fast) == nf:
        return _Raw(xyz, np.array(fast, dtype=np.int64).reshape(-1), np.full(nf, 3, np.int64), normals, colors)
    frows = [ln.split() for ln in flines]
    lens = np.array([int(r[0]) for r in frows], dtype=np.int64)
    if any(n < 0 or len(r) < 1 + n for r, n in zip(frows, lens.tolist())):
        raise _Corrupt("a face line has fewer indices than its count says")
    flat = np.array([x for r, n in zip(frows, lens.tolist()) for x in r[1 : 1 + n]], dtype=np.int64)
    return _Raw(xyz, flat, lens, normals, colors)


# ------------------------------------------------------------------------------------------ saving


def save_mesh(mesh: Mesh, path: str | Path, ascii: bool = False, colors: np.ndarray | None = None) -> Path:
    """Write a mesh (metres) atomically to ``.ply`` (binary little-endian unless ``ascii``), ``.obj`` or ``.off``.

    Vertex order and faces are kept. Coordinates round-trip exactly: binary PLY stores
    ``double`` x/y/z, text formats write 17 significant digits.

    Args:
        mesh: vertices (V, 3) metres, faces (F, 3).
        path: output file; its extension picks the format.
        colors: (V, 3) or (V, 4) uint8 per-vertex colours (PLY ``red green blue [alpha]``, read by
            MeshLab, Blender, trimesh and :func:`read_mesh_data`); .ply only.
    """
    p = Path(path)
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8 or colors.shape not in ((len(mesh.vertices), 3), (len(mesh.vertices), 4)):
            raise BodycorrError(f"mesh {p}: colors must be (V, 3) or (V, 4) uint8 with V = {len(mesh.vertices)}, got {colors.dtype} {colors.shape}.")
        if p.suffix.lower() != ".ply":
            raise BodycorrError(f"mesh {p}: vertex colours are written to .ply only. Use a .ply file name.")
    return write_bytes_atomic(p, _encode(p, "mesh", mesh.vertices, mesh.faces, None, colors, ascii))


def save_point_cloud(pc: PointCloud, path: str | Path, ascii: bool = False) -> Path:
    """Write a point cloud (metres) atomically.

    Formats by extension: ``.ply`` (binary unless ``ascii``; with normals and
    ``extras["colors"]`` (N, 3|4) uint8 when present), ``.obj`` / ``.off`` (points only),
    ``.xyz`` / ``.txt`` ("x y z" per line), ``.npy`` ((N, 3) float64). All round-trip exactly.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        buf = io.BytesIO()
        if suffix == ".npy":
            np.save(buf, pc.points, allow_pickle=False)
        else:
            np.savetxt(buf, pc.points, fmt=_FLOAT_FMT)
        return write_bytes_atomic(p, buf.getvalue())
    colors = pc.extras.get("colors")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8 or colors.shape not in ((pc.num_points, 3), (pc.num_points, 4)):
            raise BodycorrError(f"{pc.name}: extras['colors'] must be (N, 3) or (N, 4) uint8, got {colors.dtype} {colors.shape}.")
    faces = np.zeros((0, 3), np.int64)
    return write_bytes_atomic(p, _encode(p, "point cloud", pc.points, faces, pc.normals, colors, ascii))


def _encode(p: Path, what: str, v: np.ndarray, f: np.ndarray, normals, colors, ascii: bool) -> bytes:
    suffix = p.suffix.lower()
    if suffix == ".ply":
        return _ply_bytes(v, f, normals, colors, ascii)
    buf = io.BytesIO()
    if suffix == ".obj":
        buf.write(b"# written by bodycorr (metres)\n")
        np.savetxt(buf, v, fmt="v " + " ".join([_FLOAT_FMT] * 3))
        np.savetxt(buf, f + 1, fmt="f %d %d %d")
    elif suffix == ".off":
        buf.write(f"OFF\n{len(v)} {len(f)} 0\n".encode())
        np.savetxt(buf, v, fmt=_FLOAT_FMT)
        np.savetxt(buf, f, fmt="3 %d %d %d")
    else:
        allowed = ".ply, .obj or .off" + (", .xyz, .txt or .npy" if what == "point cloud" else "")
        raise BodycorrError(f"{what} {p}: cannot write format {suffix or '(no extension)'!r}. Use {allowed}.")
    return buf.getvalue()


def _ply_bytes(v: np.ndarray, f: np.ndarray, normals, colors, ascii: bool) -> bytes:
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if normals is not None:
        fields += [("nx", "<f8"), ("ny", "<f8"), ("nz", "<f8")]
    if colors is not None:
        fields += [(c, "u1") for c in ("red", "green", "blue", "alpha")[: colors.shape[1]]]
    header = ["ply", f"format {'ascii' if ascii else 'binary_little_endian'} 1.0", "comment written by bodycorr (metres)"]
    header.append(f"element vertex {len(v)}")
    header += [f"property {'double' if t == '<f8' else 'uchar'} {n}" for n, t in fields]
    if len(f):
        header += [f"element face {len(f)}", "property list uchar int vertex_indices"]
    header.append("end_header\n")
    buf = io.BytesIO()
    buf.write("\n".join(header).encode("ascii"))
    cols = [c for c in (v, normals, colors) if c is not None]
    if ascii:
        fmt = " ".join([_FLOAT_FMT] * (3 + 3 * (normals is not None)) + ["%d"] * (0 if colors is None else colors.shape[1]))
        np.savetxt(buf, np.concatenate([np.asarray(c, np.float64) for c in cols], axis=1), fmt=fmt)
        if len(f):
            np.savetxt(buf, f, fmt="3 %d %d %d")
        return buf.getvalue()
    rows = np.empty(len(v), dtype=fields)
    names = iter(n for n, _ in fields)
    for c in cols:
        for j in range(c.shape[1]):
            rows[next(names)] = c[:, j]
    buf.write(rows.tobytes())
    if len(f):
        frows = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        frows["n"], frows["i"] = 3, f
        buf.write(frows.tobytes())
    return buf.getvalue()
