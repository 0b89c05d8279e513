"""User pair suites: a folder of meshes with known correspondences, turned into pairs with truth.

Two folder formats (mesh files: ``.ply``, ``.obj``, ``.off``; the name of a shape is its file stem):

``registrations``
    Meshes in one topology: vertex i is the same body point on every mesh (e.g. FAUST/SMPL
    registrations). A mesh whose vertex count differs from the folder's (the most common count) is
    reported and its pairs are skipped.

``index-files``
    Meshes of any topology, each with a ground-truth index file ``<gt_dir>/<stem><gt_suffix>``
    (default: beside the mesh, ``<stem>.txt``) of one integer per line, 0- or 1-based
    (``index_base``, declared: never guessed). Two layouts (``gt_layout``):

    * ``per-vertex`` (default): line i gives the reference point of mesh vertex i (so the file has
      one line per vertex); ``-1`` = no reference point.
    * ``per-reference``: line k gives the mesh vertex at reference point k (the ``.vts`` files of
      the re-meshed FAUST/SCAPE/SHREC sets); ``-1`` = not on this mesh. An index outside the mesh is
      reported and the shape's pairs are skipped.

    Two vertices correspond when they have the same reference point. Where several target vertices
    share one reference point, the error is measured to the nearest of them.

Pairs come from a pair list (``pairs``: a text file, two shape names per line, file stem or file
name, optional third column = the group; ``#`` comments) or, without a list, from a naming rule:
every unordered pair of shapes whose stems match ``name_rule`` (a regular expression with a named
group ``subject``; default ``<subject>_<pose>``, the part before the last underscore is the
subject), grouped ``intra`` (same subject) and ``inter``. ``max_pairs`` keeps a deterministic random
sample of at most that many pairs per group (seeded by ``seed``). A listed name with no mesh is
reported and skipped.

Units are checked at the boundary: each file is read in ``units`` ("auto" detects m / cm / mm from
the body's size, see :func:`bodycorr.geometry.units.detect_units`) and converted to metres; the
units found are listed in the results.

Left/right symmetry (for the flip rate):

* registrations: ``symmetry`` file (one line per vertex: its mirror vertex, ``index_base``), or
  else computed: each of the first :data:`SYMMETRY_CANDIDATES` meshes is mirrored across its best
  symmetry plane (the plane through the centroid normal to the principal axis that mirrors the mesh
  best, refined from the mirrored pairs) and each vertex takes the nearest vertex of the mirrored
  mesh; the mesh with the smallest mean mirror residual wins (a near-symmetric pose; the residual is
  reported: a map from a posed body is wrong near the asymmetric limbs). The map is topological, so
  it holds for every mesh of the folder.
* index-files: only with a ``symmetry`` file over reference points (line r: the mirror of reference
  point r); without one, flip figures are not reported.

Partial variants render one Kinect v2 view (512x424, fx = fy = 365) of each shape: the camera looks
at the body centre from 2.0-3.2 m (farther if the body would not fit), at a random azimuth around
the up axis and 0-20 degrees elevation, drawn from (``seed``, shape name) so every method and every
pair sees the same view; "noisy" adds the Kinect v2 noise model
(:class:`~bodycorr.render.noise.DepthNoiseConfig`). Each pixel's truth is the nearest corner vertex
of the rendered triangle (largest barycentric). The up axis is ``up`` or, for "auto", the
coordinate axis along which the mesh is longest (+ direction): give ``up`` for lying or T-posed
bodies or upside-down files.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.evaluation.harness import PairSpec, PairSuite, RowCache, SolverRows, Surface, View
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.io import MESH_SUFFIXES, read_mesh_data
from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.units import BODY_EXTENT_M, extent, resolve_units, to_metres
from bodycorr.render.frame import render
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import fit_distance, frame_from_up

FORMATS = ("registrations", "index-files")
GT_LAYOUTS = ("per-vertex", "per-reference")
DEFAULT_NAME_RULE = r"(?P<subject>.+)_(?P<pose>[^_]+)"
SYMMETRY_CANDIDATES = 10


@dataclass(frozen=True)
class UserSuiteConfig:
    """A user folder to benchmark on (see the module docstring).

    Attributes:
        folder: the mesh folder.
        format: "registrations" or "index-files".
        pairs: pair list file; None = derive pairs from ``name_rule``.
        name_rule: regular expression matched against each file stem, with a named group ``subject``.
        gt_dir: folder of the index files (default: ``folder``); gt_suffix: their suffix.
        gt_layout: "per-vertex" or "per-reference".
        index_base: 0 or 1, for index files and the symmetry file.
        symmetry: optional symmetry file.
        units: "auto", "m", "cm" or "mm".
        up: "auto" or an axis ("z", "-y", "0,1,0"): for rendering views, and told to methods.
        geodesic: "graph" (default) or "heat": how geodesics on each target are computed.
        max_pairs: at most this many pairs per group (0 = all), a deterministic sample.
        seed: seed of the pair sample and of the views.
    """

    folder: str
    format: Literal["registrations", "index-files"] = "registrations"
    pairs: str | None = None
    name_rule: str = DEFAULT_NAME_RULE
    gt_dir: str | None = None
    gt_suffix: str = ".txt"
    gt_layout: Literal["per-vertex", "per-reference"] = "per-vertex"
    index_base: int = 0
    symmetry: str | None = None
    units: str = "auto"
    up: str = "auto"
    geodesic: str = "graph"
    max_pairs: int = 0
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def list_meshes(folder: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``{stem: path}`` of the mesh files in ``folder`` (sorted), and issues (duplicate stems)."""
    d = Path(folder)
    if not d.is_dir():
        raise BodycorrError(f"benchmark folder {d}: {'not a folder' if d.exists() else 'no such folder'}. Give the folder that holds the meshes.")
    out: dict[str, Path] = {}
    issues = []
    for p in sorted(d.iterdir()):
        if p.is_file() and p.suffix.lower() in MESH_SUFFIXES:
            if p.stem in out:
                issues.append(f"mesh {p}: another file is also named {p.stem!r} ({out[p.stem].name}); this one is ignored. Rename one of them.")
                continue
            out[p.stem] = p
    if not out:
        raise BodycorrError(f"benchmark folder {d}: no mesh files ({', '.join(MESH_SUFFIXES)}). Give the folder that holds the meshes.")
    return out, issues


