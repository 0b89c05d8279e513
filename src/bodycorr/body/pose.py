"""Pose sampling: anatomical joint angles within the range-of-motion table, without interpenetration.

A pose is :class:`Pose`: anatomical angles (degrees) for the joints of :data:`rom.ROM_TABLE`, a
global rotation and a translation. :class:`PoseSampler` draws from a mixture of

* ``archetype``: a named pose from :data:`ARCHETYPES` (sitting, kneeling, squatting, arms overhead,
  hands clasped, tree pose, ...), randomly mirrored left/right, perturbed within the ROM;
* ``interpolation``: a random point between two perturbed archetypes;
* ``independent``: every joint drawn on its own within the ROM (half uniform over the whole range,
  half near neutral), anatomically coupled joints (the spine segments twist and bend together, the
  clavicle follows arm elevation) sharing their motion;

then a global yaw (uniform over 360° by default) and optionally a small pitch/roll. Samples whose
limbs pass through the torso or through each other (:mod:`bodycorr.body.collision`) are rejected
and redrawn; :attr:`PoseSampler.stats` reports the rejection rate. By default the body is put on
the floor of the rest pose (the lowest point of the body at the rest feet's height), so squats and
kneeling poses go down rather than float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from bodycorr.body import rom
from bodycorr.body.anny_model import BodyModel, get_body_model
from bodycorr.body.collision import CapsuleBody
from bodycorr.common.errors import BodycorrError

Mode = Literal["archetype", "interpolation", "independent"]
MODES: tuple[str, ...] = ("archetype", "interpolation", "independent")

# --------------------------------------------------------------------------------------------
# Archetype poses. Degrees in the sense of rom.ROM_TABLE (axis order as there). A joint name
# without side ("shoulder") sets both sides; with a side ("shoulder.L") one side. One-sided poses
# are written for the left; the sampler mirrors every archetype half the time. Unlisted joints 0.
# The pelvis tilt is relative to upright (forward bends tilt it, the hips flex by as much to keep
# the legs vertical).
# --------------------------------------------------------------------------------------------
_RELAXED_ARMS = {"shoulder": (0, 8, 0), "elbow": (15, 0, 10), "fingers": (25, 5, 10)}

ARCHETYPES: dict[str, dict[str, tuple[float, float, float]]] = {
    # ---- standing, arms -------------------------------------------------------------------
    "stand_relaxed": {**_RELAXED_ARMS},
    "a_pose": {"shoulder": (0, 45, 0), "elbow": (20, 0, 0), "fingers": (15, 0, 0)},
    "t_pose": {"shoulder": (0, 90, 0), "fingers": (5, 0, 0)},
    "arms_overhead": {"clavicle": (0, 20, 0), "shoulder": (170, 10, 0), "elbow": (5, 0, 30), "fingers": (10, 0, 0)},
    "arms_up_v": {"clavicle": (0, 20, 0), "shoulder": (40, 150, 0), "elbow": (5, 0, 0), "fingers": (10, 0, 0)},
    "arms_forward": {"shoulder": (90, 0, 0), "elbow": (5, 0, 40), "fingers": (10, 0, 0)},
    "hands_clasped_front": {"shoulder": (25, 5, 45), "elbow": (85, 0, 40), "wrist": (10, 0, 0), "fingers": (45, 0, 30)},
    "hands_clasped_chest": {"shoulder": (30, 15, 60), "elbow": (120, 0, 0), "wrist": (-60, 0, 0), "fingers": (5, 0, 0)},
    "hands_clasped_overhead": {"clavicle": (0, 20, 0), "shoulder": (165, 30, 30), "elbow": (65, 0, 40), "fingers": (40, 0, 20)},
    "hands_behind_back": {"shoulder": (-50, 10, 55), "elbow": (75, 0, 0), "fingers": (30, 0, 0)},
    "hands_on_hips": {"shoulder": (-20, 43, 60), "elbow": (90, 0, 30), "wrist": (-60, 0, 0), "fingers": (10, 0, 0)},
    "hands_behind_head": {"clavicle": (0, 15, 0), "shoulder": (40, 115, -75), "elbow": (120, 0, 0), "fingers": (10, 0, 0)},
    "hand_on_head": {"clavicle.L": (0, 15, 0), "shoulder.L": (40, 120, -10), "elbow.L": (125, 0, 40), "fingers.L": (20, 0, 0),
                     "shoulder.R": (0, 8, 0), "elbow.R": (15, 0, 10), "fingers.R": (25, 5, 10)},
    "crossed_arms": {"shoulder.L": (60, 5, 65), "elbow.L": (115, 0, 60), "shoulder.R": (35, 12, 75), "elbow.R": (100, 0, 70),
                     "fingers": (40, 0, 0)},
    "phone_call": {"shoulder.L": (20, 20, 40), "elbow.L": (140, 0, 40), "fingers.L": (50, 0, 20), "head": (0, 10, 0),
                   "shoulder.R": (0, 8, 0), "elbow.R": (15, 0, 10), "fingers.R": (25, 5, 10)},
    "wave": {"clavicle.L": (0, 15, 0), "shoulder.L": (10, 100, -60), "elbow.L": (100, 0, 30), "fingers.L": (0, 15, 0),
             "shoulder.R": (0, 8, 0), "elbow.R": (15, 0, 10), "fingers.R": (25, 5, 10)},
    "scratch_back": {"clavicle.L": (0, 20, 0), "shoulder.L": (160, 20, -50), "elbow.L": (145, 0, 0),
                     "shoulder.R": (0, 8, 0), "elbow.R": (15, 0, 10)},
    "carry_front": {"shoulder": (10, 10, 0), "elbow": (90, 0, 60), "wrist": (-10, 0, 0), "fingers": (40, 0, 20)},
    "boxing_guard": {"shoulder": (30, 30, 40), "elbow": (130, 0, 60), "fingers": (90, 0, 40), "spine": (10, 0, 0),
                     "hip": (10, 0, 0), "knee": (15, 0, 0)},
    "reach_forward": {"shoulder.L": (100, 0, 0), "elbow.L": (5, 0, 50), "clavicle.L": (25, 5, 0), "chest": (5, 0, -20),
                      "spine": (10, 0, -10), "shoulder.R": (0, 10, 0), "elbow.R": (20, 0, 0)},
    "reach_up": {"shoulder.L": (175, 10, 0), "clavicle.L": (0, 30, 0), "elbow.L": (5, 0, 0), "spine": (0, -8, 0),
                 "chest": (0, -8, 0), "ankle": (-30, 0, 0), "toes": (40, 0, 0), "shoulder.R": (0, 25, 0), "elbow.R": (20, 0, 0)},
    "reach_side": {"shoulder.L": (10, 95, 0), "elbow.L": (5, 0, 0), "clavicle.L": (0, 10, 0), "spine": (0, 15, 0),
                   "chest": (0, 10, 0), "hip.R": (0, 20, 0), "shoulder.R": (0, 10, 0)},
    "pointing": {"shoulder.L": (80, 30, 0), "elbow.L": (5, 0, 80), "fingers.L": (60, 0, 40), "head": (0, 0, 15),
                 "shoulder.R": (0, 8, 0), "elbow.R": (15, 0, 10)},
    # ---- trunk ------------------------------------------------------------------------------
    "torso_twist": {"chest": (0, 0, 35), "spine": (0, 0, 15), "neck": (0, 0, 20), "shoulder.L": (-20, 30, 0),
                    "shoulder.R": (60, 30, 0), "elbow": (40, 0, 0)},
    "side_bend": {"spine": (0, 25, 0), "chest": (0, 20, 0), "shoulder.R": (0, 170, 0), "elbow.R": (10, 0, 0),
                  "clavicle.R": (0, 20, 0), "shoulder.L": (0, 35, 0), "elbow.L": (10, 0, 0)},
    "back_bend": {"pelvis": (-15, 0, 0), "spine": (-25, 0, 0), "chest": (-15, 0, 0), "neck": (-25, 0, 0),
                  "shoulder": (170, 10, 0), "clavicle": (0, 20, 0), "elbow": (5, 0, 0), "knee": (10, 0, 0)},
    "forward_bend": {"pelvis": (70, 0, 0), "hip": (70, 0, 0), "spine": (40, 0, 0), "chest": (20, 0, 0),
                     "neck": (-10, 0, 0), "shoulder": (125, 5, 0), "elbow": (10, 0, 0), "fingers": (20, 0, 0)},
    "toe_touch": {"pelvis": (85, 0, 0), "hip": (85, 0, 0), "spine": (40, 0, 0), "chest": (20, 0, 0),
                  "shoulder": (110, 5, 0)},
    "hands_on_knees": {"pelvis": (45, 0, 0), "hip": (65, 0, 0), "knee": (35, 0, 0), "ankle": (15, 0, 0), "spine": (15, 0, 0),
                       "shoulder": (65, 10, 20), "elbow": (5, 0, 40), "fingers": (30, 0, 0)},
    "look_up": {"neck": (-35, 0, 0), "head": (-20, 0, 0), **_RELAXED_ARMS},
    "look_down": {"neck": (35, 0, 0), "head": (15, 0, 0), "shoulder": (20, 5, 20), "elbow": (90, 0, 60), "fingers": (40, 0, 0)},
    "look_over_shoulder": {"neck": (0, 0, 35), "head": (0, 0, 35), "chest": (0, 0, 25), "shoulder": (0, 15, 0), "elbow": (15, 0, 10),
                           "fingers": (25, 5, 10)},
    # ---- squatting, sitting, kneeling --------------------------------------------------------
    "squat_deep": {"pelvis": (10, 0, 0), "hip": (125, 15, -15), "knee": (150, 0, 0), "ankle": (35, 0, 0),
                   "spine": (15, 0, 0), "chest": (10, 0, 0), "neck": (-20, 0, 0), "shoulder": (125, 10, 0), "elbow": (10, 0, 0)},
    "squat_parallel": {"pelvis": (35, 0, 0), "hip": (115, 10, -10), "knee": (110, 0, 0), "ankle": (30, 0, 0),
                       "spine": (10, 0, 0), "neck": (-20, 0, 0), "shoulder": (90, 0, 0), "elbow": (5, 0, 40)},
    "crouch_on_toes": {"pelvis": (20, 0, 0), "hip": (125, 15, -10), "knee": (155, 0, 0), "ankle": (-20, 0, 0), "toes": (60, 0, 0),
                       "spine": (15, 0, 0), "neck": (-25, 0, 0), "shoulder": (95, 15, 0), "elbow": (30, 0, 40)},
    "sit_chair": {"hip": (90, 5, 0), "knee": (90, 0, 0), "shoulder": (20, 8, 20), "elbow": (75, 0, 70), "fingers": (30, 0, 10)},
    "sit_chair_legs_crossed": {"hip.L": (105, -15, 10), "knee.L": (80, 0, 0), "ankle.L": (-20, 0, 0), "hip.R": (90, 0, 0),
                               "knee.R": (90, 0, 0), "shoulder": (20, 8, 20), "elbow": (75, 0, 70)},
    "sit_leaning_back": {"pelvis": (-25, 0, 0), "hip": (65, 5, 0), "knee": (60, 0, 0), "ankle": (-10, 0, 0),
                         "spine": (10, 0, 0), "neck": (15, 0, 0), "shoulder": (-10, 15, 0), "elbow": (70, 0, 60)},
    "sit_cross_legged": {"pelvis": (-10, 0, 0), "hip.L": (100, 40, -60), "knee.L": (140, 0, 0), "hip.R": (85, 45, -60),
                         "knee.R": (145, 0, 0), "ankle": (0, 30, 0), "spine": (15, 0, 0), "shoulder": (20, 28, 0),
                         "elbow": (25, 0, 60), "fingers": (30, 0, 0)},
    "sit_legs_straight": {"hip": (90, 5, -10), "spine": (10, 0, 0), "shoulder": (-30, 15, 0), "elbow": (0, 0, 0),
                          "wrist": (-60, 0, 0)},
    "sit_hugging_knees": {"hip": (110, 5, 0), "knee": (130, 0, 0), "ankle": (10, 0, 0), "spine": (20, 0, 0), "chest": (10, 0, 0),
                          "shoulder": (60, 25, 40), "elbow": (65, 0, 40), "fingers": (50, 0, 20)},
    "kneel_upright": {"knee": (95, 0, 0), "ankle": (-50, 0, 0), **_RELAXED_ARMS},
    "kneel_seiza": {"hip": (90, 5, 0), "knee": (155, 0, 0), "ankle": (-50, 0, 0), "spine": (5, 0, 0),
                    "shoulder": (25, 5, 20), "elbow": (70, 0, 60)},
    "kneel_one_knee": {"hip.R": (90, 5, 0), "knee.R": (90, 0, 0), "hip.L": (-10, 0, 0), "knee.L": (100, 0, 0),
                       "toes.L": (60, 0, 0), "shoulder": (10, 10, 0), "elbow": (40, 0, 40)},
    "kneel_on_all_fours": {"pelvis": (90, 0, 0), "hip": (90, 5, 0), "knee": (90, 0, 0), "ankle": (-50, 0, 0),
                           "spine": (-10, 0, 0), "neck": (-30, 0, 0), "shoulder": (90, 5, 0), "wrist": (-70, 0, 0)},
    "lunge": {"hip.L": (80, 5, 0), "knee.L": (90, 0, 0), "ankle.L": (10, 0, 0), "hip.R": (-25, 0, 0), "knee.R": (20, 0, 0),
              "ankle.R": (-20, 0, 0), "toes.R": (40, 0, 0), **_RELAXED_ARMS},
    # ---- legs ---------------------------------------------------------------------------------
    "tree_pose": {"hip.L": (44, 45, -58), "knee.L": (140, 0, 0), "ankle.L": (-20, 15, 0), "clavicle": (0, 20, 0),
                  "shoulder": (170, 45, 20), "elbow": (60, 0, 40)},
    "tree_pose_hands_chest": {"hip.L": (44, 45, -58), "knee.L": (140, 0, 0), "ankle.L": (-20, 15, 0),
                              "shoulder": (30, 15, 60), "elbow": (120, 0, 0), "wrist": (-60, 0, 0)},
    "knee_to_chest": {"hip.L": (120, 5, 0), "knee.L": (125, 0, 0), "shoulder": (50, 5, 30), "elbow": (70, 0, 40),
                      "fingers": (60, 0, 20)},
    "leg_raise_front": {"hip.L": (85, 0, 0), "ankle.L": (-20, 0, 0), "shoulder": (0, 90, 0)},
    "leg_raise_side": {"hip.L": (0, 50, 0), "spine": (0, -10, 0), "shoulder": (0, 70, 0)},
    "arabesque": {"pelvis": (40, 0, 0), "hip.R": (40, 0, 0), "hip.L": (-25, 0, 0), "spine": (-10, 0, 0),
                  "shoulder": (150, 10, 0), "neck": (-20, 0, 0)},
    "quad_stretch": {"hip.L": (-10, 0, 0), "knee.L": (150, 0, 0), "ankle.L": (-40, 0, 0), "shoulder.L": (-50, 12, 0),
                     "elbow.L": (15, 0, 0), "shoulder.R": (0, 60, 0)},
    "walk_contact": {"pelvis": (3, 0, 0), "hip.L": (25, 0, 0), "knee.L": (5, 0, 0), "hip.R": (-15, 0, 0), "knee.R": (20, 0, 0),
                     "ankle.R": (-15, 0, 0), "shoulder.L": (-20, 8, 0), "elbow.L": (15, 0, 10), "shoulder.R": (25, 8, 0),
                     "elbow.R": (30, 0, 10), "chest": (0, 0, -5), "fingers": (25, 0, 0)},
    "walk_passing": {"hip.L": (20, 0, 0), "knee.L": (60, 0, 0), "ankle.L": (5, 0, 0), "hip.R": (0, 0, 0), "knee.R": (10, 0, 0),
                     "shoulder.L": (-15, 10, 0), "shoulder.R": (15, 10, 0), "elbow": (20, 0, 10), "fingers": (25, 0, 0)},
    "run_flight": {"pelvis": (12, 0, 0), "hip.L": (65, 0, 0), "knee.L": (90, 0, 0), "ankle.L": (10, 0, 0), "hip.R": (-20, 0, 0),
                   "knee.R": (40, 0, 0), "ankle.R": (-30, 0, 0), "shoulder.L": (-45, 10, 0), "elbow.L": (90, 0, 30),
                   "shoulder.R": (50, 10, 0), "elbow.R": (90, 0, 30), "spine": (5, 0, 0), "chest": (0, 0, 10),
                   "fingers": (60, 0, 20)},
    "run_stance": {"pelvis": (10, 0, 0), "hip.L": (15, 0, 0), "knee.L": (40, 0, 0), "ankle.L": (20, 0, 0), "hip.R": (20, 0, 0),
                   "knee.R": (110, 0, 0), "shoulder.L": (40, 10, 0), "elbow.L": (90, 0, 30), "shoulder.R": (-35, 10, 0),
                   "elbow.R": (90, 0, 30), "fingers": (60, 0, 20)},
    "jumping_jack": {"shoulder": (0, 150, 0), "clavicle": (0, 20, 0), "hip": (0, 25, 0), "ankle": (-30, 0, 0), "elbow": (10, 0, 0)},
}  # fmt: skip


def archetype_angles(name: str) -> np.ndarray:
    """The (J, 3) degrees of one archetype (unperturbed, unmirrored)."""
    if name not in ARCHETYPES:
        raise BodycorrError(f"archetype {name!r}: unknown. Choose one of {', '.join(ARCHETYPES)}.")
    a = np.zeros((rom.NUM_ROM_JOINTS, 3))
    for key, v in ARCHETYPES[name].items():
        names = [key] if key in rom.ROM_JOINTS else [f"{key}.L", f"{key}.R"]
        for n in names:
            a[rom.joint_index(n)] = v
    return a


# --------------------------------------------------------------------------------------------
# Pose.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Pose:
    """A batch of body poses.

    Attributes:
        angles: (B, J, 3) degrees for :data:`rom.ROM_JOINTS` (axes as in :data:`rom.ROM_TABLE`).
        global_rotation: (B, 3, 3) applied on top of the pelvis tilt (yaw, optional pitch/roll).
        translation: (B, 3) metres, the root (pelvis) position.
        sources: (B,) where each pose came from ("archetype:squat_deep", "independent", ...).
    """

    angles: np.ndarray
    global_rotation: np.ndarray
    translation: np.ndarray
    sources: tuple[str, ...] = ()

    def __post_init__(self):
        B = self.angles.shape[0]
        if self.angles.shape != (B, rom.NUM_ROM_JOINTS, 3):
            raise ValueError(f"angles must be (B, {rom.NUM_ROM_JOINTS}, 3), got {self.angles.shape}")
        if self.global_rotation.shape != (B, 3, 3) or self.translation.shape != (B, 3):
            raise ValueError("global_rotation must be (B, 3, 3) and translation (B, 3)")
        if not self.sources:
            object.__setattr__(self, "sources", ("",) * B)

    def __len__(self) -> int:
        return self.angles.shape[0]

    def __getitem__(self, idx) -> Pose:
        idx = np.arange(len(self))[idx]
        idx = np.atleast_1d(idx)
        return Pose(self.angles[idx], self.global_rotation[idx], self.translation[idx], tuple(self.sources[i] for i in idx))

    @classmethod
    def rest(cls, n: int = 1) -> Pose:
        """Anatomical neutral (arms hanging, not Anny's A-pose rest)."""
        return cls(np.zeros((n, rom.NUM_ROM_JOINTS, 3)), np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)), ("rest",) * n)

    @classmethod
    def from_angles(cls, angles: np.ndarray, global_rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
                    sources: tuple[str, ...] = ()) -> Pose:  # fmt: skip
        a = np.asarray(angles, dtype=np.float64)
        a = a[None] if a.ndim == 2 else a
        n = len(a)
        g = np.tile(np.eye(3), (n, 1, 1)) if global_rotation is None else np.asarray(global_rotation, dtype=np.float64)
        t = np.zeros((n, 3)) if translation is None else np.asarray(translation, dtype=np.float64)
        return cls(a, g, t, sources)

    @staticmethod
    def concatenate(poses: list[Pose]) -> Pose:
        return Pose(
            np.concatenate([p.angles for p in poses]), np.concatenate([p.global_rotation for p in poses]),
            np.concatenate([p.translation for p in poses]), tuple(s for p in poses for s in p.sources),
        )  # fmt: skip

    def local_rotations(self, model: BodyModel) -> np.ndarray:
        """(B, 104, 3, 3) Anny local-ref rotations, the root's including the global rotation."""
        D = rom.angles_to_local(self.angles, rom.get_rom_frames(model))
        D[:, 0] = self.global_rotation @ D[:, 0]
        return D

    def to_anny(self, model: BodyModel | None = None) -> np.ndarray:
        """(B, 104, 4, 4) float32 Anny ``local-ref`` pose deltas (global rotation and translation on the root)."""
        model = get_body_model() if model is None else model
        D = self.local_rotations(model)
        out = np.zeros(D.shape[:2] + (4, 4), dtype=np.float32)
        out[..., :3, :3] = D
        out[..., 3, 3] = 1.0
        out[:, 0, :3, 3] = self.translation
        return out

    def mirror(self) -> Pose:
        """The left/right mirror image (x -> -x): sides swap, centre joints' bends and twists flip."""
        a = self.angles[:, rom.MIRROR_PERMUTATION] * rom.MIRROR_SIGNS
        M = rom.MIRROR
        t = self.translation * np.array([-1.0, 1.0, 1.0])
        return Pose(a, M @ self.global_rotation @ M, t, tuple(s + ":mirror" for s in self.sources))


