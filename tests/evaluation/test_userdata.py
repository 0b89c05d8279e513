"""User folders -> pair suites: naming rules, pair lists, units, index files (0/1-based, both layouts),
symmetry maps, rendered partial views, and bad input reported per file while the rest loads."""

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.evaluation.userdata import (
    UserSuiteConfig,
    derive_pairs,
    load_user_suite,
    read_pair_list,
    reference_ids,
    subjects_from_names,
    symmetry_by_mirroring,
)
from bodycorr.geometry.io import save_mesh
from bodycorr.geometry.mesh import Mesh
from tinyshapes import icosphere


def toy_body(scale: float = 1.0, lean: float = 0.0, subdivisions: int = 3) -> Mesh:
    """A 1.7 m tall body-like blob (z up, faces -y): wider at the top, a nose in front; left/right
    symmetric when ``lean`` is 0 (``lean`` bends it sideways, like another pose)."""
    v, f = icosphere(subdivisions)
    x, y, z = v.T
    r = 1 + 0.35 * z
    X, Y, Z = 0.25 * x * r, 0.15 * y * r - 0.08 * np.exp(-(x**2 + (z - 0.5) ** 2 + (y + 1) ** 2) / 0.1), 0.85 * (z + 1)
    return Mesh(np.c_[X + lean * (z + 1) ** 2, Y, Z] * scale, f, "toy")


def permuted(mesh: Mesh, perm: np.ndarray) -> Mesh:
    """The same surface with vertex j = old vertex perm[j]."""
    inv = np.argsort(perm)
    return Mesh(mesh.vertices[perm], inv[mesh.faces], "perm")


def write_ints(path, values):
    path.write_text("\n".join(str(int(v)) for v in values) + "\n")


@pytest.fixture
def reg_folder(tmp_path):
    d = tmp_path / "regs"
    d.mkdir()
    save_mesh(toy_body(), d / "alice_00.ply")
    save_mesh(toy_body(lean=0.05), d / "alice_01.ply")
    m = toy_body(scale=1.05, lean=-0.04)
    save_mesh(Mesh(m.vertices * 1000.0, m.faces), d / "bob_00.obj")  # millimetres
    save_mesh(toy_body(subdivisions=2), d / "carol_00.ply")  # another topology
    return d


def test_registration_folder(reg_folder):
    s = load_user_suite(UserSuiteConfig(str(reg_folder)))
    assert [(p.source, p.target, p.group) for p in s.pairs] == [
        ("alice_00", "alice_01", "intra"), ("alice_00", "bob_00", "inter"), ("alice_01", "bob_00", "inter")]  # fmt: skip
    # the mm file was detected and converted: same size as the metre files (x 1.05)
    assert s.meta["units_per_file"]["bob_00"] == "mm" and s.meta["units"] == {"m": 2, "mm": 1}
    h = np.ptp(s.surface("bob_00").mesh.vertices[:, 2])
    assert h == pytest.approx(1.7 * 1.05, rel=1e-6)
    assert s.surface("alice_00").subject == "alice" and s.surface("alice_00").ref is None
    # the odd-topology mesh is one clear line, and its pairs are gone
    assert len(s.issues) == 1 and "carol_00" in s.issues[0] and "162 vertices" in s.issues[0] and "642" in s.issues[0]
    assert "3 pair(s) skipped" in s.issues[0]
    # symmetry from mirroring: exact on this symmetric body, an involution, left <-> right
    sym = s.surface("bob_00").symmetry
    assert s.meta["symmetry"]["available"] and s.meta["symmetry"]["mirror_residual_cm"] < 1e-6
    assert np.array_equal(sym[sym], np.arange(len(sym)))
    v = s.surface("alice_00").mesh.vertices
    assert np.allclose(v[sym] * [-1, 1, 1], v, atol=1e-9)
    assert np.allclose(s.surface("alice_00").up, [0, 0, 1])


