"""Coloured PLY files of a result folder (match, demo, register, image): both sides in one correspondence colour code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, load_result_npz
from bodycorr.geometry.io import save_mesh, save_point_cloud
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.matching.visualize import position_colours

__all__ = ["PlyFile", "export_result_ply", "grid_faces", "error_colours"]

ERROR_CM_MAX = 20.0  # the error colour scale of matches_error.png (side_by_side)
RESIDUAL_CM_MAX = 3.0  # the residual colour scale of a registration's fit.png
NO_VALUE = np.array([128, 128, 128], np.uint8)  # grey: a point without truth / error
REGISTER_CODE = "position"  # the template code for registrations (instant; image folders use their model's code)


@dataclass(frozen=True)
class PlyFile:
    """One written file: path, vertex and face counts (0 faces: a coloured point cloud), what it shows."""

    path: Path
    vertices: int
    faces: int
    what: str

    def __str__(self) -> str:
        shape = f"{self.vertices} vertices, {self.faces} faces" if self.faces else f"{self.vertices} points"
        return f"{self.path} ({shape}): {self.what}"


def _rgb8(c: np.ndarray) -> np.ndarray:
    """(N, 3) floats in [0, 1] -> uint8."""
    return np.clip(np.rint(np.asarray(c, np.float64) * 255), 0, 255).astype(np.uint8)


def error_colours(values: np.ndarray, vmax: float) -> np.ndarray:
    """(N,) errors -> (N, 3) uint8 on matplotlib's magma_r from 0 to ``vmax`` (as the PNGs); NaN -> grey."""
    from matplotlib import colormaps

    v = np.asarray(values, np.float64)
    out = _rgb8(colormaps["magma_r"](np.clip(np.nan_to_num(v, nan=0.0) / vmax, 0, 1))[:, :3])
    out[~np.isfinite(v)] = NO_VALUE
    return out


def grid_faces(pixels: np.ndarray, points: np.ndarray | None = None, jump: float = 5.0) -> np.ndarray:
    """Triangles between neighbouring pixels: (N, 2) int (row, column) per point -> (F, 3) int64.

    Each 2x2 block of pixels gives up to two triangles (those whose three pixels are all points).
    With ``points`` (N, 3), a triangle whose longest edge exceeds ``jump`` x the median edge (a depth
    discontinuity: an arm in front of the body) is dropped.
    """
    px = np.asarray(pixels, np.int64)
    if len(px) == 0:
        return np.zeros((0, 3), np.int64)
    r, c = px[:, 0] - px[:, 0].min(), px[:, 1] - px[:, 1].min()
    idx = -np.ones((r.max() + 2, c.max() + 2), np.int64)
    idx[r, c] = np.arange(len(px))
    a, b, cc, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, cc, b], 1), np.stack([b, cc, d], 1), np.stack([a, cc, d], 1), np.stack([a, d, b], 1)])
    # the two splits of a block overlap when all four pixels exist: keep (a, c, b) + (b, c, d) then, the other split
    # only for a block missing b (a, c, d) or missing c (a, d, b)
    full = (a >= 0) & (b >= 0) & (cc >= 0) & (d >= 0)
    keep = np.concatenate([full | ((a >= 0) & (b >= 0) & (cc >= 0)), full | ((b >= 0) & (cc >= 0) & (d >= 0)),
                           (b < 0) & (a >= 0) & (cc >= 0) & (d >= 0), (cc < 0) & (a >= 0) & (b >= 0) & (d >= 0)])  # fmt: skip
    tris = tris[keep]
    if points is not None and len(tris):
        p = np.asarray(points, np.float64)
        edges = np.stack([np.linalg.norm(p[tris[:, i]] - p[tris[:, (i + 1) % 3]], axis=1) for i in range(3)], 1)
        tris = tris[edges.max(1) <= jump * np.median(edges)]
    return tris


