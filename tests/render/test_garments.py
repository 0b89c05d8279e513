"""Garments for depth views: sampled outfits, offsets that follow the pose, skirts that bridge the legs."""

import dataclasses

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.render.garments import (
    GARMENT_KINDS, GarmentConfig, Outfit, clothe, contact_limit, leg_span, outfit_offsets, pack_outfits, rest_offsets,
    sample_outfit, unpack_outfits,
)  # fmt: skip

# ------------------------------------------------------------------------------------------------
# Configs and sampling (no body model).
# ------------------------------------------------------------------------------------------------


def test_config_checks_kinds_and_ranges_in_one_line():
    with pytest.raises(BodycorrError, match="unknown kinds"):
        GarmentConfig(kinds=("tight_top", "cape"))
    with pytest.raises(BodycorrError, match="low <= high"):
        GarmentConfig(loose=(0.04, 0.01))
    with pytest.raises(BodycorrError, match="within 0 to"):
        GarmentConfig(hair=(0.0, 0.5))
    with pytest.raises(BodycorrError, match="unknown keys"):
        GarmentConfig.from_value({"kinds": ["skirt"], "colour": "red"})
    c = GarmentConfig.from_value({"kinds": ["skirt", "hair"], "flare": [0.01, 0.02]})  # JSON data: lists
    assert c == GarmentConfig(kinds=("skirt", "hair"), flare=(0.01, 0.02)) and hash(c) == hash(GarmentConfig(kinds=("skirt", "hair"), flare=(0.01, 0.02)))
    with pytest.raises(BodycorrError, match="unknown"):
        Outfit(bottom="kilt")  # type: ignore[arg-type]


def test_outfits_are_seeded_and_respect_the_config():
    cfg = GarmentConfig()
    outfits = [sample_outfit(np.random.default_rng(s), cfg) for s in range(300)]
    assert outfits[7] == sample_outfit(np.random.default_rng(7), cfg)
    assert {o.top for o in outfits} == {"tight_top", "loose_top"}
    assert {o.bottom for o in outfits} == {"trousers", "shorts", "skirt", "dress"}
    for o in outfits:
        lo, hi = cfg.loose if o.top == "loose_top" else cfg.tight
        assert lo <= o.top_offset <= hi
        if o.bottom in ("skirt", "dress"):
            assert cfg.tight[0] <= o.bottom_offset <= cfg.tight[1] and o.bottom_flare >= 0.5 * cfg.flare[0]
        else:
            assert o.bottom_offset <= cfg.loose[1] and o.bottom_flare <= 0.1 * cfg.flare[1] + 1e-12
        assert o.hair_volume == 0 or cfg.hair[0] <= o.hair_volume <= cfg.hair[1]
    shorts = [o.bottom_length for o in outfits if o.bottom == "shorts"]
    trousers = [o.bottom_length for o in outfits if o.bottom == "trousers"]
    assert max(shorts) < 0.5 < min(trousers)
    assert 0.8 < np.mean([o.hair_volume > 0 for o in outfits]) < 1.0
    only = GarmentConfig(kinds=("loose_top", "skirt"), loose=(0.02, 0.03))
    for s in range(30):
        o = sample_outfit(np.random.default_rng(s), only)
        assert o.top == "loose_top" and o.bottom == "skirt" and o.hair_volume == 0 and 0.02 <= o.top_offset <= 0.03
    bare = sample_outfit(np.random.default_rng(0), GarmentConfig(kinds=("hair",)))
    assert bare.top == "none" and bare.bottom == "none"


def test_outfits_round_trip_through_arrays():
    outfits = [sample_outfit(np.random.default_rng(s)) for s in range(5)] + [Outfit()]
    arrays = pack_outfits(outfits)
    assert all(a.dtype != object for a in arrays.values()) and arrays["neckline"].shape == (6, 2)
    assert unpack_outfits(arrays) == outfits
    with pytest.raises(BodycorrError, match="lack"):
        unpack_outfits({k: v for k, v in arrays.items() if k != "waist"})


# ------------------------------------------------------------------------------------------------
# On the Anny body.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coords(template):
    from bodycorr.render.appearance import body_coords

    return body_coords(template)


@pytest.fixture(scope="module")
def poses(body_model):
    """The neutral person in the rest A-pose, in a wide stance (the test suite's pose 84) and with
    arms against the body (pose 27)."""
    from bodycorr.body.pose import Pose
    from bodycorr.data.suite import load_parameters

    p = load_parameters("synthetic-v1")
    phen = np.full((1, 6), 0.5)
    out = [body_model(phen).vertices[0]]
    for s in (84, 27):
        pose = Pose(p["angles"][s : s + 1], p["global_rotation"][s : s + 1], p["translation"][s : s + 1])
        out.append(body_model(phen, pose.to_anny(body_model)).vertices[0])
    return out


