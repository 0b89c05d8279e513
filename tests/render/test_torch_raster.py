"""The torch rasteriser against the pinhole ray caster (the renderer the engine uses), and the
batched torch noise model against the numpy one it ports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.render.frame import render
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise, add_depth_noise_torch
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera
from bodycorr.render.torch_raster import PinholeCameras, RasterFrames, _keep_min, rasterize


def _blob(rng, rows=20, cols=24):
    """A closed, bumpy, sphere-like mesh (a lat-long grid with random radii), ~1.7 m tall."""
    th, ph = np.meshgrid(np.linspace(0.05, np.pi - 0.05, rows), np.linspace(0, 2 * np.pi, cols, endpoint=False), indexing="ij")
    r = 0.5 + 0.08 * rng.random(th.shape)
    v = np.stack([r * np.sin(th) * np.cos(ph), r * np.sin(th) * np.sin(ph), 1.7 * r * np.cos(th)], -1).reshape(-1, 3)
    f = []
    for i in range(rows - 1):
        for j in range(cols):
            a, b, c, d = i * cols + j, i * cols + (j + 1) % cols, (i + 1) * cols + j, (i + 1) * cols + (j + 1) % cols
            f += [[a, c, b], [b, c, d]]
    return v, np.array(f)


def _cameras(rng, n):
    ks = (Intrinsics.square(64), Intrinsics(70.0, 60.0, 20.0, 41.0, 64, 64), Intrinsics.square(64, fov_deg=70))
    return [random_camera(rng, ks[i % 3], np.zeros(3), (1.5, 4.0), (-30.0, 40.0)) for i in range(n)]


def test_rasterize_matches_the_pinhole_ray_caster(rng):
    v, f = _blob(rng)
    cams = _cameras(rng, 6)
    shifts = rng.normal(scale=0.15, size=(6, 3))  # each view its own mesh (the same topology, moved)
    verts = np.stack([v + s for s in shifts]).astype(np.float32)
    out = rasterize(torch.from_numpy(verts), torch.from_numpy(f), PinholeCameras.from_cameras(cams))
    caster = RayCaster(v, f, bvh=False)
    seen = differ = 0
    for i, cam in enumerate(cams):
        caster.update(verts[i])
        ref = render(caster, cam, "pinhole")
        face = out.face[i].numpy()
        same = face == ref.face
        differ += int((~same).sum())
        m = same & (ref.face >= 0)
        seen += int((ref.face >= 0).sum())
        assert np.allclose(out.depth[i].numpy()[m], ref.depth[m], rtol=1e-5, atol=0)
        assert np.abs(out.bary[i].numpy()[m] - ref.bary[m]).max() < 1e-4
        assert np.abs(out.normal[i].numpy()[m] - ref.normal[m]).max() < 1e-4
        assert (out.depth[i].numpy()[face < 0] == 0).all() and (out.bary[i].numpy()[face < 0] == 0).all()
    assert seen > 5000
    assert differ <= 0.001 * seen  # only pixel centres on an edge, up to rounding, may go to the neighbour


def test_rasterize_in_chunks_gives_the_same_frames(rng):
    v, f = _blob(rng, 10, 12)
    cams = PinholeCameras.from_cameras(_cameras(rng, 3))
    a = rasterize(torch.from_numpy(v).float(), torch.from_numpy(f), cams)
    b = rasterize(torch.from_numpy(v).float(), torch.from_numpy(f), cams, max_candidates=37)
    for k in ("depth", "face", "bary", "normal"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert int(a.mask.sum()) > 500


def test_nearest_surface_wins_and_the_far_one_is_hidden():
    # two parallel squares facing the camera: the near one (faces 2, 3) covers the middle
    quad = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    v = np.concatenate([quad * 0.5 + [0, 0, 3.0], quad * 0.2 + [0, 0, 2.0]]).astype(np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    cam = Camera(Intrinsics.square(32, fov_deg=40), np.eye(3), np.zeros(3))
    out = rasterize(torch.from_numpy(v), torch.from_numpy(f), PinholeCameras.from_cameras([cam]))
    assert out.face[0, 16, 16] in (2, 3) and out.depth[0, 16, 16] == pytest.approx(2.0)
    assert out.face[0, 16, 9] in (0, 1) and out.depth[0, 16, 9] == pytest.approx(3.0)
    assert out.face[0, 0, 0] == -1
    assert torch.allclose(out.normal[0, 16, 16], torch.tensor([0.0, 0.0, -1.0]))  # turned to the camera


def test_bad_inputs_are_one_line():
    cams = PinholeCameras.from_cameras([Camera(Intrinsics.square(16), np.eye(3), np.zeros(3))] * 2)
    with pytest.raises(BodycorrError, match="vertices must be"):
        rasterize(torch.zeros(3, 5, 3), torch.zeros(1, 3, dtype=torch.long), cams)
    with pytest.raises(BodycorrError, match="faces must be"):
        rasterize(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long), cams)
    with pytest.raises(BodycorrError, match="one image size"):
        PinholeCameras.from_cameras([Camera(Intrinsics.square(16), np.eye(3), np.zeros(3)), Camera(Intrinsics.square(8), np.eye(3), np.zeros(3))])


def test_torch_noise_follows_the_numpy_model(rng):
    v, f = _blob(rng, 30, 36)
    cam = Camera.look_at(np.array([0.0, -2.8, 0.3]), np.zeros(3), np.array([0.0, 0.0, 1.0]), Intrinsics.square(96, fov_deg=50))
    frame = render(RayCaster(v, f, bvh=False), cam, "pinhole")
    mask = frame.face >= 0
    cfg = DepthNoiseConfig.preset("kinect_v2")
    # the numpy model over 24 draws
    ref_drop, ref_fly, ref_res = [], [], []
    for s in range(24):
        n = add_depth_noise(frame, cfg, np.random.default_rng(s))
        ref_drop.append(((n.face < 0) & mask).sum() / mask.sum())
        ref_fly.append(((n.depth > 0) & ~mask).sum())
        kept = n.face >= 0
        ref_res.append(np.std(n.depth[kept] - frame.depth[kept]))
    # the torch model on a batch of 24 copies, the last 4 left clean
    b = 24
    frames = RasterFrames(depth=torch.from_numpy(frame.depth)[None].repeat(b, 1, 1), face=torch.from_numpy(frame.face).long()[None].repeat(b, 1, 1),
                          bary=torch.from_numpy(frame.bary)[None].repeat(b, 1, 1, 1), normal=torch.from_numpy(frame.normal)[None].repeat(b, 1, 1, 1))
    cams = PinholeCameras.from_cameras([cam] * b)
    apply = torch.arange(b) < 20
    out = add_depth_noise_torch(frames, cams, cfg, torch.Generator().manual_seed(0), apply)
    d, fc = out.depth.numpy(), out.face.numpy()
    assert np.array_equal(d[20:], frames.depth[20:].numpy()) and np.array_equal(fc[20:], frames.face[20:].numpy())
    drop = [((fc[i] < 0) & mask).sum() / mask.sum() for i in range(20)]
    fly = [((d[i] > 0) & ~mask).sum() for i in range(20)]
    res = [np.std(d[i][fc[i] >= 0] - frame.depth[fc[i] >= 0]) for i in range(20)]
    assert np.mean(drop) == pytest.approx(np.mean(ref_drop), rel=0.15)
    assert np.mean(fly) == pytest.approx(np.mean(ref_fly), rel=0.25)
    assert np.mean(res) == pytest.approx(np.mean(ref_res), rel=0.1)
    for i in range(20):
        kept = fc[i] >= 0
        assert np.array_equal(fc[i][kept], frame.face[kept])  # the truth of a kept pixel never changes
        assert not (kept & ~mask).any()  # flying pixels have no truth
        assert np.allclose(d[i] * 1000, np.round(d[i] * 1000), atol=1e-3)  # whole millimetres
        lost = (fc[i] < 0) & (d[i] > 0)  # a depth without truth: only flying pixels, beside a kept one
        near_kept = np.zeros_like(kept)
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            near_kept |= np.roll(kept, (di, dj), (0, 1))
        assert not (lost & ~near_kept).any() and lost.any()
        assert (out.bary[i].numpy()[~kept] == 0).all()


def test_both_z_buffer_reductions_keep_each_pixels_smallest_key():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 50, (2000,), generator=g)
    values = torch.randint(0, 2**62, (2000,), generator=g)
    want = torch.full((60,), 2**63 - 1)
    for i, v in zip(index.tolist(), values.tolist()):
        want[i] = min(int(want[i]), v)
    for by_sort in (False, True):
        keys = torch.full((60,), 2**63 - 1)
        keys[3] = 5  # a key already there and smaller stays
        _keep_min(keys, index, values, by_sort=by_sort)
        expect = want.clone()
        expect[3] = min(5, int(want[3]))
        assert torch.equal(keys, expect)
