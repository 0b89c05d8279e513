"""The pair-suite harness: zero error for a perfect oracle, flips for a mirrored one, the rigid
baseline beats chance on a moved copy, several methods side by side, bad input reported while the
rest of the suite runs, and the CLI outputs (table, JSON, PNGs)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from bodycorr.cli.main import main
from bodycorr.common.errors import BodycorrError
from bodycorr.evaluation.baseline import get_baseline
from bodycorr.evaluation.harness import (
    MAX_TRUTH_SET,
    HarnessConfig,
    ModelMethod,
    PairSpec,
    PairSuite,
    PairTruth,
    ReferenceBody,
    RowCache,
    SolverRows,
    Surface,
    View,
    _distance_to_set,
    _edge_graph,
    _RefIndex,
    _RingPattern,
    _Runner,
    format_comparison,
    heatmap_pair,
    pair_distances,
    plot_error_heatmap,
    result_json,
    run_benchmark,
    select_points,
    write_report,
)
from bodycorr.evaluation.userdata import UserSuiteConfig, load_user_suite
from bodycorr.geometry.io import save_mesh
from bodycorr.geometry.mesh import Mesh
from bodycorr.models.io import save_model_file
from bodycorr.models.registry import create_model
from tinyshapes import icosphere


def toy_body(scale: float = 1.0, lean: float = 0.0, subdivisions: int = 3) -> Mesh:
    """A 1.7 m tall body-like blob (z up, faces -y), left/right symmetric when ``lean`` is 0."""
    v, f = icosphere(subdivisions)
    x, y, z = v.T
    r = 1 + 0.35 * z
    X, Y, Z = 0.25 * x * r, 0.15 * y * r - 0.08 * np.exp(-(x**2 + (z - 0.5) ** 2 + (y + 1) ** 2) / 0.1), 0.85 * (z + 1)
    return Mesh(np.c_[X + lean * (z + 1) ** 2, Y, Z] * scale, f, "toy")


def rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


class Oracle:
    """The perfect method for same-topology data (or via reference ids): each source point's truth.

    ``mirror``: return the left/right mirror of the truth instead (a method that flips every point)."""

    def __init__(self, suite, mirror=False, name="oracle"):
        self.suite, self.mirror, self.name = suite, mirror, name

    def prepare(self, shape):
        return shape

    def correspond(self, s, t):
        ss, ts = self.suite.surface(s.surface), self.suite.surface(t.surface)
        v = np.maximum(s.vertex, 0)
        if ss.ref is not None:  # via reference ids
            ref = ss.ref[v]
            inv = np.full(max(ref.max(), ts.ref.max()) + 2, -1)
            inv[ts.ref[ts.ref >= 0]] = np.flatnonzero(ts.ref >= 0)
            v = np.maximum(inv[np.maximum(ref, 0)], 0)
        if self.mirror:
            v = ts.symmetry[v]
        if t.partial:  # a target pixel showing that vertex (any, else pixel 0)
            first = np.zeros(ts.mesh.num_vertices, dtype=np.int64)
            ok = t.vertex >= 0
            first[t.vertex[ok][::-1]] = np.flatnonzero(ok)[::-1]
            return first[v]
        return v


class RandomMethod:
    def __init__(self, name="random"):
        self.name = name

    def prepare(self, shape):
        return len(shape.scan.points)

    def correspond(self, n_s, n_t):
        return np.random.default_rng(n_s).integers(0, n_t, n_s)


@pytest.fixture
def reg_folder(tmp_path):
    d = tmp_path / "regs"
    d.mkdir()
    save_mesh(toy_body(), d / "alice_00.ply")
    save_mesh(toy_body(lean=0.05), d / "alice_01.ply")
    m = toy_body(scale=1.05, lean=-0.04)
    save_mesh(Mesh(m.vertices * 1000.0, m.faces), d / "bob_00.obj")  # millimetres
    return d


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("unet", base_width=4, max_width=16, num_levels=3)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model_file(net, path, meta={"size": 32})
    return path


def test_oracle_has_zero_error_everywhere(reg_folder):
    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    res = run_benchmark(suite, [Oracle(suite)], HarnessConfig(max_points=400), progress=False)
    assert res.groups == [f"{k}/{g}/{n}" for k, ns in (("full-full", ("clean",)), ("partial-full", ("clean", "noisy")),
                                                         ("partial-partial", ("clean", "noisy")))
                          for g in ("intra", "inter") for n in ns]  # fmt: skip
    summ = res.summaries()["oracle"]
    for g in res.groups:
        if g.startswith("partial-partial"):
            continue  # the oracle cannot match points the target view does not see
        s = summ[g]
        assert s["pairs"] == (1 if "intra" in g else 2), g
        assert s["AE_cm"] == 0 and s["flip_pct"] == 0 and s["within_2cm_pct"] == 100, g
        assert s["auc_10cm"] > 0.99
        if g.startswith("partial"):
            assert s["match_outside_overlap_pct"] == 0, g
    full = res.records["oracle"]["full-full/intra/clean"][0]
    assert full.errors.errors_cm.size == 400  # the deterministic subset
    # complete sources weigh each point by its vertex area; a view's pixels already sample by area
    src = suite.surface(full.pair.split("->")[0].strip()).mesh
    assert full.errors.weights is not None and full.errors.weights.shape == (400,)
    assert np.all(full.errors.weights > 0) and full.errors.weights.sum() < src.vertex_areas().sum()
    assert res.records["oracle"]["partial-full/intra/clean"][0].errors.weights is None
    assert all(summ[g]["AE_area_cm"] == 0 for g in res.groups if not g.startswith("partial-partial"))
    pp = summ["partial-partial/inter/clean"]
    assert 0 < pp["outside_overlap_pct"] < 100 and np.isfinite(pp["AE_cm"])
    assert not res.issues


def test_mirrored_oracle_is_all_flips(reg_folder):
    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    cfg = HarnessConfig(kinds=("full-full",), max_points=300)
    s = run_benchmark(suite, [Oracle(suite, mirror=True, name="mirror")], cfg, progress=False).summaries()["mirror"]
    g = s["full-full/intra/clean"]
    sym = suite.surface("alice_00").symmetry
    v = suite.surface("alice_00").mesh.vertices
    far = np.abs(v[:, 0]) > 0.06  # truth and mirror more than ~10 cm apart
    assert g["AE_cm"] > 5 and g["flip_pct"] > 0.8 * far.mean() * 100
    assert g["AE_area_cm"] > 5 and g["AE_area_cm"] != pytest.approx(g["AE_cm"], abs=1e-3)  # weighted, not the plain mean
    assert g["flip_share_of_gross_pct"] > 90
    assert np.array_equal(sym[sym], np.arange(len(sym)))


def test_rigid_baseline_beats_chance_on_a_moved_copy(tmp_path):
    d = tmp_path / "moved"
    d.mkdir()
    body = toy_body(lean=0.03)
    save_mesh(body, d / "p_0.ply")
    R = rotation([0.3, -1.0, 0.4], 2.1)
    save_mesh(Mesh(body.vertices @ R.T + [0.4, -1.2, 0.3], body.faces), d / "p_1.ply")
    suite = load_user_suite(UserSuiteConfig(str(d), up="z"))
    cfg = HarnessConfig(kinds=("full-full",), max_points=500)
    res = run_benchmark(suite, [get_baseline("rigid-nn"), get_baseline("nn"), RandomMethod()], cfg, progress=False)
    s = {m: res.summaries()[m]["full-full/intra/clean"] for m in res.methods}
    assert s["baseline:rigid-nn"]["AE_cm"] < 0.5 and s["baseline:rigid-nn"]["within_2cm_pct"] > 99
    assert s["random"]["AE_cm"] > 30 and s["baseline:nn"]["AE_cm"] > 10
    assert s["baseline:rigid-nn"]["median_match_s"] < 2


def test_geodesic_method_option(reg_folder):
    out = {}
    for method in ("graph", "heat"):
        suite = load_user_suite(UserSuiteConfig(str(reg_folder), geodesic=method))
        res = run_benchmark(suite, [RandomMethod()], HarnessConfig(kinds=("full-full",), max_points=300), progress=False)
        out[method] = res.summaries()["random"]["full-full/inter/clean"]["AE_cm"]
    assert out["graph"] > 20 and out["heat"] == pytest.approx(out["graph"], rel=0.05)


def test_index_file_suite(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    n = toy_body().num_vertices
    perm = np.random.default_rng(1).permutation(n)
    inv = np.argsort(perm)
    save_mesh(toy_body(), d / "ann_a.ply")
    b = toy_body(lean=0.03)
    save_mesh(Mesh(b.vertices[perm], inv[b.faces]), d / "ann_b.ply")
    (d / "ann_a.txt").write_text("\n".join(str(i + 1) for i in range(n)))
    (d / "ann_b.txt").write_text("\n".join(str(i + 1) for i in perm))
    suite = load_user_suite(UserSuiteConfig(str(d), format="index-files", index_base=1, up="z"))
    cfg = HarnessConfig(kinds=("full-full", "partial-full"), noise=("clean",), max_points=300)
    res = run_benchmark(suite, [Oracle(suite), RandomMethod()], cfg, progress=False)
    s = res.summaries()
    for g in res.groups:
        assert s["oracle"][g]["AE_cm"] == 0 and s["random"][g]["AE_cm"] > 20
        assert s["oracle"][g]["flip_pct"] is None and s["oracle"][g]["flip_share_of_gross_pct"] is None
    assert "-" in format_comparison(res).splitlines()[2]  # no flip figure without a symmetry map


def test_truth_sets_and_point_subsets():
    v, f = icosphere(2)
    ref = np.arange(len(v)) // 2  # two vertices per reference point
    ref[:40] = 0  # and one big set
    idx = _RefIndex(Surface("s", Mesh(v, f), ref=ref))
    mem = idx.members(np.array([0, 30, -1, 10_000]))
    assert mem.shape[1] == MAX_TRUTH_SET and (mem[0] >= 0).all() and set(mem[0]) <= set(range(40))
    assert sorted(mem[1][mem[1] >= 0]) == [60, 61] and (mem[2:] == -1).all()
    a, b = select_points(np.arange(5000), 100, 3), select_points(np.arange(5000), 100, 3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and not np.array_equal(a, select_points(np.arange(5000), 100, 4))
    assert np.array_equal(select_points(np.arange(50), 100, 0), np.arange(50))


def test_row_cache_matches_solver_and_stays_bounded():
    m = toy_body()
    rows = SolverRows(m, "heat", RowCache(max_bytes=10 * m.num_vertices * 4))
    r1 = rows.rows(np.array([5, 7, 5]))
    assert r1.shape == (3, m.num_vertices) and np.array_equal(r1[0], r1[2]) and r1[0, 5] == 0
    rows.rows(np.arange(20, 40))  # over budget: evicted, still correct
    assert np.allclose(rows.rows(np.array([7]))[0], r1[1])


class _BrokenSuite(PairSuite):
    """Two good shapes and a pair naming one that fails to load."""

    def __init__(self):
        self.name, self.issues, self.meta = "broken", [], {}
        self.pairs = [PairSpec("a", "ghost", "g"), PairSpec("a", "b", "g")]
        self._s = {"a": Surface("a", toy_body(), symmetry=None), "b": Surface("b", toy_body(lean=0.02), symmetry=None)}

    def surface(self, name):
        if name not in self._s:
            raise BodycorrError(f"mesh {name}.ply: no such file. Check the path.")
        return self._s[name]

    def geodesics(self, name):
        return SolverRows(self._s[name].mesh, "heat")


class _Failing:
    name = "fails on b"

    def prepare(self, shape):
        if shape.surface == "b":
            raise BodycorrError("b: cannot describe it.")
        return shape

    def correspond(self, s, t):  # pragma: no cover - never reached
        return np.zeros(len(s.scan.points), dtype=np.int64)


class _WrongLength:
    name = "wrong length"

    def prepare(self, shape):
        return len(shape.scan.points)

    def correspond(self, a, b):
        return np.zeros(a - 1, dtype=np.int64)


def test_bad_pairs_and_failing_methods_are_reported(tmp_path):
    suite = _BrokenSuite()
    methods = [RandomMethod(), _Failing(), _WrongLength()]
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("full-full",), max_points=100), out=tmp_path / "o", progress=False)
    s = res.summaries()
    assert s["random"]["full-full/g/clean"]["pairs"] == 1  # the good pair still ran
    assert s["fails on b"]["full-full/g/clean"]["pairs"] == 0 and s["wrong length"]["full-full/g/clean"]["pairs"] == 0
    assert any("a->ghost" in i and "no such file" in i for i in res.issues)
    assert any("cannot describe b" in i and "b: cannot describe it." in i for i in res.issues)
    assert any("wrong length" in i and "target indices" in i for i in res.issues)
    assert all("\n" not in i for i in res.issues)
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["errors"] == res.issues and doc["method_order"] == ["random", "fails on b", "wrong length"]
    table = format_comparison(res)
    assert "fails on b" in table and "random" in table


def _turbo_level(colours: np.ndarray) -> np.ndarray:
    """(N,) index 0-255 into the turbo colour map of (N, 3) (shaded, i.e. scaled) colours."""
    import matplotlib

    lut = matplotlib.colormaps["turbo"](np.linspace(0, 1, 256))[:, :3]
    lut = lut / lut.max(1, keepdims=True)
    c = colours / colours.max(1, keepdims=True)
    return np.abs(c[:, None, :] - lut[None]).sum(-1).argmin(1)


def test_heatmap_on_the_reference_body_is_the_mean_error_per_vertex(reg_folder, tmp_path, saved_figures):
    from bodycorr.matching.visualize import draw_order

    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    body = toy_body()  # what every registration is, vertex by vertex, in its rest shape
    up, facing = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    suite.reference_body = lambda: ReferenceBody(body, up, facing, "toy template")
    methods = [Oracle(suite, mirror=True, name="mirror"), Oracle(suite)]
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("full-full",), max_points=300), progress=False)
    assert res.body is not None and res.body.mesh is body and res.body.pair is None
    for recs in res.records["mirror"].values():
        for r in recs:  # the evaluated points on the reference body: its vertices, where the source is that body
            assert r.anchor.shape == (300, 3)
            assert np.isin(r.anchor.view([("", r.anchor.dtype)] * 3), body.vertices.astype(np.float32).view([("", np.float32)] * 3)).all()
            if r.pair.startswith("alice_00"):
                np.testing.assert_allclose(r.anchor, r.points, atol=1e-6)
    assert plot_error_heatmap(res, tmp_path / "heatmap.png").is_file()
    (fig,) = saved_figures
    assert " ".join(fig._suptitle.get_text().split()).startswith("full-full/intra/clean: mean geodesic error per toy template vertex over 1 pair(s)")
    cells = fig.subfigs[0].subfigs
    assert [c._suptitle.get_text().split("\n")[0] for c in cells] == ["mirror", "oracle"]
    assert any("geodesic error (cm)" in ax.get_ylabel() for ax in fig.axes)
    # the mirror is wrong far from the mirror plane and right on it; the oracle is right everywhere
    order = np.argsort(draw_order(body.vertices, body.faces, "front", up, facing))
    v = body.vertices
    side = np.flatnonzero((np.abs(v[body.faces][..., 0]) > 0.2).all(1))
    middle = np.flatnonzero(np.abs(v[body.faces][..., 0].mean(1)) < 0.02)
    levels = [_turbo_level(c.axes[0].collections[0].get_facecolor()[:, :3][order]) for c in cells]
    assert np.median(levels[0][side]) > 200 and np.median(levels[0][middle]) < 60
    assert levels[1].max() < 30


def test_heatmap_without_a_reference_body_is_drawn_on_a_typical_pairs_source(reg_folder, tmp_path, saved_figures):
    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    res = run_benchmark(suite, [Oracle(suite, mirror=True, name="mirror")], HarnessConfig(kinds=("full-full",), max_points=300), progress=False)
    group, pair = heatmap_pair(res)
    assert res.body.pair == pair and res.body.mesh is suite.surface(pair.split("->")[0]).mesh and res.body.facing is None
    assert all(r.anchor is None for recs in res.records["mirror"].values() for r in recs)
    plot_error_heatmap(res, tmp_path / "heatmap.png")
    (fig,) = saved_figures
    assert " ".join(fig._suptitle.get_text().split()).startswith(f"{group}, pair {pair} (a typical one): geodesic error on its source surface")
    assert [ax.get_title() for ax in fig.axes if ax.collections and not ax.get_ylabel()] == ["side 1", "side 2 (turned 180°)"]


def test_model_method_and_report(reg_folder, tiny_model, tmp_path):
    from bodycorr.matching.pipeline import load_extractor

    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    m = ModelMethod(load_extractor(str(tiny_model)), name="tiny", views=4)
    cfg = HarnessConfig(kinds=("full-full", "partial-full"), noise=("noisy",), max_points=200)
    res = run_benchmark(suite, [m, get_baseline("rigid-nn")], cfg, progress=False)
    paths = write_report(res, tmp_path / "rep")
    assert set(paths) == {"json", "cumulative", "pairs_sorted", "heatmap"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 1000
    doc = result_json(res)
    g = doc["methods"]["tiny"]["groups"]["partial-full/inter/noisy"]
    assert g["pairs"] == 2 and g["median_describe_s"] > 0 and g["median_match_s"] > 0
    assert 0 <= g["match_outside_overlap_pct"] <= 100 and g["flip_pct"] is not None
    # both methods were evaluated on the same pairs and the same source points
    a = res.records["tiny"]["partial-full/inter/noisy"]
    b = res.records["baseline:rigid-nn"]["partial-full/inter/noisy"]
    assert [r.pair for r in a] == [r.pair for r in b] and all(np.array_equal(x.points, y.points) for x, y in zip(a, b))
    assert doc["meta"]["units"] == {"m": 2, "mm": 1} and doc["meta"]["views"] == 4


def test_cli_compare_on_a_folder_with_bad_input(reg_folder, tiny_model, tmp_path, capsys):
    save_mesh(toy_body(subdivisions=2), reg_folder / "carol_00.ply")  # another topology
    lst = tmp_path / "pairs.txt"
    lst.write_text("alice_00 bob_00\nalice_00 carol_00\nalice_01 dave_00\nbob_00 alice_01\n")
    out = tmp_path / "bench"
    code = main(["benchmark", "--registrations", str(reg_folder), "--pairs", str(lst), "--compare", str(tiny_model),
                 "baseline:rigid-nn", "-o", str(out), "--views", "4", "--points", "150", "--kinds", "full-full,partial-full",
                 "--noise", "clean", "--up", "z"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "full-full/pairs/clean" in text and "baseline:rigid-nn" in text and str(tiny_model) in text
    tail = text[text.index("problem(s)") :]
    assert "carol_00" in tail and "642" in tail and "'dave_00' names no mesh" in tail
    doc = json.loads((out / "results.json").read_text())
    assert doc["methods"]["baseline:rigid-nn"]["groups"]["full-full/pairs/clean"]["pairs"] == 2
    assert len(doc["errors"]) == 2
    assert all((out / f).exists() for f in ("cumulative.png", "pairs_sorted.png", "heatmap.png"))
    # which model file the figures are of ('bodycorr release' checks it): its sha256; baselines have none
    from bodycorr.common.fileio import file_sha256

    assert doc["meta"]["models"] == {str(tiny_model): {"file": str(tiny_model), "sha256": file_sha256(tiny_model)}}


def test_an_image_model_is_not_a_benchmark_method(tmp_path):
    from bodycorr.evaluation.harness import make_method
    from bodycorr.models import tiny_overrides

    save_model_file(create_model("bodymap_unet", **tiny_overrides("bodymap_unet")), tmp_path / "bm.pt")
    with pytest.raises(BodycorrError, match="an image model") as e:
        make_method(str(tmp_path / "bm.pt"))
    assert "bm.pt" in str(e.value)


def test_cli_bad_options_are_one_line(reg_folder, tmp_path, capsys):
    for args, needle in (
        (["--registrations", str(reg_folder), "--meshes", str(reg_folder)], "not both"),
        (["--registrations", str(tmp_path / "nope")], "no such folder"),
        (["--registrations", str(reg_folder), "--compare", "baseline:magic"], "baseline:rigid-nn"),
        (["--registrations", str(reg_folder), "--compare", "baseline:nn", "--kinds", "full-half"], "unknown kind"),
        (["--meshes", str(reg_folder), "--compare", "baseline:nn"], "no usable pair"),
    ):
        code = main(["benchmark", *args, "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], (args, err)


@pytest.mark.slow
def test_anny_bodies_oracle_baseline_and_model(tmp_path, body_model, template):
    """Two phenotypes in template topology (one in millimetres): geodesics on each target's own surface."""
    d = tmp_path / "anny"
    d.mkdir()
    a = body_model(np.full((1, 6), 0.5)).vertices[0][template.template_to_full]
    b = body_model(np.array([[0.2, 0.7, 0.5, 0.6, 0.3, 0.5]])).vertices[0][template.template_to_full]
    save_mesh(Mesh(a, template.mesh.faces), d / "p1_rest.ply")
    save_mesh(Mesh(b * 1000.0, template.mesh.faces), d / "p2_rest.ply")
    R = rotation([0, 0, 1], 0.7)
    save_mesh(Mesh(a @ R.T + [0.3, 0.1, 0.0], template.mesh.faces), d / "p1_moved.ply")
    suite = load_user_suite(UserSuiteConfig(str(d), geodesic="heat", up="z"))
    assert suite.meta["units_per_file"]["p2_rest"] == "mm" and suite.meta["symmetry"]["mirror_residual_cm"] < 0.5
    sym = suite.surface("p1_rest").symmetry
    assert (sym == template.symmetry).mean() > 0.95
    cfg = HarnessConfig(kinds=("full-full", "partial-full"), noise=("clean",), max_points=60)
    res = run_benchmark(suite, [Oracle(suite), get_baseline("rigid-nn"), RandomMethod()], cfg, progress=False)
    s = res.summaries()
    for g in ("full-full/intra/clean", "partial-full/intra/clean", "full-full/inter/clean"):
        assert s["oracle"][g]["AE_cm"] == 0
        assert s["random"][g]["AE_cm"] > 30
    assert s["baseline:rigid-nn"]["full-full/intra/clean"]["AE_cm"] < 1.0
    assert s["baseline:rigid-nn"]["full-full/inter/clean"]["AE_cm"] < s["random"]["full-full/inter/clean"]["AE_cm"] / 3