def _parts(template, *names):
    return np.array([template.part_names.index(n) for n in names])


TIGHT = Outfit(top="tight_top", top_offset=0.008, sleeve=1.0, top_hem=-0.05, bottom="trousers", bottom_offset=0.006,
               bottom_length=1.0, waist=0.1)  # fmt: skip


@pytest.mark.slow
def test_garments_displace_outward_by_the_configured_amounts(coords, template, body_model, poses):
    from bodycorr.render.appearance import vertex_normals

    faces = body_model.faces
    rest = poses[0]
    off = outfit_offsets(TIGHT, coords, rest, faces)
    assert off.shape == (coords.num_vertices,) and off.dtype == np.float32 and off.min() >= 0
    torso = coords.part == template.part_names.index("torso")
    upper = torso & (coords.rest[:, 2] > 0.25) & (coords.rest[:, 2] < 0.4)  # chest and upper back: the top
    legs = np.isin(coords.part, _parts(template, "upper_leg.L", "upper_leg.R", "lower_leg.L", "lower_leg.R"))
    assert np.median(off[upper]) == pytest.approx(0.008) and (np.abs(off[upper] - 0.008) < 1e-6).mean() > 0.95
    assert np.median(off[legs]) == pytest.approx(0.006, abs=1e-3) and off[legs].max() <= 0.006 + 1e-6
    face_skin = (coords.part == template.part_names.index("head")) & (coords.rest[:, 1] < -0.05) & (coords.rest[:, 2] < coords.neck_z + 0.12)
    hands = np.isin(coords.part, _parts(template, "hand.L", "hand.R"))
    assert (off[face_skin] == 0).all() and (off[hands] == 0).all() and (off[coords.part < 0] == 0).all()
    shown = clothe(TIGHT, coords, rest, faces)
    n = vertex_normals(rest, faces)
    step = shown - rest
    assert np.abs(np.linalg.norm(step, axis=1) - off).max() < 1e-6
    assert ((step * n).sum(1) >= off - 1e-6).all()  # along the outward normal
    # hair volume: the crown rises by about the configured volume
    hairy = dataclasses.replace(TIGHT, hair_volume=0.03, hairline=(0.095, 0.03, -0.05))
    off_h = rest_offsets(hairy, coords)
    crown = (coords.part == template.part_names.index("head")) & (coords.rest[:, 2] > coords.head[2] + 0.12)
    assert crown.sum() > 20 and np.allclose(off_h[crown], 0.03, atol=0.008)
    # a loose top stands farther off than a tight one
    loose = rest_offsets(dataclasses.replace(TIGHT, top="loose_top", top_offset=0.03), coords)
    assert np.median(loose[upper]) == pytest.approx(0.03)


@pytest.mark.slow
def test_garments_follow_the_pose_and_keep_touching_parts_apart(coords, template, body_model, poses):
    from bodycorr.render.appearance import vertex_normals

    faces = body_model.faces
    loose = dataclasses.replace(TIGHT, top="loose_top", top_offset=0.04, bottom_offset=0.03)
    rest, _, posed = poses
    off_rest = outfit_offsets(loose, coords, rest, faces)
    off_posed = outfit_offsets(loose, coords, posed, faces)
    cloth = rest_offsets(loose, coords) > 0
    # the garment is the same cloth in any pose (touching parts excepted) ...
    assert (np.abs(off_posed - off_rest)[cloth] < 1e-6).mean() > 0.8
    # ... carried by the posed body: each vertex moves along the posed normal
    shown = clothe(loose, coords, posed, faces)
    n = vertex_normals(posed, faces)
    assert np.abs(((shown - posed) * n).sum(1) - off_posed).max() < 1e-6
    assert np.linalg.norm(shown - posed, axis=1).max() < 0.05
    # contact: no garment point ends nearer another body part's skin than its own offset
    from scipy.spatial import cKDTree

    tree = cKDTree(posed)

    def intruding(off):
        q = posed + off[:, None] * n
        d, j = tree.query(q)
        foreign = np.linalg.norm(coords.rest - coords.rest[j], axis=1) > off + 0.03
        return cloth & foreign & (d < 0.5 * off)

    raw = rest_offsets(loose, coords)
    assert intruding(raw).sum() > 200  # the arms rest against the body: the raw offsets would cross
    assert intruding(off_posed.astype(np.float64)).sum() < 0.1 * intruding(raw).sum()
    limited = contact_limit(raw, coords, posed, n)
    assert (limited <= raw).all() and (limited < raw).sum() > 50


