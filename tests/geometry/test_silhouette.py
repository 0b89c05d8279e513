"""Depth-image constraint: the torch kernel against the loop reference, and what it measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.silhouette import DepthSilhouette

K = Intrinsics.square(64, fov_deg=60.0)


def _wall():
    """A 1 m-wide square wall 2 m in front of a camera at the origin looking down +Z: a depth
    image with the square's pixels at 2 m and nothing elsewhere."""
    cam = Camera.look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), up=(0.0, -1.0, 0.0), intrinsics=K)
    rays = K.camera_rays()
    depth = np.where((np.abs(rays[..., 0] * 2) < 0.5) & (np.abs(rays[..., 1] * 2) < 0.5), 2.0, 0.0).astype(np.float32)
    return cam, depth


@pytest.mark.parametrize("margin", [0.5, 2.5])
def test_torch_kernel_matches_the_reference(margin):
    cam, depth = _wall()
    sil = DepthSilhouette.from_depth(depth, cam)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-1.5, 1.5, 300), rng.uniform(-1.5, 1.5, 300), rng.uniform(0.5, 3.0, 300)], 1)
    ref = sil.residuals(pts, tolerance=0.02, margin_px=margin)
    got = sil.residuals_torch(torch.as_tensor(pts[None], dtype=torch.float64), tolerance=0.02, margin_px=margin)
    np.testing.assert_array_equal(got.in_image[0].numpy(), ref.in_image)
    np.testing.assert_allclose(got.outside[0].numpy(), ref.outside, atol=1e-9)
    np.testing.assert_allclose(got.in_front[0].numpy(), ref.in_front, atol=1e-9)
    assert ref.in_image.sum() > 100 and (ref.outside > 0).sum() > 50 and (ref.in_front > 0).sum() > 5


def test_residuals_measure_what_they_say():
    cam, depth = _wall()
    sil = DepthSilhouette.from_depth(depth, cam)
    f = K.fx
    r = sil.residuals(np.array([
        [0.0, 0.0, 2.5],   # behind the wall, inside: no violation
        [0.0, 0.0, 1.5],   # 0.5 m in front of the wall: free space
        [0.0, 0.0, 1.99],  # within the noise tolerance
        [0.9, 0.0, 2.0],   # 0.4 m right of the wall's edge, at its depth
        [0.0, 0.0, -1.0],  # behind the camera: unconstrained
    ]), tolerance=0.02, margin_px=0.5)  # fmt: skip
    np.testing.assert_array_equal(r.in_image, [True, True, True, True, False])
    np.testing.assert_allclose(r.in_front, [0, 0.5 - 0.02, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(r.outside[:3], 0, atol=1e-9)
    # 0.4 m at 2 m is 0.2 f pixels; the distance field is measured between pixel centres
    assert r.outside[3] == pytest.approx(0.4, abs=2 * 2.0 / f)


def test_free_space_reads_the_nearest_surface_within_the_margin():
    """A point just beside the wall's edge, in front of it: its own pixel sees nothing behind it,
    so only a margin reaching the wall's pixels makes it a violation; a point whose pixel sees
    the far background but whose neighbour sees a nearer surface is judged by the nearer one."""
    cam, depth = _wall()
    depth = np.where(depth > 0, depth, 5.0).astype(np.float32)  # a far background wall at 5 m
    sil = DepthSilhouette.from_depth(depth, cam)
    edge = np.flatnonzero(depth[32] < 3)[-1]  # the last near-wall pixel of the middle row
    ray = K.camera_rays()[32, edge + 1]  # the first background pixel's ray
    p = ray * 3.0  # 3 m along it: in front of the background (5 m), behind the near wall (2 m)
    near = sil.residuals(p[None], tolerance=0.0, margin_px=1.5).in_front[0]
    own = sil.residuals(p[None], tolerance=0.0, margin_px=0.5).in_front[0]
    assert own == pytest.approx(2.0, abs=1e-3) and near == 0.0


def test_gradient_pulls_a_point_back_inside():
    cam, depth = _wall()
    sil = DepthSilhouette.from_depth(depth, cam)
    p = torch.tensor([[[0.9, 0.1, 2.0]]], dtype=torch.float64, requires_grad=True)
    sil.residuals_torch(p).outside.sum().backward()
    assert p.grad[0, 0, 0] > 0  # moving left (-x) lowers it


def test_bad_depth_is_one_clear_line():
    cam, depth = _wall()
    with pytest.raises(BodycorrError, match="no valid pixel"):
        DepthSilhouette.from_depth(np.zeros_like(depth), cam)
    with pytest.raises(BodycorrError, match="matching intrinsics"):
        DepthSilhouette.from_depth(depth[:10], cam)
