"""Fuzzing the loaders users feed files to: a mutated mesh, depth map, image or intrinsics file
either loads or raises :class:`BodycorrError` (one line), never another exception.

Seeded and small: 880 mutations (80 per file) of tiny valid files (OBJ, PLY text and binary, OFF,
XYZ, 16-bit PNG and NPY depth, PNG and JPEG images, intrinsics JSON), each through the functions
the command line calls (``load_scan``, ``read_mesh_data``, ``load_depth``, ``read_image``,
``load_intrinsics``)."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import load_intrinsics
from bodycorr.geometry.depth_io import load_depth
from bodycorr.geometry.io import load_point_cloud, read_mesh_data
from bodycorr.matching.image import read_image
from bodycorr.matching.inputs import load_scan

SEED = int(os.environ.get("FUZZ_SEED", 22))  # FUZZ_SEED / FUZZ_CASES: fuzz longer by hand
CASES_PER_FILE = int(os.environ.get("FUZZ_CASES", 80))  # x 11 seed files x up to 3 loaders: about 1900 loads, about a second

_TOKENS = [b"nan", b"-nan", b"inf", b"-1", b"0", b"1e309", b"-1e309", b"4294967296", b"-2147483648", b"2147483647", b"1.5",
           b"", b"x", b"3", b"1/2/3", b"//", b"255", b"65535", b"-0", b"1e-320"]  # fmt: skip


def _grid(n: int = 12) -> tuple[np.ndarray, list[list[int]]]:
    """A bumpy body-sized sheet of quads: n x n vertices, 0.5 m wide, 1.7 m tall."""
    u, v = np.meshgrid(np.linspace(0, 0.5, n), np.linspace(0, 1.7, n), indexing="ij")
    pts = np.stack([u, v, 0.05 * np.sin(u * 9) * np.cos(v * 5)], -1).reshape(-1, 3)
    quads = [[i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1] for i in range(n - 1) for j in range(n - 1)]
    return pts, quads


def _obj() -> bytes:
    pts, quads = _grid()
    lines = ["# fuzz seed"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts]
    lines += ["vt 0.5 0.5", "vn 0 0 1"]
    for k, q in enumerate(quads):
        if k % 3 == 0:
            lines.append("f " + " ".join(f"{i + 1}/1/1" for i in q))
        elif k % 3 == 1:
            lines.append(f"f {q[0] + 1} {q[1] + 1} {q[2] + 1}")
        else:
            lines.append("f " + " ".join(str(i + 1) for i in q))
    return ("\n".join(lines) + "\n").encode()


def _ply_ascii() -> bytes:
    pts, quads = _grid()
    head = f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
    head += f"property uchar red\nproperty uchar green\nproperty uchar blue\nelement face {len(quads)}\nproperty list uchar int vertex_indices\nend_header\n"
    body = "".join(f"{x:.5f} {y:.5f} {z:.5f} 10 20 30\n" for x, y, z in pts)
    body += "".join(f"{len(q)} " + " ".join(map(str, q)) + "\n" for q in quads)
    return (head + body).encode()


def _ply_binary() -> bytes:
    pts, quads = _grid()
    tris = [q[:3] for q in quads[::2]]
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
    head += f"property float nx\nproperty float ny\nproperty float nz\nelement face {len(tris) + len(quads[1::2])}\n"
    head += "property list uchar int vertex_indices\nend_header\n"
    v = np.concatenate([pts, np.tile([[0, 0, 1]], (len(pts), 1))], 1).astype("<f4").tobytes()
    f = b"".join(np.array([3], "u1").tobytes() + np.array(t, "<i4").tobytes() for t in tris)
    f += b"".join(np.array([4], "u1").tobytes() + np.array(q, "<i4").tobytes() for q in quads[1::2])
    return head.encode() + v + f


def _off() -> bytes:
    pts, quads = _grid(11)
    lines = ["OFF", f"{len(pts)} {len(quads)} 0"] + [f"{x:.5f} {y:.5f} {z:.5f}" for x, y, z in pts]
    lines += [f"4 {q[0]} {q[1]} {q[2]} {q[3]}" for q in quads]
    return ("\n".join(lines) + "\n").encode()


def _xyz() -> bytes:
    pts, _ = _grid()
    return "".join(f"{x:.5f},{y:.5f},{z:.5f}\n" for x, y, z in pts).encode()


def _depth() -> np.ndarray:
    d = np.zeros((24, 20), np.float32)
    d[3:21, 5:15] = 2.0 + 0.01 * np.arange(10)
    return d


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(_depth() * 1000).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, _depth(), allow_pickle=False)
    return buf.getvalue()


def _rgb(fmt: str) -> bytes:
    rgb = (np.random.default_rng(1).random((16, 12, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def _intrinsics() -> bytes:
    return json.dumps({"fx": 30.0, "fy": 30.0, "cx": 10.0, "cy": 12.0, "width": 20, "height": 24}).encode()


def _scan(p):
    return load_scan(p)


def _scan_m(p):
    return load_scan(p, units="m")


def _scan_depth_k(p):
    # the mutated intrinsics with a good depth map (written beside it by the test)
    return load_scan(p.with_name("depth.npy"), intrinsics=p)


SEEDS = {  # name: (bytes, loaders)
    "mesh.obj": (_obj, (_scan, _scan_m, lambda p: read_mesh_data(p, triangulate=True, obj_attributes=True))),
    "mesh_ascii.ply": (_ply_ascii, (_scan, lambda p: read_mesh_data(p, triangulate=True))),
    "mesh_binary.ply": (_ply_binary, (_scan_m, load_point_cloud)),
    "mesh.off": (_off, (_scan, lambda p: read_mesh_data(p, triangulate=True))),
    "cloud.xyz": (_xyz, (_scan, _scan_m)),
    "depth.png": (_png16, (_scan, load_depth)),
    "depth_m.npy": (_npy, (_scan, lambda p: load_depth(p, units="m"))),
    "image.png": (lambda: _rgb("PNG"), (read_image,)),
    "image.jpg": (lambda: _rgb("JPEG"), (read_image,)),
    "intrinsics.json": (_intrinsics, (load_intrinsics, _scan_depth_k)),
    "k.txt": (lambda: b"30 0 10\n0 30 12\n0 0 1\n", (lambda p: load_intrinsics(p, size=(20, 24)),)),
}


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random edits: byte flips, truncation, inserted / deleted / repeated spans,
    a number token replaced by a nasty one, lines dropped, repeated or swapped."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 8))
        n = len(b)
        if n == 0:
            b += bytes(rng.integers(0, 256, 8, dtype=np.uint8))
            continue
        i = int(rng.integers(0, n))
        if op == 0:  # flip bytes
            for k in rng.integers(0, n, int(rng.integers(1, 9))):
                b[int(k)] = int(rng.integers(0, 256))
        elif op == 1:  # truncate
            del b[i:]
        elif op == 2:  # insert random bytes
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8))
        elif op == 3:  # delete a span
            del b[i : i + int(rng.integers(1, 65))]
        elif op == 4:  # repeat a span
            b[i:i] = b[i : i + int(rng.integers(1, 65))]
        elif op in (5, 6):  # replace a number token (text formats, headers)
            spans = [m.span() for m in re.finditer(rb"-?\d+(?:\.\d+)?(?:e-?\d+)?", bytes(b))]
            if spans:
                s, e = spans[int(rng.integers(0, len(spans)))]
                b[s:e] = _TOKENS[int(rng.integers(0, len(_TOKENS)))]
        else:  # drop, repeat or swap lines
            lines = bytes(b).split(b"\n")
            j, k = int(rng.integers(0, len(lines))), int(rng.integers(0, len(lines)))
            how = int(rng.integers(0, 3))
            if how == 0:
                del lines[j]
            elif how == 1:
                lines.insert(j, lines[k])
            else:
                lines[j], lines[k] = lines[k], lines[j]
            b = bytearray(b"\n".join(lines))
    return bytes(b)


def _cases():
    rng = np.random.default_rng(SEED)
    for name, (make, loaders) in SEEDS.items():
        data = make()
        for k in range(CASES_PER_FILE):
            yield name, k, _mutate(data, rng), loaders


def test_the_seed_files_load(tmp_path):
    """The unmutated files are valid: the fuzzing starts from inputs that work."""
    np.save(tmp_path / "depth.npy", _depth())
    for name, (make, loaders) in SEEDS.items():
        p = tmp_path / name
        p.write_bytes(make())
        for load in loaders:
            load(p)


def test_mutated_files_load_or_fail_with_one_line(tmp_path):
    np.save(tmp_path / "depth.npy", _depth())
    crashes, loaded, refused = [], 0, 0
    for name, k, data, loaders in _cases():
        p = tmp_path / f"case{k:03d}_{name}"
        p.write_bytes(data)
        for j, load in enumerate(loaders):
            try:
                load(p)
                loaded += 1
            except BodycorrError as e:
                refused += 1
                if "\n" in str(e) or (p.name not in str(e) and "intrinsics" not in name):  # a depth map's size check names the depth file
                    crashes.append(f"{p.name} loader {j}: a message without the file name or on several lines: {e}")
            except Exception as e:  # noqa: BLE001 - what the test is after
                crashes.append(f"{p.name} loader {j}: {type(e).__name__}: {str(e)[:160]}")
    assert not crashes, f"{len(crashes)} crashes:\n" + "\n".join(crashes[:40])
    assert loaded > 20 and refused > 100  # the mutations both keep files readable and break them


@pytest.mark.parametrize("name", ["mesh.obj", "mesh_binary.ply", "depth.png", "image.jpg"])
def test_truncations_at_every_length_fail_cleanly(tmp_path, name):
    """Every prefix of a file (a download cut off anywhere) loads or raises one line."""
    make, loaders = SEEDS[name]
    data = make()
    step = max(1, len(data) // 40)
    for n in range(0, len(data), step):
        p = tmp_path / f"cut{n}_{name}"
        p.write_bytes(data[:n])
        try:
            loaders[0](p)
        except BodycorrError:
            pass


def test_what_the_fuzzing_found(tmp_path):
    """Crashes the fuzzing found, kept as fixed cases: .npy headers that promise 76 GB (MemoryError)
    or do not parse (a tokenize error), a PLY face index of NaN (made up by a cast), a focal length
    of 1e-320 pixels (overflow in the back-projection)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (140000, 140000)})
    (tmp_path / "huge.npy").write_bytes(buf.getvalue() + b"\0" * 64)
    (tmp_path / "broken.npy").write_bytes(_npy().replace(b"(24, 20)", b"(24, 20 "))
    for name in ("huge.npy", "broken.npy"):
        for load in (load_depth, load_scan):
            with pytest.raises(BodycorrError, match=name):
                load(tmp_path / name)
    ply = _ply_ascii().decode().replace("\n4 0 12 13 1\n", "\n4 0 nan 13 1\n")
    assert "nan" in ply
    (tmp_path / "nan.ply").write_text(ply)
    with pytest.raises(BodycorrError, match="not an integer"):
        read_mesh_data(tmp_path / "nan.ply", triangulate=True)
    (tmp_path / "k.json").write_text(json.dumps({"fx": 30.0, "fy": 1e-320, "cx": 10.0, "cy": 12.0, "width": 20, "height": 24}))
    with pytest.raises(BodycorrError, match="at least 1"):
        load_intrinsics(tmp_path / "k.json")
