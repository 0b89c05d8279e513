"""bodycorr view: each kind of output folder (written by the real writers on tiny geometry) loads
into a viser scene, clicks pick matches, bad folders fail in one line, the server answers on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bodycorr.apps import viewer as vw
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh
from tinyshapes import icosphere


@pytest.fixture(scope="module")
def tiny_extractor():
    from bodycorr.matching.extract import DescriptorExtractor
    from bodycorr.models.registry import create_model

    torch.manual_seed(0)
    return DescriptorExtractor(create_model("unet", base_width=4, max_width=16, num_levels=3).eval(), size=32)


def _body_mesh(scale=(0.25, 0.15, 0.85)) -> Mesh:
    v, f = icosphere(2)
    return Mesh(v * scale + [0, 0, 0.9], f, "body")


@pytest.fixture(scope="module")
def match_folder(tmp_path_factory, tiny_extractor):
    """A demo-like match folder: a depth view against a mesh, per-point errors, a fitted template
    (a stand-in mesh), and an image/ output beside it."""
    from bodycorr.geometry.io import save_mesh
    from bodycorr.matching.inputs import ScanInput, depth_input
    from bodycorr.matching.pipeline import match_scans, write_outputs
    from bodycorr.geometry.camera import Intrinsics

    out = tmp_path_factory.mktemp("demo")
    depth = np.zeros((424, 512), np.float32)
    depth[120:300, 230:280] = 2.4
    src = depth_input(depth, Intrinsics.kinect_v2(), name="view")
    mesh = _body_mesh()
    tgt = ScanInput(kind="mesh", points=mesh.vertices, name="mesh", mesh=mesh)
    res = match_scans(src, tgt, tiny_extractor, views=4, up="z", refine="none")
    err = np.linspace(0, 30, len(res.source.points)).astype(np.float32)
    err[0] = np.nan
    write_outputs(res, out, {"error_vs_truth": {"mean_cm": 15.0, "median_cm": 15.0, "within_5cm_pct": 16.0}}, arrays={"error_cm": err})
    save_mesh(_body_mesh((0.2, 0.12, 0.8)), out / "source_template.ply")
    _write_image_output(out / "image", out)
    return out


def _write_image_output(out, photo_dir):
    """``bodycorr image`` on a bright block (the "person") with a stand-in network whose every
    person pixel has template vertex 123's colour (as tests/matching/test_image.py)."""
    from PIL import Image

    from bodycorr.body.surface_code import get_surface_code
    from bodycorr.matching import image as mi

    code = get_surface_code("position")

    class BrightIsPerson(torch.nn.Module):
        def predict(self, x, foreground=None):
            sil = (x.mean(1) > 0.5).float()
            b, h, w = sil.shape
            colour = torch.as_tensor(code.colours[123], dtype=torch.float32).expand(b, h, w, 3).clone()
            return SimpleNamespace(colour=colour, confidence=sil.clone() * 0.8, silhouette=sil)

    rgb = np.zeros((60, 40, 3), np.uint8)
    rgb[10:50, 15:25] = 255
    Image.fromarray(rgb).save(photo_dir / "image_input.png")
    real = mi.load_mapper
    mi.load_mapper = lambda model=None, device="cpu": mi.ImageMapper(BrightIsPerson(), size=32, code=code)
    try:
        mi.run_image(photo_dir / "image_input.png", out)
    finally:
        mi.load_mapper = real


@pytest.fixture
def viewer_of():
    started = []

    def start(folder):
        v = vw.start_viewer(folder, port=0)
        started.append(v)
        return v

    yield start
    for v in started:
        v.stop()


def _ray_to(v, point):
    cam = np.asarray(v.server.initial_camera.position, float)
    return cam, np.asarray(point, float) - cam


def test_find_outputs_tells_the_kinds_apart(match_folder, tmp_path):
    assert vw.find_outputs(match_folder) == [("match", match_folder), ("image", match_folder / "image")]
    assert vw.find_outputs(match_folder / "image") == [("image", match_folder / "image")]
    with pytest.raises(BodycorrError) as e:
        vw.find_outputs(match_folder.parent)  # a folder holding outputs is not one
    assert str(e.value).startswith(f"{match_folder.parent}: not a bodycorr output")
    with pytest.raises(BodycorrError) as e:
        vw.find_outputs(tmp_path)
    assert str(e.value) == f"{tmp_path}: not a bodycorr output (no summary.json / track.json); run bodycorr match/register/track/image first"
    with pytest.raises(BodycorrError, match="no such folder"):
        vw.find_outputs(tmp_path / "missing")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(BodycorrError, match="unfinished or unknown"):
        vw.find_outputs(tmp_path)


