import json

import numpy as np
import pytest
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.depth_io import save_depth
from bodycorr.geometry.io import save_mesh, save_point_cloud
from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.matching.correspond import match
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.nearest import knn, knn_reference
from bodycorr.matching.pipeline import MatchOptions, match_files
from bodycorr.matching.up import candidate_axes, parse_up
from bodycorr.models.io import save_model_file
from bodycorr.models.registry import create_model


def _sphere(n=20):
    u, v = np.meshgrid(np.linspace(0, np.pi, n)[1:-1], np.linspace(0, 2 * np.pi, 2 * n, endpoint=False), indexing="ij")
    pts = np.stack([np.sin(u) * np.cos(v), np.sin(u) * np.sin(v), np.cos(u)], -1).reshape(-1, 3)
    pts = np.concatenate([pts, [[0, 0, 1], [0, 0, -1]]])
    from scipy.spatial import ConvexHull

    hull = ConvexHull(pts)
    f = hull.simplices.copy()
    # orient outwards
    c = pts[f].mean(1)
    nrm = np.cross(pts[f[:, 1]] - pts[f[:, 0]], pts[f[:, 2]] - pts[f[:, 0]])
    flip = (nrm * c).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return pts, f


@pytest.fixture(scope="module")
def tiny_extractor():
    torch.manual_seed(0)
    net = create_model("unet", base_width=4, max_width=16, num_levels=3)
    return DescriptorExtractor(net, size=32)


def test_knn_matches_reference(rng):
    q, db = rng.normal(size=(200, 16)), rng.normal(size=(300, 16))
    a, b = knn(q, db, k=3), knn_reference(q, db, k=3)
    assert np.array_equal(a.index, b.index)
    assert np.allclose(a.distance, b.distance, atol=1e-4)


def test_match_identical_descriptors_is_identity(rng):
    d = rng.normal(size=(500, 16)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = match(d, d)
    assert np.array_equal(c.target, np.arange(500))
    assert c.mutual.all() and np.allclose(c.confidence, 1.0)
    assert c.cycle is None
    assert np.array_equal(match(d, d, source_points=rng.normal(size=(500, 3))).cycle, np.zeros(500, np.float32))


def test_match_cycle_is_the_round_trip_on_the_source():
    """Sources 0 and 1 both match target 0, whose nearest source is 0: source 1's round trip lands
    on source 0, |p1 - p0| away; source 2 matches target 1 mutually."""
    src = np.array([[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0]], np.float32)
    tgt = np.array([[1.0, 0.0, 0.0], [0.0, 0.1, 1.0]], np.float32)
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.3, 0.4], [1.0, 1.0, 1.0]])
    c = match(src, tgt, source_points=pts)
    assert c.target.tolist() == [0, 0, 1] and c.mutual.tolist() == [True, False, True]
    assert np.allclose(c.cycle, [0.0, 0.5, 0.0])
    # the round trip, not the consistency, weighs the confidence once the points are known
    plain = np.exp(-((c.distance / 0.25) ** 2))
    assert np.allclose(c.confidence, plain * np.exp(-(np.array([0.0, 0.5, 0.0]) / 0.1) ** 2), atol=1e-6)
    assert c.confidence[1] < 1e-6 < c.confidence[2]
    cons = np.array([0.5, 1.0, 1.0], np.float32)
    assert np.allclose(match(src, tgt, cons).confidence, plain * cons, atol=1e-6)
    assert np.allclose(match(src, tgt, cons, source_points=pts).confidence, c.confidence)
    with pytest.raises(BodycorrError, match="source_points"):
        match(src, tgt, source_points=pts[:2])


def test_mesh_descriptors_cover_every_vertex(tiny_extractor):
    v, f = _sphere()
    vd = tiny_extractor.mesh(Mesh(v * [0.3, 0.2, 0.9], f), num_views=16)
    assert vd.descriptors.shape == (len(v), 16)
    assert np.allclose(np.linalg.norm(vd.descriptors, axis=1), 1, atol=1e-4)
    assert (vd.seen > 0).mean() > 0.8
    assert ((vd.consistency >= 0) & (vd.consistency <= 1 + 1e-5)).all()


