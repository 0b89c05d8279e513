import dataclasses

import numpy as np
import pytest
from tinyshapes import icosphere

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh
from bodycorr.render.appearance import (
    BOTTOM, EYE, HAIR, SHOES, SKIN, TOP, Lighting, albedo, body_coords, colour_jitter, displace, regions,
    sample_appearance, sample_background, sample_lighting, sample_occluders, shade, surface_points, vertex_normals,
    vertex_offsets, vertex_points,
)  # fmt: skip

# ------------------------------------------------------------------------------------------------
# Pure functions (no body model).
# ------------------------------------------------------------------------------------------------


def test_shade_bounded_and_monotone_in_light_angle():
    light = Lighting(direction=(0.0, 0.0, 1.0), ambient=0.3, diffuse=0.8, colour=(1.0, 0.9, 1.1))
    angles = np.radians(np.linspace(0, 180, 91))
    normals = np.stack([np.sin(angles), np.zeros_like(angles), np.cos(angles)], 1)
    alb = np.full((91, 3), 0.6)
    out = shade(alb, normals, light)
    assert out.dtype == np.float32 and out.shape == (91, 3)
    grey = out[:, 0]
    assert (np.diff(grey) <= 1e-7).all()  # darker as the surface turns away from the light
    assert grey[0] == pytest.approx(0.6 * (0.3 + 0.8), abs=1e-6)
    assert np.allclose(grey[angles >= np.pi / 2], 0.6 * 0.3, atol=1e-6)  # ambient only behind
    # any albedo, any normal, any sampled light: bounded in [0, 1]
    rng = np.random.default_rng(1)
    n = rng.normal(size=(500, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    for _ in range(20):
        s = shade(rng.random((500, 3)), n, sample_lighting(rng))
        assert s.min() >= 0.0 and s.max() <= 1.0
    # the light given in other axes overrides the stored direction
    assert np.allclose(shade(alb[:1], normals[:1], light, np.array([0.0, 0.0, -1.0]))[0, 0], 0.6 * 0.3)


def test_colour_jitter_keeps_dtype_and_range():
    rng = np.random.default_rng(0)
    img = sample_background(rng, 40)
    out = colour_jitter(img, np.random.default_rng(5), 1.0)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert not np.array_equal(out, img)
    assert np.array_equal(out, colour_jitter(img, np.random.default_rng(5), 1.0))
    assert np.array_equal(colour_jitter(img, rng, 0.0), img)
    # strong jitter saturates rather than wrapping around: a brighter input is never darker out
    for s in range(10):
        lo, hi = (colour_jitter(np.full((8, 8, 3), v, dtype=np.uint8), np.random.default_rng(s), 3.0) for v in (200, 255))
        assert (hi >= lo).all()
    # hue and saturation act on chroma: a grey image stays grey (up to the pixel noise)
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    for s in range(5):
        j = colour_jitter(grey, np.random.default_rng(s), 1.0).astype(float)
        assert abs(j[..., 0].mean() - j[..., 1].mean()) < 1.0 and abs(j[..., 1].mean() - j[..., 2].mean()) < 1.0
    with pytest.raises(BodycorrError, match="uint8"):
        colour_jitter(img.astype(np.float32), rng)
    with pytest.raises(BodycorrError, match="strength"):
        colour_jitter(img, rng, -1.0)


def test_backgrounds_are_seeded_and_varied():
    a = [sample_background(np.random.default_rng(s), 32) for s in range(12)]
    b = [sample_background(np.random.default_rng(s), 32) for s in range(12)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.dtype == np.uint8 and x.shape == (32, 32, 3) for x in a)
    assert len({x.tobytes() for x in a}) == 12
    assert np.mean([x.reshape(-1, 3).std(0).mean() > 2 for x in a]) > 0.7  # not flat fills
    with pytest.raises(BodycorrError):
        sample_background(np.random.default_rng(0), 0)


def test_occluders_cover_part_of_the_person():
    size = 64
    person = np.zeros((size, size), dtype=bool)
    person[10:60, 25:40] = True
    covers = []
    for s in range(30):
        occ = sample_occluders(np.random.default_rng(s), size, (10, 25, 60, 40), max_cover=0.4, person=person)
        assert occ.mask.shape == (size, size) and occ.rgb.dtype == np.uint8
        covers.append(occ.mask[person].mean())
    covers = np.array(covers)
    assert covers.max() <= 0.4 + 1e-9
    assert (covers > 0).mean() > 0.8  # they do land on the person


def test_vertex_normals_match_the_mesh_reference_and_displace_moves_along_them():
    v, f = icosphere(2)
    fast = vertex_normals(v, f)
    ref = Mesh(v, f).vertex_normals()  # np.add.at reference
    assert np.abs(fast - ref).max() < 1e-5
    # on a sphere, normals are radial: displacing by 0.1 gives radius 1.1
    out = displace(v, fast, np.full(len(v), 0.1))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.1, atol=2e-3)
    off = np.linspace(0, 0.2, len(v))
    assert np.allclose(np.linalg.norm(displace(v, fast, off) - v, axis=1), off, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# On the Anny body.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coords(template):
    return body_coords(template)


def _look(**kw):
    base = sample_appearance(np.random.default_rng(3))
    return dataclasses.replace(base, **kw)


@pytest.mark.slow
def test_body_coords(coords, template, body_model):
    assert coords.num_vertices == body_model.num_vertices
    part = coords.part
    assert (part < 0).sum() == body_model.num_vertices - template.num_vertices  # eyes and tongue
    names = template.part_names
    for side in "LR":
        ua, la, hand = (coords.limb[part == names.index(f"{p}.{side}")] for p in ("upper_arm", "lower_arm", "hand"))
        assert ua.min() >= 0 and ua.max() <= 0.5 + 1e-6 and la.min() >= 0.5 - 1e-6 and la.max() <= 1 + 1e-6
        assert hand.min() >= 1.0
        ul, ll = (coords.limb[part == names.index(f"{p}.{side}")] for p in ("upper_leg", "lower_leg"))
        assert np.median(ul) < np.median(ll)
    assert (coords.limb[part == names.index("torso")] == 0).all()
    assert np.allclose(np.linalg.norm(coords.normal[part >= 0], axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_regions_follow_the_appearance(coords, template):
    pts = vertex_points(coords)
    names = template.part_names
    arm = np.isin(pts.part, [names.index(f"{p}.{s}") for p in ("upper_arm", "lower_arm") for s in "LR"])
    leg = np.isin(pts.part, [names.index(f"{p}.{s}") for p in ("upper_leg", "lower_leg") for s in "LR"])
    feet = np.isin(pts.part, [names.index("foot.L"), names.index("foot.R")])
    lower = np.isin(pts.part, [names.index("lower_leg.L"), names.index("lower_leg.R")])
    r = regions(_look(sleeve=0.0, bottom_kind="trousers", bottom_length=1.01, boot=0.0, tucked=False), coords, pts)
    assert not (r[arm] == TOP).any()
    assert (r[leg] == BOTTOM).all() and (r[feet] == SHOES).all()
    r = regions(_look(sleeve=1.05, bottom_kind="trousers", bottom_length=0.3, boot=0.0), coords, pts)
    assert (r[arm] == TOP).all()
    assert (r[lower] == SKIN).mean() > 0.95  # shorts
    assert (r[pts.part < 0] == EYE).all()
    hairy = regions(_look(bald=False, hair_long=0.0), coords, pts) == HAIR
    assert hairy.sum() > 200 and (pts.part[hairy] == names.index("head")).all()
    nose = template.template_to_full[template.landmarks[list(template.landmark_names).index("nose_tip")]]
    top_of_head = template.template_to_full[template.landmarks[list(template.landmark_names).index("head_top")]]
    assert hairy[top_of_head] and not hairy[nose]
    assert not (regions(_look(bald=True), coords, pts) == HAIR).any()


@pytest.mark.slow
def test_offsets_hair_and_cloth_only(coords):
    pts = vertex_points(coords)
    look = _look(bald=False, hair_volume=0.03, bottom_kind="skirt", bottom_length=0.6, bottom_loose=0.01, bottom_flare=0.05)
    off = vertex_offsets(look, coords)
    reg = regions(look, coords, pts)
    assert off.shape == (coords.num_vertices,) and off.dtype == np.float32
    assert (off[reg == SKIN] == 0).all() and (off[reg == EYE] == 0).all()
    assert (off[reg == HAIR] > 0).all() and off[reg == HAIR].max() <= 0.03 + 1e-6
    sk = (reg == BOTTOM) & (pts.limb > 0)
    near_hem = sk & (pts.limb > 0.25)
    near_hip = sk & (pts.limb < 0.1)
    assert off[near_hem].mean() > off[near_hip].mean() + 0.01  # the skirt flares downward


@pytest.mark.slow
def test_pixel_albedo_matches_vertex_albedo(coords, body_model):
    look = sample_appearance(np.random.default_rng(7))
    faces = body_model.faces
    rng = np.random.default_rng(0)
    fid = rng.integers(0, len(faces), 300)
    corner = rng.integers(0, 3, 300)
    bary = np.eye(3, dtype=np.float32)[corner]  # exactly at a corner: the pixel is that vertex
    px = albedo(look, coords, surface_points(coords, faces, fid, bary))
    vx = albedo(look, coords, vertex_points(coords))[faces[fid, corner]]
    assert np.allclose(px, vx, atol=1e-6)
    assert px.min() >= 0 and px.max() <= 1


@pytest.mark.slow
def test_appearances_are_seeded_and_diverse():
    a = [sample_appearance(np.random.default_rng(s)) for s in range(60)]
    assert a[5] == sample_appearance(np.random.default_rng(5))
    lum = np.array([np.dot(x.skin, [0.299, 0.587, 0.114]) for x in a])
    assert lum.min() < 0.35 and lum.max() > 0.75  # dark to light skin
    assert {x.bottom_kind for x in a} == {"trousers", "skirt", "dress"}
    assert {x.top.kind for x in a} == {"solid", "stripes", "checks", "dots"}
    sleeves = np.array([x.sleeve for x in a])
    assert (sleeves == 0).any() and (sleeves > 0.9).any() and ((sleeves > 0.1) & (sleeves < 0.8)).any()
    assert any(x.hair_long > 0 for x in a) and len({x.hair for x in a}) > 20


@pytest.mark.slow
def test_truth_under_hair_and_cloth_is_the_body_point_below(coords, template, body_model):
    """A ray hits the displaced (hair/cloth) surface; its truth is the body point under that hit."""
    from bodycorr.geometry.camera import Camera, Intrinsics
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster
    from bodycorr.render.truth import body_truth

    faces = body_model.faces
    body = body_model(np.full((1, 6), 0.5)).vertices[0]
    look = _look(bald=False, hair_volume=0.04, hair_long=0.2, top_loose=0.03, sleeve=1.0)
    off = vertex_offsets(look, coords)
    n = vertex_normals(body, faces)
    shown = displace(body, n, off)
    for eye in ([0.0, 2.0, 0.9], [0.0, -2.0, 0.3]):  # behind (hair) and in front (loose top)
        cam = Camera.look_at(np.array(eye), np.array([0.0, 0.0, 0.3]), np.array([0.0, 0.0, 1.0]), Intrinsics.square(96, 55))
        frame = render(RayCaster(shown, faces), cam)
        m = frame.face >= 0
        hit = cam.backproject(frame.depth)[m]
        f, b = frame.face[m], frame.bary[m].astype(np.float64)
        tri = faces[f]
        under = np.einsum("nk,nkd->nd", b, body[tri])  # the body point with the same (face, barycentrics)
        lifted = np.einsum("nk,nkd->nd", b, shown[tri])
        assert np.abs(hit - lifted).max() < 2e-3  # the hit is on the displaced surface
        o = np.einsum("nk,nk->n", b, off[tri])
        covered = o > 0.01
        assert covered.sum() > 50
        gap = np.linalg.norm(hit - under, axis=1)
        assert np.abs(gap - o)[covered].max() < 4e-3  # hit = body point + offset along the normal
        assert np.median(gap[covered]) > 0.015
        # the truth vertex lies at the body point below, not at the hit on the hair/cloth
        tv = body_truth(frame, template).template_vertex[m]
        at = body[template.template_to_full[tv]]
        assert np.median(np.linalg.norm(at - under, axis=1)[covered]) < 0.012
        assert np.median(np.linalg.norm(at - hit, axis=1)[covered]) > 0.015
