import numpy as np
import pytest

from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.render.frame import render
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster, cast_rays_reference
from bodycorr.render.rig import fit_distance, orbit_rig, random_camera


def _box():
    """A closed unit cube centred at the origin (12 outward triangles)."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    return v, f


def test_raycaster_matches_reference(rng):
    v = rng.normal(size=(40, 3))
    f = rng.integers(0, 40, (60, 3))
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    o = np.array([0.0, 0.0, -6.0])
    d = rng.normal(size=(300, 3)) * 0.15 + [0, 0, 1]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    fast = RayCaster(v, f).cast(o, d)
    slow = cast_rays_reference(v, f, o, d)
    assert (fast.face == slow.face).mean() > 0.99  # ties on shared edges may differ
    same = (fast.face == slow.face) & (fast.face >= 0)
    assert np.abs(fast.t[same] - slow.t[same]).max() < 1e-5
    assert np.abs(fast.bary[same] - slow.bary[same]).max() < 1e-4


def test_backprojected_pixel_is_the_surface_point(rng):
    """Depth back-projection equals the point given by triangle + barycentrics (within 1 mm)."""
    v, f = _box()
    v = v * [0.4, 0.3, 1.7]
    cam = random_camera(rng, Intrinsics.kinect_v2(), np.zeros(3), (2.0, 3.0))
    fr = render(RayCaster(v, f), cam)
    m = fr.mask
    assert m.sum() > 1000
    p = cam.backproject(fr.depth)[m]
    s = np.einsum("nk,nkd->nd", fr.bary[m].astype(np.float64), v[f[fr.face[m]]])
    assert np.abs(p - s).max() < 1e-3
    # normals face the camera
    rays = cam.ray_directions()[m] @ cam.R.T
    assert (np.einsum("nk,nk->n", fr.normal[m], rays) < 0).all()


def test_refit_moves_the_surface():
    v, f = _box()
    caster = RayCaster(v, f)
    cam = Camera.look_at([0, -3, 0], [0, 0, 0], [0, 0, 1], Intrinsics.square(64))
    d0 = render(caster, cam).depth
    caster.update(v + [0, 0.5, 0])
    d1 = render(caster, cam).depth
    m = (d0 > 0) & (d1 > 0)
    assert np.allclose(d1[m] - d0[m], 0.5, atol=1e-4)


def test_noise_keeps_truth_and_drops_pixels(rng):
    v, f = _box()
    cam = Camera.look_at([1.5, -2.5, 0.5], [0, 0, 0], [0, 0, 1], Intrinsics.kinect_v2())
    fr = render(RayCaster(v * [0.5, 0.4, 1.7], f), cam)
    noisy = add_depth_noise(fr, DepthNoiseConfig.preset("kinect_v2"), rng)
    kept = noisy.face >= 0
    assert kept.sum() < fr.mask.sum()  # dropout
    assert np.array_equal(noisy.face[kept], fr.face[kept])  # surviving truth unchanged
    err = noisy.depth[kept] - fr.depth[kept]
    assert 0.0005 < err.std() < 0.02
    assert np.allclose(noisy.depth[kept] * 1000, np.round(noisy.depth[kept] * 1000), atol=1e-3)  # mm steps
    flying = (noisy.depth > 0) & ~kept
    assert flying.any() and not (flying & fr.mask & kept).any()
    assert add_depth_noise(fr, DepthNoiseConfig.preset("none"), rng) is fr


def test_orbit_rig_surrounds_the_target():
    k = Intrinsics.square(64)
    cams = orbit_rig(k, np.zeros(3), 3.0, num_views=144)
    assert len(cams) == 144
    centres = np.stack([c.center for c in cams])
    assert np.allclose(np.linalg.norm(centres, axis=1), 3.0)
    yaw = np.arctan2(centres[:, 1], centres[:, 0])
    assert np.histogram(yaw, bins=8, range=(-np.pi, np.pi))[0].min() > 10
    for c in cams[::17]:
        assert c.project(np.zeros((1, 3))).inside.all()
    # a rig around another up axis is the same rig rotated
    up = np.array([0.0, 1.0, 0.0])
    cams_y = orbit_rig(k, np.zeros(3), 3.0, num_views=8, up=up)
    heights = np.array([c.center @ up for c in cams_y])
    assert heights.max() > 0.5 and heights.min() < -0.5


def test_fit_distance_frames_a_sphere():
    k = Intrinsics.square(128, 40)
    d = fit_distance(k, 1.0, margin=1.0)
    cam = Camera.look_at([0, -d, 0], [0, 0, 0], [0, 0, 1], k)
    edge = cam.project(np.array([[np.cos(0.0), 0.0, 0.0]]))
    assert edge.inside.all()