def _between_the_legs(coords, template, body, shown, faces, limb):
    """Front view across the legs: the pixels between the legs at leg coordinates ``limb`` (rows),
    bare-body depth, clothed depth and clothed truth vertex of those pixels."""
    from bodycorr.geometry.camera import Camera, Intrinsics
    from bodycorr.render.frame import render
    from bodycorr.render.garments import _leg_axes
    from bodycorr.render.raycast import RayCaster
    from bodycorr.render.truth import body_truth

    axes, centres = _leg_axes(coords, body)
    across = axes[0, 6] - axes[1, 6]  # left minus right leg, at about mid-thigh
    fwd = np.cross([0.0, 0.0, 1.0], across)
    fwd /= np.linalg.norm(fwd)
    mid = 0.5 * (axes[0] + axes[1])
    target = mid[6]
    cam = Camera.look_at(target + 4.0 * fwd, target, np.array([0.0, 0.0, 1.0]), Intrinsics.square(200, 20))
    bare = render(RayCaster(body, faces), cam)
    dressed = render(RayCaster(shown, faces), cam)
    truth = body_truth(dressed, template).template_vertex
    gap = np.zeros(bare.depth.shape, dtype=bool)
    for t in limb:
        k = int(np.argmin(np.abs(centres - t)))
        c, r = cam.project(mid[k][None]).uv[0]
        row = int(r)
        hit = np.flatnonzero(bare.face[row] >= 0)
        left, right = hit[hit < c], hit[hit > c]
        if len(left) and len(right):
            gap[row, left.max() + 1 : right.min()] = True
    return gap, dressed.face >= 0, truth


@pytest.mark.slow
def test_skirts_bridge_the_legs_in_any_stance(coords, template, body_model, poses):
    faces = body_model.faces
    skirt = Outfit(top="tight_top", top_offset=0.006, sleeve=0.3, top_hem=-0.05, bottom="skirt", bottom_offset=0.008,
                   bottom_flare=0.04, bottom_length=0.7, waist=0.1)  # fmt: skip
    legs = _parts(template, "upper_leg.L", "upper_leg.R", "lower_leg.L", "lower_leg.R")
    for body in poses[:2]:
        gap, hit, truth = _between_the_legs(coords, template, body, clothe(skirt, coords, body, faces), faces, np.linspace(0.1, 0.5, 9))
        assert gap.sum() > 30  # bare legs: the background shows between them
        assert hit[gap].mean() > 0.95  # the skirt spans the gap
        tv = truth[gap & hit]
        assert np.isin(template.parts[tv], legs).mean() > 0.95  # its truth: the legs' inner faces under it
        # trousers leave the gap open
        gap2, hit2, _ = _between_the_legs(coords, template, body, clothe(TIGHT, coords, body, faces), faces, np.linspace(0.1, 0.5, 9))
        assert hit2[gap].mean() < 0.3


def test_leg_span_is_zero_off_the_legs_and_on_outer_faces():
    """Pure geometry: two vertical cylinders as legs; only faces turned to the other leg reach the mid plane."""
    from bodycorr.render.appearance import BodyCoords
    from bodycorr.render.garments import _P

    ring = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    heights = np.linspace(0.0, 0.8, 9)
    pts, normals, part, limb = [], [], [], []
    for side, x0 in (("L", 0.12), ("R", -0.12)):
        for h in heights:
            for a in ring:
                n = np.array([np.cos(a), np.sin(a), 0.0])
                pts.append(np.array([x0, 0.0, 0.9 - h]) + 0.07 * n)
                normals.append(n)
                part.append(_P[f"upper_leg.{side}"] if h < 0.4 else _P[f"lower_leg.{side}"])
                limb.append(h / 0.8)
    pts.append(np.zeros(3)), normals.append(np.array([0, 0, 1.0])), part.append(_P["torso"]), limb.append(0.0)
    v, n = np.array(pts), np.array(normals)
    coords = BodyCoords(rest=v.astype(np.float32), normal=n.astype(np.float32), part=np.array(part, dtype=np.int16),
                        limb=np.array(limb, dtype=np.float32), head=np.zeros(3), neck_z=1.5)  # fmt: skip
    span = leg_span(coords, v, n)
    assert span[-1] == 0
    facing = np.abs(n[:-1, 0] * np.sign(v[:-1, 0]) + 1) < 1e-9  # normal pointing straight at the other leg
    assert np.allclose(span[:-1][facing], 0.12 - 0.07)  # exactly to the plane x = 0
    outer = (n[:-1, 0] * np.sign(v[:-1, 0])) > -0.1
    assert (span[:-1][outer] == 0).all()
    assert set(GARMENT_KINDS) == {"tight_top", "loose_top", "trousers", "shorts", "skirt", "dress", "hair"}
