"""Range of motion: a readable per-joint table in anatomical degrees, and the map to Anny bone rotations.

Anatomical angles are measured from the *anatomical neutral* pose: standing, arms hanging straight
down at the sides (palms facing the thighs), elbows and knees straight, feet flat. Anny's rest pose
is an A-pose with the elbows bent about 40°; the arm joints carry the difference (computed from the
rest skeleton) so that angle 0 means neutral, not rest.

Sign conventions (positive direction, for the LEFT side; the right side is the mirror image, so the
same table and the same numbers hold for it):

==============  =======================  ==========================  ==========================
joint           axis 0                   axis 1                      axis 2
==============  =======================  ==========================  ==========================
pelvis          tilt forward             tilt to the left             (turning is the global yaw)
spine, chest,   flexion (bend forward)   side bend to the left        twist to the left
neck, head                                                            (face turns to the left)
clavicle        protraction (forward)    elevation (shrug)            -
shoulder        flexion (arm forward/up) abduction (arm out/up)       internal rotation
elbow           flexion                  -                            pronation (palm turns back)
wrist           flexion (to the palm)    ulnar deviation              -
fingers         curl (fist = 90)         spread                       thumb curl
hip             flexion (thigh forward)  abduction (thigh out)        internal rotation
knee            flexion                  -                            internal (tibial) rotation
ankle           dorsiflexion (toes up)   inversion (sole inward)      adduction (toes inward)
toes            extension (toes up)      -                            -
==============  =======================  ==========================  ==========================

Ball joints (shoulder, hip) use a swing-twist parameterisation: flexion and abduction give a
rotation vector perpendicular to the limb (so "flexion 180" is straight overhead through the front
and "abduction 180" straight overhead through the side), then the twist turns the limb about its own
axis. The swing is additionally limited to the ellipse inscribed in the flexion/abduction box
(:func:`clip_to_rom`), which keeps corners such as (flexion 180, abduction 180) out.

Anny conventions: Z up, the body faces −Y, left is +X. Anny's ``local-ref`` delta of a bone is its
rotation relative to rest in world-aligned axes, chained parent to child: world rotation
``G_c = G_parent · D_c``. Every bone rotation below is such a ``D_c``. The mirror of a left-side
rotation ``D`` is ``M D M`` with ``M = diag(-1, 1, 1)``.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import numpy as np

from bodycorr.body.anny_model import PHENOTYPES, BodyModel

SIDES = ("L", "R")
MIRROR = np.diag([-1.0, 1.0, 1.0])

# --------------------------------------------------------------------------------------------
# The range-of-motion table. Degrees, anatomical sense documented above. Sided joints are written
# once with ".{s}" and expanded to .L and .R (mirrored programmatically: same numbers both sides).
# Values follow the usual clinical ranges (AAOS), trimmed or widened where the body model's skin
# allows (e.g. knee 155 so that kneeling on the heels and deep squats are reachable).
# --------------------------------------------------------------------------------------------
ROM_TABLE: dict[str, tuple[tuple[str, float, float], tuple[str, float, float], tuple[str, float, float]]] = {
    #               axis 0                           axis 1                          axis 2
    "pelvis":     (("tilt_forward", -30, 100),     ("tilt_left", -25, 25),          ("turn_left", 0, 0)),
    "spine":      (("flexion", -25, 50),           ("bend_left", -25, 25),          ("twist_left", -15, 15)),
    "chest":      (("flexion", -20, 35),           ("bend_left", -20, 20),          ("twist_left", -35, 35)),
    "neck":       (("flexion", -40, 40),           ("bend_left", -30, 30),          ("twist_left", -35, 35)),
    "head":       (("flexion", -25, 25),           ("bend_left", -15, 15),          ("twist_left", -40, 40)),
    "clavicle.{s}": (("protraction", -20, 25),     ("elevation", -10, 35),          ("none", 0, 0)),
    "shoulder.{s}": (("flexion", -60, 180),        ("abduction", -45, 180),         ("internal_rotation", -80, 80)),
    "elbow.{s}":  (("flexion", 0, 145),            ("none", 0, 0),                  ("pronation", -60, 90)),
    "wrist.{s}":  (("flexion", -70, 75),           ("ulnar_deviation", -20, 35),    ("none", 0, 0)),
    "fingers.{s}": (("curl", -10, 90),             ("spread", -5, 20),              ("thumb_curl", -10, 60)),
    "hip.{s}":    (("flexion", -25, 130),          ("abduction", -30, 70),          ("internal_rotation", -60, 45)),
    "knee.{s}":   (("flexion", -10, 155),           ("none", 0, 0),                  ("internal_rotation", -15, 15)),
    "ankle.{s}":  (("dorsiflexion", -50, 40),      ("inversion", -20, 35),          ("adduction", -20, 20)),
    "toes.{s}":   (("extension", -30, 70),         ("none", 0, 0),                  ("none", 0, 0)),
}  # fmt: skip

CENTRE_JOINTS = ("pelvis", "spine", "chest", "neck", "head")
SWING_JOINTS = ("shoulder", "hip")  # (flexion, abduction) limited to an ellipse


def _expand_table() -> tuple[tuple[str, ...], np.ndarray, tuple[tuple[str, str, str], ...]]:
    names, ranges, axes = [], [], []
    for key, row in ROM_TABLE.items():
        for s in SIDES if "{s}" in key else ("",):
            names.append(key.format(s=s))
            ranges.append([(lo, hi) for _, lo, hi in row])
            axes.append(tuple(a for a, _, _ in row))
    return tuple(names), np.asarray(ranges, dtype=np.float64), tuple(axes)


ROM_JOINTS, ROM_RANGES, ROM_AXES = _expand_table()
"""ROM_JOINTS: (J,) joint names. ROM_RANGES: (J, 3, 2) (min, max) degrees. ROM_AXES: (J,) axis names."""
NUM_ROM_JOINTS = len(ROM_JOINTS)


def joint_index(name: str) -> int:
    return ROM_JOINTS.index(name)


def mirror_joint_name(name: str) -> str:
    if name.endswith(".L"):
        return name[:-2] + ".R"
    if name.endswith(".R"):
        return name[:-2] + ".L"
    return name


MIRROR_PERMUTATION = np.array([ROM_JOINTS.index(mirror_joint_name(n)) for n in ROM_JOINTS])
# Mirroring a pose: sided joints swap sides with the same numbers; centre joints keep flexion and
# negate side bend and twist (a left bend becomes a right bend).
MIRROR_SIGNS = np.ones((NUM_ROM_JOINTS, 3))
for _i, _n in enumerate(ROM_JOINTS):
    if _n in CENTRE_JOINTS:
        MIRROR_SIGNS[_i, 1:] = -1.0


def clip_to_rom(angles: np.ndarray) -> np.ndarray:
    """Clip (..., J, 3) degrees into the table's boxes and the shoulder/hip swing ellipses."""
    a = np.clip(np.asarray(angles, dtype=np.float64), ROM_RANGES[..., 0], ROM_RANGES[..., 1])
    for j, name in enumerate(ROM_JOINTS):
        if name.split(".")[0] not in SWING_JOINTS:
            continue
        f, b = a[..., j, 0], a[..., j, 1]
        fl = np.where(f >= 0, ROM_RANGES[j, 0, 1], -ROM_RANGES[j, 0, 0])
        bl = np.where(b >= 0, ROM_RANGES[j, 1, 1], -ROM_RANGES[j, 1, 0])
        r = np.sqrt((f / fl) ** 2 + (b / bl) ** 2)
        scale = np.where(r > 1.0, 1.0 / np.maximum(r, 1e-12), 1.0)
        a[..., j, 0] = f * scale
        a[..., j, 1] = b * scale
    return a