def _write(path: Path, points: np.ndarray, faces: np.ndarray | None, colours: np.ndarray, what: str) -> PlyFile:
    if faces is not None and len(faces):
        save_mesh(Mesh(points, faces, name=str(path)), path, colors=colours)
        return PlyFile(path, len(points), len(faces), what)
    save_point_cloud(PointCloud(points, name=str(path), extras={"colors": colours}), path)
    return PlyFile(path, len(points), 0, what)


def _faces_of(path: Path, points: np.ndarray) -> np.ndarray | None:
    """The faces of mesh file ``path`` if its vertices are ``points`` (a demo's target.ply), else None."""
    from bodycorr.geometry.io import read_mesh_data

    if not path.is_file():
        return None
    try:
        d = read_mesh_data(path)
    except BodycorrError:
        return None
    ok = d.vertices.shape == points.shape and np.allclose(d.vertices, points, atol=1e-5)
    return d.faces if ok and len(d.faces) else None


def _export_match(folder: Path, out: Path) -> list[PlyFile]:
    z = load_result_npz(folder / "correspondences.npz", ("source_points", "target_points", "target_index"), "match")
    sp, tp, ti = z["source_points"].astype(np.float64), z["target_points"].astype(np.float64), z["target_index"].astype(np.int64)
    if ti.shape != (len(sp),) or (len(ti) and (ti.min() < 0 or ti.max() >= len(tp))):
        raise BodycorrError(f"result file {folder / 'correspondences.npz'}: target_index does not fit the points. Re-run bodycorr match.")
    tc = _rgb8(position_colours(tp))
    sc = tc[ti]
    if "source_faces" in z:
        sf = z["source_faces"]
    elif "source_pixels" in z:
        sf = grid_faces(z["source_pixels"], sp)  # a depth map: its pixel grid, cut at depth jumps
    else:
        sf = None
    tf = z["target_faces"] if "target_faces" in z else _faces_of(folder / "target.ply", tp)  # older demo folders
    files = [
        _write(out / "source_code.ply", sp, sf, sc, "the source, each point in the colour of its match on the target"),
        _write(out / "target_code.ply", tp, tf, tc, "the target, coloured by position (the code)"),
    ]
    if "error_cm" in z:
        e = z["error_cm"].astype(np.float64)
        ok = np.isfinite(e)
        stats = f"mean {e[ok].mean():.1f} cm" if ok.any() else "no truth"
        files.append(_write(out / "source_error.ply", sp, sf, error_colours(e, ERROR_CM_MAX),
                            f"the source coloured by its error against the truth, magma 0-{ERROR_CM_MAX:g} cm ({stats}; grey: no truth)"))  # fmt: skip
    return files


def _export_register(folder: Path, out: Path) -> list[PlyFile]:
    from bodycorr.body.surface_code import get_surface_code
    from bodycorr.geometry.io import load_mesh

    z = load_result_npz(folder / "scan_on_template.npz", ("points", "face", "bary"), "register")
    reg = load_mesh(folder / "registration.ply", units="m")  # bodycorr writes metres
    code = get_surface_code(REGISTER_CODE)
    if reg.num_vertices != code.num_vertices:
        raise BodycorrError(f"result file {folder / 'registration.ply'}: {reg.num_vertices} vertices, not the template's "
                            f"{code.num_vertices}. Re-run bodycorr register with this version.")  # fmt: skip
    pts = z["points"].astype(np.float64)
    faces = z.get("scan_faces")
    if faces is None and "scan_pixels" in z:
        faces = grid_faces(z["scan_pixels"], pts)
    scan_col = np.clip(np.rint(code.encode_points(z["face"].astype(np.int64), z["bary"])), 0, 255).astype(np.uint8)
    files = [
        _write(out / "registration_code.ply", reg.vertices, reg.faces, code.colours, f"the registration, template vertices in the {REGISTER_CODE!r} surface code"),
        _write(out / "scan_code.ply", pts, faces, scan_col, "the scan, each point in the code of its template point"),
    ]
    if "residual_m" in z:
        r = z["residual_m"].astype(np.float64) * 100
        files.append(_write(out / "scan_residual.ply", pts, faces, error_colours(r, RESIDUAL_CM_MAX),
                            f"the scan coloured by its distance to the registration, magma 0-{RESIDUAL_CM_MAX:g} cm (mean {r.mean():.2f} cm)"))  # fmt: skip
    return files