def test_units_declared(reg_folder):
    with pytest.raises(BodycorrError, match="no usable pair"):
        load_user_suite(UserSuiteConfig(str(reg_folder), units="cm"))  # cm is implausible for every file
    s = load_user_suite(UserSuiteConfig(str(reg_folder), units="m", pairs=None, name_rule=r"(?P<subject>alice)_.*"))
    assert [p.name for p in s.pairs] == ["alice_00->alice_01"]
    assert any("bob_00" in i and "naming rule" in i for i in s.issues)


def test_pair_list(reg_folder, tmp_path):
    lst = tmp_path / "pairs.txt"
    lst.write_text("# source target group\nalice_00 bob_00.obj hard\nalice_01 nobody_07\njust_one\nalice_01 alice_00\n")
    s = load_user_suite(UserSuiteConfig(str(reg_folder), pairs=str(lst)))
    assert [(p.name, p.group) for p in s.pairs] == [("alice_00->bob_00", "hard"), ("alice_01->alice_00", "pairs")]
    assert any("line 3" in i and "'nobody_07' names no mesh" in i for i in s.issues)
    assert any("line 4" in i and "source target" in i for i in s.issues)
    with pytest.raises(BodycorrError, match="no such file"):
        load_user_suite(UserSuiteConfig(str(reg_folder), pairs=str(tmp_path / "missing.txt")))


def test_naming_rule_and_pair_sampling():
    subj, issues = subjects_from_names(["tr_reg_000", "tr_reg_001", "x"], r"tr_reg_(?P<subject>\d)(?P<pose>\d\d)")
    assert subj == {"tr_reg_000": "0", "tr_reg_001": "0"} and len(issues) == 1
    with pytest.raises(BodycorrError, match="subject"):
        subjects_from_names(["a"], r"(?P<who>.+)")
    with pytest.raises(BodycorrError, match="regular expression"):
        subjects_from_names(["a"], r"(?P<subject>")
    names = {f"s{i}_{p}": f"s{i}" for i in range(4) for p in range(3)}
    all_pairs = derive_pairs(names)
    assert sum(p.group == "intra" for p in all_pairs) == 12 and sum(p.group == "inter" for p in all_pairs) == 54
    a, b = derive_pairs(names, max_pairs=5, seed=3), derive_pairs(names, max_pairs=5, seed=3)
    assert a == b and len(a) == 10 and derive_pairs(names, max_pairs=5, seed=4) != a


def test_reference_ids_layouts_and_bases():
    assert reference_ids(np.array([1, 3, -1]), 3, "per-vertex", 1, "f").tolist() == [0, 2, -1]
    # per-reference (.vts): line k = the vertex at reference point k
    assert reference_ids(np.array([2, 0, -1]), 3, "per-reference", 0, "f").tolist() == [1, -1, 0]
    with pytest.raises(BodycorrError, match="line 2: 0 is below the declared base 1"):
        reference_ids(np.array([1, 0, 2]), 3, "per-vertex", 1, "f")
    with pytest.raises(BodycorrError, match="2 lines but the mesh has 3 vertices"):
        reference_ids(np.array([0, 1]), 3, "per-vertex", 0, "f")
    with pytest.raises(BodycorrError, match="points to vertex 3 .*It looks 1-based"):
        reference_ids(np.array([1, 2, 3]), 3, "per-reference", 0, "f")