def test_point_cloud_descriptors(tiny_extractor, rng):
    v, _ = _sphere(30)
    vd = tiny_extractor.point_cloud(PointCloud(v * [0.3, 0.2, 0.9]), num_views=8)
    assert vd.descriptors.shape == (len(v), 16) and np.isfinite(vd.descriptors).all()
    assert (vd.seen > 0).mean() > 0.8


def test_depth_map_descriptors_are_per_valid_pixel(tiny_extractor):
    depth = np.zeros((60, 80), np.float32)
    depth[10:50, 30:45] = 2.5
    pd = tiny_extractor.depth_map(depth)
    assert pd.descriptors.shape == (40 * 15, 16)
    assert set(map(tuple, pd.pixels)) == {(r, c) for r in range(10, 50) for c in range(30, 45)}
    with pytest.raises(BodycorrError, match="no person"):
        tiny_extractor.depth_map(np.zeros((60, 80), np.float32))


def test_up_axis_parsing_and_candidates(rng):
    assert np.allclose(parse_up("-y"), [0, -1, 0])
    assert np.allclose(parse_up("1,0,0"), [1, 0, 0])
    with pytest.raises(BodycorrError, match="--up"):
        parse_up("sideways")
    pts = rng.normal(size=(2000, 3)) * [0.2, 0.1, 0.8]
    assert abs(candidate_axes(pts)[0] @ [0, 0, 1]) > 0.99  # a body's longest axis comes first


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("unet", base_width=4, max_width=16, num_levels=3)
    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    save_model_file(net, path, meta={"size": 32})
    return path


def test_match_files_writes_every_output(tmp_path, model_file):
    v, f = _sphere()
    save_mesh(Mesh(v * [0.3, 0.2, 0.9], f), tmp_path / "a.ply")
    save_point_cloud(PointCloud(v * [300, 200, 900]), tmp_path / "b.xyz")  # millimetres
    depth = np.zeros((424, 512), np.float32)
    depth[100:300, 220:290] = 2.4
    save_depth(tmp_path / "c.png", depth)
    opts = MatchOptions(model=str(model_file), views=8, up="z", refine="none")
    report = match_files(str(tmp_path / "c.png"), str(tmp_path / "a.ply"), str(tmp_path / "out"), opts)
    assert "matched" in report
    out = tmp_path / "out"
    z = np.load(out / "correspondences.npz")
    assert z["target_index"].shape == (200 * 70,) and z["target_index"].max() < len(v)
    assert z["cycle_m"].shape == (200 * 70,) and (z["cycle_m"][z["mutual"]] == 0).all()
    assert len((out / "correspondences.txt").read_text().splitlines()) == 200 * 70 + 1
    assert json.loads((out / "summary.json").read_text())["source_kind"] == "depth"
    assert (out / "matches.png").stat().st_size > 1000
    match_files(str(tmp_path / "b.xyz"), str(tmp_path / "a.ply"), str(tmp_path / "out2"), opts)
    assert np.load(tmp_path / "out2" / "correspondences.npz")["target_index"].shape == (len(v),)


