"""Appearance of synthetic people for RGB views: skin, clothes, hair, shading, backgrounds, occluders, jitter.

Everything about a person is defined on the body itself (Anny's full topology, V = 13,718 vertices)
through :class:`BodyCoords`: each vertex's position in the neutral rest template, its body part, and
an along-limb coordinate. Regions (skin, top, bottom, shoes, hair, ...) and patterns (stripes,
checks, dots) are functions of those coordinates, so they follow the body in any pose and shape and
can be evaluated per vertex or per pixel (coordinates interpolated with barycentrics).

Hair volume and loose clothes are per-vertex outward offsets along vertex normals
(:func:`vertex_offsets`, :func:`displace`). The displaced mesh keeps Anny's topology, so a ray hit on
it (Anny face + barycentrics) maps through :func:`bodycorr.render.truth.body_truth` to the body
point under the hair or cloth: the truth BodyMap asks for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from bodycorr.body.anny_model import PHENOTYPES, get_body_model
from bodycorr.body.template import PART_NAMES, Template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError

COORDS_VERSION = 1

# Region labels (per vertex or pixel).
SKIN, TOP, BOTTOM, SHOES, HAIR, EYE, BROW, LIPS = range(8)
REGION_NAMES: tuple[str, ...] = ("skin", "top", "bottom", "shoes", "hair", "eye", "brow", "lips")

_P = {n: i for i, n in enumerate(PART_NAMES)}
_HEAD, _TORSO = _P["head"], _P["torso"]
_ARMS = np.array([_P[f"{p}.{s}"] for p in ("upper_arm", "lower_arm") for s in "LR"])
_LEGS = np.array([_P[f"{p}.{s}"] for p in ("upper_leg", "lower_leg") for s in "LR"])
_LOWER_LEGS = np.array([_P["lower_leg.L"], _P["lower_leg.R"]])
_FEET = np.array([_P["foot.L"], _P["foot.R"]])

# Skin tones from very light to very dark (sRGB in [0, 1]); a person's tone is a point on this line.
SKIN_TONES = np.array(
    [[255, 229, 210], [241, 204, 170], [224, 178, 140], [198, 144, 104], [160, 108, 72],
     [120, 76, 48], [86, 54, 36], [58, 38, 28]], dtype=np.float64,
) / 255.0  # fmt: skip
HAIR_COLOURS = np.array(
    [[20, 16, 14], [45, 30, 22], [80, 52, 32], [120, 80, 45], [150, 75, 40], [190, 150, 90],
     [225, 195, 140], [170, 165, 160], [225, 222, 215]], dtype=np.float64,
) / 255.0  # fmt: skip
HAIR_WEIGHTS = np.array([0.22, 0.22, 0.16, 0.1, 0.05, 0.08, 0.07, 0.06, 0.04])


# ------------------------------------------------------------------------------------------------
# Body coordinates.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BodyCoords:
    """Where each Anny vertex sits on the body, in the neutral rest template (Z up, facing −Y, left +X).

    Attributes:
        rest: (V, 3) float32 rest position of each Anny vertex (neutral phenotypes, rest A-pose).
        normal: (V, 3) float32 unit rest vertex normal.
        part: (V,) int16 index into :data:`PART_NAMES`; -1 for eyes and tongue.
        limb: (V,) float32 along-limb coordinate: arms 0 at the shoulder, 0.5 at the elbow, 1 at
            the wrist (above 1 on the hand); legs 0 at the hip, 0.5 knee, 1 ankle (above 1 on
            the foot); 0 on head and torso.
        head: (3,) rest position of the head joint.
        neck_z: rest height of the neck base (the neck01 joint).
    """

    rest: np.ndarray
    normal: np.ndarray
    part: np.ndarray
    limb: np.ndarray
    head: np.ndarray
    neck_z: float

    @property
    def num_vertices(self) -> int:
        return int(self.rest.shape[0])


_INCIDENCE: dict[int, tuple[np.ndarray, sp.csr_matrix]] = {}


def _incidence(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """(V, F) sparse vertex-face incidence, cached per faces array object (the body's faces)."""
    hit = _INCIDENCE.get(id(faces))
    if hit is not None and hit[0] is faces and hit[1].shape[0] == num_vertices:
        return hit[1]
    f = np.asarray(faces, dtype=np.int64)
    a = sp.csr_matrix((np.ones(f.size, dtype=np.float32), (f.ravel(), np.repeat(np.arange(len(f)), 3))), shape=(num_vertices, len(f)))
    if len(_INCIDENCE) > 8:
        _INCIDENCE.clear()
    _INCIDENCE[id(faces)] = (faces, a)
    return a


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 area-weighted unit vertex normals. vertices: (V, 3), faces: (F, 3)."""
    v = np.asarray(vertices, dtype=np.float32)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = _incidence(faces, len(v)) @ n
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0).astype(np.float32)


def _segment_t(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    return np.clip((p - a) @ d / float(d @ d), 0.0, 1.0)


def _build_coords(template: Template) -> dict[str, np.ndarray]:
    model = get_body_model()
    posed = model(np.full((1, len(PHENOTYPES)), 0.5))
    rest = posed.vertices[0].astype(np.float64)
    joint = {n: posed.bone_heads[0, i].astype(np.float64) for i, n in enumerate(model.bone_labels)}
    part = -np.ones(len(rest), dtype=np.int16)
    part[template.template_to_full] = template.parts
    limb = np.zeros(len(rest), dtype=np.float64)
    for s in "LR":
        chains = (("arm", "upperarm01", "lowerarm01", "wrist", "hand"), ("leg", "upperleg01", "lowerleg01", "foot", "foot"))
        for name, j0, j1, j2, end in chains:
            a, b, c = joint[f"{j0}.{s}"], joint[f"{j1}.{s}"], joint[f"{j2}.{s}"]
            up = part == _P[f"upper_{name}.{s}"]
            lo = part == _P[f"lower_{name}.{s}"]
            ex = part == _P[f"{end}.{s}"]
            limb[up] = 0.5 * _segment_t(rest[up], a, b)
            limb[lo] = 0.5 + 0.5 * _segment_t(rest[lo], b, c)
            limb[ex] = 1.0 + np.linalg.norm(rest[ex] - c, axis=1) / 0.2
    return dict(
        rest=rest.astype(np.float32), normal=vertex_normals(rest, model.faces), part=part,
        limb=limb.astype(np.float32), head=joint["head"], neck_z=np.array(joint["neck01"][2]),
    )  # fmt: skip


@functools.lru_cache(maxsize=2)
def body_coords(template: Template) -> BodyCoords:
    """The :class:`BodyCoords` of Anny's vertices for ``template`` (built once, cached on disk)."""
    key = content_hash("body-coords", COORDS_VERSION, template.mesh.vertices, template.parts, template.template_to_full)
    a = cached_arrays("body-coords", key, lambda: _build_coords(template))
    return BodyCoords(rest=a["rest"], normal=a["normal"], part=a["part"], limb=a["limb"], head=a["head"], neck_z=float(a["neck_z"]))


@dataclass(frozen=True, eq=False)
class SurfacePoints:
    """Body coordinates of N surface points (vertices, or pixels interpolated with barycentrics).

    Attributes:
        rest: (N, 3) rest position. normal: (N, 3) rest normal (not normalised for pixels).
        part: (N,) int part of the nearest vertex (-1 eyes/tongue). limb: (N,) along-limb coordinate.
    """

    rest: np.ndarray
    normal: np.ndarray
    part: np.ndarray
    limb: np.ndarray

    def __len__(self) -> int:
        return int(self.part.shape[0])


def vertex_points(coords: BodyCoords) -> SurfacePoints:
    """The V vertices themselves as :class:`SurfacePoints`."""
    return SurfacePoints(coords.rest, coords.normal, coords.part.astype(np.int64), coords.limb)


def surface_points(coords: BodyCoords, faces: np.ndarray, full_face: np.ndarray, bary: np.ndarray) -> SurfacePoints:
    """Interpolate body coordinates at points given by Anny face ids (N,) and barycentrics (N, 3).

    ``faces`` is Anny's (F, 3) face array. The part is the nearest corner's (largest barycentric).
    """
    tri = faces[np.asarray(full_face, dtype=np.int64)]
    b = np.asarray(bary, dtype=np.float32)
    nearest = tri[np.arange(len(tri)), b.argmax(1)]
    return SurfacePoints(
        rest=np.einsum("nk,nkd->nd", b, coords.rest[tri]),
        normal=np.einsum("nk,nkd->nd", b, coords.normal[tri]),
        part=coords.part[nearest].astype(np.int64),
        limb=np.einsum("nk,nk->n", b, coords.limb[tri]),
    )


# ------------------------------------------------------------------------------------------------
# Appearance parameters.
# ------------------------------------------------------------------------------------------------

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Pattern:
    """A fabric pattern evaluated in rest-pose body coordinates (metres), so it follows the body.

    Attributes:
        kind: "solid", "stripes" (bands across ``direction``), "checks" (two crossed band sets) or
            "dots" (spheres on a 3D lattice: round spots on the surface).
        colour, colour2: sRGB in [0, 1]: ground and pattern colour.
        period: pattern period in metres.
        direction: (3,) unit vector across the stripes (rest-pose axes).
        duty: fraction of each period in ``colour2`` (stripes, checks) or dot radius / period.
        phase: (3,) offset of the pattern, in periods.
        texture: amplitude of a low-contrast weave modulation (0 = flat colour).
    """

    kind: Literal["solid", "stripes", "checks", "dots"] = "solid"
    colour: Colour = (0.5, 0.5, 0.5)
    colour2: Colour = (0.9, 0.9, 0.9)
    period: float = 0.06
    direction: Colour = (0.0, 0.0, 1.0)
    duty: float = 0.5
    phase: Colour = (0.0, 0.0, 0.0)
    texture: float = 0.04


@dataclass(frozen=True)
class Appearance:
    """The look of one person (all heights and offsets in metres, in rest template coordinates).

    Attributes:
        skin: skin colour, sRGB in [0, 1].
        top: pattern of the top (shirt, sweater, dress bodice).
        sleeve: arm coordinate where sleeves end (0 sleeveless, 0.5 elbow, 1 wrist).
        top_hem: rest height where the top ends (the hip joint is at 0, the neck base ~0.51).
        neckline: (half width, depth) of the neck opening.
        top_loose: outward offset of the top (tight 0.003 to loose 0.03).
        bottom_kind: "trousers", "skirt" or "dress" (a skirt in the top's pattern).
        bottom: pattern of trousers / skirt.
        bottom_length: leg coordinate where the legs' cover ends (0 hip, 0.5 knee, 1 ankle).
        waist: rest height of the waistband.
        bottom_loose: outward offset at the waist; bottom_flare: extra offset at the hem.
        tucked: whether the top is tucked into the bottom.
        shoes: pattern of the shoes; boot: how far up the leg they reach (leg coordinate, 0 = shoes).
        hair: hair colour; hairline: (front, side, back) hairline height above the head joint
            (the back of the head and neck, -0.12 reaching the neck base);
        hair_volume: outward offset of the hair on the crown; hair_long: how far below the neck
            base long hair covers the back (0 = none); bald: no hair; hair_phase: where the
            hairline and the tips of long hair wave.
        lips: whether the lips are a little darker than the skin.
    """

    skin: Colour
    top: Pattern
    sleeve: float
    top_hem: float
    neckline: tuple[float, float]
    top_loose: float
    bottom_kind: Literal["trousers", "skirt", "dress"]
    bottom: Pattern
    bottom_length: float
    waist: float
    bottom_loose: float
    bottom_flare: float
    tucked: bool
    shoes: Pattern
    boot: float
    hair: Colour
    hairline: tuple[float, float, float]
    hair_volume: float
    hair_long: float
    bald: bool = False
    lips: bool = True
    hair_phase: float = 0.0


def _hsv_to_rgb(h: float, s: float, v: float) -> Colour:
    i = int(h * 6.0) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (float(r), float(g), float(b))


def _garment_colour(rng: np.random.Generator, kind: Literal["any", "bottom", "shoes"] = "any") -> Colour:
    u = rng.random()
    if kind == "bottom" and u < 0.35:  # denim
        return _hsv_to_rgb(rng.uniform(0.57, 0.64), rng.uniform(0.3, 0.65), rng.uniform(0.2, 0.65))
    if kind == "shoes" and u < 0.6:
        return _hsv_to_rgb(rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.5), rng.uniform(0.05, 0.35))
    if u < 0.3 or (kind == "shoes" and u < 0.8):  # black, white, greys
        value = (rng.uniform(0.05, 0.25), rng.uniform(0.3, 0.7), rng.uniform(0.8, 0.97))[int(rng.integers(3))]
        return _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.12), value)
    s = rng.uniform(0.15, 0.5) if rng.random() < 0.55 else rng.uniform(0.5, 0.9)
    return _hsv_to_rgb(rng.random(), s, rng.uniform(0.2, 0.95))


