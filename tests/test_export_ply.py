"""Coloured PLY export of result folders: colours written and read back, one code on both sides of a correspondence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from bodycorr.cli.main import main
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.depth_io import save_depth
from bodycorr.geometry.io import read_mesh_data, save_mesh
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.pipeline import MatchOptions, match_files
from bodycorr.matching.ply_export import NO_VALUE, export_result_ply, grid_faces
from bodycorr.models.io import save_model_file
from bodycorr.models.registry import create_model


def _colours(path) -> np.ndarray:
    m = trimesh.load(path, process=False)
    return np.asarray(m.visual.vertex_colors)[:, :3]


def test_save_mesh_writes_vertex_colours(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    c = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    for ascii in (False, True):
        save_mesh(Mesh(v, f), tmp_path / "c.ply", ascii=ascii, colors=c)
        d = read_mesh_data(tmp_path / "c.ply")
        assert (d.colors == c).all() and (d.faces == f).all() and np.array_equal(d.vertices, v)
        assert (_colours(tmp_path / "c.ply") == c).all()
    with pytest.raises(BodycorrError, match=r"\.ply only"):
        save_mesh(Mesh(v, f), tmp_path / "c.obj", colors=c)
    with pytest.raises(BodycorrError, match="uint8"):
        save_mesh(Mesh(v, f), tmp_path / "c.ply", colors=c[:3])


def test_grid_faces():
    full = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert len(grid_faces(full)) == 2
    assert len(grid_faces(full[:3])) == 1 and len(grid_faces(full[[0, 1, 3]])) == 1
    assert len(grid_faces(full[[0, 3]])) == 0
    # a 3x3 patch with its right column 1 m behind: the triangles across the jump are dropped
    px = np.array([(r, c) for r in range(3) for c in range(3)])
    pts = np.c_[px * 0.01, np.where(px[:, 1] == 2, 1.0, 0.0)]
    assert len(grid_faces(px)) == 8 and len(grid_faces(px, pts)) == 4


@pytest.fixture(scope="module")
def match_folder(tmp_path_factory):
    """A real ``bodycorr match`` folder (tiny untrained model): a depth map onto a sphere mesh, with an error per point added."""
    tmp = tmp_path_factory.mktemp("match")
    torch.manual_seed(0)
    save_model_file(create_model("unet", base_width=4, max_width=16, num_levels=3), tmp / "tiny.pt", meta={"size": 32})
    u, w = np.meshgrid(np.linspace(0.2, np.pi - 0.2, 12), np.linspace(0, 2 * np.pi, 16, endpoint=False), indexing="ij")
    v = np.stack([np.sin(u) * np.cos(w) * 0.3, np.sin(u) * np.sin(w) * 0.2, np.cos(u) * 0.9], -1).reshape(-1, 3)
    f = np.array([[i * 16 + j, i * 16 + (j + 1) % 16, (i + 1) * 16 + j] for i in range(11) for j in range(16)])
    save_mesh(Mesh(v, f), tmp / "target.ply")
    depth = np.zeros((120, 100), np.float32)
    depth[20:100, 35:65] = 2.4
    depth[20:100, 60:65] = 3.0  # a depth jump inside the person
    save_depth(tmp / "source.png", depth)
    out = tmp / "out"
    match_files(str(tmp / "source.png"), str(tmp / "target.ply"), str(out), MatchOptions(model=str(tmp / "tiny.pt"), views=4, up="z", refine="none"))
    with np.load(out / "correspondences.npz") as z:
        arrays = dict(z)
    err = np.linspace(0, 30, len(arrays["source_points"])).astype(np.float32)
    err[::7] = np.nan
    np.savez(out / "correspondences.npz", **arrays, error_cm=err)  # as the demo writes it
    return out


def test_match_folder_same_code_on_both_sides(match_folder, tmp_path, capsys):
    assert main(["export", "--ply", str(tmp_path / "ply"), str(match_folder)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("wrote ") == 3
    z = np.load(match_folder / "correspondences.npz")
    src, tgt = trimesh.load(tmp_path / "ply" / "source_code.ply", process=False), trimesh.load(tmp_path / "ply" / "target_code.ply", process=False)
    assert np.allclose(src.vertices, z["source_points"]) and np.allclose(tgt.vertices, z["target_points"])
    assert len(tgt.faces) == len(z["target_faces"]) and len(src.faces) > 0  # the depth map's pixel grid
    sc, tc = _colours(tmp_path / "ply" / "source_code.ply"), _colours(tmp_path / "ply" / "target_code.ply")
    assert (sc == tc[z["target_index"]]).all()  # every source point has its match's colour
    assert len(np.unique(tc, axis=0)) > 50  # a code, not one colour
    # the depth jump is not bridged: no triangle joins points 0.6 m apart
    e = np.linalg.norm(src.vertices[src.faces] - src.vertices[np.roll(src.faces, 1, axis=1)], axis=-1)
    assert e.max() < 0.3
    ec = _colours(tmp_path / "ply" / "source_error.ply")
    nan = ~np.isfinite(z["error_cm"])
    assert (ec[nan] == NO_VALUE).all() and not (ec[~nan] == NO_VALUE).all(1).any()
    small, big = np.nanargmin(z["error_cm"]), np.nanargmax(z["error_cm"])
    assert ec[small].sum() > ec[big].sum()  # magma_r: light for small errors, dark for large


def test_image_and_register_folders(tmp_path, template):
    from bodycorr.body.surface_code import get_surface_code

    code = get_surface_code("position")
    rng = np.random.default_rng(0)
    nf = len(template.mesh.faces)
    # an image folder as run_image writes it: a 6x5 person, every pixel on a face corner (bary one-hot)
    h, w = 10, 8
    sil = np.zeros((h, w), bool)
    sil[2:8, 1:6] = True
    face = np.where(sil, rng.integers(0, nf, (h, w)), -1).astype(np.int32)
    corner = rng.integers(0, 3, (h, w))
    bary = np.eye(3, dtype=np.float32)[corner] * sil[..., None]
    vertex = np.where(sil, template.mesh.faces[np.maximum(face, 0), corner], -1).astype(np.int32)
    img = tmp_path / "image"
    img.mkdir()
    np.savez(img / "correspondence.npz", vertex=vertex, face=face, bary=bary, silhouette=sil, colour=np.zeros((h, w, 3), np.float16))
    (img / "summary.json").write_text(json.dumps({"code": "position"}))
    files = export_result_ply(img, tmp_path / "out_image")
    assert [f.path.name for f in files] == ["template_code.ply", "image_code.ply"]
    tc, ic = _colours(tmp_path / "out_image" / "template_code.ply"), _colours(tmp_path / "out_image" / "image_code.ply")
    assert (tc == code.colours).all()
    assert (ic == tc[vertex[sil]]).all() and files[1].faces == 2 * 5 * 4  # row-major pixels, a 6x5 grid
    # a register folder: the template as the registration, scan points on face corners
    reg = tmp_path / "reg"
    reg.mkdir()
    save_mesh(template.mesh, reg / "registration.ply")
    n = 40
    f = rng.integers(0, nf, n)
    k = rng.integers(0, 3, n)
    pts = template.mesh.vertices[template.mesh.faces[f, k]]
    np.savez(reg / "scan_on_template.npz", points=pts.astype(np.float32), face=f.astype(np.int32), bary=np.eye(3, dtype=np.float32)[k],
             residual_m=np.linspace(0, 0.05, n).astype(np.float32))  # fmt: skip
    names = [p.path.name for p in export_result_ply(reg, tmp_path / "out_reg")]
    assert names == ["registration_code.ply", "scan_code.ply", "scan_residual.ply"]
    rc, sc = _colours(tmp_path / "out_reg" / "registration_code.ply"), _colours(tmp_path / "out_reg" / "scan_code.ply")
    assert (sc == rc[template.mesh.faces[f, k]]).all()


def test_bad_result_files(tmp_path):
    (tmp_path / "correspondences.npz").write_bytes(b"not an npz")
    with pytest.raises(BodycorrError, match="correspondences.npz.*corrupt"):
        export_result_ply(tmp_path, tmp_path / "o")
    np.savez(tmp_path / "correspondences.npz", source_points=np.zeros((3, 3)))
    with pytest.raises(BodycorrError, match="no target_points, target_index array"):
        export_result_ply(tmp_path, tmp_path / "o")
    with pytest.raises(BodycorrError, match="a file, not a folder"):
        export_result_ply(tmp_path / "correspondences.npz", tmp_path / "o")
