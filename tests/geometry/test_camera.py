"""Pinhole camera: intrinsics validation, look-at pose, projection / back-projection consistency, JSON IO."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics, load_intrinsics, save_intrinsics


@pytest.mark.parametrize(
    "args, expect",
    [
        ((0, 100, 50, 50, 100, 100), "focal lengths must be positive"),
        ((100, -1, 50, 50, 100, 100), "focal lengths must be positive"),
        ((100, 100, 50, 50, 0, 100), "width"),
        ((100, 100, 50, 50, 100, 9000), "height"),
        ((100, 100, 50, 50, 100.5, 100), "whole number"),
        ((100, 100, 150, 50, 100, 100), "principal point"),
        ((100, 100, 50, -1, 100, 100), "principal point"),
        ((float("nan"), 100, 50, 50, 100, 100), "finite"),
    ],
)
def test_intrinsics_validation(args, expect):
    with pytest.raises(BodycorrError, match=expect):
        Intrinsics(*args)


def test_presets_and_scaling():
    k = Intrinsics.kinect_v2()
    assert (k.width, k.height, k.fx, k.fy, k.cx, k.cy) == (512, 424, 365.0, 365.0, 256.0, 212.0)
    assert np.array_equal(k.matrix, [[365, 0, 256], [0, 365, 212], [0, 0, 1]])
    half = k.scaled(256)
    assert (half.width, half.height, half.fx, half.cx, half.cy) == (256, 212, 182.5, 128.0, 106.0)
    assert k.scaled((1024, 848)) == Intrinsics(730.0, 730.0, 512.0, 424.0, 1024, 848)

    sq = Intrinsics.square()
    assert sq.size == (512, 512) and sq.cx == sq.cy == 256.0
    cam = Camera.look_at(eye=[0, 0.9, 2.5], target=[0, 0.9, 0], intrinsics=sq)
    person = np.array([[0, 0.0, 0], [0, 1.9, 0], [-0.9, 1.5, 0], [0.9, 1.5, 0]])  # feet, head, hands
    assert cam.project(person).inside.all()


def test_scaled_intrinsics_map_pixel_centres_consistently():
    # With the u + 0.5 convention, scaling by 2 maps pixel centres of the small image onto the large one.
    small = Intrinsics.kinect_v2().scaled(256)
    big = small.scaled(512)
    cs, cb = Camera(small, np.eye(3), np.zeros(3)), Camera(big, np.eye(3), np.zeros(3))
    assert np.allclose(cb.project(cs.backproject(np.ones((212, 256)))).uv, 2 * small.pixel_centers())


def test_look_at_orientation():
    cam = Camera.look_at(eye=[0.0, 1.0, 3.0], target=[0.0, 1.0, 0.0], up=[0, 1, 0], intrinsics=Intrinsics.kinect_v2())
    assert np.allclose(cam.center, [0, 1, 3])
    assert np.allclose(cam.R @ cam.R.T, np.eye(3)) and np.isclose(np.linalg.det(cam.R), 1.0)
    proj = cam.project(np.array([[0, 1, 0], [0, 1.5, 0], [0.5, 1, 0], [0, 1, 5]]))
    assert np.allclose(proj.uv[0], [256, 212]) and np.isclose(proj.z[0], 3.0)  # target at principal point
    assert proj.uv[1, 1] < 212  # world up is image up (v grows downwards)
    assert proj.uv[2, 0] > 256  # +x is on the right when looking down -z with +y up
    assert np.isnan(proj.uv[3]).all() and not proj.inside[3] and proj.z[3] < 0  # behind the camera
    assert proj.inside[:3].all()
    # camera axes in world: x right, y down, z forward
    assert np.allclose(cam.R[2], [0, 0, -1]) and np.allclose(cam.R[1], [0, -1, 0]) and np.allclose(cam.R[0], [1, 0, 0])


def test_look_at_errors():
    with pytest.raises(BodycorrError, match="same point"):
        Camera.look_at([1, 1, 1], [1, 1, 1])
    with pytest.raises(BodycorrError, match="parallel"):
        Camera.look_at([0, 3, 0], [0, 0, 0], up=[0, 1, 0])
    with pytest.raises(BodycorrError, match="not a rotation"):
        Camera(Intrinsics.square(), np.diag([1.0, 1.0, -1.0]), np.zeros(3))


def random_camera() -> Camera:
    return Camera.look_at(eye=[1.2, 1.5, 2.4], target=[0.1, 0.9, -0.2], up=[0.1, 1, 0], intrinsics=Intrinsics(300, 310, 40.5, 29.0, 80, 60))


def test_world_camera_round_trip():
    cam = random_camera()
    pts = np.random.default_rng(0).normal(size=(5, 7, 3))
    assert np.allclose(cam.camera_to_world(cam.world_to_camera(pts)), pts)
    assert np.allclose(cam.world_to_camera(cam.center), 0)


def test_backproject_then_project_gives_pixel_centres():
    cam = random_camera()
    k = cam.intrinsics
    depth = np.random.default_rng(1).uniform(1.0, 4.0, (k.height, k.width))
    depth[5, 7] = 0.0
    depth[9, 3] = np.nan
    pts = cam.backproject(depth)
    assert pts.shape == (k.height, k.width, 3)
    assert np.isnan(pts[5, 7]).all() and np.isnan(pts[9, 3]).all()
    valid = depth > 0
    proj = cam.project(pts[valid])
    assert np.allclose(proj.uv, k.pixel_centers()[valid])
    assert np.allclose(proj.z, depth[valid])  # depth is camera z, not ray length
    assert proj.inside.all()
    # pixel (row 2, col 3) has its centre at (3.5, 2.5)
    assert np.allclose(cam.project(pts[2, 3]).uv, [3.5, 2.5])


def test_ray_directions_point_at_backprojected_points():
    cam = random_camera()
    k = cam.intrinsics
    rays = cam.ray_directions()
    assert rays.shape == (k.height, k.width, 3)
    assert np.allclose(np.linalg.norm(rays, axis=-1), 1.0)
    pts = cam.backproject(np.full((k.height, k.width), 2.0))
    to_pts = pts - cam.center
    assert np.allclose(to_pts / np.linalg.norm(to_pts, axis=-1, keepdims=True), rays)
    centre_ray = cam.R[2]  # optical axis in world
    assert (rays @ centre_ray > 0).all()


def test_backproject_rejects_wrong_size():
    with pytest.raises(BodycorrError, match="camera expects"):
        random_camera().backproject(np.ones((10, 10)))


def test_intrinsics_json_round_trip_and_errors(tmp_path):
    k = Intrinsics.kinect_v2()
    path = save_intrinsics(k, tmp_path / "k.json")
    assert json.loads(path.read_text()) == {"fx": 365.0, "fy": 365.0, "cx": 256.0, "cy": 212.0, "width": 512, "height": 424}
    assert load_intrinsics(path) == k

    cases = {
        "missing.json": None,
        "bad.json": "{fx: 1",
        "list.json": "[1, 2]",
        "partial.json": '{"fx": 1, "fy": 1, "cx": 1}',
        "negative.json": '{"fx": -5, "fy": 1, "cx": 1, "cy": 1, "width": 4, "height": 4}',
        "text.json": '{"fx": "a", "fy": 1, "cx": 1, "cy": 1, "width": 4, "height": 4}',
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(BodycorrError) as err:
            load_intrinsics(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BodycorrError, match="missing key.*cy, width, height"):
        load_intrinsics(tmp_path / "partial.json")


def test_intrinsics_from_matrix_file(tmp_path):
    np.savetxt(tmp_path / "K.txt", Intrinsics.kinect_v2().matrix)
    assert load_intrinsics(tmp_path / "K.txt", size=(512, 424)) == Intrinsics.kinect_v2()
    with pytest.raises(BodycorrError, match="size=") as err:
        load_intrinsics(tmp_path / "K.txt")
    assert str(tmp_path / "K.txt") in str(err.value)
    np.savetxt(tmp_path / "K2.txt", np.eye(2))
    with pytest.raises(BodycorrError, match="3x3"):
        load_intrinsics(tmp_path / "K2.txt", size=(4, 4))
    with pytest.raises(BodycorrError, match="principal point"):
        load_intrinsics(tmp_path / "K.txt", size=(100, 100))