def _unit(v: np.ndarray) -> Colour:
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def sample_pattern(rng: np.random.Generator, colour: Colour, plain_share: float = 0.45) -> Pattern:
    """A random :class:`Pattern` with ground ``colour`` (solid with probability ``plain_share``)."""
    u = rng.random()
    kind = "solid" if u < plain_share else ("stripes", "checks", "dots")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    c2 = _garment_colour(rng)
    if rng.random() < 0.4:  # a tone of the ground colour
        k = rng.uniform(0.3, 0.7) * (1 if np.mean(colour) < 0.5 else -1)
        c2 = tuple(float(np.clip(c + k * (1 - c if k > 0 else c), 0, 1)) for c in colour)  # type: ignore[assignment]
    if kind == "stripes":
        d = rng.choice(3, p=[0.55, 0.2, 0.25])
        direction = [(0, 0, 1), (1, 0, 0), (rng.uniform(-1, 1), 0, 1)][int(d)]
    else:
        direction = (0, 0, 1)
    period = rng.uniform(0.015, 0.12) if kind != "dots" else rng.uniform(0.025, 0.08)
    duty = rng.uniform(0.15, 0.6) if kind != "dots" else rng.uniform(0.15, 0.35)
    return Pattern(kind=kind, colour=colour, colour2=c2, period=float(period), direction=_unit(direction), duty=float(duty),
                   phase=tuple(float(x) for x in rng.random(3)), texture=float(rng.uniform(0.0, 0.04)))  # type: ignore[arg-type]  # fmt: skip


