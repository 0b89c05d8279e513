"""``bodycorr view``: an interactive 3-D viewer in the browser (viser) for bodycorr's output folders.

Reads the folders as the writers leave them (:func:`find_outputs` tells the kinds apart):

``match`` (``bodycorr match`` / ``demo``)
    ``summary.json`` + ``correspondences.npz``: the source (left) coloured by the colour of its
    match, the target (right) by position (as ``matches.png``); the source can be coloured by
    confidence, by mutuality or, where the demo wrote ``error_cm``, by its error against the truth
    (with a colour bar); ``*_template.ply`` (the fitted templates) toggled on/off.
``register``
    ``summary.json`` + ``registration.ply`` + ``scan_on_template.npz``: the scan (left) coloured by
    its template point, the registration (right; also over the scan on demand), the distance to the
    registration as a heatmap.
``track``
    ``track.json`` + ``frame_%04d.ply``: the tracked template as an animation (frame slider, play).
``image``
    ``summary.json`` + ``correspondence.npz``: the input photo (or ``overlay.png``, the colour code,
    the confidence) beside the template coloured in the image model's surface code.

A folder with output sub-folders (the demo's ``image/``) shows each, one at a time (a drop-down).
Clicking a point highlights its match and shows its confidence. Everything is drawn in "view"
coordinates: metres, z up, the viewer at -y looking along +y, feet at z = 0.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import RUN_MARKER, load_result_npz
from bodycorr.matching.visualize import position_colours

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
ERROR_MAX_CM = 20.0  # the error heatmap's top, as matches_error.png
GAP = 0.35  # metres between the left and the right shape
MARKER = (230, 0, 230)  # selection markers: magenta, outside the colour code's use
NOT_OUTPUT = "{folder}: not a bodycorr output (no summary.json / track.json); run bodycorr match/register/track/image first"


# ------------------------------------------------------------------------------------------------
# Geometry helpers (pure numpy)
# ------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def frame_from_up(points: np.ndarray, up: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """(3, 3) rotation whose rows are (right, forward, up) in the data's axes: ``points @ R.T`` are
    view coordinates. ``forward`` (the viewing direction; e.g. camera to body) is made horizontal;
    without it the widest horizontal axis (a body's shoulders) is "right". points: (N, 3)."""
    up = _unit(np.asarray(up, float))
    c = points - points.mean(0)
    if forward is not None:
        f = np.asarray(forward, float)
        f = f - (f @ up) * up
        if np.linalg.norm(f) > 1e-9:
            f = _unit(f)
            return np.stack([np.cross(f, up), f, up])
    flat = c - np.outer(c @ up, up)
    _, _, vt = np.linalg.svd(flat[:: max(1, len(flat) // 5000)], full_matrices=False)
    right = vt[0] - (vt[0] @ up) * up
    if np.linalg.norm(right) < 1e-9:  # degenerate (a line along up)
        right = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 1.0, 0])
    right = _unit(right)
    return np.stack([right, np.cross(up, right), up])


def frame_from_template(vertices: np.ndarray, rest: np.ndarray, torso: np.ndarray | None = None) -> np.ndarray:
    """(3, 3) rotation taking a mesh in the template's topology to the template's rest axes
    (Kabsch on the ``torso`` vertex ids, all vertices without them, so that limbs do not
    count): the template stands along +z facing -y, which are the view axes. vertices, rest: (V, 3)."""
    idx = np.arange(len(rest)) if torso is None else np.asarray(torso)
    a = rest[idx] - rest[idx].mean(0)
    b = vertices[idx] - vertices[idx].mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)  # b ~ a @ Rm.T with Rm = (u @ vt).T
    d = np.sign(np.linalg.det(u @ vt))
    rm = (u @ np.diag([1.0, 1.0, d]) @ vt).T  # data = Rm @ rest
    return rm.T  # view = Rm.T @ data


def principal_up(points: np.ndarray) -> np.ndarray:
    """(3,) the longest principal axis of (N, 3) points (a standing body's height), sign: +z-ish."""
    c = points - points.mean(0)
    _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 5000)], full_matrices=False)
    up = vt[0]
    return up if up[int(np.argmax(np.abs(up)))] > 0 else -up


def yaw_towards(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """(3, 3) rotation about z that best turns the (K, 3) points ``b`` onto ``a`` (both centred; weights (K,))."""
    w = np.ones(len(a)) if w is None else np.asarray(w, float)
    s = np.sum(w * (b[:, 0] * a[:, 1] - b[:, 1] * a[:, 0]))
    c = np.sum(w * (b[:, 0] * a[:, 0] + b[:, 1] * a[:, 1]))
    t = np.arctan2(s, c)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def grid_faces(pixels: np.ndarray, points: np.ndarray, max_edge: float | None = None) -> np.ndarray:
    """Triangles between neighbouring depth pixels: (N, 2) row, column and (N, 3) points -> (F, 3),
    leaving out triangles with an edge longer than ``max_edge`` metres (default: 4 pixel spacings)."""
    if len(pixels) < 3:
        return np.zeros((0, 3), np.int64)
    r, c = pixels[:, 0].astype(np.int64), pixels[:, 1].astype(np.int64)
    r0, c0 = r.min(), c.min()
    idx = -np.ones((r.max() - r0 + 2, c.max() - c0 + 2), np.int64)
    idx[r - r0, c - c0] = np.arange(len(pixels))
    a, b, cc, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, cc], 1)])
    f = f[(f >= 0).all(1)]
    if not len(f):
        return f
    p = points[f]
    edge = np.maximum.reduce([np.linalg.norm(p[:, i] - p[:, (i + 1) % 3], axis=1) for i in range(3)])
    if max_edge is None:
        max_edge = 4 * float(np.median(edge)) + 1e-6
    return f[edge <= max_edge]


