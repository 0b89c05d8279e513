"""The body template: neutral Anny in rest pose, with UVs, parts, left/right symmetry and 33 landmarks."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from bodycorr.body.anny_model import PHENOTYPES, BodyModel, get_body_model
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.geometry.mesh import Mesh

TEMPLATE_VERSION = 1
#: The template's up axis and the way it faces (Anny's rest pose: z up, facing -y; its left is +x).
TEMPLATE_UP = np.array([0.0, 0.0, 1.0])
TEMPLATE_FACING = np.array([0.0, -1.0, 0.0])

PART_NAMES: tuple[str, ...] = (
    "head", "torso",
    "upper_arm.L", "upper_arm.R", "lower_arm.L", "lower_arm.R", "hand.L", "hand.R",
    "upper_leg.L", "upper_leg.R", "lower_leg.L", "lower_leg.R", "foot.L", "foot.R",
)  # fmt: skip

# Anny bone name prefix -> part (side suffix .L/.R appended where the bone has one).
_BONE_PART_PREFIX: tuple[tuple[str, str], ...] = (
    ("head", "head"), ("neck", "head"), ("eye", "head"),
    ("root", "torso"), ("pelvis", "torso"), ("spine", "torso"), ("clavicle", "torso"), ("shoulder", "torso"),
    ("upperarm", "upper_arm"), ("lowerarm", "lower_arm"),
    ("wrist", "hand"), ("finger", "hand"), ("metacarpal", "hand"),
    ("upperleg", "upper_leg"), ("lowerleg", "lower_leg"), ("foot", "foot"), ("toe", "foot"),
)  # fmt: skip

# The 33 landmarks (Wei et al. use 33 key points). Each is found on the rest template by a
# readable rule, so the table survives a change of topology:
#   ("ray", part, joint, offset_xyz, direction): of the vertices in `part` within 2 cm of the ray
#       from joint + offset along direction, the one farthest along it (the surface the ray exits).
#   ("extreme", part, axis_sign): the vertex of `part` (|x| < 1 cm for centre points) most along
#       the signed axis.
#   ("far", part, joint): the vertex of `part` farthest from the joint (finger tips); a part
#       "bone:NAME" means the vertices that bone moves most.
# Directions in Anny's frame: Z up, the body faces −Y, left is +X. "{s}" is L or R; "{x}" is the
# sign of the side's X (+1 left, −1 right).
LANDMARK_RULES: tuple[tuple[str, tuple], ...] = (
    ("head_top", ("extreme", "head", (0, 0, 1))),
    ("nose_tip", ("extreme", "head", (0, -1, 0))),
    ("chin", ("ray", "head", "head", (0, 0, 0.0), (0, -0.7, -0.7))),
    ("throat", ("ray", "head", "neck01", (0, 0, 0.03), (0, -1, 0))),
    ("sternum", ("ray", "torso", "spine01", (0, 0, 0.0), (0, -1, 0))),
    ("navel", ("ray", "torso", "spine04", (0, 0, 0.0), (0, -1, 0))),
    ("pubis", ("ray", "torso", "root", (0, 0, -0.07), (0, -1, 0))),
    ("neck_back", ("ray", "head", "neck01", (0, 0, 0.0), (0, 1, 0))),
    ("mid_back", ("ray", "torso", "spine02", (0, 0, 0.0), (0, 1, 0))),
    ("ear.{s}", ("ray", "head", "head", (0, 0, 0.04), ("x", 0, 0))),
    ("chest.{s}", ("ray", "torso", "spine01", ("x0.1", 0, -0.04), (0, -1, 0))),
    ("shoulder.{s}", ("ray", "upper_arm.{s}", "upperarm01.{s}", (0, 0, 0), (0, 0, 1))),
    ("elbow.{s}", ("ray", "lower_arm.{s}", "lowerarm01.{s}", (0, 0, 0), (0, 1, 0))),
    ("wrist.{s}", ("ray", "hand.{s}", "wrist.{s}", (0, 0, 0), ("x", 0, 0))),
    ("middle_finger_tip.{s}", ("far", "hand.{s}", "wrist.{s}")),
    ("thumb_tip.{s}", ("far", "bone:finger1-3.{s}", "wrist.{s}")),
    ("hip.{s}", ("ray", "upper_leg.{s}", "upperleg01.{s}", (0, 0, -0.05), ("x", 0, 0))),
    ("knee.{s}", ("ray", "lower_leg.{s}", "lowerleg01.{s}", (0, 0, 0), (0, -1, 0))),
    ("ankle.{s}", ("ray", "lower_leg.{s}", "foot.{s}", (0, 0, 0), ("x", 0, 0))),
    ("heel.{s}", ("extreme", "foot.{s}", (0, 1, 0))),
    ("toe_tip.{s}", ("extreme", "foot.{s}", (0, -1, 0))),
)


def landmark_names() -> tuple[str, ...]:
    """The 33 landmark names in label order: centre points first, then pairs (L then R)."""
    names: list[str] = []
    for name, _ in LANDMARK_RULES:
        names += [name.format(s="L"), name.format(s="R")] if "{s}" in name else [name]
    return tuple(names)


@dataclass(frozen=True, eq=False)
class Template:
    """The correspondence template: the body surface of neutral Anny in its rest pose.

    Eyes and tongue (separate components of Anny's mesh) are not part of the template; each of
    their vertices maps to the nearest body vertex, so every generated point has a template point.

    Attributes:
        mesh: template mesh, (Vt, 3) vertices (Vt = 13,348) and (Ft, 3) faces.
        full_to_template: (V,) template vertex of each Anny vertex (V = 13,718).
        template_to_full: (Vt,) Anny vertex of each template vertex.
        full_face_to_template: (F,) template face of each Anny face, -1 for eye/tongue faces.
        uv: (Vt, 2) a UV per vertex (the first corner's, seams pick one side).
        face_uv: (Ft, 3, 2) UV per face corner (exact across seams).
        parts: (Vt,) int index into :data:`PART_NAMES`.
        symmetry: (Vt,) the mirror (left↔right) vertex of each vertex.
        landmarks: (33,) template vertex of each landmark, names in :attr:`landmark_names`.
        full_faces: (F, 3) Anny's faces (the topology every generated body has).
        vertex_face: (Vt,) one template face touching each template vertex.
    """

    mesh: Mesh
    full_to_template: np.ndarray
    template_to_full: np.ndarray
    full_face_to_template: np.ndarray
    uv: np.ndarray
    face_uv: np.ndarray
    parts: np.ndarray
    symmetry: np.ndarray
    landmarks: np.ndarray
    full_faces: np.ndarray
    vertex_face: np.ndarray
    part_names: tuple[str, ...] = PART_NAMES
    landmark_names: tuple[str, ...] = ()

    @property
    def num_vertices(self) -> int:
        return self.mesh.num_vertices

    def map_full_points(self, full_faces: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map points on any generated body (Anny face + barycentrics) to the template.

        Args:
            full_faces: (N,) Anny face ids.
            bary: (N, 3) barycentrics.
        Returns:
            template faces (N,), barycentrics (N, 3) and nearest template vertex (N,). Points on
            eyes or tongue map to a template face touching their nearest body vertex, with
            one-hot barycentrics.
        """
        full_faces = np.asarray(full_faces, dtype=np.int64)
        bary = np.asarray(bary, dtype=np.float32)
        tf = self.full_face_to_template[full_faces]
        corner = bary.argmax(1)
        full_vertex = self.full_faces[full_faces, corner]
        tv = self.full_to_template[full_vertex]
        out_bary = bary.copy()
        off = tf < 0
        if off.any():
            inc = self.vertex_face[tv[off]]
            tf = tf.copy()
            tf[off] = inc
            tri = self.mesh.faces[inc]
            oh = (tri == tv[off, None]).astype(np.float32)
            out_bary[off] = oh
        return tf, out_bary, tv


def _parts_from_bones(model: BodyModel, template_to_full: np.ndarray) -> np.ndarray:
    part_of_bone = np.zeros(model.num_bones, dtype=np.int64)
    for b, name in enumerate(model.bone_labels):
        base, _, side = name.partition(".")
        for prefix, part in _BONE_PART_PREFIX:
            if base.startswith(prefix):
                full = f"{part}.{side}" if part not in ("head", "torso") else part
                part_of_bone[b] = PART_NAMES.index(full)
                break
        else:  # pragma: no cover - every Anny bone is listed
            raise KeyError(name)
    return part_of_bone[model.dominant_bone[template_to_full]].astype(np.int16)


def _landmarks(V: np.ndarray, parts: np.ndarray, bones: np.ndarray, joints: dict[str, np.ndarray]) -> np.ndarray:
    """Apply :data:`LANDMARK_RULES`. V: (Vt, 3), parts: (Vt,), bones: (Vt,) dominant bone names."""
    out: list[int] = []
    for name, rule in LANDMARK_RULES:
        for side in (("L", "R") if "{s}" in name else ("",)):
            sx = 1.0 if side == "L" else -1.0

            def sub(v):
                if v == "x":
                    return sx
                if isinstance(v, str) and v.startswith("x"):
                    return sx * float(v[1:])
                return float(v)

            kind, part = rule[0], rule[1].format(s=side)
            if part.startswith("bone:"):
                mask = bones == part[5:]
            else:
                mask = parts == PART_NAMES.index(part)
            if part in ("head", "torso") and not side and kind == "extreme":
                mask &= np.abs(V[:, 0]) < 0.01
            idx = np.flatnonzero(mask)
            P = V[idx]
            if kind == "extreme":
                d = np.array(rule[2], dtype=np.float64)
                out.append(int(idx[np.argmax(P @ d)]))
            elif kind == "far":
                j = joints[rule[2].format(s=side)]
                out.append(int(idx[np.argmax(np.linalg.norm(P - j, axis=1))]))
            else:
                j = joints[rule[2].format(s=side)] + np.array([sub(c) for c in rule[3]])
                d = np.array([sub(c) for c in rule[4]], dtype=np.float64)
                d /= np.linalg.norm(d)
                rel = P - j
                t = rel @ d
                perp = np.linalg.norm(rel - t[:, None] * d, axis=1)
                ok = (t > 0) & (perp < 0.02)
                if not ok.any():
                    ok = t > 0
                    score = np.where(ok, t - 5 * perp, -np.inf)
                else:
                    score = np.where(ok, t, -np.inf)
                out.append(int(idx[np.argmax(score)]))
    return np.asarray(out, dtype=np.int64)


def _build(model: BodyModel) -> dict[str, np.ndarray]:
    posed = model(np.full((1, len(PHENOTYPES)), 0.5))
    V = posed.vertices[0].astype(np.float64)
    F = model.faces
    n = V.shape[0]
    adj = sp.coo_matrix((np.ones(F.size), (F.ravel(), np.roll(F, 1, axis=1).ravel())), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    body = np.argmax(np.bincount(comp))
    template_to_full = np.flatnonzero(comp == body)
    full_to_local = -np.ones(n, dtype=np.int64)
    full_to_local[template_to_full] = np.arange(len(template_to_full))
    Vt = V[template_to_full]
    body_face = (comp[F] == body).all(1)
    Ft = full_to_local[F[body_face]]
    full_face_to_template = -np.ones(len(F), dtype=np.int64)
    full_face_to_template[body_face] = np.arange(body_face.sum())
    tree = cKDTree(Vt)
    full_to_template = full_to_local.copy()
    off = full_to_template < 0
    full_to_template[off] = tree.query(V[off])[1]
    face_uv = model.uv[model.face_uv_index[body_face]]
    uv = np.zeros((len(Vt), 2), dtype=np.float32)
    uv[Ft[:, ::-1].ravel()] = face_uv[:, ::-1].reshape(-1, 2)
    parts = _parts_from_bones(model, template_to_full)
    mirror = Vt * np.array([-1.0, 1.0, 1.0])
    symmetry = tree.query(mirror)[1]
    joints = {name: posed.bone_heads[0, i].astype(np.float64) for i, name in enumerate(model.bone_labels)}
    bones = np.asarray(model.bone_labels)[model.dominant_bone[template_to_full]]
    landmarks = _landmarks(Vt, parts, bones, joints)
    return dict(
        vertices=Vt, faces=Ft, full_to_template=full_to_template, template_to_full=template_to_full,
        full_face_to_template=full_face_to_template, uv=uv, face_uv=face_uv.astype(np.float32),
        parts=parts, symmetry=symmetry.astype(np.int64), landmarks=landmarks,
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def get_template() -> Template:
    """The template (built once, cached on disk under a content hash of Anny's data and the rules)."""
    model = get_body_model()
    key = content_hash("template", TEMPLATE_VERSION, model.faces, model.num_vertices, LANDMARK_RULES, _BONE_PART_PREFIX)
    a = cached_arrays("template", key, lambda: _build(model))
    vertex_face = np.zeros(len(a["vertices"]), dtype=np.int64)
    vertex_face[a["faces"].ravel()] = np.repeat(np.arange(len(a["faces"])), 3)
    t = Template(
        mesh=Mesh(a["vertices"], a["faces"], name="bodycorr template"),
        full_to_template=a["full_to_template"], template_to_full=a["template_to_full"],
        full_face_to_template=a["full_face_to_template"], uv=a["uv"], face_uv=a["face_uv"],
        parts=a["parts"], symmetry=a["symmetry"], landmarks=a["landmarks"], landmark_names=landmark_names(),
        full_faces=model.faces, vertex_face=vertex_face,
    )  # fmt: skip
    return t


def body_sides(template: Template, margin: float = 0.1) -> np.ndarray:
    """(Vt,) int8: +1 on the body's left, -1 on its right, 0 within ``margin`` metres of the mirror plane.

    The lateral axis is the one the left/right symmetry map moves vertices along; the left side is
    the one that holds ``hand.L``.
    """
    v = template.mesh.vertices
    axis = int(np.abs(v[template.symmetry] - v).mean(0).argmax())
    x = v[:, axis] - np.median(v[:, axis])
    if x[template.parts == PART_NAMES.index("hand.L")].mean() < 0:
        x = -x
    return (np.sign(x) * (np.abs(x) > margin)).astype(np.int8)