def sample_appearance(rng: np.random.Generator, template: Template | None = None) -> Appearance:
    """A random person's look: skin tone (light to dark), top, trousers / skirt / dress, shoes, hair.

    ``template`` is accepted for symmetry with other samplers; heights are in its rest coordinates.
    """
    t = rng.random() ** 0.9 * (len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[i] + (t - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.015, 3), 0, 1)

    top = sample_pattern(rng, _garment_colour(rng))
    sleeve = float([0.0, rng.uniform(0.12, 0.3), rng.uniform(0.45, 0.75), rng.uniform(0.9, 1.02)][int(rng.choice(4, p=[0.15, 0.35, 0.15, 0.35]))])
    kind = ("trousers", "skirt", "dress")[int(rng.choice(3, p=[0.65, 0.2, 0.15]))]
    if kind == "trousers":
        length = float([rng.uniform(0.15, 0.4), rng.uniform(0.6, 0.8), rng.uniform(0.92, 1.0)][int(rng.choice(3, p=[0.25, 0.1, 0.65]))])
        bottom = sample_pattern(rng, _garment_colour(rng, "bottom"), plain_share=0.8)
        loose, flare = rng.uniform(0.003, 0.015), rng.uniform(0.0, 0.015)
    else:
        length = float(rng.uniform(0.2, 0.95))
        bottom = top if kind == "dress" else sample_pattern(rng, _garment_colour(rng, "bottom"), plain_share=0.6)
        loose, flare = rng.uniform(0.008, 0.02), rng.uniform(0.02, 0.07) * (0.5 + length)
    waist = float(rng.uniform(0.06, 0.2))
    if kind == "dress":
        top_hem = float(waist - rng.uniform(0.0, 0.1))
    else:  # mostly down to the hips, sometimes a crop top
        top_hem = float(rng.uniform(-0.06, 0.14) if rng.random() < 0.9 else rng.uniform(0.18, 0.26))
    tucked = bool(kind == "trousers" and rng.random() < 0.25)
    shoes = sample_pattern(rng, _garment_colour(rng, "shoes"), plain_share=0.9)
    boot = float(rng.uniform(0.08, 0.35)) if rng.random() < 0.2 else 0.0

    hair = HAIR_COLOURS[int(rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS / HAIR_WEIGHTS.sum()))]
    if rng.random() < 0.05:  # dyed
        hair = np.asarray(_hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.8)))
    hair = np.clip(hair * rng.uniform(0.85, 1.15), 0, 1)
    style = int(rng.choice(3, p=[0.45, 0.25, 0.3]))  # short, medium, long
    front = float(rng.uniform(0.085, 0.105))
    side = float(rng.uniform(0.02, 0.06) if style == 0 else rng.uniform(-0.03, 0.03))
    back = float([rng.uniform(-0.06, -0.02), rng.uniform(-0.11, -0.07), -0.12][style])
    volume = float([rng.uniform(0.005, 0.02), rng.uniform(0.012, 0.035), rng.uniform(0.012, 0.04)][style])
    long = float(rng.uniform(0.05, 0.3)) if style == 2 else 0.0
    return Appearance(
        skin=tuple(float(x) for x in skin), top=top, sleeve=sleeve, top_hem=top_hem,  # type: ignore[arg-type]
        neckline=(float(rng.uniform(0.05, 0.1)), float(rng.uniform(0.01, 0.12))), top_loose=float(rng.uniform(0.003, 0.03)),
        bottom_kind=kind, bottom=bottom, bottom_length=length, waist=waist, bottom_loose=float(loose),  # type: ignore[arg-type]
        bottom_flare=float(flare), tucked=tucked, shoes=shoes, boot=boot,
        hair=tuple(float(x) for x in hair), hairline=(front, side, back), hair_volume=volume, hair_long=long,  # type: ignore[arg-type]
        bald=bool(rng.random() < 0.04), lips=bool(rng.random() < 0.7), hair_phase=float(rng.uniform(0, 2 * np.pi)),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Regions, albedo, offsets.
# ------------------------------------------------------------------------------------------------


def _hairline_height(app: Appearance, d: np.ndarray) -> np.ndarray:
    """Height above the head joint of the hairline at the azimuth of offsets d (N, 3) from it."""
    rho = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
    c = -d[:, 1] / rho  # 1 in front (−Y), −1 behind
    wf, wb = np.maximum(c, 0) ** 2, np.maximum(-c, 0) ** 2
    front, side, back = app.hairline
    wave = 0.006 * np.sin(7.0 * np.arctan2(d[:, 0], -d[:, 1]) + app.hair_phase)
    return wf * front + (1 - wf - wb) * side + wb * back + wave


def _hair_depth(app: Appearance, coords: BodyCoords, pts: SurfacePoints) -> np.ndarray:
    """(N,) how far inside the hair region each point is (metres; <= 0 outside)."""
    out = np.full(len(pts), -1.0)
    if app.bald:
        return out
    head = pts.part == _HEAD
    d = pts.rest[head] - coords.head
    out[head] = d[:, 2] - _hairline_height(app, d)
    if app.hair_long > 0:  # long hair falling over the upper back
        tor = pts.part == _TORSO
        r, n = pts.rest[tor], pts.normal[tor]
        below = coords.neck_z - r[:, 2]
        half = 0.11 - 0.12 * np.clip(below, 0, None)  # narrower towards the tips
        tips = app.hair_long * (1.0 - 0.4 * (r[:, 0] / 0.11) ** 2) + 0.01 * np.sin(90.0 * r[:, 0] + app.hair_phase)
        inside = np.minimum(np.minimum(tips - below, half - np.abs(r[:, 0])), n[:, 1] - 0.15)
        out[tor] = np.where(inside > 0, np.minimum(inside, 0.03), -1.0)
    return out


def regions(app: Appearance, coords: BodyCoords, pts: SurfacePoints) -> np.ndarray:
    """(N,) int8 region label (:data:`REGION_NAMES`) of each point of ``pts``."""
    part, r, limb = pts.part, pts.rest, pts.limb
    z = r[:, 2]
    out = np.full(len(pts), SKIN, dtype=np.int8)
    torso, arm, leg = part == _TORSO, np.isin(part, _ARMS), np.isin(part, _LEGS)
    w, depth = app.neckline
    dn = (coords.neck_z - z) / max(depth, 1e-3)
    neck_open = torso & (r[:, 1] < coords.head[1] + 0.02) & ((r[:, 0] / w) ** 2 + dn**2 < 1.0)
    top = (torso & (z >= app.top_hem) & ~neck_open) | (arm & (limb < app.sleeve))
    bottom = (torso & (z < app.waist)) | (leg & (limb < app.bottom_length))
    if app.tucked:
        out[top] = TOP
        out[bottom] = BOTTOM
    else:
        out[bottom] = BOTTOM
        out[top] = TOP
    out[np.isin(part, _FEET) | (np.isin(part, _LOWER_LEGS) & (limb > 1.0 - app.boot))] = SHOES
    head = part == _HEAD
    d = r - coords.head
    front = head & (d[:, 1] < -0.07)
    out[front & (np.abs(r[:, 0]) > 0.012) & (np.abs(r[:, 0]) < 0.05) & (d[:, 2] > 0.057) & (d[:, 2] < 0.066) & (d[:, 1] < -0.1)] = BROW
    if app.lips:
        lip = front & (np.abs(r[:, 0]) < 0.024) & (np.abs(d[:, 2] + 0.025) < 0.009 - 0.15 * np.abs(r[:, 0]))
        out[lip] = LIPS
    out[_hair_depth(app, coords, pts) > 0] = HAIR
    out[part < 0] = EYE
    return out


def _pattern_rgb(p: Pattern, rest: np.ndarray) -> np.ndarray:
    c1, c2 = np.asarray(p.colour), np.asarray(p.colour2)
    q = rest / p.period + np.asarray(p.phase)
    if p.kind == "stripes":
        m = np.mod(q @ np.asarray(p.direction), 1.0) < p.duty
    elif p.kind == "checks":
        m = (np.floor(q[:, 2]) + np.floor(q[:, 0] + q[:, 1])) % 2 == 1
    elif p.kind == "dots":
        f = q - np.round(q)
        m = np.linalg.norm(f, axis=1) < p.duty
    else:
        m = np.zeros(len(rest), dtype=bool)
    rgb = np.where(m[:, None], c2, c1)
    if p.texture > 0:
        weave = np.sin(rest @ np.array([310.0, 170.0, 240.0])) * np.sin(rest @ np.array([-150.0, 290.0, 200.0]))
        rgb = rgb * (1.0 + p.texture * weave[:, None])
    return rgb


def albedo(app: Appearance, coords: BodyCoords, pts: SurfacePoints, region: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float32 sRGB albedo in [0, 1] of each point (``region`` from :func:`regions` if given)."""
    reg = regions(app, coords, pts) if region is None else region
    r = pts.rest
    skin = np.asarray(app.skin)
    # a faint low-frequency variation of the skin (flush, shadows of the make-up of real skin)
    var = 1.0 + 0.04 * np.sin(r @ np.array([23.0, 17.0, 31.0]) + 1.3) * np.sin(r @ np.array([-19.0, 29.0, 13.0]))
    out = skin * var[:, None]
    for label, pat in ((TOP, app.top), (BOTTOM, app.bottom), (SHOES, app.shoes)):
        m = reg == label
        if m.any():
            out[m] = _pattern_rgb(pat, r[m])
    hair = np.asarray(app.hair)
    m = reg == HAIR
    if m.any():
        d = r[m] - coords.head
        strands = np.sin(np.arctan2(d[:, 0], d[:, 1]) * 90.0 + 40 * d[:, 2])
        out[m] = hair * (0.9 + 0.1 * strands)[:, None]
    out[reg == BROW] = 0.6 * hair + 0.4 * skin * 0.5 if not app.bald else skin * 0.8
    out[reg == LIPS] = skin * np.array([0.85, 0.62, 0.62])
    out[reg == EYE] = np.array([0.16, 0.12, 0.11])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def vertex_offsets(app: Appearance, coords: BodyCoords) -> np.ndarray:
    """(V,) float32 outward offset (metres) of each Anny vertex: hair volume and loose clothes.

    Hair thickens over 3 cm from the hairline to ``hair_volume``; tops are offset by
    ``top_loose``; bottoms by ``bottom_loose`` growing by ``bottom_flare`` towards the hem
    (skirts flare, and their inner faces reach the body's midline in the rest pose so the cloth spans
    the gap between the legs); shoes by 4 mm. Skin, face, hands and eyes stay at 0.
    """
    pts = vertex_points(coords)
    reg = regions(app, coords, pts)
    off = cloth_offsets(app, coords, pts, reg)
    if app.bottom_kind != "trousers":  # a skirt spans the gap between the legs: inner faces reach the midline
        x = pts.rest[:, 0]
        inner = np.clip(-pts.normal[:, 0] * np.sign(x), 0.0, 1.0)
        span = np.abs(x) / np.maximum(inner, 0.5) * np.clip((inner - 0.15) / 0.35, 0.0, 1.0)
        bridge_legs(off, app, pts, reg, span)
    return off.astype(np.float32)


def cloth_offsets(app: Appearance, coords: BodyCoords, pts: SurfacePoints, reg: np.ndarray) -> np.ndarray:
    """(V,) float64 offsets of :func:`vertex_offsets` before a skirt bridges the legs (``pts`` the
    vertices, ``reg`` their :func:`regions`): tops, bottoms with their flare, shoes, hair."""
    off = np.zeros(coords.num_vertices, dtype=np.float64)
    off[reg == TOP] = app.top_loose
    bot = reg == BOTTOM
    leg = np.isin(pts.part, _LEGS)
    grow = np.where(leg, np.clip(pts.limb / max(app.bottom_length, 1e-3), 0, 1), 0.0)
    off[bot] = app.bottom_loose + app.bottom_flare * grow[bot] ** 1.5
    off[reg == SHOES] = 0.004
    hair = reg == HAIR
    depth = _hair_depth(app, coords, pts)
    ramp = np.clip(depth / 0.03, 0.0, 1.0)
    off[hair] = np.maximum(off[hair], app.hair_volume * (0.25 + 0.75 * ramp[hair]))
    return off


def bridge_legs(off: np.ndarray, app: Appearance, pts: SurfacePoints, reg: np.ndarray, span: np.ndarray, limit: float = 0.15) -> None:
    """Let a skirt or dress span the gap between the legs, in place: each leg vertex under the
    skirt is offset at least ``min(span, limit) + bottom_loose``, ``span`` (V,) being the offset
    that brings it to the plane between the legs (0 for faces that do not face the other leg)."""
    sk = (reg == BOTTOM) & np.isin(pts.part, _LEGS)
    off[sk] = np.maximum(off[sk], np.minimum(span[sk], limit) + app.bottom_loose)


def displace(vertices: np.ndarray, normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(V, 3) float32 vertices moved by ``offsets`` (V,) metres along unit ``normals`` (V, 3)."""
    v, o, n = (np.asarray(a, dtype=np.float32) for a in (vertices, offsets, normals))
    return v + o[:, None] * n


# ------------------------------------------------------------------------------------------------
# Shading.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lighting:
    """A directional light plus ambient light.

    Attributes:
        direction: (3,) unit vector towards the light (world axes, Z up).
        ambient: ambient intensity; diffuse: directional intensity.
        colour: (3,) light colour (multiplies the albedo).
    """

    direction: Colour = (0.3, -0.5, 0.8)
    ambient: float = 0.4
    diffuse: float = 0.6
    colour: Colour = (1.0, 1.0, 1.0)


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """A random light: any azimuth, 5 to 80 degrees above the horizon, slightly warm or cool."""
    az, el = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(5, 80))
    d = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    amb = rng.uniform(0.3, 0.6)
    tint = 1.0 + rng.uniform(-0.08, 0.08) * np.array([1.0, 0.0, -1.0])
    return Lighting(direction=_unit(np.asarray(d)), ambient=float(amb), diffuse=float(rng.uniform(0.55, 1.0) * (1.1 - amb)),
                    colour=tuple(float(x) for x in tint))  # type: ignore[arg-type]  # fmt: skip


def shade(albedo_rgb: np.ndarray, normals: np.ndarray, light: Lighting, light_direction: np.ndarray | None = None) -> np.ndarray:
    """Lambertian + ambient shading: ``albedo * colour * (ambient + diffuse * max(0, n . l))``.

    Args:
        albedo_rgb: (N, 3) in [0, 1].
        normals: (N, 3) unit normals, in the same axes as the light direction.
        light_direction: (3,) overrides ``light.direction`` (e.g. the light in camera axes).
    Returns:
        (N, 3) float32 in [0, 1].
    """
    ldir = np.asarray(light.direction if light_direction is None else light_direction, dtype=np.float64)
    ldir = ldir / np.linalg.norm(ldir)
    lam = np.clip(np.asarray(normals, dtype=np.float64) @ ldir, 0.0, None)
    k = light.ambient + light.diffuse * lam
    out = np.asarray(albedo_rgb, dtype=np.float64) * np.asarray(light.colour) * k[:, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Backgrounds, occluders, colour jitter (numpy only).
# ------------------------------------------------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return np.asarray(_hsv_to_rgb(rng.random(), rng.uniform(0, 0.7) ** 1.3, rng.uniform(0.1, 0.95)))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    return x, y


def _value_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    """(size, size, channels) bilinear value noise in [0, 1] over a ``cells`` x ``cells`` grid."""
    g = rng.random((cells + 1, cells + 1, channels))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = (t - i)[:, None]
    rows = g[i] * (1 - f[..., None]) + g[i + 1] * f[..., None]  # (size, cells+1, C)
    return rows[:, i] * (1 - f[None, :, :]) + rows[:, i + 1] * f[None, :, :]


def _shape_mask(rng: np.random.Generator, size: int, centre: np.ndarray, scale: float) -> np.ndarray:
    """(size, size) bool mask of a random ellipse, rotated rectangle, bar or convex polygon."""
    x, y = np.mgrid[0:size, 0:size].astype(np.float64)[::-1]  # x = column, y = row
    dx, dy = x - centre[0], y - centre[1]
    a = rng.uniform(0, np.pi)
    u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
    kind = rng.choice(4)
    if kind == 0:
        rx, ry = scale * rng.uniform(0.3, 1.0, 2)
        return (u / rx) ** 2 + (v / ry) ** 2 < 1
    if kind == 1:
        rx, ry = scale * rng.uniform(0.3, 1.0, 2)
        return (np.abs(u) < rx) & (np.abs(v) < ry)
    if kind == 2:  # a pole or bar across much of the image
        return (np.abs(u) < scale * rng.uniform(0.08, 0.25)) & (np.abs(v) < size)
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    m = np.ones((size, size), dtype=bool)
    r = scale * rng.uniform(0.4, 1.0)
    for t in angles:
        m &= dx * np.cos(t) + dy * np.sin(t) < r
    return m


def sample_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8 procedural background: gradient, noise, stripes, shapes or a room corner."""
    if size < 1:
        raise BodycorrError(f"background size {size}: must be at least 1 pixel.")
    x, y = _grid(size)
    kind = rng.choice(["gradient", "noise", "stripes", "shapes", "room"])
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        s = np.clip((x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a) + 0.5, 0, 1)[..., None]
        img = c1 * (1 - s) + c2 * s
    elif kind == "noise":
        n = 0.6 * _value_noise(rng, size, int(rng.integers(2, 6))) + 0.4 * _value_noise(rng, size, int(rng.integers(8, 24)))
        img = c1 * (1 - n) + c2 * n if rng.random() < 0.6 else n
    elif kind == "stripes":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(0.03, 0.3)
        s = np.mod(((x * np.cos(a) + y * np.sin(a)) / period), 1.0) < rng.uniform(0.2, 0.8)
        img = np.where(s[..., None], c1, c2)
    elif kind == "shapes":
        img = np.broadcast_to(c1, (size, size, 3)).copy()
        for _ in range(int(rng.integers(3, 12))):
            m = _shape_mask(rng, size, rng.uniform(0, size, 2), size * rng.uniform(0.05, 0.4))
            img[m] = _random_colour(rng)
    else:  # a wall above a floor, with a horizon somewhere in the image
        h = rng.uniform(0.2, 0.8)
        wall = c1 * (0.85 + 0.15 * y[..., None] / max(h, 1e-3))
        floor = c2 * (0.7 + 0.3 * ((y[..., None] - h) / max(1 - h, 1e-3)))
        img = np.where((y < h)[..., None], wall, floor)
    img = img + (rng.uniform(0.0, 0.12) * (_value_noise(rng, size, int(rng.integers(4, 32)), 1) - 0.5))
    return np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class Occluders:
    """Objects drawn in front of the people.

    Attributes:
        mask: (H, W) bool, pixels covered by an occluder.
        rgb: (H, W, 3) uint8 their colours (meaningful where ``mask``).
    """

    mask: np.ndarray
    rgb: np.ndarray


def sample_occluders(rng: np.random.Generator, size: int, box: tuple[float, float, float, float] | None = None,
                     count: int | None = None, max_cover: float = 0.5, person: np.ndarray | None = None) -> Occluders:  # fmt: skip
    """1 or 2 random shapes (ellipses, rectangles, bars, polygons) placed over ``box``.

    Args:
        size: image side in pixels.
        box: (row0, col0, row1, col1) region the occluders are centred in (default: the image).
        person: (H, W) bool person mask; when given, an occluder covering more than ``max_cover``
            of it is redrawn smaller (so the person stays visible).
    """
    r0, c0, r1, c1 = box if box is not None else (0.0, 0.0, float(size), float(size))
    n = int(rng.integers(1, 3)) if count is None else count
    mask = np.zeros((size, size), dtype=bool)
    rgb = sample_background(rng, size)
    extent = max(r1 - r0, c1 - c0, 4.0)
    for _ in range(n):
        scale = extent * rng.uniform(0.1, 0.3)
        for _try in range(4):
            centre = np.array([rng.uniform(c0, c1), rng.uniform(r0, r1)])
            m = _shape_mask(rng, size, centre, scale)
            if person is None or not person.any() or (m | mask)[person].mean() <= max_cover:
                break
            scale *= 0.6
        else:
            continue
        mask |= m
    return Occluders(mask=mask, rgb=rgb)


def colour_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random brightness, contrast, saturation and hue shift plus gaussian noise.

    Args:
        rgb: (H, W, 3) uint8.
        strength: 0 returns the image unchanged; 1 gives brightness and contrast within ±25 %,
            saturation ±30 %, hue ±15 degrees and noise sigma up to 5 grey levels.
    Returns:
        (H, W, 3) uint8.
    """
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise BodycorrError(f"colour_jitter: expected an (H, W, 3) uint8 image, got {img.dtype} {img.shape}. Convert it first.")
    if strength < 0:
        raise BodycorrError(f"colour_jitter: strength must be >= 0, got {strength}.")
    if strength == 0:
        return img.copy()
    s = float(strength)
    # YIQ: luma plus a chroma plane in which a hue shift is a rotation and saturation a scale.
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    h = np.radians(rng.uniform(-15, 15) * s)
    sat = 1.0 + rng.uniform(-0.3, 0.3) * s
    rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(h), -np.sin(h)], [0.0, np.sin(h), np.cos(h)]]) * np.array([1.0, sat, sat])[:, None]
    M = np.linalg.inv(to_yiq) @ rot @ to_yiq
    bright = 1.0 + rng.uniform(-0.25, 0.25) * s
    contrast = 1.0 + rng.uniform(-0.25, 0.25) * s
    x = img.reshape(-1, 3).astype(np.float32) @ M.T.astype(np.float32)
    mean = float(x.mean())
    x = (x - mean) * contrast + mean
    x = x * bright
    sigma = rng.uniform(0, 5.0) * s
    if sigma > 0:
        x = x + rng.normal(0.0, sigma, x.shape).astype(np.float32)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8).reshape(img.shape)