def read_pair_list(path: str | Path, names: dict[str, Path]) -> tuple[list[PairSpec], list[str]]:
    """Pairs from a list file: ``source target [group]`` per line (names: file stem or file name).

    Returns the pairs and one issue per bad line (wrong number of names, a name with no mesh).
    """
    p = check_readable(path, "pair list")
    by_file = {q.name: s for s, q in names.items()}
    pairs, issues = [], []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        tok = line.split("#", 1)[0].replace(",", " ").split()
        if not tok:
            continue
        if len(tok) not in (2, 3):
            issues.append(f"pair list {p} line {n}: expected 'source target [group]', got {line.strip()[:60]!r}; skipped.")
            continue
        resolved = []
        for t in tok[:2]:
            s = t if t in names else by_file.get(t, by_file.get(Path(t).name))
            if s is None:
                issues.append(f"pair list {p} line {n}: {t!r} names no mesh in {next(iter(names.values())).parent}; "
                              "pair skipped. Fix the name or add the file.")  # fmt: skip
                break
            resolved.append(s)
        if len(resolved) == 2:
            pairs.append(PairSpec(resolved[0], resolved[1], tok[2] if len(tok) == 3 else "pairs"))
    return pairs, issues


def compile_name_rule(rule: str) -> re.Pattern:
    try:
        pat = re.compile(rule)
    except re.error as e:
        raise BodycorrError(f"--name-rule {rule!r}: not a valid regular expression ({e}). Fix the pattern.") from None
    if "subject" not in pat.groupindex:
        raise BodycorrError(f"--name-rule {rule!r}: needs a named group (?P<subject>...). E.g. {DEFAULT_NAME_RULE!r}.")
    return pat


