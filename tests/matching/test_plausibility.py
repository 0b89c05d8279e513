"""Is this a person? Spheres, boxes, a four-legged shape and a triangle score low (and are refused
with --strict); a synthetic person scores high; the summary carries the scores."""

import json

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from bodycorr.geometry.io import save_mesh
from bodycorr.geometry.mesh import Mesh
from bodycorr.matching.pipeline import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model in this checkout")

VIEWS = ["--views", "4", "--up", "z"]


def _hull(p):
    f = ConvexHull(p).simplices.copy()
    n = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    flip = ((p[f].mean(1) - p.mean(0)) * n).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return f


def _sphere(n=400, r=0.5, seed=0):
    p = np.random.default_rng(seed).normal(size=(n, 3))
    p = p / np.linalg.norm(p, axis=1, keepdims=True) * r
    return Mesh(p, _hull(p))


def _box(size=(0.5, 0.5, 0.5), n=8):
    g = np.linspace(-0.5, 0.5, n)
    u, v = (x.ravel() for x in np.meshgrid(g, g))
    pts = []
    for ax in range(3):
        o = [i for i in range(3) if i != ax]
        for s in (-0.5, 0.5):
            q = np.zeros((n * n, 3))
            q[:, ax], q[:, o[0]], q[:, o[1]] = s, u, v
            pts.append(q)
    p = np.unique(np.concatenate(pts).round(6), axis=0) * size
    p += np.random.default_rng(1).normal(scale=1e-4, size=p.shape)
    return Mesh(p, _hull(p))


def _animal():
    """An ellipsoid trunk on four cylinder legs with a ball for a head (1.3 m long, 0.95 m high)."""
    meshes = [Mesh(_sphere(300, 1.0).vertices * [0.45, 0.18, 0.18] + [0, 0, 0.65], _sphere(300, 1.0).faces)]
    n, m = 12, 8
    t, z = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(0, 0.55, m), indexing="ij")
    quads = [(i * m + j, ((i + 1) % n) * m + j, ((i + 1) % n) * m + j + 1, i * m + j + 1) for i in range(n) for j in range(m - 1)]
    faces = np.array([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    for x in (-0.3, 0.3):
        for y in (-0.1, 0.1):
            meshes.append(Mesh(np.stack([x + 0.05 * np.cos(t), y + 0.05 * np.sin(t), z], -1).reshape(-1, 3), faces))
    head = _sphere(150, 0.12, seed=2)
    meshes.append(Mesh(head.vertices + [0.55, 0, 0.85], head.faces))
    off = np.cumsum([0] + [len(k.vertices) for k in meshes[:-1]])
    return Mesh(np.concatenate([k.vertices for k in meshes]), np.concatenate([k.faces + o for k, o in zip(meshes, off)]))


def _triangle(n=20):
    """A flat 1 m triangle subdivided into 231 vertices (a 3-vertex one is refused on loading)."""
    ij = [(i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    index = {k: m for m, k in enumerate(ij)}
    faces = [(index[i, j], index[i + 1, j], index[i, j + 1]) for i, j in ij if i + j < n]
    faces += [(index[i + 1, j], index[i + 1, j + 1], index[i, j + 1]) for i, j in ij if i + j < n - 1]
    return Mesh(np.array([(i / n, j / n, 0.0) for i, j in ij]), np.array(faces))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from bodycorr.data.suite import load_suite

    d = tmp_path_factory.mktemp("shapes")
    suite = load_suite("synthetic-v1")
    shapes = {"person": suite.mesh(0), "sphere": _sphere(), "box": _box(), "animal": _animal(),
              "triangle": _triangle(), "triangle3": Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))}  # fmt: skip
    for name, mesh in shapes.items():
        save_mesh(mesh, d / f"{name}.ply")
    return d


@pytest.fixture(scope="module")
def judged(files):
    from bodycorr.matching.describe import describe, load_extractor
    from bodycorr.matching.inputs import load_scan
    from bodycorr.matching.plausibility import person_plausibility

    ex = load_extractor()
    return {n: person_plausibility(describe(load_scan(str(files / f"{n}.ply")), ex, 4, "z"), ex)
            for n in ("person", "sphere", "box", "animal", "triangle")}  # fmt: skip


def test_a_person_scores_high_and_shapes_low(judged):
    p = judged["person"]
    assert p.is_person and p.score > 0.8 and not p.reasons, p
    assert 1.0 < p.extents_m[0] < 2.5 and p.descriptor_distance < 0.35 and p.parts_covered >= 10
    for name in ("sphere", "box", "animal", "triangle"):
        q = judged[name]
        assert not q.is_person and q.score < 0.3 and q.reasons, (name, q)
        assert 0.0 <= q.score <= 1.0 and json.dumps(q.to_json())
    assert judged["sphere"].aspect > 0.9 and judged["animal"].descriptor_distance > 0.4
    assert judged["triangle"].extents_m[2] < 1e-6


def test_strict_refuses_non_persons_and_the_default_warns(files, tmp_path, capsys):
    from bodycorr.cli.main import main

    for name in ("box", "animal"):  # the sphere: below, without --strict
        code = main(["match", str(files / f"{name}.ply"), str(files / "person.ply"), "-o", str(tmp_path / name), *VIEWS,
                     "--refine", "none", "--strict"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"{name}.ply does not look like a person (score" in err and "--strict" in err, err
        assert not (tmp_path / name / "summary.json").exists()
    assert main(["register", str(files / "triangle.ply"), "-o", str(tmp_path / "tri"), *VIEWS, "--strict"]) == 2
    assert "triangle.ply does not look like a person" in capsys.readouterr().err
    assert main(["match", str(files / "triangle3.ply"), str(files / "person.ply"), "-o", str(tmp_path / "t3"), *VIEWS]) == 2
    assert "only 3 vertices" in capsys.readouterr().err  # refused on loading, as before
    # without --strict: a warning, the scores in the summary, and low confidence on the non-person side
    out = tmp_path / "plain"
    assert main(["match", str(files / "sphere.ply"), str(files / "person.ply"), "-o", str(out), *VIEWS, "--refine", "none"]) == 0
    err = capsys.readouterr().err
    assert "bodycorr: warning: " in err and "sphere.ply does not look like a person" in err and "person.ply does not" not in err
    s = json.loads((out / "summary.json").read_text())["plausibility"]
    assert not s["source"]["is_person"] and s["source"]["score"] < 0.3 and s["target"]["is_person"] and s["target"]["score"] > 0.8
    conf = np.load(out / "correspondences.npz")["confidence"]
    assert conf.max() <= s["source"]["score"] / 0.5 + 1e-6