@pytest.mark.slow
def test_match_refinements(tmp_path, model_file, monkeypatch):
    """--refine register deforms the source mesh onto the target; --refine template / body fit the
    template (as a graph / as the Anny body) onto both scans and write them; spectral refines two
    closed meshes spectrally, and auto (the default) fits Anny onto each from its spectral map to
    the template and maps through the fits, and says so (a tiny untrained model: outputs and shapes only)."""
    import bodycorr.matching.refiners.auto as auto_mod
    from bodycorr.body.template import get_template

    # outputs and shapes only: auto's body fits of the two complete scans need not converge
    monkeypatch.setattr(auto_mod, "COMPLETE_ITERATIONS", 20)
    monkeypatch.setattr(auto_mod, "COMPLETE_TIGHTEN_STEPS", 5)
    v, f = _sphere()
    save_mesh(Mesh(v * [0.3, 0.2, 0.9], f), tmp_path / "a.ply")
    save_mesh(Mesh(v * [0.32, 0.2, 0.85] + [0.1, 0, 0], f), tmp_path / "b.ply")
    for refine in ("register", "template", "body", "spectral", "auto"):
        out = tmp_path / refine
        match_files(str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), str(out), MatchOptions(model=str(model_file), views=4, up="z", refine=refine))
        z = np.load(out / "correspondences.npz")
        assert z["target_index"].shape == (len(v),) and z["target_index"].max() < len(v)
        assert ((z["confidence"] >= 0) & (z["confidence"] <= 1)).all()
        assert (z["cycle_m"][z["mutual"]] == 0).all() and (z["cycle_m"][~z["mutual"]] > 0).all()  # the refined map's own round trip
        summary = json.loads((out / "summary.json").read_text())
        assert summary["refine"] == refine and summary["refined_by"] == ("template route" if refine == "auto" else refine)
        assert summary["seconds"]["refine_pair"] >= 0
    from bodycorr.geometry.io import load_mesh

    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["refine_info"]["auto"]["why"] == "both scans complete"
    for refine in ("template", "body", "auto"):
        fitted = load_mesh(tmp_path / refine / "target_template.ply")
        assert fitted.num_vertices == get_template().num_vertices and np.isfinite(fitted.vertices).all()
    depth = np.zeros((424, 512), np.float32)
    depth[100:300, 220:290] = 2.4
    save_depth(tmp_path / "c.png", depth)
    with pytest.raises(BodycorrError, match="must be a mesh"):
        match_files(str(tmp_path / "c.png"), str(tmp_path / "a.ply"), str(tmp_path / "o"), MatchOptions(model=str(model_file), views=4, refine="register"))
    # a depth map's body fit gets its frame and camera (closest points from camera-facing vertices);
    # the default (auto) fits the body when a side is partial
    match_files(str(tmp_path / "c.png"), str(tmp_path / "b.ply"), str(tmp_path / "d"), MatchOptions(model=str(model_file), views=4, up="z"))
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["refine"] == "auto" and summary["refined_by"] == "template route" and summary["refine_info"]["auto"]["source"] == "Anny fitted from its descriptors"
    fitted = load_mesh(tmp_path / "d" / "source_template.ply")
    assert fitted.num_vertices == get_template().num_vertices and np.isfinite(fitted.vertices).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.ply", "no such file"),
        (lambda p: (p / "few.xyz").write_text("0 0 0\n1 1 1\n0 1 0\n") and p / "few.xyz", "points"),
        (lambda p: (p / "nan.xyz").write_text("0 0 nan\n" * 200) and p / "nan.xyz", "NaN"),
        (lambda p: (p / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nend_header\n\x00") and p / "bad.ply", "bad.ply"),
    ],
)
def test_bad_inputs_fail_with_one_line(tmp_path, model_file, make, message):
    v, f = _sphere()
    save_mesh(Mesh(v * [0.3, 0.2, 0.9], f), tmp_path / "ok.ply")
    with pytest.raises(BodycorrError, match=message) as e:
        match_files(str(make(tmp_path)), str(tmp_path / "ok.ply"), str(tmp_path / "o"), MatchOptions(model=str(model_file), views=4, up="z"))
    assert "\n" not in str(e.value)


def test_bad_model_files(tmp_path):
    v, f = _sphere()
    save_mesh(Mesh(v * [0.3, 0.2, 0.9], f), tmp_path / "ok.ply")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BodycorrError, match="corrupt"):
        match_files(str(tmp_path / "ok.ply"), str(tmp_path / "ok.ply"), str(tmp_path / "o"), MatchOptions(model=str(tmp_path / "corrupt.pt")))
    # weights of another architecture under this name
    net = create_model("unet", base_width=4, max_width=16, num_levels=3)
    d = {"name": "wei_alexnet", "config": {}, "state_dict": net.state_dict(), "meta": {}}
    torch.save(d, tmp_path / "other.pt")
    with pytest.raises(BodycorrError, match="do not match|shapes"):
        match_files(str(tmp_path / "ok.ply"), str(tmp_path / "ok.ply"), str(tmp_path / "o"), MatchOptions(model=str(tmp_path / "other.pt")))


def test_flying_pixels_are_removed():
    from bodycorr.matching.inputs import remove_flying_pixels

    d = np.zeros((40, 40), np.float32)
    d[10:30, 10:30] = 2.0
    d[5, 5] = 2.5  # an isolated return
    d[10, 30] = 2.6  # a flying pixel beside the edge
    c = remove_flying_pixels(d)
    assert c[5, 5] == 0 and c[10, 30] == 0
    assert (c[11:29, 11:29] == 2.0).all() and c[10, 10] == 2.0  # a corner keeps 3 supporting neighbours