def within_rom(angles: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """(...,) bool: every angle inside the table (boxes and swing ellipses), up to ``tol`` degrees."""
    a = np.asarray(angles, dtype=np.float64)
    return (np.abs(clip_to_rom(a) - a) <= tol).all(axis=(-1, -2))


# --------------------------------------------------------------------------------------------
# Rotation helpers (numpy, batched).
# --------------------------------------------------------------------------------------------


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues: (..., 3) rotation vectors (radians) -> (..., 3, 3)."""
    v = np.asarray(v, dtype=np.float64)
    th = np.linalg.norm(v, axis=-1)[..., None, None]
    k = v / np.maximum(th[..., 0], 1e-12)
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    s, c = np.sin(th), np.cos(th)
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) rotation vectors (radians), stable near 0 and pi."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    flat = R.reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_rotvec().reshape(R.shape[:-2] + (3,))


def axis_angle(axis: np.ndarray, deg: np.ndarray) -> np.ndarray:
    """Rotation about a fixed unit ``axis`` (3,) by ``deg`` (...,) degrees -> (..., 3, 3)."""
    return rotvec_to_matrix(np.deg2rad(np.asarray(deg, dtype=np.float64))[..., None] * np.asarray(axis))


def swing_twist(R: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split R = S · T(axis): returns (swing rotation vectors (..., 3) radians, twist angles (...,) radians)."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()  # x, y, z, w
    axis = np.asarray(axis, dtype=np.float64)
    p = (q[:, :3] @ axis)[:, None] * axis
    tw = np.concatenate([p, q[:, 3:]], axis=1)
    n = np.linalg.norm(tw, axis=1, keepdims=True)
    tw = np.where(n > 1e-9, tw / np.maximum(n, 1e-12), np.array([0.0, 0.0, 0.0, 1.0]))
    twist = 2.0 * np.arctan2(tw[:, :3] @ axis, tw[:, 3])
    twist = (twist + np.pi) % (2 * np.pi) - np.pi
    T = Rotation.from_quat(tw)
    S = Rotation.from_quat(q) * T.inv()
    shape = R.shape[:-2]
    return S.as_rotvec().reshape(shape + (3,)), twist.reshape(shape)


def split_root(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split root rotations R = Yaw · Tilt: (yaw rotations (..., 3, 3) about Z, tilt rotation vectors
    (..., 3) radians, perpendicular to Z). The tilt is the pelvis joint, the yaw the global rotation."""
    sw, tw = swing_twist(np.swapaxes(np.asarray(R, dtype=np.float64), -1, -2), Z)  # R^T = S · T
    return axis_angle(Z, -np.degrees(tw)), -sw


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _perp(v: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Unit component of v perpendicular to the unit vector ``to``."""
    return _unit(v - (v @ to) * to)


def _frame(t: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Orthonormal frame with columns (t, n, t x n); n is made perpendicular to t."""
    t = _unit(t)
    n = _perp(n, t)
    return np.stack([t, n, np.cross(t, n)], axis=-1)


# --------------------------------------------------------------------------------------------
# The rest skeleton and forward kinematics.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Skeleton:
    """Anny's rest skeleton for one body shape, with numpy forward kinematics.

    Attributes:
        labels: (J,) bone names. parents: (J,) parent index (root: -1); parents precede children.
        rest_rot: (J, 3, 3) rest orientation of each bone (Blender convention, columns x, y, z).
        rest_heads: (J, 3) rest joint positions. rest_tails: (J, 3) rest bone tails (head + length · y).
        phenotypes: (6,) the body shape.
        rest_vertices: (V, 3) rest-pose vertices; dominant_bone: (V,) the bone moving each most.
    """

    labels: tuple[str, ...]
    parents: np.ndarray
    rest_rot: np.ndarray
    rest_heads: np.ndarray
    rest_tails: np.ndarray
    phenotypes: np.ndarray
    rest_vertices: np.ndarray
    dominant_bone: np.ndarray

    @classmethod
    def from_model(cls, model: BodyModel, phenotypes: np.ndarray | None = None) -> Skeleton:
        ph = np.full(len(PHENOTYPES), 0.5) if phenotypes is None else np.asarray(phenotypes, dtype=np.float64)
        rest = model(ph[None])
        rot = rest.bone_poses[0, :, :3, :3].astype(np.float64)
        heads = rest.bone_heads[0].astype(np.float64)
        # Tails: the first child's head along the bone axis; leaves get their length from the
        # vertices they drive.
        parents = np.asarray(model.bone_parents, dtype=np.int64)
        length = np.zeros(len(heads))
        for c in range(1, len(heads)):
            p = parents[c]
            d = (heads[c] - heads[p]) @ rot[p][:, 1]
            if d > 1e-4 and (length[p] == 0 or d < length[p]):
                length[p] = d
        V = rest.vertices[0].astype(np.float64)
        for b in np.flatnonzero(length == 0):
            vb = V[model.dominant_bone == b]
            length[b] = max(float(((vb - heads[b]) @ rot[b][:, 1]).max()), 0.01) if len(vb) else 0.02
        tails = heads + length[:, None] * rot[:, :, 1]
        return cls(tuple(model.bone_labels), parents, rot, heads, tails, ph, V, np.asarray(model.dominant_bone))

    def index(self, name: str) -> int:
        return self.labels.index(name)

    @functools.cached_property
    def _ancestors(self) -> list[np.ndarray]:
        out = []
        for c in range(len(self.labels)):
            chain = [c]
            while self.parents[chain[-1]] >= 0:
                chain.append(int(self.parents[chain[-1]]))
            out.append(np.array(chain[::-1]))
        return out

    def bones_needed(self, bones) -> np.ndarray:
        """The sorted closure of ``bones`` under parents (what FK must compute to reach them)."""
        need = set()
        for b in bones:
            need.update(self._ancestors[int(b)].tolist())
        return np.array(sorted(need), dtype=np.int64)

    def fk(self, D: np.ndarray, root_translation: np.ndarray | None = None, bones=None) -> tuple[np.ndarray, np.ndarray]:
        """Anny ``local-ref`` forward kinematics.

        ``G_c = G_p · D_c`` and ``head_c = head_p + G_p (rest_head_c − rest_head_p)``; the root's
        ``G_0 = D_0`` and its head is ``root_translation`` (the rest root sits at the origin).

        Args:
            D: (B, J, 3, 3) per-bone delta rotations.
            root_translation: (B, 3) or None (zeros).
            bones: optional subset; only these and their ancestors are computed (others stay identity/zero).
        Returns:
            G (B, J, 3, 3) world delta rotations, heads (B, J, 3) posed joint positions.
        """
        D = np.asarray(D, dtype=np.float64)
        B, J = D.shape[:2]
        G = np.zeros((B, J, 3, 3))
        G[:] = np.eye(3)
        H = np.zeros((B, J, 3))
        todo = range(J) if bones is None else self.bones_needed(bones)
        for c in todo:
            p = self.parents[c]
            if p < 0:
                G[:, c] = D[:, c]
                H[:, c] = self.rest_heads[c] + (0.0 if root_translation is None else root_translation)
            else:
                G[:, c] = G[:, p] @ D[:, c]
                H[:, c] = H[:, p] + G[:, p] @ (self.rest_heads[c] - self.rest_heads[p])
        return G, H

    def transform_points(self, G: np.ndarray, H: np.ndarray, bone: np.ndarray, rest_points: np.ndarray) -> np.ndarray:
        """Posed position of rest points rigidly attached to bones: (B, N, 3) for bone (N,), points (N, 3)."""
        rel = rest_points - self.rest_heads[bone]
        return H[:, bone] + np.einsum("bnij,nj->bni", G[:, bone], rel)


_SKELETON_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_skeleton(model: BodyModel, phenotypes: np.ndarray | None = None) -> Skeleton:
    """Cached :class:`Skeleton` of ``model`` for ``phenotypes`` (default: the neutral body, all 0.5)."""
    ph = np.full(len(PHENOTYPES), 0.5) if phenotypes is None else np.asarray(phenotypes, dtype=np.float64)
    key = tuple(np.round(ph, 6).tolist())
    per_model = _SKELETON_CACHE.setdefault(model, {})
    if key not in per_model:
        if len(per_model) > 64:
            per_model.clear()
        per_model[key] = Skeleton.from_model(model, ph)
    return per_model[key]


# --------------------------------------------------------------------------------------------
# Anatomical angles <-> Anny bone rotations.
# --------------------------------------------------------------------------------------------

X, Y, Z = np.eye(3)

# Bones a joint drives, with the share of the joint's rotation each gets.
SPINE_BONES = (("spine05", 0.35), ("spine04", 0.35), ("spine03", 0.30))
CHEST_BONES = (("spine02", 0.5), ("spine01", 0.5))
NECK_BONES = (("neck01", 0.4), ("neck02", 0.3), ("neck03", 0.3))
HEAD_BONES = (("head", 1.0),)
CARRYING_ANGLE_DEG = 12.0  # elbow valgus in extension
LIMB_TWIST_SHARE = 0.5  # shoulder/hip twist split between the 01 bone and its 02 twist bone
# Finger curl: share of the "curl" angle at each phalanx (a 90° curl is a loose fist).
FINGER_CURL_SHARE = (1.0, 1.1, 0.8)
THUMB_CURL_SHARE = (0.3, 1.0, 0.9)
FINGER_SPREAD_SHARE = {2: 1.0, 3: 0.0, 4: -0.5, 5: -1.0}  # index fans one way, ring/little the other


@dataclass(frozen=True, eq=False)
class RomFrames:
    """The geometry (from a rest skeleton) that turns anatomical angles into bone rotations.

    All axes are for the LEFT side in rest world coordinates; the right side is mirrored.
    """

    skeleton: Skeleton
    arm_neutral: np.ndarray  # (3,3) N: rest upper arm -> hanging straight down, elbow hinge along -X
    elbow_hinge: np.ndarray  # (3,) oblique hinge (rest coordinates), positive rotation = flexion
    elbow_rest_flexion: float  # degrees the rest elbow is bent (for information)
    forearm_neutral: np.ndarray  # (3,3) local-ref delta of lowerarm01 in the neutral pose
    forearm_axis: np.ndarray  # (3,) rest forearm direction (distal)
    wrist_flex: np.ndarray
    wrist_dev: np.ndarray
    hand_axis: np.ndarray
    thigh_axis: np.ndarray  # (3,) rest thigh direction (distal)
    hip_flex: np.ndarray
    hip_abd: np.ndarray
    knee_hinge: np.ndarray
    shin_axis: np.ndarray
    finger_axes: dict  # bone name (left) -> (curl axis, spread axis)

    @classmethod
    def from_skeleton(cls, sk: Skeleton) -> RomFrames:
        h = lambda n: sk.rest_heads[sk.index(n)]  # noqa: E731
        # Arm: upper arm t0 (shoulder -> elbow), forearm s0 (elbow -> wrist).
        t0 = _unit(h("lowerarm01.L") - h("upperarm01.L"))
        s0 = _unit(h("wrist.L") - h("lowerarm01.L"))
        n0 = _unit(np.cross(t0, s0))  # positive rotation about n0 bends the elbow further
        rest_flex = float(np.degrees(np.arccos(np.clip(t0 @ s0, -1, 1))))
        N = _frame(-Z, -X) @ _frame(t0, n0).T  # neutral: arm down, hinge -X (forearm flexes forward)
        # Elbow: in extension the forearm deviates laterally by the carrying angle (so a hanging hand
        # clears the hip); the hinge is oblique, bisecting it, so full flexion folds the forearm
        # onto the upper arm.
        c = np.radians(CARRYING_ANGLE_DEG)
        f_neutral = np.array([np.sin(c), 0.0, -np.cos(c)])
        hinge_n = -_unit(f_neutral + Z)
        f_rest = N @ s0
        forearm_world = _frame(f_neutral, hinge_n) @ _frame(f_rest, N @ n0).T
        forearm_neutral = N.T @ forearm_world @ N
        # Hand: d along the hand, p the palm normal (the side the fingers curl to), u to the ulnar side.
        d = _unit(h("finger3-1.L") - h("wrist.L"))
        x3 = sk.rest_rot[sk.index("finger3-1.L")][:, 0]
        y3 = sk.rest_rot[sk.index("finger3-1.L")][:, 1]
        p = _perp(np.cross(x3, y3), d)  # curl (positive about the bone x axis) moves the tip along x × y
        u = _perp(_perp(h("finger5-1.L") - h("finger2-1.L"), d), p)
        wrist_flex = _unit(np.cross(d, p))
        wrist_dev = _unit(np.cross(d, u))
        # Leg: thigh t (hip -> knee), shin s (knee -> ankle); the knee hinge is X (checked: +X bends).
        tl = _unit(h("lowerleg01.L") - h("upperleg01.L"))
        sl = _unit(h("foot.L") - h("lowerleg01.L"))
        knee = _perp(X, tl)
        hip_flex = -knee
        hip_abd = np.cross(hip_flex, tl)
        fingers = {}
        for f in range(1, 6):
            for k in range(1, 4):
                name = f"finger{f}-{k}.L"
                R = sk.rest_rot[sk.index(name)]
                spread = np.zeros(3)
                if k == 1 and f >= 2:
                    away = _perp(h(name) - h("finger3-1.L"), R[:, 1]) if f != 3 else _perp(h("finger2-1.L") - h(name), R[:, 1])
                    spread = _perp(np.cross(R[:, 1], away), R[:, 0])  # perpendicular to the curl axis
                fingers[name] = (R[:, 0].copy(), spread)
        return cls(sk, N, N.T @ hinge_n, rest_flex, forearm_neutral, s0, wrist_flex, wrist_dev, d, tl, hip_flex, hip_abd, knee, sl, fingers)


_FRAMES_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_rom_frames(model: BodyModel) -> RomFrames:
    """The :class:`RomFrames` of the neutral body (angles mean the same for every body shape)."""
    if model not in _FRAMES_CACHE:
        _FRAMES_CACHE[model] = RomFrames.from_skeleton(get_skeleton(model))
    return _FRAMES_CACHE[model]


def _deg(a: np.ndarray) -> np.ndarray:
    return np.deg2rad(np.asarray(a, dtype=np.float64))


def _left_limb_rotations(fr: RomFrames, a: dict[str, np.ndarray], side: str) -> dict[str, np.ndarray]:
    """Bone rotations (LEFT-side geometry) for one side's limb angles. a[joint] is (B, 3) degrees."""
    s = side
    out: dict[str, np.ndarray] = {}
    N = fr.arm_neutral
    # Clavicle: protraction about -Z, elevation about -Y (the clavicle points to +X).
    c = a["clavicle"]
    C = rotvec_to_matrix(_deg(c[:, :1]) * -Z + _deg(c[:, 1:2]) * -Y)
    out["clavicle"] = C
    # Shoulder: swing (flexion about -X, abduction about -Y) of the hanging arm, twist about the arm
    # axis (-Z in neutral), applied to the neutral arm N; half the twist on the upperarm02 bone.
    # Measured against the chest, as clinical shoulder angles are: the clavicle's rotation is undone
    # (a shrug moves the shoulder joint, not the arm's direction).
    sh = a["shoulder"]
    swing = rotvec_to_matrix(_deg(sh[:, :1]) * -X + _deg(sh[:, 1:2]) * -Y)
    tw = axis_angle(-Z, sh[:, 2] * LIMB_TWIST_SHARE)
    out["upperarm01"] = np.swapaxes(C, -1, -2) @ swing @ tw @ N
    out["upperarm02"] = N.T @ axis_angle(-Z, sh[:, 2] * (1 - LIMB_TWIST_SHARE)) @ N
    # Elbow: hinge about the rest hinge, 0 = straight; pronation about the forearm on lowerarm02.
    e = a["elbow"]
    out["lowerarm01"] = axis_angle(fr.elbow_hinge, e[:, 0]) @ fr.forearm_neutral
    out["lowerarm02"] = axis_angle(fr.forearm_axis, e[:, 2])
    w = a["wrist"]
    out["wrist"] = rotvec_to_matrix(_deg(w[:, :1]) * fr.wrist_flex + _deg(w[:, 1:2]) * fr.wrist_dev)
    fg = a["fingers"]
    for name, (curl, spread) in fr.finger_axes.items():
        f, k = int(name[6]), int(name[8])
        base = name[:-2]
        share = (THUMB_CURL_SHARE if f == 1 else FINGER_CURL_SHARE)[k - 1]
        ang = fg[:, 2] if f == 1 else fg[:, 0]
        rv = _deg(ang * share)[:, None] * curl
        if k == 1 and f >= 2:
            rv = rv + _deg(fg[:, 1] * FINGER_SPREAD_SHARE[f])[:, None] * spread
        out[base] = rotvec_to_matrix(rv)
    # Hip: swing-twist about the rest thigh (rest = neutral).
    hp = a["hip"]
    swing = rotvec_to_matrix(_deg(hp[:, :1]) * fr.hip_flex + _deg(hp[:, 1:2]) * fr.hip_abd)
    out["upperleg01"] = swing @ axis_angle(fr.thigh_axis, hp[:, 2] * LIMB_TWIST_SHARE)
    out["upperleg02"] = axis_angle(fr.thigh_axis, hp[:, 2] * (1 - LIMB_TWIST_SHARE))
    k = a["knee"]
    out["lowerleg01"] = axis_angle(fr.knee_hinge, k[:, 0])
    out["lowerleg02"] = axis_angle(fr.shin_axis, k[:, 2])
    an = a["ankle"]
    out["foot"] = rotvec_to_matrix(_deg(an[:, :1]) * -X + _deg(an[:, 1:2]) * Y + _deg(an[:, 2:3]) * -Z)
    t = a["toes"]
    toe = axis_angle(-X, t[:, 0])
    for i in range(1, 6):
        out[f"toe{i}-1"] = toe
    del s
    return out


def angles_to_local(angles: np.ndarray, frames: RomFrames) -> np.ndarray:
    """Anatomical angles (B, J_rom, 3) degrees -> Anny local-ref delta rotations (B, 104, 3, 3).

    The root (bone 0) gets the pelvis tilt only; put the global rotation in front of it.
    """
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 3 or angles.shape[1:] != (NUM_ROM_JOINTS, 3):
        raise ValueError(f"angles must be (B, {NUM_ROM_JOINTS}, 3), got {angles.shape}")
    sk = frames.skeleton
    B = angles.shape[0]
    D = np.zeros((B, len(sk.labels), 3, 3))
    D[:] = np.eye(3)
    ang = {n: angles[:, i] for i, n in enumerate(ROM_JOINTS)}
    D[:, 0] = rotvec_to_matrix(_deg(ang["pelvis"][:, :1]) * X + _deg(ang["pelvis"][:, 1:2]) * Y)
    for joint, bones in (("spine", SPINE_BONES), ("chest", CHEST_BONES), ("neck", NECK_BONES), ("head", HEAD_BONES)):
        rv = _deg(ang[joint]) @ np.eye(3)  # (flexion about X, left bend about Y, left twist about Z)
        for bone, share in bones:
            D[:, sk.index(bone)] = rotvec_to_matrix(rv * share)
    for side in SIDES:
        limb = {j: ang[f"{j}.{side}"] for j in ("clavicle", "shoulder", "elbow", "wrist", "fingers", "hip", "knee", "ankle", "toes")}
        rots = _left_limb_rotations(frames, limb, side)
        for base, R in rots.items():
            if side == "R":
                R = MIRROR @ R @ MIRROR
            D[:, sk.index(f"{base}.{side}")] = R
    return D


def local_to_angles(D: np.ndarray, frames: RomFrames) -> np.ndarray:
    """Project Anny local-ref delta rotations (B, 104, 3, 3) onto the anatomical angles (B, J_rom, 3).

    Exact inverse of :func:`angles_to_local` for rotations it produced; otherwise a projection
    (rotations of bones outside the table are dropped, a wrist twist goes to forearm pronation).
    The root's delta is read as the pelvis tilt (its twist about Z is dropped: that is global yaw).
    """
    D = np.asarray(D, dtype=np.float64)
    sk = frames.skeleton
    B = D.shape[0]
    out = np.zeros((B, NUM_ROM_JOINTS, 3))
    idx = sk.index
    sw = split_root(D[:, 0])[1]
    out[:, joint_index("pelvis"), 0] = np.degrees(sw @ X)
    out[:, joint_index("pelvis"), 1] = np.degrees(sw @ Y)
    for joint, bones in (("spine", SPINE_BONES), ("chest", CHEST_BONES), ("neck", NECK_BONES), ("head", HEAD_BONES)):
        R = np.eye(3)[None].repeat(B, 0)
        for bone, _ in bones:
            R = R @ D[:, idx(bone)]
        out[:, joint_index(joint)] = np.degrees(matrix_to_rotvec(R))
    N = frames.arm_neutral
    for side in SIDES:
        def get(base):
            R = D[:, idx(f"{base}.{side}")]
            return MIRROR @ R @ MIRROR if side == "R" else R

        j = lambda n: joint_index(f"{n}.{side}")  # noqa: E731
        rv = matrix_to_rotvec(get("clavicle"))
        out[:, j("clavicle"), 0] = np.degrees(rv @ -Z)
        out[:, j("clavicle"), 1] = np.degrees(rv @ -Y)
        # Shoulder: Q = C · D01 · D02 · N^T = swing · twist(-Z).
        Q = get("clavicle") @ get("upperarm01") @ get("upperarm02") @ N.T
        swv, tw = swing_twist(Q, -Z)
        out[:, j("shoulder")] = np.degrees(np.stack([swv @ -X, swv @ -Y, tw], -1))
        rv = matrix_to_rotvec(get("lowerarm01") @ frames.forearm_neutral.T)
        out[:, j("elbow"), 0] = np.degrees(rv @ frames.elbow_hinge)
        pron = np.degrees(matrix_to_rotvec(get("lowerarm02")) @ frames.forearm_axis)
        swv, tw = swing_twist(get("wrist"), frames.hand_axis)
        out[:, j("elbow"), 2] = pron + np.degrees(tw)
        out[:, j("wrist"), 0] = np.degrees(swv @ frames.wrist_flex)
        out[:, j("wrist"), 1] = np.degrees(swv @ frames.wrist_dev)
        curl, thumb, spread = [], [], []
        for name, (cax, sax) in frames.finger_axes.items():
            f, k = int(name[6]), int(name[8])
            rv = matrix_to_rotvec(get(name[:-2]))
            share = (THUMB_CURL_SHARE if f == 1 else FINGER_CURL_SHARE)[k - 1]
            (thumb if f == 1 else curl).append(np.degrees(rv @ cax) / share)
            if k == 1 and f in (2, 5):
                spread.append(np.degrees(rv @ sax) / FINGER_SPREAD_SHARE[f])
        out[:, j("fingers")] = np.stack([np.mean(curl, 0), np.mean(spread, 0), np.mean(thumb, 0)], -1)
        Q = get("upperleg01") @ get("upperleg02")
        swv, tw = swing_twist(Q, frames.thigh_axis)
        out[:, j("hip")] = np.degrees(np.stack([swv @ frames.hip_flex, swv @ frames.hip_abd, tw], -1))
        out[:, j("knee"), 0] = np.degrees(matrix_to_rotvec(get("lowerleg01")) @ frames.knee_hinge)
        out[:, j("knee"), 2] = np.degrees(matrix_to_rotvec(get("lowerleg02")) @ frames.shin_axis)
        rv = matrix_to_rotvec(get("foot"))
        out[:, j("ankle")] = np.degrees(np.stack([rv @ -X, rv @ Y, rv @ -Z], -1))
        toes = [matrix_to_rotvec(get(f"toe{i}-1")) @ -X for i in range(1, 6)]
        out[:, j("toes"), 0] = np.degrees(np.mean(toes, 0))
    return out