def subjects_from_names(names: list[str], rule: str) -> tuple[dict[str, str], list[str]]:
    """``{stem: subject}`` for the stems that fully match ``rule``, and one issue per other stem."""
    pat = compile_name_rule(rule)
    subj, issues = {}, []
    for s in names:
        m = pat.fullmatch(s)
        if m is None or not m.group("subject"):
            issues.append(f"mesh {s!r}: its name does not match the naming rule {rule!r}; left out of the pairs. "
                          "Rename it or give --name-rule / --pairs.")  # fmt: skip
            continue
        subj[s] = m.group("subject")
    return subj, issues


def derive_pairs(subjects: dict[str, str], max_pairs: int = 0, seed: int = 0) -> list[PairSpec]:
    """Every unordered pair (sorted names, source first) as ``intra`` (same subject) or ``inter``;
    at most ``max_pairs`` per group (0 = all), a deterministic random sample kept in order."""
    names = sorted(subjects)
    groups: dict[str, list[PairSpec]] = {"intra": [], "inter": []}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            groups["intra" if subjects[a] == subjects[b] else "inter"].append(PairSpec(a, b, "intra" if subjects[a] == subjects[b] else "inter"))
    out = []
    for g, (key, ps) in enumerate(groups.items()):
        if max_pairs and len(ps) > max_pairs:
            keep = np.sort(np.random.default_rng([int(seed), g]).choice(len(ps), max_pairs, replace=False))
            ps = [ps[k] for k in keep]
        out += ps
    return out


def read_index_file(path: str | Path, what: str = "index file") -> np.ndarray:
    """(N,) int64: one integer per line (blank lines and ``#`` comments allowed)."""
    p = check_readable(path, what)
    text = p.read_text(encoding="utf-8", errors="replace")
    if "#" in text:
        text = "\n".join(ln.split("#", 1)[0] for ln in text.splitlines())
    try:
        return np.array(text.split(), dtype=np.int64)
    except ValueError:
        for n, ln in enumerate(text.splitlines(), 1):
            for tok in ln.split():
                try:
                    int(tok)
                except ValueError:
                    raise BodycorrError(f"{what} {p} line {n}: {tok!r} is not an integer. Write one integer per line.") from None
        raise BodycorrError(f"{what} {p}: cannot read it as integers. Write one integer per line.") from None