def _export_image(folder: Path, out: Path) -> list[PlyFile]:
    from bodycorr.body.surface_code import get_surface_code
    from bodycorr.body.template import get_template

    z = load_result_npz(folder / "correspondence.npz", ("face", "bary", "silhouette"), "image")
    method = "position"  # the shipped image model's code; folders from other models name theirs in summary.json
    if (folder / "summary.json").is_file():
        try:
            method = json.loads((folder / "summary.json").read_text()).get("code", method)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
    code = get_surface_code(method)
    t = get_template().mesh
    files = [_write(out / "template_code.ply", t.vertices, t.faces, code.colours, f"the body template in the {method!r} surface code")]
    sil = z["silhouette"].astype(bool) & (z["face"] >= 0)
    rows, cols = np.nonzero(sil)
    if not len(rows):
        return files
    # the person's pixels as a flat picture facing -y (the template's front) left of the template, as tall as it
    lo, hi = t.vertices.min(0), t.vertices.max(0)
    s = (hi[2] - lo[2]) / (rows.max() - rows.min() + 1)
    x = (cols - cols.max()) * s + lo[0] - 0.2
    zz = hi[2] - (rows - rows.min()) * s
    pts = np.stack([x, np.full(len(rows), lo[1] - 0.1), zz], 1)
    col = np.clip(np.rint(code.encode_points(z["face"][sil].astype(np.int64), z["bary"][sil])), 0, 255).astype(np.uint8)
    files.append(_write(out / "image_code.ply", pts, grid_faces(np.stack([rows, cols], 1)), col,
                        "the image's person pixels (a flat picture beside the template), each in the code of its template point"))  # fmt: skip
    return files


def export_result_ply(result: str | Path, out: str | Path) -> list[PlyFile]:
    """Write coloured PLY files of a ``bodycorr match / demo / register / image`` folder to ``out``.

    Both sides of a correspondence get the same colour, so a mesh viewer (MeshLab, Blender) shows
    the map: match and demo folders as ``matches.png`` (target coloured by position, each source point
    in its match's colour): ``source_code.ply``, ``target_code.ply`` and, with an error per point
    (demo), ``source_error.ply``; register folders in the template's surface code:
    ``registration_code.ply``, ``scan_code.ply`` and ``scan_residual.ply``; image folders in the
    model's surface code: ``template_code.ply`` and ``image_code.ply`` (the person's pixels as a flat
    picture). A demo's ``image/`` part goes to ``out/image``. Sides with faces (meshes, depth maps
    through their pixel grid) are meshes, others coloured point clouds.
    """
    folder = Path(result)
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "a file, not a folder"
        raise BodycorrError(f"result folder {folder}: {what}. Give the -o folder of bodycorr match, demo, register or image.")
    parts = []
    if (folder / "correspondences.npz").is_file():
        parts.append((_export_match, folder, Path(out)))
    if (folder / "scan_on_template.npz").is_file() and (folder / "registration.ply").is_file():
        parts.append((_export_register, folder, Path(out)))
    if (folder / "correspondence.npz").is_file():
        parts.append((_export_image, folder, Path(out)))
    if (folder / "image" / "correspondence.npz").is_file():
        parts.append((_export_image, folder / "image", Path(out) / "image"))
    if not parts:
        raise BodycorrError(f"result folder {folder}: holds no bodycorr result (correspondences.npz, scan_on_template.npz with "
                            "registration.ply, or correspondence.npz). Give the -o folder of bodycorr match, demo, register or image.")  # fmt: skip
    files: list[PlyFile] = []
    for fn, src, dst in parts:
        files += fn(src, ensure_dir(dst))
    return files