def test_index_file_folder(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    base = toy_body()
    n = base.num_vertices
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    save_mesh(base, d / "ann_a.ply")
    save_mesh(permuted(toy_body(lean=0.03), perm), d / "ann_b.ply")
    save_mesh(toy_body(scale=0.95), d / "ben_a.off")
    save_mesh(toy_body(scale=0.9), d / "cat_a.ply")
    write_ints(d / "ann_a.txt", np.arange(n) + 1)  # per-vertex, 1-based
    write_ints(d / "ann_b.txt", perm + 1)
    bad = np.arange(n) + 1
    bad[10] = 0  # below the base
    write_ints(d / "ben_a.txt", bad)
    # cat_a has no index file
    s = load_user_suite(UserSuiteConfig(str(d), format="index-files", index_base=1))
    assert [p.name for p in s.pairs] == ["ann_a->ann_b"]
    assert np.array_equal(s.surface("ann_b").ref, perm) and s.surface("ann_a").symmetry is None
    assert any("ben_a.txt" in i and "line 11" in i and "below the declared base" in i for i in s.issues)
    assert any("cat_a.txt" in i and "no such file" in i for i in s.issues)
    assert not s.meta["symmetry"]["available"]
    # a symmetry file over reference points gives every mesh its own vertex map
    sym_ref, _, _ = symmetry_by_mirroring(base)
    write_ints(tmp_path / "sym.txt", sym_ref + 1)
    s = load_user_suite(UserSuiteConfig(str(d), format="index-files", index_base=1, symmetry=str(tmp_path / "sym.txt")))
    sym_b = s.surface("ann_b").symmetry
    assert np.array_equal(perm[sym_b], sym_ref[perm])


def test_index_files_per_reference_out_of_range(tmp_path):
    d = tmp_path / "vts"
    d.mkdir()
    m = toy_body()
    n = m.num_vertices
    for name in ("p_1", "p_2", "q_1"):
        save_mesh(m, d / f"{name}.ply")
    gt = tmp_path / "gt"
    gt.mkdir()
    write_ints(gt / "p_1.vts", np.arange(0, n, 2))
    write_ints(gt / "p_2.vts", np.arange(0, n, 2))
    write_ints(gt / "q_1.vts", np.r_[np.arange(0, n, 2)[:-1], n + 5])  # points outside the mesh
    s = load_user_suite(UserSuiteConfig(str(d), format="index-files", gt_dir=str(gt), gt_suffix=".vts", gt_layout="per-reference"))
    assert [p.name for p in s.pairs] == ["p_1->p_2"]
    ref = s.surface("p_1").ref
    assert (ref[::2] == np.arange(len(ref[::2]))).all() and (ref[1::2] == -1).all()
    msg = [i for i in s.issues if "q_1.vts" in i]
    assert len(msg) == 1 and f"points to vertex {n + 5}" in msg[0] and "2 pair(s) skipped" in msg[0]


def test_views_are_deterministic_with_truth(reg_folder):
    s = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    v1 = s.view("alice_00", "clean")
    s2 = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    v2 = s2.view("alice_00", "clean")
    assert np.array_equal(v1.depth, v2.depth) and np.array_equal(v1.vertex, v2.vertex)
    assert v1.depth.shape == (424, 512) and (v1.depth > 0).sum() > 2000
    # each pixel's truth vertex lies on the pixel's ray near the back-projected point
    valid = v1.depth > 0
    pts = v1.camera.backproject(v1.depth)[valid]
    ok = v1.vertex >= 0
    assert ok.all()
    dist = np.linalg.norm(s.surface("alice_00").mesh.vertices[v1.vertex] - pts, axis=1)
    assert np.percentile(dist, 95) < 0.08  # within about an edge length (~7 cm on this coarse blob)
    noisy = s.view("alice_00", "noisy")
    assert (noisy.vertex < 0).any() or (noisy.depth > 0).sum() != valid.sum()


@pytest.mark.slow
def test_mirroring_recovers_the_template_symmetry(template):
    sym, residual, normal = symmetry_by_mirroring(template.mesh)
    assert abs(normal[0]) > 0.999 and residual < 0.005
    assert (sym == template.symmetry).mean() > 0.95


def test_read_pair_list_accepts_file_names(tmp_path):
    names = {"a_1": tmp_path / "a_1.ply", "b_1": tmp_path / "b_1.obj"}
    (tmp_path / "l.txt").write_text("a_1.ply, b_1\n")
    pairs, issues = read_pair_list(tmp_path / "l.txt", names)
    assert [p.name for p in pairs] == ["a_1->b_1"] and not issues