# --------------------------------------------------------------------------------------------
# Sampler.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseSamplerConfig:
    """How poses are drawn.

    Attributes:
        mode_weights: (archetype, interpolation, independent) mixture weights.
        archetypes: which archetypes to use (default: all of :data:`ARCHETYPES`).
        perturbation_deg: s.d. of the Gaussian noise added to archetype angles (scaled down for
            joints with a small range: at most 15 % of the range).
        mirror_probability: chance an archetype (or an interpolation end) is mirrored left/right.
        independent_uniform: share of independent angles drawn uniformly over the whole range
            (the rest: a Gaussian around neutral with s.d. 20 % of the range).
        yaw: "uniform" over 360° or "none" (facing −Y).
        tilt_deg: maximum |pitch| and |roll| of an extra global tilt (0: upright bodies).
        collision: "reject" poses with limbs through the torso or each other, or "off".
        collision_tolerance: allowed capsule overlap, as a fraction of the thinner radius.
        grounding: "floor" puts the lowest body point on the rest pose's floor; "none" keeps the
            pelvis at the origin.
        max_rounds: give up (error) after this many rounds of rejection.
    """

    mode_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)
    archetypes: tuple[str, ...] = tuple(ARCHETYPES)
    perturbation_deg: float = 8.0
    mirror_probability: float = 0.5
    independent_uniform: float = 0.5
    yaw: Literal["uniform", "none"] = "uniform"
    tilt_deg: float = 0.0
    collision: Literal["reject", "off"] = "reject"
    collision_tolerance: float = 0.4
    grounding: Literal["floor", "none"] = "floor"
    max_rounds: int = 200

    def __post_init__(self):
        w = np.asarray(self.mode_weights, dtype=np.float64)
        if w.shape != (3,) or (w < 0).any() or w.sum() <= 0:
            raise BodycorrError(f"PoseSamplerConfig.mode_weights {self.mode_weights}: need 3 non-negative weights, not all 0.")
        unknown = [a for a in self.archetypes if a not in ARCHETYPES]
        if unknown:
            raise BodycorrError(f"PoseSamplerConfig.archetypes: unknown {unknown}. Choose from {', '.join(ARCHETYPES)}.")
        if self.yaw not in ("uniform", "none") or self.collision not in ("reject", "off") or self.grounding not in ("floor", "none"):
            raise BodycorrError("PoseSamplerConfig: yaw must be uniform|none, collision reject|off, grounding floor|none.")