@pytest.mark.slow
def test_synthetic_suite_still_evaluates(tiny_model):
    from bodycorr.evaluation.synthetic import SuiteEvalConfig, evaluate_suite, format_table
    from bodycorr.matching.pipeline import load_extractor

    cfg = SuiteEvalConfig(kinds=("partial-full",), noise=("clean",), views=4, max_pairs=1, geodesic="template")
    res = evaluate_suite(load_extractor(str(tiny_model)), cfg, progress=False)
    assert set(res["groups"]) == {"partial-full/inter/clean", "partial-full/intra/clean"}
    g = res["groups"]["partial-full/inter/clean"]
    assert g["pairs"] == 1 and g["points"] > 1000 and g["flip_share_of_gross_pct"] is not None
    assert "partial-full/inter/clean" in format_table(res)
    assert len(res["_per_pair"]["partial-full/inter/clean"]) == 1
    assert res["meta"]["geodesic"].startswith("template")
    from bodycorr.data.suite import parameters_digest

    assert parameters_digest("synthetic-v1").startswith(res["meta"]["suite_parameters_sha256"])  # which suite, recorded


@pytest.mark.slow
def test_synthetic_suite_on_each_targets_own_surface(tiny_model):
    """The default: graph geodesics on each target, at a shared subset of truth vertices."""
    from bodycorr.evaluation.synthetic import SuiteEvalConfig, evaluate_suite
    from bodycorr.matching.pipeline import load_extractor

    ext = load_extractor(str(tiny_model))
    base = dict(kinds=("full-full", "partial-full"), noise=("clean",), views=4, max_pairs=1, points=60)
    own = evaluate_suite(ext, SuiteEvalConfig(**base), progress=False)
    tab = evaluate_suite(ext, SuiteEvalConfig(**base, geodesic="template"), progress=False)
    assert "own surface" in own["meta"]["geodesic"] and "60 of the 13348 truth vertices" in own["meta"]["geodesic"]
    assert own["meta"]["truth_points"] == 60 and own["meta"]["geodesic_rows"]["targets"] == 2
    ff = own["groups"]["full-full/inter/clean"]
    # a partial source evaluates only its pixels whose truth is one of the 60 (a vertex can cover a
    # few pixels: 45-76 seen on different machines), never the > 1000 pixels of its whole view
    assert ff["points"] == 60 and 0 < own["groups"]["partial-full/inter/clean"]["points"] < 4 * 60
    assert tab["groups"]["full-full/inter/clean"]["points"] == 60  # template: per-pair subsets of the same size
    # the same matches measured two ways: close, not equal
    assert ff["AE_cm"] == pytest.approx(tab["groups"]["full-full/inter/clean"]["AE_cm"], rel=0.3)