def _from_base(raw: np.ndarray, base: int, where: str) -> np.ndarray:
    """File values -> 0-based, keeping -1 as "none"; values below the base raise."""
    out = np.where(raw == -1, -1, raw - base)
    bad = (out < 0) & (raw != -1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise BodycorrError(f"{where} line {k + 1}: {int(raw[k])} is below the declared base {base} "
                            f"(-1 means 'none'). Check --index-base.")  # fmt: skip
    return out


def reference_ids(raw: np.ndarray, num_vertices: int, layout: str, base: int, where: str) -> np.ndarray:
    """(V,) reference id of each mesh vertex (-1 = none) from an index file's values."""
    v = _from_base(raw, base, where)
    if layout == "per-vertex":
        if len(v) != num_vertices:
            raise BodycorrError(f"{where}: {len(v)} lines but the mesh has {num_vertices} vertices; a per-vertex "
                                "file needs one line per vertex. Fix the file, or use --gt-layout per-reference.")  # fmt: skip
        return v
    if layout != "per-reference":
        raise BodycorrError(f"--gt-layout {layout!r}: use one of {', '.join(GT_LAYOUTS)}.")
    out_of = v >= num_vertices
    if out_of.any():
        k = int(np.flatnonzero(out_of)[0])
        hint = " It looks 1-based: pass --index-base 1." if base == 0 and v.max() == num_vertices and not (v == 0).any() else ""
        raise BodycorrError(f"{where} line {k + 1}: points to vertex {int(raw[k])} ({base}-based) but the mesh has "
                            f"{num_vertices} vertices.{hint} Fix the file or --index-base.")  # fmt: skip
    ref = np.full(num_vertices, -1, dtype=np.int64)
    k = np.flatnonzero(v >= 0)
    ref[v[k]] = k
    return ref


# ----------------------------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------------------------


def guess_up(vertices: np.ndarray) -> np.ndarray:
    """The + coordinate axis along which the points are longest (a standing body's height)."""
    ext = np.ptp(np.asarray(vertices), axis=0)
    up = np.zeros(3)
    up[int(np.argmax(ext))] = 1.0
    return up


def parse_up_option(text: str) -> np.ndarray | None:
    """None for "auto", else the unit axis (see :func:`bodycorr.matching.up.parse_up`)."""
    if text == "auto":
        return None
    from bodycorr.matching.up import parse_up

    return parse_up(text)


def _mirror(v: np.ndarray, n: np.ndarray, c: np.ndarray) -> np.ndarray:
    return v - 2.0 * ((v - c) @ n)[:, None] * n


def symmetry_by_mirroring(mesh: Mesh, iterations: int = 5) -> tuple[np.ndarray, float, np.ndarray]:
    """Left/right vertex map of a (near-)symmetric mesh.

    The plane: through the centroid, normal to the principal axis whose mirror image lies closest
    to the mesh; refined ``iterations`` times from the mirrored nearest-neighbour pairs (normal = main
    direction of ``v_i - v_sym(i)``, offset = mean midpoint). Each vertex's mirror is the nearest
    vertex to its mirror image.

    Returns:
        symmetry (V,) int64, mean mirror residual (metres), plane normal (3,).
    """
    v = mesh.vertices
    tree = cKDTree(v)
    c = v.mean(0)
    _, _, vt = np.linalg.svd(v[:: max(1, len(v) // 20000)] - c, full_matrices=False)
    best = None
    for n in vt:
        d, _ = tree.query(_mirror(v, n, c))
        if best is None or d.mean() < best[0]:
            best = (float(d.mean()), n)
    n = best[1]
    for _ in range(iterations):
        _, s = tree.query(_mirror(v, n, c))
        diff = v - v[s]
        far = np.linalg.norm(diff, axis=1) > 1e-9
        if far.sum() < 3:
            break
        w, vecs = np.linalg.eigh(diff[far].T @ diff[far])
        n_new = vecs[:, -1] * np.sign(vecs[:, -1] @ n or 1.0)
        c_new = 0.5 * (v + v[s]).mean(0)
        if np.allclose(n_new, n, atol=1e-9) and np.allclose(c_new, c, atol=1e-9):
            break
        n, c = n_new / np.linalg.norm(n_new), c_new
    d, s = tree.query(_mirror(v, n, c))
    return s.astype(np.int64), float(d.mean()), n


def _stable_seed(seed: int, name: str) -> list[int]:
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


def kinect_camera(mesh: Mesh, up: np.ndarray, rng: np.random.Generator) -> Camera:
    """A Kinect v2 camera looking at the body centre from 2.0-3.2 m (farther if needed to fit),
    random azimuth about ``up``, 0-20 degrees elevation."""
    k = Intrinsics.kinect_v2()
    v = mesh.vertices
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    yaw = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(0.0, 20.0))
    dist = max(rng.uniform(2.0, 3.2), fit_distance(k, radius, 1.05))
    direction = frame_from_up(up) @ np.array([np.sin(yaw) * np.cos(el), -np.cos(yaw) * np.cos(el), np.sin(el)])
    return Camera.look_at(centre + dist * direction, centre, up, k)


def render_view(mesh: Mesh, camera: Camera, noise: str = "clean", rng: np.random.Generator | None = None,
                name: str = "view") -> View:  # fmt: skip
    """Render ``mesh`` from ``camera`` (optionally with Kinect v2 noise); each valid pixel's truth is the
    nearest corner vertex of its triangle (-1 for a flying pixel)."""
    frame = render(RayCaster(mesh.vertices, mesh.faces), camera)
    if noise == "noisy":
        frame = add_depth_noise(frame, DepthNoiseConfig.preset("kinect_v2"), rng or np.random.default_rng(0))
    elif noise != "clean":
        raise BodycorrError(f"view noise {noise!r}: use 'clean' or 'noisy'.")
    depth = frame.depth.astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    face = frame.face[valid]
    corner = frame.bary[valid].argmax(1)
    vert = np.where(face >= 0, mesh.faces[np.maximum(face, 0), corner], -1)
    return View(depth=np.where(valid, depth, 0).astype(np.float32), camera=camera, vertex=vert.astype(np.int64), name=name)


# ----------------------------------------------------------------------------------------------
# the suite
# ----------------------------------------------------------------------------------------------


def _load(path: Path, units: str) -> tuple[Mesh, str]:
    """A mesh in metres and the units its file was in; declared units must give a body-sized mesh."""
    d = read_mesh_data(path, triangulate=True)  # quads and polygons: fan-triangulated (vertices, and so the truth, unchanged)
    u = resolve_units(d.vertices, units, f"mesh {path}")
    m = Mesh(to_metres(d.vertices, u), d.faces, name=str(path))
    e = extent(m.vertices)
    lo, hi = BODY_EXTENT_M
    if not lo <= e <= hi:
        raise BodycorrError(f"mesh {path}: read as {u} it is {e:.3g} m across, not a body ({lo:g}-{hi:g} m). "
                            "Check --units (or use --units auto).")  # fmt: skip
    m.require_faces()
    return m, u


class UserPairSuite(PairSuite):
    """A :class:`~bodycorr.evaluation.harness.PairSuite` from a folder (:func:`load_user_suite`)."""

    def __init__(self, config: UserSuiteConfig, surfaces: dict[str, Surface], pairs: list[PairSpec], issues: list[str], meta: dict):
        self.config = config
        self.name = Path(config.folder).name or str(config.folder)
        self.surfaces = surfaces
        self.pairs = pairs
        self.issues = issues
        self.meta = meta
        self._views: dict[tuple[str, str], View] = {}
        self._cameras: dict[str, Camera] = {}
        self._rows = RowCache()
        self._geo: dict[str, SolverRows] = {}

    def surface(self, name: str) -> Surface:
        return self.surfaces[name]

    def camera(self, name: str) -> Camera:
        if name not in self._cameras:
            s = self.surfaces[name]
            self._cameras[name] = kinect_camera(s.mesh, s.up, np.random.default_rng(_stable_seed(self.config.seed, name)))
        return self._cameras[name]

    def view(self, name: str, noise: str) -> View:
        if (name, noise) not in self._views:
            rng = np.random.default_rng(_stable_seed(self.config.seed + 1, name))
            self._views[(name, noise)] = render_view(self.surfaces[name].mesh, self.camera(name), noise, rng, f"{name} ({noise} view)")
        return self._views[(name, noise)]

    def geodesics(self, name: str) -> SolverRows:
        if name not in self._geo:
            self._geo[name] = SolverRows(self.surfaces[name].mesh, self.config.geodesic, self._rows, key=name)
        return self._geo[name]


def load_user_suite(config: UserSuiteConfig) -> UserPairSuite:
    """Read a folder into a suite: pairs, meshes in metres, reference ids, symmetry.

    Bad files (unreadable mesh, wrong vertex count, bad index file, a pair naming a missing file)
    become one-line issues and their pairs are dropped; the rest of the suite stays. Raises
    :class:`BodycorrError` only when nothing usable is left or an option is wrong.
    """
    cfg = config
    if cfg.format not in FORMATS:
        raise BodycorrError(f"benchmark format {cfg.format!r}: use one of {', '.join(FORMATS)}.")
    if cfg.index_base not in (0, 1):
        raise BodycorrError(f"--index-base {cfg.index_base}: use 0 or 1.")
    if cfg.gt_layout not in GT_LAYOUTS:
        raise BodycorrError(f"--gt-layout {cfg.gt_layout!r}: use one of {', '.join(GT_LAYOUTS)}.")
    if cfg.geodesic not in ("graph", "heat"):
        raise BodycorrError(f"--geodesic {cfg.geodesic!r}: use 'graph' or 'heat'.")
    up_opt = parse_up_option(cfg.up)
    files, issues = list_meshes(cfg.folder)
    subjects: dict[str, str] = {}
    if cfg.pairs:
        pairs, more = read_pair_list(cfg.pairs, files)
        issues += more
        try:
            pat = compile_name_rule(cfg.name_rule)
            for s in files:
                m = pat.fullmatch(s)
                if m and m.group("subject"):
                    subjects[s] = m.group("subject")
        except BodycorrError:
            pass
        pair_source = f"list {cfg.pairs}"
    else:
        subjects, more = subjects_from_names(list(files), cfg.name_rule)
        issues += more
        pairs = derive_pairs(subjects, cfg.max_pairs, cfg.seed)
        pair_source = f"naming rule {cfg.name_rule!r}"
    if cfg.pairs and cfg.max_pairs:
        by_group: dict[str, list[PairSpec]] = {}
        for p in pairs:
            by_group.setdefault(p.group, []).append(p)
        pairs = []
        for g, (_, ps) in enumerate(by_group.items()):
            if len(ps) > cfg.max_pairs:
                keep = np.sort(np.random.default_rng([int(cfg.seed), g]).choice(len(ps), cfg.max_pairs, replace=False))
                ps = [ps[k] for k in keep]
            pairs += ps

    needed = list(dict.fromkeys([p.source for p in pairs] + [p.target for p in pairs]))
    meshes: dict[str, Mesh] = {}
    units: dict[str, str] = {}
    bad: dict[str, str] = {}
    for name in needed:
        try:
            meshes[name], units[name] = _load(files[name], cfg.units)
        except BodycorrError as e:
            bad[name] = str(e)

    refs: dict[str, np.ndarray | None] = {}
    meta: dict = {"format": cfg.format, "folder": str(cfg.folder), "pairs_from": pair_source, "geodesic": cfg.geodesic}
    if cfg.format == "registrations":
        counts = Counter(m.num_vertices for m in meshes.values())
        if counts:
            top = max(counts.values())
            n_ref = next(m.num_vertices for m in meshes.values() if counts[m.num_vertices] == top)
            for name, m in list(meshes.items()):
                if m.num_vertices != n_ref:
                    bad[name] = (f"mesh {files[name]}: {m.num_vertices} vertices but the registrations have {n_ref}; "
                                 "it is not in the same topology. Re-register it or remove it from the folder.")  # fmt: skip
                    del meshes[name]
            meta["vertices"] = n_ref
        refs = {name: None for name in meshes}
    else:
        gt_dir = Path(cfg.gt_dir) if cfg.gt_dir else Path(cfg.folder)
        for name, m in list(meshes.items()):
            gt = gt_dir / f"{name}{cfg.gt_suffix}"
            try:
                raw = read_index_file(gt, "index file")
                refs[name] = reference_ids(raw, m.num_vertices, cfg.gt_layout, cfg.index_base, f"index file {gt} (mesh {files[name].name})")
            except BodycorrError as e:
                bad[name] = str(e)
                del meshes[name]
        meta.update(gt_layout=cfg.gt_layout, index_base=cfg.index_base, gt_dir=str(gt_dir), gt_suffix=cfg.gt_suffix)

    kept = [p for p in pairs if p.source in meshes and p.target in meshes]
    lost = Counter(n for p in pairs if not (p.source in meshes and p.target in meshes) for n in {p.source, p.target} if n in bad)
    for name, msg in bad.items():
        issues.append(f"{msg} ({lost.get(name, 0)} pair(s) skipped)")
    if not kept:
        raise BodycorrError(f"benchmark folder {cfg.folder}: no usable pair"
                            + (f" ({len(issues)} problem(s); first: {issues[0]})" if issues else "")
                            + ". Check the files, --pairs and --name-rule.")  # fmt: skip

    sym_of: dict[str, np.ndarray | None] = {name: None for name in meshes}
    sym_meta: dict = {"available": False}
    try:
        if cfg.format == "registrations":
            if cfg.symmetry:
                n = next(iter(meshes.values())).num_vertices
                s = _from_base(read_index_file(cfg.symmetry, "symmetry file"), cfg.index_base, f"symmetry file {cfg.symmetry}")
                if len(s) != n or s.max(initial=0) >= n:
                    raise BodycorrError(f"symmetry file {cfg.symmetry}: needs {n} lines, each a vertex index in [{cfg.index_base}, "
                                        f"{n - 1 + cfg.index_base}] (got {len(s)} lines, max {int(s.max(initial=0)) + cfg.index_base}). "
                                        "Fix the file.")  # fmt: skip
                sym_meta = {"available": True, "from": f"file {cfg.symmetry}"}
            else:
                best = None
                for name in sorted(meshes)[:SYMMETRY_CANDIDATES]:
                    s, res, normal = symmetry_by_mirroring(meshes[name])
                    if best is None or res < best[1]:
                        best = (s, res, normal, name)
                s = best[0]
                sym_meta = {"available": True, "from": f"mirrored mesh {best[3]}", "mirror_residual_cm": best[1] * 100,
                            "plane_normal": best[2].tolist()}  # fmt: skip
                if best[1] > 0.02:
                    issues.append(f"symmetry: the most symmetric mesh ({best[3]}) still mirrors with a mean residual of "
                                  f"{best[1] * 100:.1f} cm, so flip rates are rough. Give --symmetry FILE for exact ones.")  # fmt: skip
            sym_of = {name: s for name in meshes}
        elif cfg.symmetry:
            rs = _from_base(read_index_file(cfg.symmetry, "symmetry file"), cfg.index_base, f"symmetry file {cfg.symmetry}")
            for name, ref in refs.items():
                sym_of[name] = _vertex_symmetry(ref, rs)
            sym_meta = {"available": True, "from": f"file {cfg.symmetry} (over reference points)"}
        else:
            sym_meta = {"available": False, "why": "no --symmetry file for index-file data; flips not reported"}
    except BodycorrError as e:
        issues.append(f"{e} Flip rates are not reported.")
        sym_of = {name: None for name in meshes}
        sym_meta = {"available": False, "why": str(e)}
    meta["symmetry"] = sym_meta

    surfaces = {}
    for name, m in meshes.items():
        up = up_opt if up_opt is not None else guess_up(m.vertices)
        surfaces[name] = Surface(name=name, mesh=m, ref=refs.get(name), symmetry=sym_of[name], up=up, up_hint=cfg.up,
                                 subject=subjects.get(name), path=str(files[name]), units=units[name])  # fmt: skip
    meta["units"] = dict(Counter(units[n] for n in meshes))
    meta["units_per_file"] = {n: units[n] for n in meshes}
    meta["shapes"] = len(meshes)
    meta["up"] = cfg.up
    return UserPairSuite(cfg, surfaces, kept, issues, meta)


def _vertex_symmetry(ref: np.ndarray, ref_sym: np.ndarray) -> np.ndarray:
    """(V,) mirror vertex of each vertex from reference ids and a mirror map over reference ids
    (the first vertex holding the mirrored id; -1 where unknown)."""
    ref = np.asarray(ref)
    order = np.argsort(ref, kind="stable")
    sref = ref[order]
    out = np.full(len(ref), -1, dtype=np.int64)
    ok = (ref >= 0) & (ref < len(ref_sym))
    mirrored = np.where(ok, ref_sym[np.clip(ref, 0, max(len(ref_sym) - 1, 0))], -1)
    pos = np.searchsorted(sref, mirrored)
    hit = (mirrored >= 0) & (pos < len(sref)) & (sref[np.minimum(pos, len(sref) - 1)] == mirrored)
    out[hit] = order[pos[hit]]
    return out
