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
        match_files(str(tmp_path / name), str(tmp_path / "b.ply"), str(out), MatchOptions(views=24, up=up))
        t = np.load(out / "correspondences.npz")["target_index"]
        errs[name] = float(geo[np.arange(len(t)), t].astype(np.float32).mean() * 100)
    assert errs["a_rot_mm.ply"] < 1.25 * errs["a.ply"] + 2.0, errs


def test_demo_writes_its_outputs_and_the_body_fit_lowers_its_error(tmp_path):
    """The README's main job (`bodycorr demo`) end to end with the shipped model, plain and with
    ``--refine body``: outputs written, the error against the truth sane, and the body fit better."""
    import json

    from bodycorr.matching.demo import run_demo

    got = {}
    for refine in ("none", "body"):
        out = tmp_path / refine
        report = run_demo(out, refine=refine)
        assert "mean error" in report
        for f in ("matches.png", "matches_error.png", "correspondences.npz", "summary.json", "source_depth.png", "target.ply"):
            assert (out / f).stat().st_size > 0, f
        got[refine] = json.loads((out / "summary.json").read_text())["error_vs_truth"]
    assert got["none"]["pixels_with_truth"] > 1000
    # synthetic-v1 came out differently on two CPUs (see the README's Status), so bound the robust
    # median (8.2 cm on one, mean 29.3 from a few flipped limbs; the other gave a mean of 8.5) and ask
    # the body fit to lower both the median and the mean
    none, body = got["none"], got["body"]
    assert none["median_cm"] < 15 and body["median_cm"] < none["median_cm"] and body["mean_cm"] < none["mean_cm"], got