def point_spacing(points: np.ndarray) -> float:
    """Median distance from a point of (N, 3) to its nearest neighbour (on up to 4000 points)."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return 0.01
    sub = points[:: max(1, len(points) // 4000)]
    d = cKDTree(points).query(sub, k=2, workers=1)[0][:, 1]
    return float(np.median(d)) if len(d) else 0.01


def pick_on_ray(points: np.ndarray, origin: np.ndarray, direction: np.ndarray, tol: float) -> tuple[int, float] | None:
    """The point of (N, 3) a click ray hits: among those within ``tol`` metres of the ray and in
    front of it, the nearest to the eye (else the one nearest the ray, if within 3 x tol).
    Returns (index, distance along the ray) or None."""
    if not len(points):
        return None
    d = _unit(np.asarray(direction, float))
    rel = points - np.asarray(origin, float)
    t = rel @ d
    perp = np.linalg.norm(rel - np.outer(t, d), axis=1)
    ok = (t > 0) & (perp <= tol)
    if ok.any():
        i = int(np.flatnonzero(ok)[np.argmin(t[ok])])
        return i, float(t[i])
    perp = np.where(t > 0, perp, np.inf)
    i = int(np.argmin(perp))
    return (i, float(t[i])) if perp[i] <= 3 * tol else None


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (sRGB, as the PNGs) -> linear (glTF vertex colours are linear)."""
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of a (V, 3) / (F, 3) mesh."""
    v = vertices.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-20, n / np.maximum(length, 1e-20), [0.0, 0.0, 1.0])


def mesh_glb(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray) -> bytes:
    """A binary glTF of one double-sided mesh with per-vertex colours: (V, 3), (F, 3), (V, 3) sRGB in [0, 1]."""
    v = np.ascontiguousarray(vertices, np.float32)
    f = np.ascontiguousarray(faces, np.uint32)
    n = np.ascontiguousarray(vertex_normals(v, f.astype(np.int64)), np.float32)
    col = np.ascontiguousarray(srgb_to_linear(np.asarray(colours, float)), np.float32)
    blobs = [f.tobytes(), v.tobytes(), n.tobytes(), col.tobytes()]
    views, offset, binary = [], 0, b""
    for k, blob in enumerate(blobs):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": 34963 if k == 0 else 34962})
        pad = (-len(blob)) % 4
        binary += blob + b"\0" * pad
        offset += len(blob) + pad
    accessors = [
        {"bufferView": 0, "componentType": 5125, "count": int(f.size), "type": "SCALAR"},
        {"bufferView": 1, "componentType": 5126, "count": len(v), "type": "VEC3", "min": v.min(0).tolist(), "max": v.max(0).tolist()},
        {"bufferView": 2, "componentType": 5126, "count": len(v), "type": "VEC3"},
        {"bufferView": 3, "componentType": 5126, "count": len(v), "type": "VEC3"},
    ]
    doc = {
        "asset": {"version": "2.0", "generator": "bodycorr"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 1, "NORMAL": 2, "COLOR_0": 3}, "indices": 0, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 0.85},
                       "doubleSided": True}],
        "buffers": [{"byteLength": len(binary)}], "bufferViews": views, "accessors": accessors,
    }  # fmt: skip
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary


def colour_map(name: str, values: np.ndarray, lo: float, hi: float, nan: tuple[float, float, float] = (0.6, 0.6, 0.6)) -> np.ndarray:
    """(N,) values -> (N, 3) RGB in [0, 1] through a matplotlib colour map over [lo, hi]; NaN -> grey."""
    import matplotlib

    values = np.asarray(values, float)
    t = np.clip((np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = matplotlib.colormaps[name](t)[:, :3]
    rgb[~np.isfinite(values)] = nan
    return rgb


def colour_bar_html(name: str, lo: float, hi: float, label: str) -> str:
    """A horizontal colour bar (HTML) for the GUI panel."""
    import matplotlib

    cm = matplotlib.colormaps[name]
    stops = ", ".join(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {k * 10}%" for k, (r, g, b, _) in enumerate(cm(np.linspace(0, 1, 11))))
    mid = (lo + hi) / 2
    return (f'<div style="font-size:0.8em;padding:0.2em 0.75em"><div>{label}</div>'
            f'<div style="height:12px;border-radius:2px;background:linear-gradient(to right, {stops})"></div>'
            f'<div style="display:flex;justify-content:space-between"><span>{lo:g}</span><span>{mid:g}</span><span>{hi:g}</span></div></div>')  # fmt: skip


@functools.lru_cache(maxsize=1)
def _template():
    from bodycorr.body.template import get_template

    return get_template()


TORSO = ("throat", "sternum", "navel", "pubis", "neck_back", "mid_back", "chest.L", "chest.R", "shoulder.L", "shoulder.R", "hip.L", "hip.R")


def _template_rest_or_none(num_vertices: int) -> np.ndarray | None:
    """The template's rest vertices (V, 3) when a mesh has its vertex count, else None."""
    try:
        t = _template()
    except Exception:  # noqa: BLE001 (no body model here: fall back to the shape's own axes)
        return None
    return t.mesh.vertices if t.mesh.num_vertices == num_vertices else None


