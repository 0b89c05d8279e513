"""Mesh / point-cloud file IO: round-trips keep vertex order and values; bad files fail in one clear line."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.io import (
    load_geometry,
    load_mesh,
    load_point_cloud,
    read_mesh_data,
    save_mesh,
    save_point_cloud,
)
from bodycorr.geometry.mesh import Mesh, PointCloud


def body_mesh(seed: int = 0, n: int = 40) -> Mesh:
    """Random body-sized (1.7 m tall) triangle soup; faces deliberately reference vertices out of order."""
    rng = np.random.default_rng(seed)
    v = rng.random((n, 3)) * [0.5, 1.7, 0.3] + [-0.25, 0.0, -0.15]
    v[0], v[1] = [-0.25, 0.0, -0.15], [0.25, 1.7, 0.15]  # pin the bounding box
    f = rng.integers(0, n, (2 * n, 3))
    return Mesh(v, f, name="body")


def assert_one_line_naming(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ------------------------------------------------------------------------------------ round-trips


@pytest.mark.parametrize("name, ascii", [("m.ply", False), ("m.ply", True), ("m.obj", False), ("m.off", False)])
def test_mesh_round_trip_is_exact_and_keeps_order(tmp_path, name, ascii):
    mesh = body_mesh()
    out = save_mesh(mesh, tmp_path / name, ascii=ascii)
    back = load_mesh(out)
    assert np.array_equal(back.vertices, mesh.vertices)  # bit-exact, same order
    assert np.array_equal(back.faces, mesh.faces)
    assert back.name == str(out)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # atomic write left no temp file


def test_binary_ply_is_binary_by_default(tmp_path):
    save_mesh(body_mesh(), tmp_path / "m.ply")
    assert b"format binary_little_endian 1.0" in (tmp_path / "m.ply").read_bytes()[:200]


@pytest.mark.parametrize("name", ["p.ply", "p.xyz", "p.txt", "p.npy", "p.obj", "p.off"])
def test_point_cloud_round_trip(tmp_path, name):
    pts = body_mesh().vertices
    save_point_cloud(PointCloud(pts), tmp_path / name)
    back = load_point_cloud(tmp_path / name)
    assert np.array_equal(back.points, pts)
    assert isinstance(load_geometry(tmp_path / name), PointCloud)


@pytest.mark.parametrize("ascii", [False, True])
def test_ply_point_cloud_keeps_normals_and_colors(tmp_path, ascii):
    pts = body_mesh().vertices
    rng = np.random.default_rng(1)
    normals = rng.normal(size=pts.shape)
    colors = rng.integers(0, 256, (len(pts), 4)).astype(np.uint8)
    save_point_cloud(PointCloud(pts, normals, extras={"colors": colors}), tmp_path / "p.ply", ascii=ascii)
    back = load_point_cloud(tmp_path / "p.ply")
    assert np.array_equal(back.points, pts)
    assert np.array_equal(back.normals, normals)
    assert np.array_equal(back.extras["colors"], colors)


def test_load_geometry_picks_mesh_or_point_cloud(tmp_path):
    mesh = body_mesh()
    save_mesh(mesh, tmp_path / "m.ply")
    save_point_cloud(PointCloud(mesh.vertices), tmp_path / "p.ply")
    assert isinstance(load_geometry(tmp_path / "m.ply"), Mesh)
    assert isinstance(load_geometry(tmp_path / "p.ply"), PointCloud)


# --------------------------------------------------------------------------------- hand-written files

PLY_QUAD_ASCII = """ply
format ascii 1.0
comment a unit square in two quads
element vertex 6
property float x
property float y
property float z
element face 2
property list uchar int vertex_index
element edge 1
property int vertex1
property int vertex2
end_header
0 0 0
1 0 0
1 1 0
0 1 0
2 0 0
2 1 0
4 0 1 2 3
4 1 4 5 2
0 1
"""


def test_ply_ascii_quads_need_triangulate(tmp_path):
    path = tmp_path / "quads.ply"
    path.write_text(PLY_QUAD_ASCII)
    with pytest.raises(BodycorrError) as err:
        load_mesh(path, units="m")
    msg = assert_one_line_naming(err, path)
    assert "not triangular" in msg and "triangulate=True" in msg
    mesh = load_mesh(path, units="m", triangulate=True)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]]  # fan, face order kept
    assert np.isclose(mesh.face_areas().sum(), 2.0)


def binary_ply(vertices: np.ndarray, faces: list[list[int]], endian: str = "<") -> bytes:
    """float32 x y z + float nx ny nz + uchar colors, faces as mixed-length lists."""
    fmt = "binary_little_endian" if endian == "<" else "binary_big_endian"
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property float nx\nproperty float ny\nproperty float nz\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(faces)}\nproperty list uchar uint vertex_indices\nend_header\n"
    ).encode()
    body = b"".join(struct.pack(f"{endian}6f3B", *v, 0.0, 0.0, 1.0, 10, 20, 30) for v in vertices)
    body += b"".join(struct.pack(f"{endian}B{len(f)}I", len(f), *f) for f in faces)
    return header + body


@pytest.mark.parametrize("endian", ["<", ">"])
def test_binary_ply_float32_with_normals_colors(tmp_path, endian):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) * 1.5
    path = tmp_path / "tet.ply"
    path.write_bytes(binary_ply(v, [[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]], endian))
    data = read_mesh_data(path)
    assert np.array_equal(data.vertices, v.astype(np.float64))
    assert data.faces.tolist() == [[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]]
    assert np.array_equal(data.normals, np.tile([0.0, 0.0, 1.0], (4, 1)))
    assert data.colors.dtype == np.uint8 and data.colors.tolist() == [[10, 20, 30]] * 4
    pc = load_point_cloud(path, units="m")
    assert pc.normals is not None and pc.extras["colors"].shape == (4, 3)


def test_binary_ply_mixed_polygons(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    path = tmp_path / "mixed.ply"
    path.write_bytes(binary_ply(v, [[0, 1, 2, 3], [1, 4, 2]]))
    with pytest.raises(BodycorrError, match="not triangular"):
        load_mesh(path, units="m")
    assert load_mesh(path, units="m", triangulate=True).faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]


OBJ_TEXT = """# exported by a tool
mtllib body.mtl
o body
v 0.0 0.0 0.0
v 1.0 0.0 0.0
v 1.0 1.0 0.0
vt 0.0 0.0
vt 1.0 0.0
vt 1.0 1.0
vn 0 0 1
g front
usemtl skin
s off
f 3/3/1 1/1/1 2/2/1
v 0.0 1.0 0.0
f -1//1 -4//1 -2//1
f 1/1 2/2 4
"""


def test_obj_index_forms_negative_indices_and_order(tmp_path):
    path = tmp_path / "a.obj"
    path.write_text(OBJ_TEXT)
    mesh = load_mesh(path, units="m")
    assert mesh.vertices.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]  # file order
    assert mesh.faces.tolist() == [[2, 0, 1], [3, 0, 2], [0, 1, 3]]
    data = read_mesh_data(path)
    assert data.vt is None and data.vn is None  # ignored unless asked
    data = read_mesh_data(path, obj_attributes=True)
    assert data.vt.shape == (3, 2) and data.vn.tolist() == [[0, 0, 1]]
    assert data.face_vt.tolist() == [[2, 0, 1], [-1, -1, -1], [0, 1, -1]]
    assert data.face_vn.tolist() == [[0, 0, 0], [0, 0, 0], [-1, -1, -1]]


def test_obj_quad_with_attributes_triangulates_all_corners(tmp_path):
    path = tmp_path / "q.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nf 1/1 2/2 3/3 4/4\n")
    with pytest.raises(BodycorrError, match="not triangular"):
        read_mesh_data(path)
    data = read_mesh_data(path, triangulate=True, obj_attributes=True)
    assert data.faces.tolist() == data.face_vt.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_off_with_comments_and_colors(tmp_path):
    path = tmp_path / "a.off"
    path.write_text("COFF\n# comment\n4 2 0\n0 0 0 255 0 0\n1 0 0 0 255 0\n1 1 0 0 0 255\n0 1 0 9 9 9\n3 0 1 2\n3 0 2 3 # tail\n")
    data = read_mesh_data(path)
    assert data.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert data.colors.tolist()[0] == [255, 0, 0]


# ------------------------------------------------------------------------------------------- units


def test_mm_scaled_mesh_is_detected_as_mm(tmp_path):
    mesh = body_mesh()
    save_mesh(mesh.with_vertices(mesh.vertices * 1000.0), tmp_path / "mm.obj")
    back = load_mesh(tmp_path / "mm.obj")
    assert np.allclose(back.vertices, mesh.vertices)
    save_mesh(mesh.with_vertices(mesh.vertices * 100.0), tmp_path / "cm.ply")
    assert np.allclose(load_mesh(tmp_path / "cm.ply").vertices, mesh.vertices)
    assert np.allclose(load_mesh(tmp_path / "cm.ply", units="cm").vertices, mesh.vertices)


def test_auto_units_fail_for_implausible_size(tmp_path):
    mesh = body_mesh()
    save_mesh(mesh.with_vertices(mesh.vertices * 1e5), tmp_path / "huge.ply")
    with pytest.raises(BodycorrError) as err:
        load_mesh(tmp_path / "huge.ply")
    assert "units=" in assert_one_line_naming(err, tmp_path / "huge.ply")
    with pytest.raises(BodycorrError, match="unknown units"):
        load_mesh(tmp_path / "huge.ply", units="inch")


# -------------------------------------------------------------------------------------- bad input


def test_missing_empty_and_unknown_extension(tmp_path):
    for path in (tmp_path / "nope.ply", tmp_path / "nope.xyz"):
        with pytest.raises(BodycorrError, match="no such file") as err:
            load_geometry(path)
        assert_one_line_naming(err, path)
    (tmp_path / "empty.obj").write_bytes(b"")
    with pytest.raises(BodycorrError, match="empty") as err:
        load_mesh(tmp_path / "empty.obj")
    assert_one_line_naming(err, tmp_path / "empty.obj")
    (tmp_path / "scan.stl").write_bytes(b"solid x")
    with pytest.raises(BodycorrError, match="unknown format") as err:
        load_mesh(tmp_path / "scan.stl")
    assert_one_line_naming(err, tmp_path / "scan.stl")
    with pytest.raises(BodycorrError, match="cannot write format") as err:
        save_mesh(body_mesh(), tmp_path / "out.stl")
    assert_one_line_naming(err, tmp_path / "out.stl")


@pytest.mark.parametrize("cut", [10, 200, -5])
def test_truncated_binary_ply(tmp_path, cut):
    path = tmp_path / "cut.ply"
    save_mesh(body_mesh(), path)
    data = path.read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    path.write_bytes(data[: header_end + cut] if cut > 0 else data[:cut])
    with pytest.raises(BodycorrError) as err:
        load_mesh(path)
    msg = assert_one_line_naming(err, path)
    assert "truncated" in msg and "header declares" in msg


PLY_XYZ_HEADER = "ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"


@pytest.mark.parametrize(
    "name, text, expect",
    [
        ("nomagic.ply", "hello\nend_header\n", "does not start with"),
        ("noend.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "end_header"),
        ("badtype.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n0\n", "unknown PLY property type"),
        ("short.ply", PLY_XYZ_HEADER.format(n=3) + "0 0 0\n", "only 1 lines follow"),
        ("text.obj", "v 0 0 zero\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "cannot parse"),
        ("zero.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "start at 1"),
        ("short.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n", "only 2 lines follow"),
        ("binary.off", "OFF BINARY\n", "not supported"),
    ],
)
def test_corrupt_files(tmp_path, name, text, expect):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BodycorrError, match=expect) as err:
        load_mesh(path, units="m")
    assert "corrupt" in assert_one_line_naming(err, path)


@pytest.mark.parametrize(
    "name, text",
    [
        ("oob.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n"),
        ("neg.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -4\n"),
        ("oob.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n"),
        ("oob.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                    "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"),
    ],
)  # fmt: skip
def test_face_index_out_of_range(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BodycorrError, match="face 0 refers to vertex index") as err:
        load_mesh(path, units="m")
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("name", ["nan.obj", "nan.ply", "nan.off", "nan.xyz"])
def test_nan_coordinates(tmp_path, name):
    path = tmp_path / name
    pts = body_mesh().vertices.copy()
    pts[[3, 7]] = np.nan
    rows = [" ".join(map(str, p)) for p in pts]
    text = {
        ".obj": "".join(f"v {r}\n" for r in rows),
        ".xyz": "\n".join(rows),
        ".off": f"OFF\n{len(pts)} 0 0\n" + "\n".join(rows),
        ".ply": PLY_XYZ_HEADER.format(n=len(pts)) + "\n".join(rows),
    }[path.suffix]
    path.write_text(text)
    with pytest.raises(BodycorrError, match="2 (vertices|points) have NaN") as err:
        load_geometry(path)
    assert_one_line_naming(err, path)


def test_no_vertices_and_bad_obj_attribute_index(tmp_path):
    (tmp_path / "none.ply").write_text(PLY_XYZ_HEADER.format(n=0))
    with pytest.raises(BodycorrError, match="no vertices") as err:
        load_mesh(tmp_path / "none.ply")
    assert_one_line_naming(err, tmp_path / "none.ply")
    (tmp_path / "vt.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/2 3/1\n")
    with pytest.raises(BodycorrError, match="missing texture coordinate") as err:
        read_mesh_data(tmp_path / "vt.obj", obj_attributes=True)
    assert_one_line_naming(err, tmp_path / "vt.obj")
    assert read_mesh_data(tmp_path / "vt.obj").faces.tolist() == [[0, 1, 2]]  # vt ignored unless asked


def test_bad_point_arrays(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((10, 2)))
    with pytest.raises(BodycorrError, match=r"\(N, 3\)") as err:
        load_point_cloud(tmp_path / "flat.npy")
    assert_one_line_naming(err, tmp_path / "flat.npy")
    (tmp_path / "short.txt").write_text("0 0 0\n1 1\n")
    with pytest.raises(BodycorrError, match="fewer than 3") as err:
        load_point_cloud(tmp_path / "short.txt")
    assert_one_line_naming(err, tmp_path / "short.txt")
    (tmp_path / "comma.txt").write_text("# x,y,z\n0,0,0\n0.5,1.7,0.3\n")
    assert load_point_cloud(tmp_path / "comma.txt").num_points == 2


def test_package_io_does_not_import_trimesh():
    code = "import sys, bodycorr.geometry.io, bodycorr.geometry.depth_io, bodycorr.geometry.camera; print('trimesh' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
