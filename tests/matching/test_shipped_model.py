"""The shipped model: loads by default, and a randomly rotated, rescaled input matches like an upright one."""

import numpy as np
import pytest

from bodycorr.matching.pipeline import DEFAULT_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model in this checkout")]


def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])  # fmt: skip


def test_shipped_model_is_small_and_has_a_card():
    assert DEFAULT_MODEL.stat().st_size < 20 * 2**20
    card = DEFAULT_MODEL.with_suffix(".md").read_text()
    for needed in ("command", "seed", "steps", "wall time", "hardware", "AE"):
        assert needed in card


def test_rotated_input_matches_like_upright(tmp_path):
    """Both inputs with up "auto" (the target is a crouching pose whose longest axis is 31° off
    vertical; the consistency score alone turned it upside down: 121 cm against 48 cm)."""
    from bodycorr.body.template import get_template
    from bodycorr.data.suite import load_suite
    from bodycorr.geometry.geodesic import all_pairs_geodesics
    from bodycorr.geometry.io import save_mesh
    from bodycorr.geometry.mesh import Mesh
    from bodycorr.matching.pipeline import MatchOptions, match_files

    suite = load_suite("synthetic-v1")
    a, b = (int(x) for x in suite.intra[0])
    rng = np.random.default_rng(5)
    R = _random_rotation(rng)
    A = suite.mesh(a)
    save_mesh(A, tmp_path / "a.ply")
    save_mesh(Mesh(A.vertices @ R.T * 1000.0 + 500.0, A.faces), tmp_path / "a_rot_mm.ply")  # any pose, millimetres
    save_mesh(suite.mesh(b), tmp_path / "b.ply")
    geo = all_pairs_geodesics(get_template().mesh)
    errs = {}
    for name, up in (("a.ply", "z"), ("a_rot_mm.ply", "auto")):
        out = tmp_path / f"out_{name}"
        match_files(str(tmp_path / name), str(tmp_path / "b.ply"), str(out), MatchOptions(views=24, up=up, refine="none"))
        t = np.load(out / "correspondences.npz")["target_index"]
        errs[name] = float(geo[np.arange(len(t)), t].astype(np.float32).mean() * 100)
    assert errs["a_rot_mm.ply"] < 1.25 * errs["a.ply"] + 2.0, errs


def test_demo_writes_its_outputs_and_the_body_fit_lowers_its_error(tmp_path):
    """The README's main job (`bodycorr demo`) end to end with the shipped model, plain and with the
    default refinement (auto: the body fit, the source being a partial view): outputs written, the
    error against the truth sane, and the refined map better."""
    import json

    from bodycorr.matching.demo import run_demo

    got = {}
    for refine in ("none", "auto"):
        out = tmp_path / refine
        report = run_demo(out, refine=refine)
        assert "mean error" in report
        for f in ("matches.png", "matches_error.png", "correspondences.npz", "summary.json", "source_depth.png", "target.ply"):
            assert (out / f).stat().st_size > 0, f
        summary = json.loads((out / "summary.json").read_text())
        assert summary["refined_by"] == ("none" if refine == "none" else "template route")
        got[refine] = summary["error_vs_truth"]
    assert got["none"]["pixels_with_truth"] > 1000
    # synthetic-v1 came out differently on two CPUs (see the README's Status), so bound the robust
    # median (8.2 cm on one, mean 29.3 from a few flipped limbs; the other gave a mean of 8.5) and ask
    # the body fit to lower both the median and the mean
    none, body = got["none"], got["auto"]
    assert none["median_cm"] < 15 and body["median_cm"] < none["median_cm"] and body["mean_cm"] < none["mean_cm"], got


def test_register_puts_the_template_on_a_remeshed_body(tmp_path):
    """`bodycorr register` on a body of its own topology: the registration's vertex i lands near the
    body's true point i (template topology), the scan lies on it, and every output is written."""
    import json

    from bodycorr.cli.main import main
    from bodycorr.data.remeshed import load_remeshed
    from bodycorr.geometry.io import load_mesh, save_mesh

    r = load_remeshed("synthetic-v1")
    i = int(r.suite.inter[0][1])
    save_mesh(r.mesh(i), tmp_path / "scan.ply")
    assert main(["register", str(tmp_path / "scan.ply"), "-o", str(tmp_path / "reg"), "--up", "z"]) == 0
    out = tmp_path / "reg"
    reg = load_mesh(out / "registration.ply")
    truth = r.suite.vertices[i]  # the body in the template's vertex order
    err = np.linalg.norm(reg.vertices - truth, axis=1) * 100
    summary = json.loads((out / "summary.json").read_text())
    # measured: vertex error median 4.4 cm (the body fit's usual few cm), residual median 0.14 cm
    assert np.median(err) < 6.0 and summary["residual_cm"]["median"] < 1.0, (np.median(err), summary["residual_cm"])
    z = np.load(out / "scan_on_template.npz")
    assert z["face"].shape == (r.mesh(i).num_vertices,) and np.allclose(z["bary"].sum(1), 1, atol=1e-5)
    assert set(json.loads((out / "body.json").read_text())["phenotypes"]) == {"gender", "age", "muscle", "weight", "height", "proportions"}
    assert (out / "fit.png").stat().st_size > 10_000
