"""Garment geometry for depth views: tops, trousers, shorts, skirts, dresses and hair volume over the posed body.

An :class:`Outfit` is drawn per person by :func:`sample_outfit` from a :class:`GarmentConfig`. Its
garments are outward offsets of Anny's vertices along the posed body's normals
(:func:`outfit_offsets`, :func:`clothe`), built from the RGB engine's regions and offsets
(:mod:`bodycorr.render.appearance`, through :meth:`Outfit.appearance`), with two steps done on the
posed body so the cloth follows the pose:

- contact: a garment point that would come nearer another body part's skin than its own offset
  (an arm against the torso, thighs together, a hand on the head) has its offset halved, up to
  three times, so touching parts do not push their cloth through each other;
- skirts and dresses span the gap between the legs: the faces of each leg that face the other
  leg are offset to the plane halfway between the two legs' axes at their level (computed in the
  pose: a stride or a wide stance moves the plane with the legs).

The clothed mesh keeps Anny's topology, so a ray hit on it (face + barycentrics) maps through
:func:`bodycorr.render.truth.body_truth` to the body point under the cloth: each garment pixel's
truth is the body point it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.body.template import PART_NAMES
from bodycorr.common.errors import BodycorrError
from bodycorr.render.appearance import (
    Appearance, BodyCoords, Pattern, bridge_legs, cloth_offsets, displace, regions, vertex_normals, vertex_points,
)  # fmt: skip

GarmentKind = Literal["tight_top", "loose_top", "trousers", "shorts", "skirt", "dress", "hair"]
GARMENT_KINDS: tuple[str, ...] = get_args(GarmentKind)
TopKind = Literal["none", "tight_top", "loose_top"]
BottomKind = Literal["none", "trousers", "shorts", "skirt", "dress"]
_TOPS = ("tight_top", "loose_top")
# relative frequency of each bottom among those a config allows
_BOTTOM_WEIGHTS = {"trousers": 0.45, "shorts": 0.15, "skirt": 0.2, "dress": 0.2}
GARMENTS_VERSION = 1  # bump when the same Outfit gives other offsets (frozen clothed suites are rebuilt)

_P = {n: i for i, n in enumerate(PART_NAMES)}
_CONTACT_ROUNDS = 3
_CONTACT_MARGIN = 0.03  # a body vertex this much farther (rest template) than the offset is "another part"
_LEG_BINS = 20
_GREY = Pattern()


def _range(name: str, v: tuple[float, float], hi: float) -> tuple[float, float]:
    try:
        lo_, hi_ = (float(x) for x in v)
    except (TypeError, ValueError):
        raise BodycorrError(f"garment config: {name} must be a (low, high) pair of metres, got {v!r}.") from None
    if not (0.0 <= lo_ <= hi_ <= hi) or not (math.isfinite(lo_) and math.isfinite(hi_)):
        raise BodycorrError(f"garment config: {name} = {v!r} must lie within 0 to {hi} m, low <= high.")
    return (lo_, hi_)


@dataclass(frozen=True)
class GarmentConfig:
    """Which garments people wear and how thick or loose they are (metres of offset from the skin).

    Attributes:
        kinds: garments a person may wear: tops ``tight_top`` / ``loose_top`` (one of those
            allowed), bottoms ``trousers`` / ``shorts`` / ``skirt`` / ``dress`` (one of those
            allowed, weighted 0.45 / 0.15 / 0.2 / 0.2; a dress brings its own bodice and sleeves),
            and ``hair`` (hair volume on the head, and long hair over the upper back for some).
            A person always wears shoes (4 mm).
        tight: offset of tight tops and of tight trousers and shorts, and of skirts at the waist.
        loose: offset of loose tops and of loose (half the) trousers and shorts.
        flare: extra offset at the hem of a skirt or dress (scaled by 0.5 + its length: long
            skirts flare more); trousers flare by a tenth of it.
        hair: hair volume on the crown.
    """

    kinds: tuple[GarmentKind, ...] = GARMENT_KINDS  # type: ignore[assignment]
    tight: tuple[float, float] = (0.003, 0.012)
    loose: tuple[float, float] = (0.015, 0.04)
    flare: tuple[float, float] = (0.02, 0.08)
    hair: tuple[float, float] = (0.005, 0.04)

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        bad = [k for k in kinds if k not in GARMENT_KINDS]
        if bad:
            raise BodycorrError(f"garment config: unknown kinds {bad}. Choose from {', '.join(GARMENT_KINDS)}.")
        object.__setattr__(self, "kinds", kinds)
        for name, hi in (("tight", 0.1), ("loose", 0.1), ("flare", 0.15), ("hair", 0.1)):
            object.__setattr__(self, name, _range(name, getattr(self, name), hi))

    @staticmethod
    def from_value(v: "GarmentConfig | dict") -> "GarmentConfig":
        """A config from itself or from plain JSON data (lists back to tuples); unknown keys raise one line."""
        if isinstance(v, GarmentConfig):
            return v
        if not isinstance(v, dict):
            raise BodycorrError(f"garment config: expected a mapping of settings, got {type(v).__name__}.")
        known = set(GarmentConfig.__dataclass_fields__)
        unknown = sorted(set(v) - known)
        if unknown:
            raise BodycorrError(f"garment config: unknown keys {unknown}. Known keys: {sorted(known)}.")
        return GarmentConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})


@dataclass(frozen=True)
class Outfit:
    """One person's garments (heights in the neutral rest template: hip joint at 0, neck base ~0.51;
    limb coordinates 0 at the shoulder / hip, 0.5 elbow / knee, 1 wrist / ankle).

    Attributes:
        top: "none", "tight_top" or "loose_top" (a dress's bodice is its top).
        top_offset: the top's offset from the skin (m).
        sleeve: arm coordinate where sleeves end (0 sleeveless). top_hem: rest height of the top's hem.
        neckline: (half width, depth) of the neck opening.
        bottom: "none", "trousers", "shorts", "skirt" or "dress".
        bottom_offset: offset at the waist; bottom_flare: extra offset at the hem.
        bottom_length: leg coordinate where trousers, shorts, skirt or dress end. waist: rest
            height of the waistband. tucked: the top tucked into the trousers.
        boot: how far up the lower leg shoes reach (0 = shoes).
        hair_volume: hair offset on the crown, 0 = no hair volume; hairline: (front, side, back)
            heights above the head joint; hair_long: how far long hair falls over the back;
            hair_phase: where the hairline waves.
    """

    top: TopKind = "none"
    top_offset: float = 0.0
    sleeve: float = 0.0
    top_hem: float = 0.1
    neckline: tuple[float, float] = (0.07, 0.05)
    bottom: BottomKind = "none"
    bottom_offset: float = 0.0
    bottom_flare: float = 0.0
    bottom_length: float = 0.0
    waist: float = 0.1
    tucked: bool = False
    boot: float = 0.0
    hair_volume: float = 0.0
    hairline: tuple[float, float, float] = (0.095, 0.03, -0.04)
    hair_long: float = 0.0
    hair_phase: float = 0.0

    def __post_init__(self) -> None:
        if self.top not in get_args(TopKind):
            raise BodycorrError(f"outfit: top {self.top!r} is unknown. Choose from {', '.join(get_args(TopKind))}.")
        if self.bottom not in get_args(BottomKind):
            raise BodycorrError(f"outfit: bottom {self.bottom!r} is unknown. Choose from {', '.join(get_args(BottomKind))}.")
        for name in ("top_offset", "bottom_offset", "bottom_flare", "hair_volume", "hair_long", "boot"):
            v = float(getattr(self, name))
            if not (0.0 <= v <= 0.5):
                raise BodycorrError(f"outfit: {name} = {v} must lie within 0 to 0.5 m.")

    @property
    def skirted(self) -> bool:
        """Whether the bottom spans the gap between the legs (skirt or dress)."""
        return self.bottom in ("skirt", "dress")

    def appearance(self) -> Appearance:
        """The outfit as an RGB-engine :class:`~bodycorr.render.appearance.Appearance` (grey colours):
        its regions and offsets are the garments'."""
        has_top = self.top != "none"
        has_bottom = self.bottom != "none"
        return Appearance(
            skin=(0.8, 0.6, 0.5), top=_GREY, sleeve=self.sleeve if has_top else 0.0, top_hem=self.top_hem if has_top else 10.0,
            neckline=self.neckline, top_loose=self.top_offset if has_top else 0.0,
            bottom_kind="trousers" if self.bottom in ("none", "trousers", "shorts") else self.bottom,  # type: ignore[arg-type]
            bottom=_GREY, bottom_length=self.bottom_length if has_bottom else 0.0, waist=self.waist if has_bottom else -10.0,
            bottom_loose=self.bottom_offset if has_bottom else 0.0, bottom_flare=self.bottom_flare if has_bottom else 0.0,
            tucked=self.tucked, shoes=_GREY, boot=self.boot, hair=(0.1, 0.1, 0.1), hairline=self.hairline,
            hair_volume=self.hair_volume, hair_long=self.hair_long, bald=self.hair_volume <= 0.0, lips=False,
            hair_phase=self.hair_phase,
        )  # fmt: skip


def sample_outfit(rng: np.random.Generator, config: GarmentConfig = GarmentConfig()) -> Outfit:
    """A random outfit of the garments ``config`` allows (the same generator state gives the same outfit)."""
    kinds = set(config.kinds)
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    bottoms = [k for k in _BOTTOM_WEIGHTS if k in kinds]
    if bottoms:
        w = np.array([_BOTTOM_WEIGHTS[k] for k in bottoms])
        bottom = bottoms[int(rng.choice(len(bottoms), p=w / w.sum()))]
    else:
        bottom = "none"
    tops = [k for k in _TOPS if k in kinds]
    top = tops[int(rng.integers(len(tops)))] if tops else ("tight_top" if bottom == "dress" else "none")
    top_offset = u(config.loose if top == "loose_top" else config.tight) if top != "none" else 0.0
    sleeve = float([0.0, rng.uniform(0.12, 0.3), rng.uniform(0.45, 0.75), rng.uniform(0.9, 1.02)][int(rng.choice(4, p=[0.15, 0.35, 0.15, 0.35]))])
    waist = float(rng.uniform(0.06, 0.2))
    cut_loose = bool(rng.random() < 0.5)
    if bottom in ("trousers", "shorts"):
        length = float(rng.uniform(0.92, 1.0) if bottom == "trousers" else rng.uniform(0.15, 0.45))
        offset, flare = u(config.loose if cut_loose else config.tight), 0.1 * u(config.flare)
    elif bottom in ("skirt", "dress"):
        length = float(rng.uniform(0.2, 0.95))
        offset, flare = u(config.tight), u(config.flare) * (0.5 + length)
    else:
        length, offset, flare = 0.0, 0.0, 0.0
    if bottom == "dress":
        top_hem = float(waist - rng.uniform(0.0, 0.1))
    else:  # mostly down to the hips, sometimes a crop top
        top_hem = float(rng.uniform(-0.06, 0.14) if rng.random() < 0.9 else rng.uniform(0.18, 0.26))
    tucked = bool(bottom in ("trousers", "shorts") and top != "none" and rng.random() < 0.25)
    boot = float(rng.uniform(0.08, 0.35)) if rng.random() < 0.2 else 0.0
    neckline = (float(rng.uniform(0.05, 0.1)), float(rng.uniform(0.01, 0.12)))
    style = int(rng.choice(3, p=[0.45, 0.25, 0.3]))  # short, medium, long
    front = float(rng.uniform(0.085, 0.105))
    side = float(rng.uniform(0.02, 0.06) if style == 0 else rng.uniform(-0.03, 0.03))
    back = float([rng.uniform(-0.06, -0.02), rng.uniform(-0.11, -0.07), -0.12][style])
    volume = u(config.hair)
    long = float(rng.uniform(0.05, 0.3)) if style == 2 else 0.0
    phase = float(rng.uniform(0, 2 * np.pi))
    has_hair = "hair" in kinds and rng.random() < 0.95
    return Outfit(
        top=top, top_offset=top_offset, sleeve=sleeve if top != "none" else 0.0, top_hem=top_hem, neckline=neckline,  # type: ignore[arg-type]
        bottom=bottom, bottom_offset=offset, bottom_flare=flare, bottom_length=length, waist=waist, tucked=tucked,  # type: ignore[arg-type]
        boot=boot, hair_volume=volume if has_hair else 0.0, hairline=(front, side, back), hair_long=long if has_hair else 0.0,
        hair_phase=phase,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Offsets on the posed body.
# ------------------------------------------------------------------------------------------------


def rest_offsets(outfit: Outfit, coords: BodyCoords) -> np.ndarray:
    """(V,) float64 offsets of the outfit before contact and the skirt's bridge (pose-independent:
    compute once per person)."""
    app = outfit.appearance()
    pts = vertex_points(coords)
    return cloth_offsets(app, coords, pts, regions(app, coords, pts))


def _leg_axes(coords: BodyCoords, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each leg's axis in the pose: (2, B, 3) centroids of its vertices in :data:`_LEG_BINS` bins of
    the limb coordinate (hip 0 .. ankle 1; empty bins filled from their neighbours), and the (B,)
    bin centres."""
    centres = (np.arange(_LEG_BINS) + 0.5) / _LEG_BINS
    axes = np.zeros((2, _LEG_BINS, 3))
    for k, s in enumerate("LR"):
        m = np.isin(coords.part, [_P[f"upper_leg.{s}"], _P[f"lower_leg.{s}"]]) & (coords.limb <= 1.0)
        b = np.clip((coords.limb[m] * _LEG_BINS).astype(np.int64), 0, _LEG_BINS - 1)
        n = np.bincount(b, minlength=_LEG_BINS)
        ok = n > 0
        for d in range(3):
            s_ = np.bincount(b, weights=vertices[m, d].astype(np.float64), minlength=_LEG_BINS)
            axes[k, :, d] = np.interp(centres, centres[ok], s_[ok] / n[ok])
    return axes, centres


def leg_span(coords: BodyCoords, vertices: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(V,) offset along each leg vertex's normal that brings it to the plane halfway between the
    two legs' axes at its level (posed ``vertices`` (V, 3), unit ``normals`` (V, 3)); faces turned
    away from the other leg get 0 (ramped in between, as the rest-pose rule of
    :func:`~bodycorr.render.appearance.vertex_offsets`); 0 off the legs."""
    axes, centres = _leg_axes(coords, vertices)
    span = np.zeros(coords.num_vertices)
    for k, s in enumerate("LR"):
        m = np.flatnonzero(np.isin(coords.part, [_P[f"upper_leg.{s}"], _P[f"lower_leg.{s}"]]))
        t = np.clip(coords.limb[m], 0.0, 1.0)
        own = np.stack([np.interp(t, centres, axes[k, :, d]) for d in range(3)], 1)
        other = np.stack([np.interp(t, centres, axes[1 - k, :, d]) for d in range(3)], 1)
        u = own - other
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-9)  # from the other leg towards this one
        d = np.maximum(((vertices[m] - 0.5 * (own + other)) * u).sum(1), 0.0)
        inner = np.clip(-(normals[m] * u).sum(1), 0.0, 1.0)
        span[m] = d / np.maximum(inner, 0.5) * np.clip((inner - 0.15) / 0.35, 0.0, 1.0)
    return span


def contact_limit(offsets: np.ndarray, coords: BodyCoords, vertices: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(V,) float64 ``offsets`` halved (up to three times) where the garment point would lie nearer
    another body part's skin than its own offset: the nearest posed body vertex to the displaced
    point is one whose rest-template distance from the garment's vertex exceeds the offset by
    3 cm or more (not the vertex's own neighbourhood)."""
    off = np.asarray(offsets, dtype=np.float64).copy()
    v = np.asarray(vertices, dtype=np.float64)
    tree = cKDTree(v)
    todo = np.flatnonzero(off > 0)
    for _ in range(_CONTACT_ROUNDS):
        if not len(todo):
            break
        q = v[todo] + off[todo, None] * normals[todo]
        dist, j = tree.query(q, workers=1)
        rest_gap = np.linalg.norm(coords.rest[todo] - coords.rest[j], axis=1)
        hit = (rest_gap > off[todo] + _CONTACT_MARGIN) & (dist < off[todo])
        todo = todo[hit]
        off[todo] *= 0.5
    return off


def outfit_offsets(outfit: Outfit, coords: BodyCoords, vertices: np.ndarray, faces: np.ndarray,
                   normals: np.ndarray | None = None, base: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(V,) float32 outward offset of each Anny vertex of the posed body ``vertices`` (V, 3) in
    ``outfit``: :func:`rest_offsets` (``base`` when given), limited where body parts touch
    (:func:`contact_limit`), then a skirt's or dress's faces between the legs taken to the plane
    between them (:func:`leg_span`). ``normals`` (V, 3): the posed unit vertex normals (computed when None)."""
    v = np.asarray(vertices, dtype=np.float32)
    if v.shape != (coords.num_vertices, 3):
        raise BodycorrError(f"outfit_offsets: vertices must be ({coords.num_vertices}, 3) (Anny's full topology), got {v.shape}.")
    n = vertex_normals(v, faces) if normals is None else normals
    off = rest_offsets(outfit, coords) if base is None else np.asarray(base, dtype=np.float64)
    off = contact_limit(off, coords, v, n)
    if outfit.skirted:
        app = outfit.appearance()
        pts = vertex_points(coords)
        bridge_legs(off, app, pts, regions(app, coords, pts), leg_span(coords, v, n))
    return off.astype(np.float32)


def clothe(outfit: Outfit, coords: BodyCoords, vertices: np.ndarray, faces: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) float32 the posed body ``vertices`` (V, 3) wearing ``outfit``: each vertex moved by
    :func:`outfit_offsets` along the posed normal. Same topology: triangle + barycentrics of a
    point on it are those of the body point under it."""
    v = np.asarray(vertices, dtype=np.float32)
    n = vertex_normals(v, faces)
    return displace(v, n, outfit_offsets(outfit, coords, v, faces, n, base))


# ------------------------------------------------------------------------------------------------
# Outfits as arrays (frozen test suites store them).
# ------------------------------------------------------------------------------------------------

_PAIRS = {"neckline": 2, "hairline": 3}


def pack_outfits(outfits: list[Outfit]) -> dict[str, np.ndarray]:
    """Outfits as plain arrays (N rows each; strings as unicode, no pickles): :func:`unpack_outfits` reads them back."""
    out: dict[str, np.ndarray] = {}
    for f in Outfit.__dataclass_fields__:
        vals = [getattr(o, f) for o in outfits]
        if f in ("top", "bottom"):
            out[f] = np.array(vals, dtype="U16")
        elif f == "tucked":
            out[f] = np.array(vals, dtype=bool)
        else:
            out[f] = np.array(vals, dtype=np.float64).reshape(len(outfits), *((_PAIRS[f],) if f in _PAIRS else ()))
    return out


def unpack_outfits(arrays: dict[str, np.ndarray]) -> list[Outfit]:
    """The outfits :func:`pack_outfits` stored (a missing field raises one line)."""
    fields = list(Outfit.__dataclass_fields__)
    missing = [f for f in fields if f not in arrays]
    if missing:
        raise BodycorrError(f"outfits: the stored arrays lack {missing}; they were written by another version of bodycorr.")
    n = len(arrays["top"])
    rows = []
    for i in range(n):
        kw: dict = {}
        for f in fields:
            v = arrays[f][i]
            kw[f] = str(v) if f in ("top", "bottom") else bool(v) if f == "tucked" else tuple(float(x) for x in v) if f in _PAIRS else float(v)
        rows.append(Outfit(**kw))
    return rows


__all__ = ["GARMENT_KINDS", "GARMENTS_VERSION", "GarmentConfig", "GarmentKind", "Outfit", "sample_outfit", "rest_offsets",
           "leg_span", "contact_limit", "outfit_offsets", "clothe", "pack_outfits", "unpack_outfits"]  # fmt: skip