def test_match_folder_in_the_scene(match_folder, viewer_of):
    z = np.load(match_folder / "correspondences.npz")
    assert {"target_faces", "error_cm"} <= set(z.files) and "source_faces" not in z.files  # the writer's additions
    v = viewer_of(match_folder)
    names = v.node_names()
    for n in ("/match", "/match/source", "/match/target", "/match/source_template", "/image", "/image/photo", "/image/template"):
        assert n in names
    m = v.parts[0]
    src, tgt = m.shapes["source"], m.shapes["target"]
    # side by side, in one colour code: each source point has its match's colour
    assert src.points[:, 0].max() < tgt.points[:, 0].min()
    np.testing.assert_allclose(src.colours, tgt.colours[z["target_index"]])
    assert len(np.unique(np.round(tgt.colours, 1), axis=0)) > 10
    np.testing.assert_array_equal(tgt.faces, z["target_faces"])
    assert src.faces is not None and len(src.faces) > len(src.points)  # the depth pixels' grid
    # the fitted template: off, then on
    assert not m.shapes["source_template"].visible and not v._handles["/match/source_template"].visible
    m.template_box.value = True
    assert v._handles["/match/source_template"].visible and v._handles["/match/source"].visible
    m.scans_box.value = False  # the template alone
    assert not v._handles["/match/source"].visible and not v._handles["/match/target"].visible
    m.scans_box.value = True
    # the colour drop-down: the error heatmap shows its colour bar
    m.colour_box.value = "error vs truth"
    assert m.colour_bar.visible and "linear-gradient" in m.colour_bar.content
    m.colour_box.value = "colour code"
    assert not m.colour_bar.visible
    # error heatmap with its colour bar (NaN: grey), then confidence
    assert "colour code" in m.colour_modes() and "error vs truth" in m.colour_modes()
    bar = m.set_colour_mode("error vs truth")
    assert "linear-gradient" in bar and "cm" in bar
    np.testing.assert_allclose(m.shapes["source"].colours[0], [0.6, 0.6, 0.6])
    assert m.shapes["source"].colours[-1].max() < 0.05  # 30 cm: black
    assert "linear-gradient" in m.set_colour_mode("confidence")
    assert m.set_colour_mode("colour code") is None
    # a click on a source point shows its match and confidence
    i = len(src.points) // 2
    sel = v.click(*_ray_to(v, src.points[i]))
    assert sel is not None and sel.info["side"] == "source"
    i = sel.info["source"]
    assert sel.info["target"] == z["target_index"][i] and sel.info["confidence"] == pytest.approx(z["confidence"][i])
    assert "confidence" in v.selection_md.content and {"/selection/mark0", "/selection/mark1", "/selection/line"} <= set(v.node_names())
    np.testing.assert_allclose(sel.marks[1], tgt.points[sel.info["target"]])
    j = int(z["target_index"][0])
    sel = v.click(*_ray_to(v, tgt.points[j]))
    assert sel.info["side"] == "target" and (sel.info["sources"] == 0 or z["target_index"][sel.info["source"]] == sel.info["target"])
    assert v.click(*_ray_to(v, [0.0, 50.0, 50.0])) is None  # the sky: nothing picked
    # the demo's image output: shown on demand, the match hidden
    v.show(v.parts[1])
    assert v._handles["/image"].visible and not v._handles["/match"].visible and v.selection is None


def test_image_folder(match_folder, viewer_of):
    v = viewer_of(match_folder / "image")
    part = v.parts[0]
    assert part.kind == "image" and part.code_name == "position"
    assert set(part.pictures) == {"photo", "overlay", "colour code", "confidence"}
    assert part.pictures["photo"][30, 20].tolist() == [255, 255, 255]
    t = part.shapes["template"]
    assert t.points[:, 0].min() > part.photo_centre[0] + part.width / 2  # the photo left, the template right
    sel = v.click(*_ray_to(v, part.pixel_position(30, 20)))
    assert sel.info["vertex"] == 123 and sel.info["confidence"] == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(sel.marks[1], t.points[123])
    sel = v.click(*_ray_to(v, part.pixel_position(2, 2)))
    assert sel.info["vertex"] == -1  # background
    sel = part.select_vertex(123)
    assert sel.info["pixels"] > 100 and part.vertex[sel.info["pixel"]] == 123


@pytest.fixture(scope="module")
def register_folder(tmp_path_factory, template):
    from bodycorr.matching.describe import Described
    from bodycorr.matching.inputs import ScanInput
    from bodycorr.matching.register import Registration, write_registration

    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("register")
    m = template.mesh
    face = rng.integers(0, len(m.faces), 500)
    bary = rng.dirichlet(np.ones(3), 500)
    pts = np.einsum("nk,nkc->nc", bary, m.vertices[m.faces[face]]) + rng.normal(0, 0.003, (500, 3))
    scan = ScanInput(kind="points", points=pts, name="cloud.xyz")
    described = Described(scan, pts, np.zeros((500, 16), np.float32), np.ones(500), np.array([0, 0, 1.0]), 0.0)
    reg = Registration(described, m, None, face, bary, np.abs(rng.normal(0, 0.01, 500)), {"describe": 0.0, "fit": 0.0, "closest": 0.0})
    write_registration(reg, out)
    return out