@dataclass
class _Counts:
    candidates: dict[str, int] = field(default_factory=lambda: {m: 0 for m in MODES})
    accepted: dict[str, int] = field(default_factory=lambda: {m: 0 for m in MODES})


class PoseSampler:
    """Draws collision-free poses; see the module docstring.

    ``sample(n, rng)`` returns exactly ``n`` accepted poses, reproducibly for a given generator state.
    """

    def __init__(self, config: PoseSamplerConfig | None = None, model: BodyModel | None = None):
        self.config = PoseSamplerConfig() if config is None else config
        self.model = get_body_model() if model is None else model
        self.frames = rom.get_rom_frames(self.model)
        self.skeleton = self.frames.skeleton
        self.capsules = CapsuleBody.from_skeleton(self.skeleton)
        self._archetypes = np.stack([archetype_angles(a) for a in self.config.archetypes])
        self._counts = _Counts()
        lo, hi = rom.ROM_RANGES[..., 0], rom.ROM_RANGES[..., 1]
        self._span = hi - lo
        self._noise_sd = np.minimum(self.config.perturbation_deg, 0.15 * self._span)
        self._archetype_p = self._archetype_weights()
        # Floor height: the lowest capsule point of the rest skeleton in anatomical neutral.
        self._floor = float(self._lowest(np.zeros((1, rom.NUM_ROM_JOINTS, 3)), np.eye(3)[None])[0])

    def _archetype_weights(self, trials: int = 24) -> np.ndarray:
        """Archetype draw probabilities that even out the collision test's rejections: contact poses
        (hands clasped, sitting cross-legged) fail more often once perturbed, and would otherwise be
        thinned out of the accepted poses. Estimated once, with a fixed seed, ∝ 1 / acceptance."""
        n = len(self._archetypes)
        if self.config.collision != "reject" or n == 1:
            return np.full(n, 1.0 / n)
        rng = np.random.default_rng(12345)
        a = np.repeat(self._archetypes, trials, axis=0)
        mir = rng.random(len(a)) < self.config.mirror_probability
        a[mir] = a[mir][:, rom.MIRROR_PERMUTATION] * rom.MIRROR_SIGNS
        a = rom.clip_to_rom(a + rng.normal(size=a.shape) * self._noise_sd)
        ok, _ = self.capsules.check(rom.angles_to_local(a, self.frames), self.config.collision_tolerance)
        acc = ok.reshape(n, trials).mean(1)
        w = 1.0 / np.maximum(acc, 0.15)
        return w / w.sum()

    # -- statistics ----------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Candidates drawn, accepted, and rejection rates (overall and per mode) since construction."""
        c, a = self._counts.candidates, self._counts.accepted
        tot_c, tot_a = sum(c.values()), sum(a.values())
        rate = lambda cc, aa: (1.0 - aa / cc) if cc else 0.0  # noqa: E731
        return {
            "candidates": tot_c, "accepted": tot_a, "rejection_rate": rate(tot_c, tot_a),
            "per_mode": {m: {"candidates": c[m], "accepted": a[m], "rejection_rate": rate(c[m], a[m])} for m in MODES},
        }  # fmt: skip

    def reset_stats(self) -> None:
        self._counts = _Counts()

    # -- drawing angles -------------------------------------------------------------------------
    def _perturbed_archetypes(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        k = rng.choice(len(self._archetypes), size=n, p=self._archetype_p)
        a = self._archetypes[k].copy()
        mir = rng.random(n) < self.config.mirror_probability
        a[mir] = a[mir][:, rom.MIRROR_PERMUTATION] * rom.MIRROR_SIGNS
        a += rng.normal(size=a.shape) * self._noise_sd
        names = [self.config.archetypes[i] + (":mirror" if m else "") for i, m in zip(k, mir)]
        return rom.clip_to_rom(a), names

    def _independent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = rom.ROM_RANGES[..., 0], rom.ROM_RANGES[..., 1]
        uni = lo + rng.random((n,) + lo.shape) * self._span
        near = np.clip(rng.normal(size=uni.shape) * 0.2 * self._span, lo, hi)
        a = np.where(rng.random(uni.shape) < self.config.independent_uniform, uni, near)
        j = rom.joint_index
        # Couplings: the spine segments bend and twist together (chest and neck follow the lumbar
        # spine's direction with their own range), the clavicle rises with the arm, the pelvis tilt
        # is shared by the hips (a tilted trunk with vertical legs).
        for k in (1, 2):
            s = a[:, j("spine"), k] / rom.ROM_RANGES[j("spine"), k, 1]
            for name, w in (("chest", 0.7), ("neck", 0.4)):
                a[:, j(name), k] = w * s * rom.ROM_RANGES[j(name), k, 1] + (1 - w) * a[:, j(name), k]
        for s in rom.SIDES:
            sh = a[:, j(f"shoulder.{s}")]
            elevation = np.hypot(np.maximum(sh[:, 0], 0), np.maximum(sh[:, 1], 0))
            a[:, j(f"clavicle.{s}"), 1] = 0.5 * a[:, j(f"clavicle.{s}"), 1] + 0.2 * np.maximum(elevation - 60, 0)
            a[:, j(f"hip.{s}"), 0] += a[:, j("pelvis"), 0] * 0.8
        return rom.clip_to_rom(a)

    def _draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
        w = np.asarray(self.config.mode_weights, dtype=np.float64)
        mode = rng.choice(3, size=n, p=w / w.sum())
        angles = np.zeros((n, rom.NUM_ROM_JOINTS, 3))
        sources = [""] * n
        idx = np.flatnonzero(mode == 0)
        if len(idx):
            a, names = self._perturbed_archetypes(len(idx), rng)
            angles[idx] = a
            for i, nm in zip(idx, names):
                sources[i] = f"archetype:{nm}"
        idx = np.flatnonzero(mode == 1)
        if len(idx):
            a, na = self._perturbed_archetypes(len(idx), rng)
            b, nb = self._perturbed_archetypes(len(idx), rng)
            t = rng.random(len(idx))[:, None, None]
            angles[idx] = rom.clip_to_rom((1 - t) * a + t * b)
            for i, x, y in zip(idx, na, nb):
                sources[i] = f"interpolation:{x}+{y}"
        idx = np.flatnonzero(mode == 2)
        if len(idx):
            angles[idx] = self._independent(len(idx), rng)
            for i in idx:
                sources[i] = "independent"
        return angles, mode, sources

    def _global(self, n: int, rng: np.random.Generator) -> np.ndarray:
        yaw = rng.uniform(0, 2 * np.pi, n) if self.config.yaw == "uniform" else np.zeros(n)
        R = rom.rotvec_to_matrix(yaw[:, None] * rom.Z)
        if self.config.tilt_deg > 0:
            pr = np.deg2rad(rng.uniform(-self.config.tilt_deg, self.config.tilt_deg, (n, 2)))
            R = R @ rom.rotvec_to_matrix(pr[:, :1] * rom.X + pr[:, 1:] * rom.Y)
        return R

    def _lowest(self, angles: np.ndarray, global_rotation: np.ndarray) -> np.ndarray:
        D = rom.angles_to_local(angles, self.frames)
        D[:, 0] = global_rotation @ D[:, 0]
        G, H = self.skeleton.fk(D, bones=self.capsules.bones)
        return self._lowest_from_fk(G, H)

    def _lowest_from_fk(self, G: np.ndarray, H: np.ndarray) -> np.ndarray:
        A, B = self.capsules.endpoints(G, H)
        r = self.capsules.radius
        return np.minimum((A[..., 2] - r).min(1), (B[..., 2] - r).min(1))

    def evaluate(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """(ok (B,), worst relative overlap (B,)) of given poses under this sampler's collision test."""
        return self.capsules.check(rom.angles_to_local(pose.angles, self.frames), self.config.collision_tolerance)

    def ground(self, pose: Pose) -> Pose:
        """The same poses with the translation that puts the lowest body point on the floor."""
        low = self._lowest(pose.angles, pose.global_rotation)
        t = np.zeros((len(pose), 3))
        t[:, 2] = self._floor - low
        return replace(pose, translation=t)

    def sample(self, n: int, rng: np.random.Generator) -> Pose:
        """``n`` accepted poses."""
        return self.sample_each([rng], n)

    def sample_each(self, rngs: Sequence[np.random.Generator], n: int = 1) -> Pose:
        """``n`` accepted poses from each generator, in order: exactly ``Pose.concatenate([sample(n,
        rng) for rng in rngs])`` (the same draws, bit for bit, and the same stats), but the
        kinematics and collision tests of all generators' candidates run batched, and only as far
        as each generator needs (in order: its first acceptable candidates are what
        :meth:`sample` keeps); this is what makes posing many bodies, each with its own random
        stream, fast.
        """
        if n <= 0 or not len(rngs):
            return Pose(np.zeros((0, rom.NUM_ROM_JOINTS, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3)))
        cfg = self.config
        out: list[list[Pose]] = [[] for _ in rngs]
        have = [0] * len(rngs)
        for _ in range(cfg.max_rounds):
            active = [k for k in range(len(rngs)) if have[k] < n]
            if not active:
                break
            # Each generator draws its candidates exactly as sample() does (draw, then global
            # rotation, one batch per round); the geometry is then done for all of them at once.
            draws = []
            for k in active:
                batch = max(8, int(np.ceil((n - have[k]) * 1.4)) + 2)
                angles, mode, sources = self._draw(batch, rngs[k])
                draws.append((angles, mode, sources, self._global(batch, rngs[k])))
            sizes = np.array([len(d[0]) for d in draws])
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            angles_all = np.concatenate([d[0] for d in draws])
            D = rom.angles_to_local(angles_all, self.frames)
            D[:, 0] = np.concatenate([d[3] for d in draws]) @ D[:, 0]
            # Test candidates in order, a few per generator at a time, until each has the poses it
            # needs: the first ``need`` acceptable candidates are kept, as when all are tested.
            ok_all = np.zeros(len(D), bool)
            low_all = np.zeros(len(D))
            tested = np.zeros(len(active), dtype=np.int64)
            found = np.zeros(len(active), dtype=np.int64)
            needs = np.array([n - have[k] for k in active])
            while True:
                want = np.minimum(sizes - tested, np.maximum(needs - found, 0))
                if not want.any():
                    break
                idx = np.concatenate([starts[a] + tested[a] + np.arange(want[a]) for a in range(len(active))])
                G, H = self.skeleton.fk(D[idx], bones=self.capsules.bones)
                if cfg.collision == "reject":
                    ok_all[idx] = self.capsules.penetration(G, H).max(1) <= cfg.collision_tolerance
                else:
                    ok_all[idx] = True
                if cfg.grounding == "floor":
                    low_all[idx] = self._lowest_from_fk(G, H)
                owner = np.repeat(np.arange(len(active)), want)
                found += np.bincount(owner, weights=ok_all[idx], minlength=len(active)).astype(np.int64)
                tested += want
            for a, (k, (angles, mode, sources, R)) in enumerate(zip(active, draws)):
                batch = len(angles)
                sl = slice(starts[a], starts[a] + batch)
                need = n - have[k]
                ok = ok_all[sl]
                for m in range(3):
                    self._counts.candidates[MODES[m]] += int((mode == m).sum())
                keep = np.flatnonzero(ok)[:need]
                # Candidates past the ones kept were never looked at: do not count them.
                if len(keep) == need and need < batch:
                    last = keep[-1]
                    for m in range(3):
                        self._counts.candidates[MODES[m]] -= int((mode[last + 1 :] == m).sum())
                for m in range(3):
                    self._counts.accepted[MODES[m]] += int((mode[keep] == m).sum())
                t = np.zeros((len(keep), 3))
                if cfg.grounding == "floor":
                    t[:, 2] = self._floor - low_all[sl][keep]
                out[k].append(Pose(angles[keep], R[keep], t, tuple(sources[i] for i in keep)))
                have[k] += len(keep)
        if min(have) < n:
            raise BodycorrError(
                f"pose sampler: only {min(have)} of {n} poses accepted after {cfg.max_rounds} rounds. "
                "Loosen collision_tolerance or change mode_weights/archetypes."
            )
        return Pose.concatenate([p for per in out for p in per])


def coverage_report(poses: Pose, bin_deg: float = 10.0) -> dict[str, dict[str, dict[str, float]]]:
    """Per joint and axis: how much of the ROM range the poses' angles spread over.

    Returns:
        {joint: {axis: {"lo", "hi" (the table's range), "min", "max" (sampled), "coverage" (share of
        the range's ``bin_deg`` bins hit by at least one sample), "spread" ((max − min) / range)}}}.
        Axes with an empty range are left out.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    A = np.asarray(poses.angles if isinstance(poses, Pose) else poses, dtype=np.float64)
    for j, name in enumerate(rom.ROM_JOINTS):
        row = {}
        for k in range(3):
            lo, hi = rom.ROM_RANGES[j, k]
            if hi - lo <= 0:
                continue
            x = A[:, j, k]
            nb = max(1, int(np.ceil((hi - lo) / bin_deg)))
            b = np.clip(((x - lo) / (hi - lo) * nb).astype(int), 0, nb - 1)
            row[rom.ROM_AXES[j][k]] = {
                "lo": float(lo), "hi": float(hi), "min": float(x.min()) if len(x) else float("nan"),
                "max": float(x.max()) if len(x) else float("nan"), "coverage": len(np.unique(b)) / nb if len(x) else 0.0,
                "spread": float((x.max() - x.min()) / (hi - lo)) if len(x) else 0.0,
            }  # fmt: skip
        out[name] = row
    return out


def format_coverage(report: dict) -> str:
    """A readable table of :func:`coverage_report`."""
    lines = [f"{'joint':13s} {'axis':18s} {'range':>12s} {'sampled':>16s} {'bins hit':>8s}"]
    for joint, axes in report.items():
        for axis, r in axes.items():
            lines.append(
                f"{joint:13s} {axis:18s} {r['lo']:5.0f}..{r['hi']:<5.0f} {r['min']:7.1f}..{r['max']:<7.1f} {100 * r['coverage']:7.0f}%"
            )
    return "\n".join(lines)