@pytest.mark.slow
def test_default_refinement_takes_odd_input(tmp_path, model_file, monkeypatch):
    """The default refinement on what users have besides clean bodies gives a map, never a crash:
    a mesh of two components, a few hundred cloud points (complete: fitted from their spectral maps),
    a mesh with a hole (partial: fitted from its descriptors)."""
    import bodycorr.matching.refiners.auto as auto_mod

    monkeypatch.setattr(auto_mod, "COMPLETE_ITERATIONS", 20)  # a map, not a converged fit, is what is checked
    monkeypatch.setattr(auto_mod, "COMPLETE_TIGHTEN_STEPS", 5)
    v, f = _sphere()
    body = Mesh(v * [0.3, 0.2, 0.9], f)
    save_mesh(body, tmp_path / "body.ply")
    two = Mesh(np.concatenate([body.vertices, body.vertices * 0.3 + [0.6, 0, 0]]), np.concatenate([f, f + len(v)]))
    save_mesh(two, tmp_path / "two.ply")
    save_point_cloud(PointCloud(body.vertices[::2][:300]), tmp_path / "few.xyz")
    keep = body.vertices[f].mean(1)[:, 1] < 0.05  # most of the back cut away: a partial scan
    save_mesh(Mesh(body.vertices, f[keep]), tmp_path / "holed.ply")
    for src, why in (("two.ply", "both scans complete"), ("few.xyz", "both scans complete"), ("holed.ply", "a partial scan (source)")):
        out = tmp_path / f"out_{src}"
        match_files(str(tmp_path / src), str(tmp_path / "body.ply"), str(out), MatchOptions(model=str(model_file), views=4, up="z"))
        s = json.loads((out / "summary.json").read_text())
        assert s["refined_by"] == "template route" and s["refine_info"]["auto"]["why"] == why, (src, s["refine_info"])
        t = np.load(out / "correspondences.npz")["target_index"]
        assert t.min() >= 0 and t.max() < len(v)


def _aggregate_reference(contrib, n, vote_iters, vote_power):
    """Slow, obvious: per point, collect (weight, descriptor) from every view, then the weighted
    unit mean and the agreement-reweighted means."""
    per = [[] for _ in range(n)]
    for idx, w, d in contrib:
        for i, wi, di in zip(idx, w, d):
            per[i].append((float(wi), np.asarray(di, np.float64)))
    out = np.zeros((n, contrib[0][2].shape[1]))
    for i, items in enumerate(per):
        if not items:
            continue
        m = sum(w * d for w, d in items) / sum(w for w, _ in items)
        m /= np.linalg.norm(m)
        for _ in range(vote_iters):
            ws = [w * max(float(d @ m), 0.0) ** vote_power for w, d in items]
            if sum(ws) > 1e-6 * sum(w for w, _ in items):
                m = sum(wv * d for wv, (_, d) in zip(ws, items)) / sum(ws)
                m /= np.linalg.norm(m)
        out[i] = m
    return out


def test_view_voting_outvotes_a_minority_and_matches_the_reference():
    from bodycorr.matching.extract import aggregate_views

    rng = np.random.default_rng(0)
    left, right = np.eye(4)[0], np.eye(4)[1]  # two descriptors that must not be mixed
    contrib = []
    for v in range(5):  # 3 views say "left" for points 0-9, 2 views say "right"
        d = np.tile(left if v < 3 else right, (10, 1)) + rng.normal(0, 0.05, (10, 4))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        contrib.append((np.arange(10), rng.uniform(0.5, 1.0, 10), d.astype(np.float32)))
    plain, _, consistency = aggregate_views(contrib, 12, 0)
    voted, wsum, _ = aggregate_views(contrib, 12, 3, 4.0)
    assert (plain[:10] @ left).mean() < 0.9  # the plain mean sits between left and right
    assert (voted[:10] @ left).min() > 0.99 and (voted[:10] @ right).max() < 0.1
    assert np.all(wsum[10:] == 0) and np.all(voted[10:] == 0)  # unseen points stay empty for the filler
    assert np.all(consistency[:10] < 0.9)  # the views' disagreement stays visible as low consistency
    for it in (0, 2):
        assert np.allclose(aggregate_views(contrib, 12, it, 4.0)[0], _aggregate_reference(contrib, 12, it, 4.0), atol=1e-6)