def test_register_folder(register_folder, viewer_of):
    v = viewer_of(register_folder)
    part = v.parts[0]
    assert part.kind == "register"
    assert {"/register/scan", "/register/registration", "/register/registration_on_scan"} <= set(v.node_names())
    scan, reg = part.shapes["scan"], part.shapes["registration"]
    assert scan.points[:, 0].max() < reg.points[:, 0].min()
    # a scan point's colour is its template point's
    i = 7
    f = part.reg.faces[part.face[i]]
    np.testing.assert_allclose(scan.colours[i], part.bary[i] @ reg.colours[f], atol=1e-9)
    sel = v.click(*_ray_to(v, scan.points[i]))
    assert sel.info["side"] == "scan" and sel.info["residual_cm"] >= 0
    k = sel.info["scan"]
    assert sel.info["vertex"] == part.vertex[k]
    sel = v.click(*_ray_to(v, reg.points[part.vertex[k]]))
    assert sel.info["side"] == "registration"
    # the distance heatmap with its colour bar; the registration over the scan
    part.colour_box.value = "distance to the registration"
    assert part.colour_bar.visible and "cm" in part.colour_bar.content
    assert not np.allclose(part.shapes["scan"].colours, part.scan_code)
    part.overlay_box.value = True
    assert v._handles["/register/registration_on_scan"].visible


@pytest.fixture(scope="module")
def track_folder(tmp_path_factory):
    from bodycorr.apps.track import TrackResult, write_track_outputs
    from bodycorr.geometry.camera import Camera, Intrinsics

    out = tmp_path_factory.mktemp("track")
    m = _body_mesh()
    T = 3
    verts = np.stack([m.vertices + [0.05 * t, 0, 0] for t in range(T)])
    depths = np.zeros((T, 20, 16), np.float32)
    depths[:, 5:15, 6:10] = 2.0
    cam = Camera(Intrinsics.kinect_v2().scaled((16, 20)), np.eye(3), np.zeros(3))
    res = TrackResult(verts, np.ones(T), ("ok", "skipped: no person", "ok"), m.faces, depths, cam, np.array([50, 0, 60]))
    metrics = {"per_frame_cm": [1.0, None, 2.0], "per_frame_visible_cm": [1.0, None, 2.0], "mean_cm": 1.5, "visible_mean_cm": 1.5}
    write_track_outputs(res, out, metrics)
    return out


def test_track_folder(track_folder, viewer_of):
    v = viewer_of(track_folder)
    part = v.parts[0]
    assert part.kind == "track" and part.num_frames == 3 and "/track/body" in v.node_names()
    first = part.shapes["body"].points.copy()
    assert "frame **0**" in part.frame_md.content and "50 matches" in part.frame_md.content
    part.slider.value = 2
    assert part.t == 2 and "frame **2**" in part.frame_md.content and "2.0 cm" in part.frame_md.content
    assert np.abs(part.shapes["body"].points - first).max() == pytest.approx(0.1, abs=1e-6)  # it moved 2 x 5 cm
    sel = v.click(*_ray_to(v, part.shapes["body"].points[5]))
    assert sel is not None and sel.info["frame"] == 2
    part.step()  # the play loop's step: wraps around, the marker follows
    assert part.t == 0 and int(part.slider.value) == 0 and v.selection.info["frame"] == 0


def test_served_on_localhost_only(match_folder, viewer_of, capsys):
    v = viewer_of(match_folder)
    assert v.server.get_host() == "127.0.0.1" and v.url == f"http://127.0.0.1:{v.port}"
    page = urllib.request.urlopen(v.url, timeout=10).read().decode()
    assert "<title>Viser</title>" in page and "https://" not in page  # the client ships in the wheel: nothing fetched
    vw.serve(match_folder, port=0, seconds=0.2)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"bodycorr view: {match_folder} (match, image) at http://127.0.0.1:")


def test_an_incomplete_run_is_flagged(match_folder, tmp_path, capsys):
    import shutil

    from bodycorr.common.fileio import RUN_MARKER

    folder = tmp_path / "run"
    shutil.copytree(match_folder, folder)
    assert vw.incomplete_folders(vw.load_parts(folder)) == []
    (folder / RUN_MARKER).write_text("")
    assert vw.incomplete_folders(vw.load_parts(folder)) == [folder]
    vw.serve(folder, port=0, seconds=0.2)
    err = capsys.readouterr().err
    assert f"bodycorr: warning: {folder} holds {RUN_MARKER}: its run was interrupted or failed" in err


def test_cli_view_on_a_folder_that_is_not_an_output(tmp_path, capsys):
    from bodycorr.cli.main import main

    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bodycorr: error: {tmp_path}: not a bodycorr output (no summary.json / track.json); run bodycorr match/register/track/image first"


def test_glb_is_valid_gltf():
    v, f = icosphere(1)
    data = vw.mesh_glb(v, f, np.full((len(v), 3), 0.5))
    magic, version, total = np.frombuffer(data[:12], "<u4")
    assert data[:4] == b"glTF" and version == 2 and total == len(data)
    js_len = int(np.frombuffer(data[12:16], "<u4")[0])
    doc = json.loads(data[20 : 20 + js_len])
    assert doc["accessors"][0]["count"] == f.size and doc["accessors"][1]["count"] == len(v)
    assert doc["materials"][0]["doubleSided"]