# ------------------------------------------------------------------------------------------------
# the fast paths (issue #4) against their slow, obvious references
# ------------------------------------------------------------------------------------------------


def test_table_distances_equal_the_rows_entries():
    from bodycorr.evaluation.synthetic import _TableRows

    rng = np.random.default_rng(0)
    table = rng.uniform(0, 2, (50, 50)).astype(np.float16)
    geo = _TableRows(table, 1.07)
    a, b = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    fast = geo.distances(a, b)
    assert fast.dtype == np.float32 and np.array_equal(fast, geo.rows(a)[np.arange(300), b])
    lookup = pair_distances(geo, a)  # uses the suite's own lookup
    rows_only = pair_distances(_RowsOnly(geo), a)  # rows of the unique sources, fetched once
    assert np.array_equal(lookup(a, b), fast) and np.array_equal(rows_only(a, b), fast)


class _RowsOnly:
    """The same geodesics with only ``rows`` (the harness then fetches whole rows)."""

    def __init__(self, geo):
        self.geo = geo

    def rows(self, vertices):
        return self.geo.rows(vertices)


class _TableSuite(PairSuite):
    """The registration folder with two vertices per reference id (truth sets of 2), geodesics from
    a float16 graph table per surface (as the synthetic suite), with or without ``distances``."""

    def __init__(self, folder, lookup: bool):
        from scipy.sparse.csgraph import dijkstra

        from bodycorr.evaluation.synthetic import _TableRows

        self.user = load_user_suite(UserSuiteConfig(str(folder), up="z"))
        self.name, self.pairs, self.issues, self.meta = "table", self.user.pairs, [], {}
        self._s, self._g = {}, {}
        for p in self.user.pairs:
            for n in (p.source, p.target):
                if n not in self._s:
                    s = self.user.surface(n)
                    self._s[n] = dataclasses.replace(s, ref=np.arange(s.mesh.num_vertices) // 2)
                    table = dijkstra(_edge_graph(s.mesh), directed=False).astype(np.float16)
                    geo = _TableRows(table, 1.0 + 0.01 * len(self._g))
                    self._g[n] = geo if lookup else _RowsOnly(geo)

    def surface(self, name):
        return self._s[name]

    def view(self, name, noise):
        return self.user.view(name, noise)

    def geodesics(self, name):
        return self._g[name]


def test_distance_lookups_give_the_same_errors_as_rows(reg_folder):
    res = {}
    for lookup in (True, False):
        suite = _TableSuite(reg_folder, lookup)
        methods = [RandomMethod(), Oracle(suite.user, mirror=True, name="mirror")]
        res[lookup] = run_benchmark(suite, methods, HarnessConfig(noise=("noisy",), max_points=300), progress=False)
    fast, slow = res[True], res[False]
    assert fast.groups == slow.groups and not fast.issues
    n = 0
    for m in fast.methods:
        for g in fast.groups:
            for a, b in zip(fast.records[m][g], slow.records[m][g], strict=True):
                assert np.array_equal(a.errors.errors_cm, b.errors.errors_cm) and np.array_equal(a.errors.flips, b.errors.flips)
                for x, y in ((a.errors.outside_overlap, b.errors.outside_overlap), (a.match_outside, b.match_outside)):
                    assert (x is None and y is None) or np.array_equal(x, y)
                n += 1
    assert n == 2 * 3 * 3  # methods x kinds x pairs (1 intra + 2 inter)
    s = fast.summaries()["mirror"]["full-full/intra/clean"]
    assert s["flip_pct"] > 10 and s["AE_cm"] > 5  # truth sets of 2 and flips were exercised


def test_ring_pattern_builds_the_same_graph():
    v, f = icosphere(3)
    rng = np.random.default_rng(2)
    pattern = _RingPattern(Mesh(v, f))
    for _ in range(2):
        w = v * rng.uniform(0.5, 1.5, 3) + rng.normal(0, 0.01, v.shape)
        slow, fast = _edge_graph(Mesh(w, f)), _edge_graph(Mesh(w, f), pattern)
        assert np.array_equal(slow.indptr, fast.indptr) and np.array_equal(slow.indices, fast.indices)
        assert np.array_equal(slow.data, fast.data)
    seeds = np.array([0, 17, 300])
    assert np.array_equal(_distance_to_set(slow, seeds), _distance_to_set(fast, seeds))


def test_known_seen_distances_give_the_same_truth(reg_folder):
    suite = load_user_suite(UserSuiteConfig(str(reg_folder), up="z"))
    runner = _Runner(suite, [RandomMethod()], HarnessConfig())
    src, tgt = runner.shape("alice_00", True, "clean"), runner.shape("bob_00", True, "clean")
    ssurf, tsurf = suite.surface("alice_00"), suite.surface("bob_00")
    graph = _edge_graph(tsurf.mesh)
    args = (src, tgt, ssurf, tsurf, _RefIndex(tsurf), graph, suite.geodesics("bob_00"), 300, 0)
    slow = PairTruth(*args)
    fast = PairTruth(*args, dist_seen=_distance_to_set(graph, tgt.vertex[tgt.vertex >= 0]))
    assert np.array_equal(slow.outside_truth, fast.outside_truth) and np.array_equal(slow.dist_region, fast.dist_region)
    assert 0 < slow.outside_truth.mean() < 1


class _FewPixelsSuite(PairSuite):
    """The registration folder, but alice_01's views have 9 valid pixels: a model cannot describe them."""

    def __init__(self, folder):
        self.user = load_user_suite(UserSuiteConfig(str(folder), up="z"))
        self.name, self.pairs, self.issues, self.meta = "few", self.user.pairs, [], {}

    def surface(self, name):
        return self.user.surface(name)

    def view(self, name, noise):
        v = self.user.view(name, noise)
        if name != "alice_01":
            return v
        d = np.zeros_like(v.depth)
        d[100:103, 100:103] = 2.0
        return View(d, v.camera, np.zeros(9, dtype=np.int64), v.name)

    def geodesics(self, name):
        return self.user.geodesics(name)


def test_describing_in_worker_processes_changes_nothing(reg_folder, tiny_model, monkeypatch):
    from bodycorr.evaluation import harness
    from bodycorr.matching.pipeline import load_extractor

    monkeypatch.setattr(harness, "PREFETCH_MIN_WORK", 0)  # the toy suite is too small to start workers otherwise

    suite = _FewPixelsSuite(reg_folder)
    method = ModelMethod(load_extractor(str(tiny_model)), name="tiny", views=4)
    cfg = dict(kinds=("full-full", "partial-full"), noise=("clean",), max_points=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: bit-identical descriptors
    try:
        serial = run_benchmark(suite, [method, RandomMethod()], HarnessConfig(**cfg), progress=False)
    finally:
        torch.set_num_threads(threads)
    par = run_benchmark(suite, [method, RandomMethod()], HarnessConfig(**cfg, workers=2), progress=False)
    assert par.issues == serial.issues and len(par.issues) == 1 and "only 9 valid pixels" in par.issues[0]
    assert "cannot describe alice_01 [view, clean]" in par.issues[0]
    for m in ("tiny", "random"):
        for g in par.groups:
            a, b = par.records[m][g], serial.records[m][g]
            assert [r.pair for r in a] == [r.pair for r in b]
            assert all(np.array_equal(x.errors.errors_cm, y.errors.errors_cm) for x, y in zip(a, b))
    assert len(par.records["tiny"]["full-full/inter/clean"]) == 2 and len(par.records["tiny"]["partial-full/inter/clean"]) == 1
    assert par.meta["describe_workers"] == 2 and serial.meta["describe_workers"] == 1
    assert set(par.meta["seconds"]) == {"describe", "match", "truth", "evaluate", "total"}
    assert par.meta["seconds"]["describe"] > 0
    with pytest.raises(BodycorrError, match="--workers"):
        run_benchmark(suite, [method], HarnessConfig(workers=0), progress=False)


def test_method_specs_for_refinements(tiny_model):
    """Every refinement spec runs a registered refiner (the one `bodycorr match --refine` runs)."""
    from bodycorr.evaluation.harness import REFINER_SPECS, RefinerMethod, make_method
    from bodycorr.matching.refiners import list_refiners

    fit = make_method(f"fit:{tiny_model}", views=4)
    ref = make_method(f"refine:{tiny_model}", views=4)
    assert isinstance(fit, RefinerMethod) and fit.refiner_name == "template" and fit.name.endswith("+ template fit") and fit.views == 4
    assert ref.refiner_name == "register" and ref.name.endswith("+ refine")
    assert make_method(f"body:{tiny_model}").options == {"model": "body"} and make_method(f"bodyfit:{tiny_model}").options == {}
    assert {r for r, _, _ in REFINER_SPECS.values()} <= set(list_refiners())
    for prefix in REFINER_SPECS:
        assert isinstance(make_method(f"{prefix}:{tiny_model}"), RefinerMethod)
    from bodycorr.matching.pipeline import DEFAULT_MODEL

    if DEFAULT_MODEL.exists():
        assert make_method("shipped").name == make_method(None).name == "shipped model"


class _TwoTriangulations(PairSuite):
    """One toy body triangulated twice (icosphere levels 3 and 4, the coarse one rotated first):
    different vertex counts, positions and connectivity; canonical points = the rest positions."""

    name = "two-triangulations"
    default_points = 300

    def __init__(self):
        from scipy.spatial.transform import Rotation

        fine = toy_body(subdivisions=4)
        v, f = icosphere(3)
        coarse = toy_body(subdivisions=3)
        # re-place the coarse body's vertices: rotate the sphere before the body mapping
        x, y, z = (v @ Rotation.random(random_state=3).as_matrix().T).T
        r = 1 + 0.35 * z
        cv = np.c_[0.25 * x * r, 0.15 * y * r - 0.08 * np.exp(-(x**2 + (z - 0.5) ** 2 + (y + 1) ** 2) / 0.1), 0.85 * (z + 1)]
        coarse = Mesh(cv, f, "coarse")
        self.meshes = {"coarse": coarse, "fine": Mesh(fine.vertices, fine.faces, "fine")}
        self.pairs = [PairSpec("coarse", "fine", "inter"), PairSpec("fine", "coarse", "inter")]
        self.issues, self.meta = [], {}

    def surface(self, name):
        from scipy.spatial import cKDTree

        m = self.meshes[name]
        sym = cKDTree(m.vertices).query(m.vertices * [-1, 1, 1])[1]
        return Surface(name, m, None, sym, np.array([0, 0, 1.0]), "z", canonical=m.vertices.copy())

    def geodesics(self, name):
        return SolverRows(self.meshes[name], "graph")


class _CanonicalOracle:
    """Maps each source vertex to the target vertex nearest its canonical point (``mirror``: its mirror's)."""

    def __init__(self, suite, mirror=False):
        self.suite, self.mirror, self.name = suite, mirror, "mirror" if mirror else "oracle"

    def prepare(self, shape):
        return shape

    def correspond(self, s, t):
        from scipy.spatial import cKDTree

        c = self.suite.surface(s.surface).canonical * ([-1, 1, 1] if self.mirror else 1)
        return cKDTree(self.suite.surface(t.surface).canonical).query(c)[1]


def test_canonical_truth_between_two_triangulations():
    """Surfaces of different topologies take their truth from canonical points: the nearest-canonical
    oracle scores 0, its mirror is all flips, and a surface with canonical points cannot pair with one without."""
    suite = _TwoTriangulations()
    cfg = HarnessConfig(kinds=("full-full",), max_points=300)
    res = run_benchmark(suite, [_CanonicalOracle(suite), _CanonicalOracle(suite, mirror=True)], cfg, progress=False)
    s = res.summaries()
    assert s["oracle"]["full-full/inter/clean"]["pairs"] == 2 and s["oracle"]["full-full/inter/clean"]["AE_cm"] == 0
    m = s["mirror"]["full-full/inter/clean"]
    assert m["AE_cm"] > 5 and m["flip_share_of_gross_pct"] > 90
    plain = Surface("plain", suite.meshes["fine"])
    with pytest.raises(BodycorrError, match="canonical"):
        src = _Runner(suite, [], cfg).shape("coarse", False, "clean")
        PairTruth(src, src, suite.surface("coarse"), plain, _RefIndex(plain), None, None, 10, 0)
