"""The fast render paths against their slow, obvious references: BVH-free pinhole casting against
the BVH (bit for bit), and the boxed noise model against the whole-image one (byte for byte)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.render.frame import Frame, render
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera


def _blob(rng, n=400):
    """A closed, bumpy, sphere-like mesh (icosphere-free: a lat-long grid with random radii)."""
    th, ph = np.meshgrid(np.linspace(0.05, np.pi - 0.05, 20), np.linspace(0, 2 * np.pi, 24, endpoint=False), indexing="ij")
    r = 0.5 + 0.08 * rng.random(th.shape)
    v = np.stack([r * np.sin(th) * np.cos(ph), r * np.sin(th) * np.sin(ph), 1.7 * r * np.cos(th)], -1).reshape(-1, 3)
    f = []
    for i in range(19):
        for j in range(24):
            a, b, c, d = i * 24 + j, i * 24 + (j + 1) % 24, (i + 1) * 24 + j, (i + 1) * 24 + (j + 1) % 24
            f += [[a, c, b], [b, c, d]]
    return v, np.array(f)


def _same_frames(a: Frame, b: Frame, allowed_face_diffs: int = 0) -> None:
    diff = a.face != b.face
    assert diff.sum() <= allowed_face_diffs
    for k in ("depth", "bary", "normal"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x[~diff], y[~diff]), k
    assert a.face.dtype == b.face.dtype


def test_pinhole_casting_equals_bvh(rng):
    v, f = _blob(rng)
    caster = RayCaster(v, f)
    n = 0
    for k in (Intrinsics.kinect_v2(), Intrinsics.square(64), Intrinsics(200.0, 180.0, 10.0, 70.0, 96, 80)):
        for _ in range(4):
            cam = random_camera(rng, k, np.zeros(3), (1.5, 4.0), (-30.0, 40.0))
            a, b = render(caster, cam), render(caster, cam, "pinhole")
            _same_frames(a, b)
            n += int(a.mask.sum())
    assert n > 2000
    # moved vertices (no refit needed by the pinhole path), a caster that never builds its BVH
    lazy = RayCaster(v, f, bvh=False)
    for shift in ([0.1, 0.0, 0.0], [0.0, -0.3, 0.2]):
        caster.update(v + shift)
        lazy.update(v + shift)
        cam = random_camera(rng, Intrinsics.square(96), np.zeros(3), (1.5, 3.0))
        _same_frames(render(caster, cam), render(lazy, cam, "pinhole"))


def test_pinhole_casting_behind_and_outside_the_camera(rng):
    v, f = _blob(rng)
    caster = RayCaster(v * 3.0, f)
    # camera inside the mesh: vertices behind the camera plane, the whole image is tested
    cam = Camera.look_at([0.1, 0.0, 0.2], [1.0, 0.2, 0.0], [0, 0, 1], Intrinsics.square(48, 90.0))
    a, b = render(caster, cam), render(caster, cam, "pinhole")
    assert a.mask.all()
    _same_frames(a, b)
    # camera a centimetre from the surface (projections far outside the image) and a long lens
    cam = Camera.look_at([0.0, -1.62, 0.0], [0.0, 0.0, 0.0], [0, 0, 1], Intrinsics.square(64, 120.0))
    _same_frames(render(caster, cam), render(caster, cam, "pinhole"))
    for dist, fov in ((40.0, 3.0), (300.0, 0.4)):  # fx 1200 and 9200: the margin grows with fx
        cam = Camera.look_at([0.0, -dist, 1.0], [0.0, 0.0, 1.0], [0, 0, 1], Intrinsics.square(64, fov))
        a, b = render(caster, cam), render(caster, cam, "pinhole")
        assert a.mask.sum() > 500
        _same_frames(a, b)
    # looking away: nothing seen
    cam = Camera.look_at([0.0, -5.0, 0.0], [0.0, -10.0, 0.0], [0, 0, 1], Intrinsics.square(32))
    b = render(caster, cam, "pinhole")
    assert not b.mask.any() and not b.depth.any()
    with pytest.raises(ValueError, match="method"):
        render(caster, cam, "zbuffer")


def _noise_reference(frame: Frame, config: DepthNoiseConfig, rng: np.random.Generator) -> Frame:
    """The noise model computed on the whole image (the original, obvious implementation)."""
    if config.kind == "none":
        return frame
    depth = frame.depth.astype(np.float64).copy()
    face = frame.face.copy()
    mask = face >= 0
    h, w = depth.shape
    z = depth[mask]
    sigma = config.sigma_base + config.sigma_quadratic * np.maximum(z - config.z_ref, 0.0) ** 2
    depth[mask] = z + rng.normal(size=z.shape) * sigma
    drop = np.zeros_like(mask)
    if config.grazing_deg < 90:
        rays = frame.camera.ray_directions() @ frame.camera.R.T
        cosang = np.abs(np.einsum("hwk,hwk->hw", frame.normal, rays))
        ang = np.degrees(np.arccos(np.clip(cosang, 0, 1)))
        p = 1.0 / (1.0 + np.exp(-(ang - config.grazing_deg) / 3.0))
        drop |= mask & (rng.random((h, w)) < p)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)
    drop |= edge & (rng.random((h, w)) < config.edge_dropout)
    n_holes = rng.poisson(config.holes) if config.holes > 0 else 0
    if n_holes:
        ys, xs = np.nonzero(mask)
        if len(ys):
            yy, xx = np.mgrid[0:h, 0:w]
            for k in rng.integers(0, len(ys), n_holes):
                r = rng.uniform(1.5, 4.0)
                drop |= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 < r * r
    drop &= mask
    depth[drop] = 0.0
    face[drop] = -1
    if config.flying_pixel_rate > 0:
        keep = face >= 0
        outer = ndimage.binary_dilation(keep, iterations=1) & ~keep
        fly = outer & (rng.random((h, w)) < config.flying_pixel_rate)
        if fly.any():
            near = ndimage.grey_dilation(np.where(keep, depth, 0.0), size=3)
            depth[fly] = near[fly] + rng.uniform(0.02, 1.0, size=int(fly.sum()))
    if config.quantisation > 0:
        depth = np.round(depth / config.quantisation) * config.quantisation
    bary = np.where((face >= 0)[..., None], frame.bary, 0).astype(np.float32)
    normal = np.where((face >= 0)[..., None], frame.normal, 0).astype(np.float32)
    return replace(frame, depth=depth.astype(np.float32), face=face, bary=bary, normal=normal)


@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.MT19937])
def test_boxed_noise_equals_whole_image_noise(rng, bitgen):
    v, f = _blob(rng)
    caster = RayCaster(v, f)
    configs = [
        DepthNoiseConfig.preset("kinect_v2"),
        DepthNoiseConfig(holes=10.0, edge_dropout=0.6, flying_pixel_rate=0.6, grazing_deg=50.0),
        DepthNoiseConfig(grazing_deg=90.0, holes=0.0, quantisation=0.0, flying_pixel_rate=0.0),
    ]
    frames = []
    for k in (Intrinsics.kinect_v2(), Intrinsics.square(64)):
        for dist in ((1.5, 2.0), (0.9, 1.0), (3.0, 4.0)):  # near ones run over the image border
            frames.append(render(caster, random_camera(rng, k, np.zeros(3), dist)))
    frames.append(render(caster, Camera.look_at([0.0, -5.0, 0.0], [0.0, -10.0, 0.0], [0, 0, 1], Intrinsics.square(32))))  # empty
    checked = 0
    for fr in frames:
        for cfg in configs:
            seed = int(rng.integers(1 << 30))
            ra, rb = np.random.Generator(bitgen(seed)), np.random.Generator(bitgen(seed))
            a, b = _noise_reference(fr, cfg, ra), add_depth_noise(fr, cfg, rb)
            for key in ("depth", "face", "bary", "normal"):
                x, y = getattr(a, key), getattr(b, key)
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), key
            assert ra.random() == rb.random()  # the stream is left where the reference leaves it
            # noise on a noisy frame: flying pixels (depth without a face) lie outside the faces
            a2, b2 = _noise_reference(a, cfg, ra), add_depth_noise(b, cfg, rb)
            assert all(getattr(a2, key).tobytes() == getattr(b2, key).tobytes() for key in ("depth", "face", "bary", "normal"))
            checked += int((a.face != fr.face).sum())
    assert checked > 100  # the noise did drop pixels