def template_frame(vertices: np.ndarray) -> np.ndarray | None:
    """(3, 3) view rotation of a (V, 3) mesh in the template's topology (its torso turned like the
    template's rest pose), or None when it is not the template's size."""
    rest = _template_rest_or_none(len(vertices))
    if rest is None:
        return None
    t = _template()
    names = list(t.landmark_names)
    torso = np.asarray([t.landmarks[names.index(n)] for n in TORSO if n in names])
    return frame_from_template(vertices, rest, torso if len(torso) >= 4 else None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BodycorrError(f"{path}: unreadable JSON ({e}). Rerun the bodycorr command that wrote it.") from e


def _load_mesh(path: Path):
    from bodycorr.geometry.io import load_mesh

    return load_mesh(path, units="m")


# ------------------------------------------------------------------------------------------------
# What is drawn
# ------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    """One thing drawn, in view coordinates.

    Attributes:
        name: scene node name under the part's root ("source", "target", ...).
        points: (N, 3) metres.
        colours: (N, 3) RGB in [0, 1].
        faces: (F, 3) triangles, or None for a point cloud.
        visible: drawn at start.
        point_size: metres (point clouds).
    """

    name: str
    points: np.ndarray
    colours: np.ndarray
    faces: np.ndarray | None = None
    visible: bool = True
    point_size: float = 0.01


@dataclass
class Selection:
    """What a click picked: the markdown shown for it and the (K, 3) view points to mark (a line joins the first two)."""

    markdown: str
    marks: np.ndarray
    info: dict = field(default_factory=dict)


def _place(points: np.ndarray, rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(N, 3) data points -> (N, 3) view points: moved to ``centre`` (3,) and turned by ``rot`` (3, 3)."""
    return (points - centre) @ rot.T


def _layout(view: np.ndarray, side: int) -> np.ndarray:
    """(3,) shift putting view points' robust box centred in y, feet at z = 0 and on the left
    (side -1), the middle (0) or the right (+1) of x = 0."""
    lo, hi = np.percentile(view, 0.5, axis=0), np.percentile(view, 99.5, axis=0)
    width = hi[0] - lo[0]
    x = -(lo[0] + hi[0]) / 2 + side * (width / 2 + GAP / 2)
    return np.array([x, -(lo[1] + hi[1]) / 2, -lo[2]])


class Part:
    """One output folder in the viewer: its shapes, its GUI, its picking."""

    kind = ""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shapes: dict[str, Shape] = {}
        self.viewer: Viewer | None = None
        self.root = ""

    @property
    def title(self) -> str:
        return f"{self.kind}: {self.folder.name or self.folder}"

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """(3,), (3,) the view box of the visible shapes."""
        pts = np.concatenate([s.points for s in self.shapes.values() if s.visible] or [np.zeros((1, 3))])
        return pts.min(0), pts.max(0)

    def summary_markdown(self) -> str:
        return ""

    def build_gui(self, gui: Any) -> None:
        """Add this part's controls (inside its GUI folder)."""

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Selection | None:
        return None

    def redraw(self, name: str) -> None:
        if self.viewer is not None:
            self.viewer.draw(self, self.shapes[name])


def _pick_shapes(shapes: list[Shape], origin: np.ndarray, direction: np.ndarray) -> tuple[str, int] | None:
    """(shape name, point index) hit first by the ray among visible shapes."""
    best = None
    for s in shapes:
        if not s.visible:
            continue
        hit = pick_on_ray(s.points, origin, direction, tol=max(1.5 * s.point_size, 0.006))
        if hit is not None and (best is None or hit[1] < best[2]):
            best = (s.name, hit[0], hit[1])
    return None if best is None else (best[0], best[1])


# ------------------------------------------------------------------------------------------------
# bodycorr match / demo
# ------------------------------------------------------------------------------------------------


class MatchPart(Part):
    """``correspondences.npz`` + ``summary.json`` (+ ``*_template.ply``): source left, target right."""

    kind = "match"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.summary = _read_json(folder / "summary.json")
        z = load_result_npz(folder / "correspondences.npz", ("source_points", "target_points", "target_index", "confidence"), "match")
        src, tgt = z["source_points"].astype(np.float64), z["target_points"].astype(np.float64)
        ti = z["target_index"].astype(np.int64)
        if src.ndim != 2 or src.shape[1:] != (3,) or tgt.ndim != 2 or tgt.shape[1:] != (3,) or ti.shape != (len(src),) or not len(tgt):
            raise BodycorrError(f"{folder / 'correspondences.npz'}: inconsistent arrays (source {src.shape}, target {tgt.shape}, "
                                f"target_index {ti.shape}). Rerun bodycorr match.")  # fmt: skip
        if len(ti) and (ti.min() < 0 or ti.max() >= len(tgt)):
            raise BodycorrError(f"{folder / 'correspondences.npz'}: target_index outside the target's {len(tgt)} points. Rerun bodycorr match.")
        self.src, self.tgt, self.ti = src, tgt, ti
        self.confidence = z["confidence"].astype(np.float64)
        self.mutual = z["mutual"].astype(bool) if "mutual" in z else np.zeros(len(src), bool)
        self.distance = z.get("descriptor_distance")
        self.error_cm = z["error_cm"].astype(np.float64) if "error_cm" in z and z["error_cm"].shape == (len(src),) else None
        self.templates = {side: _load_mesh(folder / f"{side}_template.ply") for side in ("source", "target")
                          if (folder / f"{side}_template.ply").exists()}  # fmt: skip
        # colour code: the target's normalised position (as matches.png); the source: its match's colour
        self.target_colours = position_colours(tgt)
        self.source_colours = self.target_colours[ti]
        # faces: a mesh side's own; a depth map's pixel grid
        src_faces = z.get("source_faces")
        if src_faces is None and "source_pixels" in z:
            src_faces = grid_faces(z["source_pixels"], src)
        tgt_faces = z.get("target_faces")
        # view frames
        # view frames, ranked: a depth map seen from its camera (at the origin) > a fitted template's torso > principal axes
        rots, how = {}, {}
        for side, pts, up_key in (("source", src, "source_up"), ("target", tgt, "target_up")):
            fit = self.templates.get(side)
            rot = template_frame(fit.vertices) if fit is not None else None
            up = np.asarray(self.summary.get(up_key) or principal_up(pts), float)
            if side == "source" and "source_pixels" in z:
                rots[side], how[side] = frame_from_up(pts, up, forward=pts.mean(0)), 2
            elif rot is not None:
                rots[side], how[side] = rot, 1
            else:
                rots[side], how[side] = frame_from_up(pts, up), 0
        self.centres = {"source": src.mean(0), "target": tgt.mean(0)}
        # the side with the weaker frame turns about z to face like the other (through the matches)
        if len(ti) >= 3 and (how["source"] != how["target"] or how["source"] == 0):
            a = _place(src, rots["source"], self.centres["source"])
            b = _place(tgt[ti], rots["target"], self.centres["target"])
            w = np.clip(self.confidence, 0, 1) + 1e-3
            if how["target"] <= how["source"]:
                rots["target"] = yaw_towards(a, b, w) @ rots["target"]
            else:
                rots["source"] = yaw_towards(b, a, w) @ rots["source"]
        self.rots = rots
        sv = _place(src, rots["source"], self.centres["source"])
        tv = _place(tgt, rots["target"], self.centres["target"])
        self.shifts = {"source": _layout(sv, -1), "target": _layout(tv, +1)}
        self.sv, self.tv = sv + self.shifts["source"], tv + self.shifts["target"]
        spacing = {"source": point_spacing(src), "target": point_spacing(tgt)}
        self.shapes["source"] = Shape("source", self.sv, self.source_colours, src_faces, point_size=float(np.clip(1.6 * spacing["source"], 0.003, 0.03)))
        self.shapes["target"] = Shape("target", self.tv, self.target_colours, tgt_faces, point_size=float(np.clip(1.6 * spacing["target"], 0.003, 0.03)))
        self._template_shapes()
        self.colour_mode = "colour code"

    def _template_shapes(self) -> None:
        from scipy.spatial import cKDTree

        cols: np.ndarray | None = None
        if "target" in self.templates:  # the target's code carried to the template vertices, shared through the topology
            cols = self.target_colours[cKDTree(self.tgt).query(self.templates["target"].vertices, workers=1)[1]]
        for side in ("source", "target"):
            m = self.templates.get(side)
            if m is None:
                continue
            c = cols if cols is not None and len(cols) == m.num_vertices else (
                self.source_colours if side == "source" else self.target_colours)[cKDTree(self.src if side == "source" else self.tgt).query(m.vertices, workers=1)[1]]  # fmt: skip
            v = _place(m.vertices, self.rots[side], self.centres[side]) + self.shifts[side]
            self.shapes[f"{side}_template"] = Shape(f"{side}_template", v, c, m.faces, visible=False)

    def colour_modes(self) -> list[str]:
        modes = ["colour code", "confidence", "mutual"]
        if self.error_cm is not None:
            modes.insert(1, "error vs truth")
        return modes

    def set_colour_mode(self, mode: str) -> str | None:
        """Recolour the source; returns the colour bar's HTML (or None)."""
        self.colour_mode = mode
        bar = None
        if mode == "confidence":
            c, bar = colour_map("viridis", self.confidence, 0, 1), colour_bar_html("viridis", 0, 1, "match confidence")
        elif mode == "error vs truth" and self.error_cm is not None:
            c = colour_map("magma_r", self.error_cm, 0, ERROR_MAX_CM)
            bar = colour_bar_html("magma_r", 0, ERROR_MAX_CM, f"geodesic error vs truth, cm ({ERROR_MAX_CM:g} and over: black; grey: no truth)")
        elif mode == "mutual":
            c = np.where(self.mutual[:, None], [0.15, 0.55, 0.95], [0.85, 0.85, 0.85])
            bar = '<div style="font-size:0.8em;padding:0.2em 0.75em">blue: mutual nearest neighbours; grey: one-way</div>'
        else:
            c = self.source_colours
        self.shapes["source"].colours = c
        self.redraw("source")
        return bar

    def summary_markdown(self) -> str:
        s = self.summary
        lines = [f"**{s.get('source', 'source')}** ({s.get('source_kind', '?')}, {len(self.src)} points) → "
                 f"**{s.get('target', 'target')}** ({s.get('target_kind', '?')}, {len(self.tgt)} points)",
                 f"refine: {s.get('refine', '?')} → {s.get('refined_by', '?')}; mean confidence {self.confidence.mean():.2f}; "
                 f"{self.mutual.mean() * 100:.0f} % mutual"]  # fmt: skip
        e = s.get("error_vs_truth")
        if e:
            lines.append(f"error vs truth: mean {e['mean_cm']:.1f} cm, median {e['median_cm']:.1f} cm, {e['within_5cm_pct']:.0f} % within 5 cm")
        return "  \n".join(lines)

    def build_gui(self, gui: Any) -> None:
        self.colour_box = gui.add_dropdown("source colours", tuple(self.colour_modes()), initial_value="colour code")
        self.colour_bar = gui.add_html("", visible=False)

        @self.colour_box.on_update
        def _(_e) -> None:
            html = self.set_colour_mode(self.colour_box.value)
            self.colour_bar.content = html or ""
            self.colour_bar.visible = html is not None

        if self.templates:
            self.template_box = gui.add_checkbox("fitted template" + ("s" if len(self.templates) > 1 else ""), False,
                                                 hint=", ".join(f"{s}_template.ply" for s in self.templates))  # fmt: skip
            self.scans_box = gui.add_checkbox("source and target", True, hint="hide them to see the fitted templates alone")

            @self.template_box.on_update
            def _(_e) -> None:
                self.show(("source_template", "target_template"), self.template_box.value)

            @self.scans_box.on_update
            def _(_e) -> None:
                self.show(("source", "target"), self.scans_box.value)

    def show(self, names: tuple[str, ...], on: bool) -> None:
        """Show or hide shapes by name (those this output has)."""
        for name in names:
            if name in self.shapes:
                self.shapes[name].visible = on
                if self.viewer is not None:
                    self.viewer.set_visible(self, name, on)

    def select_source(self, i: int) -> Selection:
        j = int(self.ti[i])
        info = {"side": "source", "source": i, "target": j, "confidence": float(self.confidence[i]), "mutual": bool(self.mutual[i])}
        md = [f"**source point {i}** → target point {j}", f"confidence **{self.confidence[i]:.2f}**, " + ("mutual" if self.mutual[i] else "one-way")]
        if self.distance is not None:
            md.append(f"descriptor distance {float(self.distance[i]):.3f}")
        if self.error_cm is not None and np.isfinite(self.error_cm[i]):
            info["error_cm"] = float(self.error_cm[i])
            md.append(f"error vs truth **{self.error_cm[i]:.1f} cm**")
        return Selection("  \n".join(md), np.stack([self.sv[i], self.tv[j]]), info)

    def select_target(self, j: int) -> Selection:
        hits = np.flatnonzero(self.ti == j)
        if not len(hits):
            return Selection(f"**target point {j}**: no source point matched it", self.tv[j][None], {"side": "target", "target": j, "sources": 0})
        i = int(hits[np.argmax(self.confidence[hits])])
        md = f"**target point {j}** ← {len(hits)} source point{'s' if len(hits) > 1 else ''}; the most confident: {i} (confidence **{self.confidence[i]:.2f}**)"
        return Selection(md, np.stack([self.tv[j], self.sv[i]]), {"side": "target", "target": j, "sources": len(hits), "source": i,
                                                                  "confidence": float(self.confidence[i])})  # fmt: skip

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Selection | None:
        hit = _pick_shapes([self.shapes["source"], self.shapes["target"]], origin, direction)
        if hit is None:
            return None
        return self.select_source(hit[1]) if hit[0] == "source" else self.select_target(hit[1])


# ------------------------------------------------------------------------------------------------
# bodycorr register
# ------------------------------------------------------------------------------------------------


def template_code_colours(vertices: np.ndarray) -> np.ndarray:
    """(V, 3) colour code of a mesh in the template's topology: its template rest position
    (normalised, as :func:`position_colours`), or its own position when it is not the template's size."""
    rest = _template_rest_or_none(len(vertices))
    return position_colours(rest if rest is not None else vertices)


class RegisterPart(Part):
    """``registration.ply`` + ``scan_on_template.npz``: the scan left, the registration right."""

    kind = "register"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.summary = _read_json(folder / "summary.json")
        self.reg = _load_mesh(folder / "registration.ply")
        z = load_result_npz(folder / "scan_on_template.npz", ("points", "face", "bary"), "register")
        pts, face, bary = z["points"].astype(np.float64), z["face"].astype(np.int64), z["bary"].astype(np.float64)
        if face.shape != (len(pts),) or bary.shape != (len(pts), 3) or (len(face) and (face.min() < 0 or face.max() >= len(self.reg.faces))):
            raise BodycorrError(f"{folder / 'scan_on_template.npz'}: does not fit registration.ply. Rerun bodycorr register.")
        self.points, self.face, self.bary = pts, face, bary
        self.residual_cm = z["residual_m"].astype(np.float64) * 100 if "residual_m" in z else np.zeros(len(pts))
        self.vertex = z["vertex"].astype(np.int64) if "vertex" in z else self.reg.faces[face, np.argmax(bary, 1)]
        rest = _template_rest_or_none(self.reg.num_vertices)
        rot = template_frame(self.reg.vertices)
        rot = rot if rot is not None else frame_from_up(self.reg.vertices, principal_up(self.reg.vertices))
        if self.summary.get("scan_kind") == "depth":  # seen from its camera (at the origin), upright as the registration
            rot = frame_from_up(pts, rot[2], forward=pts.mean(0))
        centre = self.reg.vertices.mean(0)
        scan_v = _place(pts, rot, centre)
        reg_v = _place(self.reg.vertices, rot, centre)
        left, right = _layout(scan_v, -1), _layout(reg_v, +1)
        self.code = position_colours(rest if rest is not None else self.reg.vertices)
        self.scan_code = np.einsum("nk,nkc->nc", bary, self.code[self.reg.faces[face]])
        self.scan_v, self.reg_v, self.reg_on_scan = scan_v + left, reg_v + right, reg_v + left
        size = float(np.clip(1.6 * point_spacing(pts), 0.003, 0.03))
        faces = z.get("scan_faces")  # a mesh scan's own triangles, or a depth map's pixel grid (when the writer kept them)
        if faces is None and "scan_pixels" in z and z["scan_pixels"].shape == (len(pts), 2):
            faces = grid_faces(z["scan_pixels"], pts)
        if faces is not None and (faces.ndim != 2 or faces.shape[1:] != (3,) or (len(faces) and (faces.min() < 0 or faces.max() >= len(pts)))):
            faces = None
        self.shapes["scan"] = Shape("scan", self.scan_v, self.scan_code, faces, point_size=size)
        self.shapes["registration"] = Shape("registration", self.reg_v, self.code, self.reg.faces)
        self.shapes["registration_on_scan"] = Shape("registration_on_scan", self.reg_on_scan, self.code, self.reg.faces, visible=False)
        self.max_cm = float(max(1.0, np.ceil(np.percentile(self.residual_cm, 95) * 1.5))) if len(pts) else 1.0

    def summary_markdown(self) -> str:
        s, r = self.summary, self.summary.get("residual_cm") or {}
        return (f"template ({self.reg.num_vertices} vertices) on **{s.get('scan', 'the scan')}** ({s.get('scan_kind', '?')}, {len(self.points)} points)  \n"
                f"scan to registration: mean {r.get('mean', float('nan')):.2f} cm, median {r.get('median', float('nan')):.2f} cm")  # fmt: skip

    def build_gui(self, gui: Any) -> None:
        mode = self.colour_box = gui.add_dropdown("scan colours", ("colour code", "distance to the registration"), initial_value="colour code")
        bar = self.colour_bar = gui.add_html("", visible=False)

        @mode.on_update
        def _(_e) -> None:
            if mode.value == "colour code":
                self.shapes["scan"].colours, bar.visible = self.scan_code, False
            else:
                self.shapes["scan"].colours = colour_map("magma_r", self.residual_cm, 0, self.max_cm)
                bar.content = colour_bar_html("magma_r", 0, self.max_cm, f"scan to registration, cm ({self.max_cm:g} and over: black)")
                bar.visible = True
            self.redraw("scan")

        self.overlay_box = gui.add_checkbox("registration over the scan", False)

        @self.overlay_box.on_update
        def _(_e) -> None:
            self.shapes["registration_on_scan"].visible = self.overlay_box.value
            if self.viewer is not None:
                self.viewer.set_visible(self, "registration_on_scan", self.overlay_box.value)

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Selection | None:
        hit = _pick_shapes([self.shapes["scan"], self.shapes["registration"]], origin, direction)
        if hit is None:
            return None
        if hit[0] == "scan":
            i = hit[1]
            p = self.bary[i] @ self.reg_v[self.reg.faces[self.face[i]]]
            md = f"**scan point {i}** → template vertex {self.vertex[i]} (face {self.face[i]}); distance **{self.residual_cm[i]:.2f} cm**"
            return Selection(md, np.stack([self.scan_v[i], p]), {"side": "scan", "scan": i, "vertex": int(self.vertex[i]), "residual_cm": float(self.residual_cm[i])})
        v = hit[1]
        hits = np.flatnonzero(self.vertex == v)
        if not len(hits):
            return Selection(f"**template vertex {v}**: no scan point on it", self.reg_v[v][None], {"side": "registration", "vertex": v, "scan_points": 0})
        i = int(hits[np.argmin(self.residual_cm[hits])])
        md = f"**template vertex {v}** ← {len(hits)} scan point{'s' if len(hits) > 1 else ''}; nearest: {i} ({self.residual_cm[i]:.2f} cm)"
        return Selection(md, np.stack([self.reg_v[v], self.scan_v[i]]), {"side": "registration", "vertex": v, "scan_points": len(hits), "scan": i})


# ------------------------------------------------------------------------------------------------
# bodycorr track
# ------------------------------------------------------------------------------------------------


class TrackPart(Part):
    """``frame_%04d.ply`` + ``track.json``: the tracked template, frame by frame."""

    kind = "track"
    fps = 5.0

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.summary = _read_json(folder / "track.json")
        paths = sorted(folder.glob("frame_[0-9][0-9][0-9][0-9].ply"))
        if not paths:
            raise BodycorrError(f"{folder}: track.json but no frame_0000.ply. Rerun bodycorr track.")
        meshes = [_load_mesh(p) for p in paths]
        if len({m.num_vertices for m in meshes}) != 1:
            raise BodycorrError(f"{folder}: the frame meshes differ in vertex count. Rerun bodycorr track.")
        self.faces = meshes[0].faces
        verts = np.stack([m.vertices for m in meshes])  # (T, V, 3)
        rest = _template_rest_or_none(verts.shape[1])
        rot = template_frame(verts[0])
        rot = rot if rot is not None else frame_from_up(verts[0], principal_up(verts[0]))
        view = _place(verts.reshape(-1, 3), rot, verts[0].mean(0)).reshape(verts.shape)
        self.frames = view + _layout(view.reshape(-1, 3), 0)
        self.code = position_colours(rest if rest is not None else verts[0])
        self.t = 0
        self.marked: int | None = None
        self.shapes["body"] = Shape("body", self.frames[0], self.code, self.faces)
        self.playing = threading.Event()

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        return self.frames.reshape(-1, 3).min(0), self.frames.reshape(-1, 3).max(0)

    def frame_markdown(self, t: int) -> str:
        s = self.summary
        status = (s.get("status") or ["?"] * self.num_frames)[t] if t < len(s.get("status") or []) else "?"
        md = f"frame **{t}** / {self.num_frames - 1}: {status}"
        if t < len(s.get("num_matches") or []):
            md += f"; {s['num_matches'][t]} matches"
        m = s.get("metrics") or {}
        per = m.get("per_frame_cm") or []
        if t < len(per) and per[t] is not None:
            md += f"; mean vertex error {per[t]:.1f} cm"
        return md

    def summary_markdown(self) -> str:
        s, m = self.summary, self.summary.get("metrics") or {}
        ok = sum(1 for x in s.get("status") or [] if x == "ok")
        md = f"{self.num_frames} frames, {ok} tracked, template of {self.frames.shape[1]} vertices"
        if m.get("mean_cm") is not None:
            md += f"  \nmean vertex error {m['mean_cm']:.1f} cm (visible {m.get('visible_mean_cm', float('nan')):.1f} cm)"
        return md

    def show_frame(self, t: int) -> None:
        self.t = int(np.clip(t, 0, self.num_frames - 1))
        self.shapes["body"].points = self.frames[self.t]
        self.redraw("body")
        if getattr(self, "frame_md", None) is not None:
            self.frame_md.content = self.frame_markdown(self.t)
        if self.marked is not None and self.viewer is not None:
            self.viewer.show_selection(self.select_vertex(self.marked))

    def build_gui(self, gui: Any) -> None:
        self.frame_md = gui.add_markdown(self.frame_markdown(0))
        self.slider = gui.add_slider("frame", 0, max(self.num_frames - 1, 1), 1, 0, disabled=self.num_frames < 2)
        play = gui.add_checkbox("play", False, disabled=self.num_frames < 2)

        @self.slider.on_update
        def _(_e) -> None:
            if int(self.slider.value) != self.t:
                self.show_frame(int(self.slider.value))

        @play.on_update
        def _(_e) -> None:
            (self.playing.set if play.value else self.playing.clear)()

    def step(self) -> None:
        """Advance one frame (the play loop)."""
        t = (self.t + 1) % self.num_frames
        if getattr(self, "slider", None) is not None:
            self.slider.value = t  # calls show_frame through on_update
        else:
            self.show_frame(t)

    def select_vertex(self, v: int) -> Selection:
        path = np.linalg.norm(np.diff(self.frames[:, v], axis=0), axis=1).sum() * 100 if self.num_frames > 1 else 0.0
        return Selection(f"**template vertex {v}** in frame {self.t}; it travels {path:.1f} cm over the sequence",
                         self.frames[self.t, v][None], {"vertex": v, "frame": self.t})  # fmt: skip

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Selection | None:
        hit = _pick_shapes([self.shapes["body"]], origin, direction)
        if hit is None:
            return None
        self.marked = hit[1]
        return self.select_vertex(hit[1])


# ------------------------------------------------------------------------------------------------
# bodycorr image
# ------------------------------------------------------------------------------------------------


class ImagePart(Part):
    """``correspondence.npz`` (+ the photo, ``overlay.png``): the photo left, the coloured template right."""

    kind = "image"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.summary = _read_json(folder / "summary.json")
        z = load_result_npz(folder / "correspondence.npz", ("vertex", "silhouette"), "image")
        self.vertex = z["vertex"].astype(np.int64)
        h, w = self.vertex.shape
        self.silhouette = z["silhouette"].astype(bool) & (self.vertex >= 0)
        self.confidence = z["confidence"].astype(np.float64) if "confidence" in z else np.zeros((h, w))
        self.uv = z.get("uv")
        self.colour = z["colour"].astype(np.float32) if "colour" in z else np.zeros((h, w, 3), np.float32)
        self.pictures = self._pictures(h, w)
        t = _template()
        if len(self.vertex) and self.vertex.max() >= t.num_vertices:
            raise BodycorrError(f"{folder / 'correspondence.npz'}: vertex ids beyond the template's {t.num_vertices}. Rerun bodycorr image.")
        self.code_name = str(self.summary.get("code") or self._code_from_model() or "position")
        from bodycorr.body.surface_code import get_surface_code

        code = get_surface_code(self.code_name)
        rest = t.mesh.vertices
        view = rest - rest.mean(0)  # the template's rest axes are the view axes
        self.template_v = view + _layout(view, +1)
        self.template_colours = code.values / 255.0
        self.shapes["template"] = Shape("template", self.template_v, self.template_colours, t.mesh.faces)
        # the photo: as tall as the template, left of it, facing the viewer
        lo, hi = self.template_v.min(0), self.template_v.max(0)
        self.height = float(hi[2] - lo[2])
        self.width = self.height * w / h
        self.photo_centre = np.array([-(self.width / 2 + GAP / 2), 0.0, lo[2] + self.height / 2])
        self.shape_hw = (h, w)
        self.picture = "photo" if "photo" in self.pictures else "overlay"

    def _code_from_model(self) -> str | None:
        model = self.summary.get("model")
        if not model or not Path(model).exists():
            return None
        try:
            from bodycorr.models.io import read_torch_file

            return read_torch_file(Path(model), "model file").get("meta", {}).get("code")
        except Exception:  # noqa: BLE001 (a best guess only)
            return None

    def _pictures(self, h: int, w: int) -> dict[str, np.ndarray]:
        from PIL import Image

        pics: dict[str, np.ndarray] = {}
        image = self.summary.get("image")
        for cand in ([Path(image), self.folder / Path(image).name, self.folder.parent / Path(image).name] if image else []):
            if cand.is_file():
                try:
                    rgb = np.asarray(Image.open(cand).convert("RGB"))
                except OSError:
                    continue
                if rgb.shape[:2] == (h, w):
                    pics["photo"] = rgb
                    break
        if (self.folder / "overlay.png").is_file():
            pics["overlay"] = np.asarray(Image.open(self.folder / "overlay.png").convert("RGB"))
        code = np.zeros((h, w, 3), np.uint8)
        code[self.silhouette] = np.clip(self.colour[self.silhouette] + 0.5, 0, 255).astype(np.uint8)
        pics["colour code"] = code
        conf = (colour_map("viridis", self.confidence.ravel(), 0, 1).reshape(h, w, 3) * 255).astype(np.uint8)
        conf[~self.silhouette] = 0
        pics["confidence"] = conf
        return pics

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.template_v.min(0), self.template_v.max(0)
        return np.array([self.photo_centre[0] - self.width / 2, lo[1], lo[2]]), hi

    def summary_markdown(self) -> str:
        s = self.summary
        return (f"**{Path(str(s.get('image', '?'))).name}** ({self.shape_hw[1]}×{self.shape_hw[0]}): {int(self.silhouette.sum())} person pixels, "
                f"mean confidence {float(s.get('mean_confidence', 0)):.2f}; template coloured in the '{self.code_name}' surface code")  # fmt: skip

    def pixel_position(self, row: int, col: int) -> np.ndarray:
        """(3,) view point of a pixel's centre on the photo plane (slightly in front of it)."""
        h, w = self.shape_hw
        x = self.photo_centre[0] - self.width / 2 + (col + 0.5) / w * self.width
        z = self.photo_centre[2] + self.height / 2 - (row + 0.5) / h * self.height
        return np.array([x, -0.01, z])

    def select_pixel(self, row: int, col: int) -> Selection:
        p = self.pixel_position(row, col)
        if not self.silhouette[row, col]:
            return Selection(f"pixel ({row}, {col}): background", p[None], {"pixel": (row, col), "vertex": -1})
        v = int(self.vertex[row, col])
        md = f"**pixel ({row}, {col})** → template vertex {v}; confidence **{self.confidence[row, col]:.2f}**"
        if self.uv is not None and np.isfinite(self.uv[row, col]).all():
            md += f"; UV ({self.uv[row, col][0]:.3f}, {self.uv[row, col][1]:.3f})"
        return Selection(md, np.stack([p, self.template_v[v]]), {"pixel": (row, col), "vertex": v, "confidence": float(self.confidence[row, col])})

    def select_vertex(self, v: int) -> Selection:
        rows, cols = np.nonzero(self.silhouette)
        if not len(rows):
            return Selection(f"**template vertex {v}**: nobody in the photo", self.template_v[v][None], {"vertex": v, "pixels": 0})
        exact = self.vertex[rows, cols] == v
        if exact.any():
            k = np.flatnonzero(exact)
            k = k[np.argmax(self.confidence[rows[k], cols[k]])]
            md = f"**template vertex {v}** ← {int(exact.sum())} pixel{'s' if exact.sum() > 1 else ''}; e.g. ({rows[k]}, {cols[k]}), confidence **{self.confidence[rows[k], cols[k]]:.2f}**"
        else:
            d = np.linalg.norm(self.template_v[self.vertex[rows, cols]] - self.template_v[v], axis=1)
            k = int(np.argmin(d))
            md = f"**template vertex {v}**: no pixel on it; nearest mapped pixel ({rows[k]}, {cols[k]}), {d[k] * 100:.1f} cm away on the template"
        r, c = int(rows[k]), int(cols[k])
        return Selection(md, np.stack([self.template_v[v], self.pixel_position(r, c)]), {"vertex": v, "pixel": (r, c), "pixels": int(exact.sum())})

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Selection | None:
        o, d = np.asarray(origin, float), _unit(np.asarray(direction, float))
        hit = _pick_shapes([self.shapes["template"]], o, d)
        photo = None
        if abs(d[1]) > 1e-9:
            t = -o[1] / d[1]
            if t > 0:
                p = o + t * d
                h, w = self.shape_hw
                col = (p[0] - (self.photo_centre[0] - self.width / 2)) / self.width * w
                row = (self.photo_centre[2] + self.height / 2 - p[2]) / self.height * h
                if 0 <= col < w and 0 <= row < h:
                    photo = (int(row), int(col))
        if photo is not None:
            return self.select_pixel(*photo)
        return None if hit is None else self.select_vertex(hit[1])

    def build_gui(self, gui: Any) -> None:
        pic = gui.add_dropdown("picture", tuple(self.pictures), initial_value=self.picture)

        @pic.on_update
        def _(_e) -> None:
            self.picture = pic.value
            if self.viewer is not None:
                self.viewer.draw_photo(self)


# ------------------------------------------------------------------------------------------------
# Folders
# ------------------------------------------------------------------------------------------------

PARTS: dict[str, type[Part]] = {"match": MatchPart, "register": RegisterPart, "track": TrackPart, "image": ImagePart}


def output_kind(folder: Path) -> str | None:
    """The bodycorr command that wrote ``folder`` ("match", "register", "track", "image"), or None."""
    if (folder / "track.json").is_file():
        return "track"
    if not (folder / "summary.json").is_file():
        return None
    for kind, name in (("match", "correspondences.npz"), ("register", "registration.ply"), ("image", "correspondence.npz")):
        if (folder / name).is_file():
            return kind
    return "unknown"


def find_outputs(folder: str | Path) -> list[tuple[str, Path]]:
    """(kind, folder) of the output ``folder`` and of its direct sub-folders that are outputs too (the demo's ``image/``)."""
    root = Path(folder)
    if not root.is_dir():
        raise BodycorrError(f"{root}: no such folder. Give an output folder of bodycorr match/register/track/image/demo.")
    kind = output_kind(root)
    if kind is None:
        raise BodycorrError(NOT_OUTPUT.format(folder=root))
    if kind == "unknown":
        raise BodycorrError(f"{root}: summary.json but no correspondences.npz, registration.ply or correspondence.npz "
                            "(an unfinished or unknown bodycorr output); rerun the bodycorr command that wrote it")  # fmt: skip
    subs = [(output_kind(p), p) for p in sorted(root.iterdir()) if p.is_dir()]
    return [(kind, root)] + [(k, p) for k, p in subs if k not in (None, "unknown")]


def incomplete_folders(parts: list[Part]) -> list[Path]:
    """The folders among ``parts`` that still hold the run marker (:data:`~bodycorr.common.fileio.RUN_MARKER`):
    their run was interrupted or failed, so what they show may be partial."""
    return [p.folder for p in parts if (Path(p.folder) / RUN_MARKER).exists()]


def load_parts(folder: str | Path) -> list[Part]:
    """Read every output in ``folder`` (see :func:`find_outputs`); nothing is served yet."""
    return [PARTS[kind](f) for kind, f in find_outputs(folder)]


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------


class Viewer:
    """A running viewer: ``server`` (a ``viser.ViserServer``), ``url``, the loaded ``parts``, the
    last ``selection``; :meth:`click` is what a click in the browser calls; :meth:`stop` ends it."""

    def __init__(self, server: Any, parts: list[Part], host: str):
        self.server = server
        self.parts = parts
        self.host = host
        self.selection: Selection | None = None
        self.active = parts[0]
        self._handles: dict[str, Any] = {}
        self._gui_folders: dict[int, Any] = {}
        self._stop = threading.Event()
        self._lock = threading.RLock()
        scene, gui = server.scene, server.gui
        scene.set_up_direction("+z")
        gui.configure_theme(show_share_button=False, show_logo=False, control_width="medium")
        gui.add_markdown(f"**bodycorr view** · `{parts[0].folder}`")
        for f in incomplete_folders(parts):
            gui.add_markdown(f"**Incomplete run** in `{f}` (`{RUN_MARKER}`): interrupted or failed; what it shows may be partial.")
        if len(parts) > 1:
            which = gui.add_dropdown("output", tuple(p.title for p in parts), initial_value=parts[0].title)

            @which.on_update
            def _(_e) -> None:
                self.show(next(p for p in self.parts if p.title == which.value))

        for k, part in enumerate(parts):
            part.viewer = self
            part.root = f"/{part.kind}" if sum(p.kind == part.kind for p in parts) == 1 else f"/{part.kind}{k}"
            self._handles[part.root] = scene.add_frame(part.root, show_axes=False, visible=part is self.active)
            for shape in part.shapes.values():
                self.draw(part, shape)
            if isinstance(part, ImagePart):
                self.draw_photo(part)
            with gui.add_folder(part.title, visible=part is self.active) as folder:
                gui.add_markdown(part.summary_markdown())
                part.build_gui(gui)
            self._gui_folders[id(part)] = folder
        self.selection_md = gui.add_markdown("Click a point to see its match.")
        self._set_camera(self.active)

        @scene.on_click()
        def _(event: Any) -> None:
            self.click(event.ray_origin, event.ray_direction)

        self._player = threading.Thread(target=self._play, name="bodycorr-view-play", daemon=True)
        self._player.start()

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def node_names(self) -> list[str]:
        """Names of the scene nodes drawn (sorted)."""
        return sorted(self._handles)

    def draw(self, part: Part, shape: Shape) -> None:
        """(Re)draw one shape of a part (a coloured mesh, or a point cloud)."""
        name = f"{part.root}/{shape.name}"
        with self._lock:
            if shape.faces is not None and len(shape.faces):
                h = self.server.scene.add_glb(name, mesh_glb(shape.points, shape.faces, shape.colours), visible=shape.visible)
            else:
                h = self.server.scene.add_point_cloud(name, np.asarray(shape.points, np.float32), (np.clip(shape.colours, 0, 1) * 255).astype(np.uint8),
                                                      point_size=shape.point_size, point_shape="circle", precision="float32",
                                                      visible=shape.visible)  # fmt: skip
            self._handles[name] = h

    def draw_photo(self, part: ImagePart) -> None:
        name = f"{part.root}/photo"
        with self._lock:
            self._handles[name] = self.server.scene.add_image(
                name, part.pictures[part.picture], part.width, part.height, format="png",
                wxyz=(np.cos(np.pi / 4), -np.sin(np.pi / 4), 0.0, 0.0), position=part.photo_centre)  # fmt: skip

    def set_visible(self, part: Part, name: str, on: bool) -> None:
        h = self._handles.get(f"{part.root}/{name}")
        if h is not None:
            h.visible = on

    def _set_camera(self, part: Part) -> None:
        lo, hi = part.extent()
        centre = (lo + hi) / 2
        width = hi[0] - lo[0]
        size = max(hi[2] - lo[2], width / 1.4, 0.2)
        dist = 1.1 * size / (2 * np.tan(np.radians(75) / 2)) + (hi[1] - lo[1]) / 2
        x = centre[0] + 0.12 * width  # the shapes a little left of the middle: the control panel covers the right
        pos, look = (x, lo[1] - dist, centre[2]), (x, centre[1], centre[2])
        self.server.initial_camera.position = pos
        self.server.initial_camera.look_at = look
        for client in self.server.get_clients().values():
            client.camera.position, client.camera.look_at = pos, look

    def show(self, part: Part) -> None:
        """Show one output (of a folder with several) and hide the others."""
        with self._lock:
            self.active = part
            for p in self.parts:
                self._handles[p.root].visible = p is part
                self._gui_folders[id(p)].visible = p is part
            self.show_selection(None)
            self._set_camera(part)

    def click(self, origin: Any, direction: Any) -> Selection | None:
        """Pick on the active output along a ray (view coordinates) and show what it hit."""
        sel = self.active.pick(np.asarray(origin, float), np.asarray(direction, float))
        if sel is not None:
            self.show_selection(sel)
        return sel

    def show_selection(self, sel: Selection | None) -> None:
        with self._lock:
            self.selection = sel
            for name in [n for n in self._handles if n.startswith("/selection")]:
                self._handles.pop(name).remove()
            if sel is None:
                self.selection_md.content = "Click a point to see its match."
                return
            self.selection_md.content = sel.markdown
            for k, p in enumerate(sel.marks):
                name = f"/selection/mark{k}"
                self._handles[name] = self.server.scene.add_icosphere(name, radius=0.02 if k == 0 else 0.015, color=MARKER, position=tuple(p))
            if len(sel.marks) >= 2:
                self._handles["/selection/line"] = self.server.scene.add_line_segments(
                    "/selection/line", np.asarray(sel.marks[:2], np.float32)[None], colors=MARKER, thickness=2.5, thickness_units="screen")  # fmt: skip

    def _play(self) -> None:
        while not self._stop.is_set():
            part = self.active
            if isinstance(part, TrackPart) and part.playing.is_set() and part.num_frames > 1:
                try:
                    part.step()
                except Exception:  # noqa: BLE001 (the server went away mid-frame)
                    pass
                self._stop.wait(1.0 / part.fps)
            else:
                self._stop.wait(0.1)

    def stop(self) -> None:
        """Stop the player thread and the server."""
        self._stop.set()
        self._player.join(timeout=2)
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()


def start_viewer(folder: str | Path, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> Viewer:
    """Read ``folder`` and serve it at ``http://host:port`` (the next free port if taken; 0: any);
    returns the running :class:`Viewer` (stop it with :meth:`Viewer.stop`). The web client ships
    inside viser: nothing is fetched from the internet, and sharing links are switched off."""
    parts = load_parts(folder)  # a bad folder fails here, before the server starts
    try:
        import viser
    except ImportError as e:  # pragma: no cover (a core dependency)
        raise BodycorrError("bodycorr view needs viser. Install it with: pip install viser") from e
    with contextlib.redirect_stdout(io.StringIO()):  # viser's banner; we print the address ourselves
        server = viser.ViserServer(host=host, port=port, verbose=False)
    server.request_share_url = lambda *a, **k: None  # a public share tunnel would reach the internet
    try:
        return Viewer(server, parts, host)
    except BaseException:
        server.stop()
        raise


def serve(folder: str | Path, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, seconds: float | None = None) -> None:
    """The ``bodycorr view`` command: start, print the address, serve until Ctrl+C (or ``seconds``)."""
    v = start_viewer(folder, port, host)
    kinds = ", ".join(p.kind for p in v.parts)
    for f in incomplete_folders(v.parts):
        print(f"bodycorr: warning: {f} holds {RUN_MARKER}: its run was interrupted or failed, so what it shows may be partial. "
              "Rerun the command that wrote it.", file=sys.stderr, flush=True)  # fmt: skip
    print(f"bodycorr view: {folder} ({kinds}) at {v.url}  (Ctrl+C stops)", flush=True)
    try:
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        v.stop()
