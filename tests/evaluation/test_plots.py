"""Error plots: errors spread from the evaluated points to every vertex, and drawn on the body with a
colour bar in cm. Tiny meshes built in code."""

from __future__ import annotations

import matplotlib
import numpy as np

from bodycorr.evaluation.plots import plot_errors_on_body, spread_to_vertices
from bodycorr.matching.visualize import draw_order
from tinyshapes import icosphere

UP, FACING = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])


def test_spread_keeps_known_vertices_and_averages_repeats():
    v, _ = icosphere(2)
    known = np.array([0, 5, 40, 41])
    # vertex 0 evaluated in two pairs (4 and 8 cm: mean 6), the others once; anchors a hair off the vertex
    anchors = np.concatenate([v[[0, 0]], v[known[1:]]]) + 1e-4
    out = spread_to_vertices(anchors, np.array([4.0, 8.0, 1.0, 2.0, 3.0]), v)
    np.testing.assert_allclose(out[known], [6.0, 1.0, 2.0, 3.0])
    assert np.isfinite(out).all() and out.min() >= 1.0 and out.max() <= 6.0  # a weighted mean of known values
    # an unknown vertex next to a known one takes (mostly) its value
    near = int(np.argsort(np.linalg.norm(v - v[40], axis=1))[1])
    assert near not in known and abs(out[near] - 2.0) < abs(out[near] - 6.0)
    assert np.isnan(spread_to_vertices(np.zeros((0, 3)), np.zeros(0), v)).all()


def test_errors_on_body_picture_a_high_error_spot_in_the_top_colour_with_a_cm_colour_bar(tmp_path, saved_figures):
    v, f = icosphere(3)
    v = v * [0.25, 0.15, 0.85]  # a standing blob, z up, facing -y
    rng = np.random.default_rng(0)
    anchors_idx = rng.choice(len(v), 120, replace=False)
    front = int(np.argmin(v[:, 1] + 0.1 * np.abs(v[:, 2])))  # the front's middle, nearest the viewer
    anchors_idx = np.union1d(anchors_idx, [front])
    errors = np.full(len(anchors_idx), 1.0)
    errors[anchors_idx == front] = 100.0  # a gross error (a flip) at one evaluated point
    values = spread_to_vertices(v[anchors_idx], errors, v)
    path = plot_errors_on_body([("method A\nmean 1.4 cm", values), ("method B", np.zeros(len(v)))], v, f,
                               tmp_path / "heatmap.png", UP, FACING, max_cm=20.0, title="full-full/inter/clean")  # fmt: skip
    assert path.is_file() and path.stat().st_size > 5000
    (fig,) = saved_figures
    body_axes = [ax for ax in fig.axes if ax.collections and not ax.get_ylabel()]  # the colour bar has a label
    assert [ax.get_title() for ax in body_axes] == ["front", "back", "front", "back"]
    assert [sf._suptitle.get_text() for sf in fig.subfigs[0].subfigs] == ["method A\nmean 1.4 cm", "method B"]
    bars = [ax for ax in fig.axes if "cm" in ax.get_ylabel()]
    assert len(bars) == 1 and "geodesic error (cm)" in bars[0].get_ylabel()
    assert fig._suptitle.get_text() == "full-full/inter/clean"
    # the triangles around the high-error vertex wear the top of the colour map, the rest its bottom
    lut = matplotlib.colormaps["turbo"](np.linspace(0, 1, 256))[:, :3]
    norm = lut / lut.max(1, keepdims=True)

    def level(c):
        return int(np.argmin(np.abs(norm - c / c.max()).sum(1)))

    fc = body_axes[0].collections[0].get_facecolor()[:, :3][np.argsort(draw_order(v, f, "front", UP, FACING))]
    assert all(level(fc[i]) > 240 for i in np.flatnonzero((f == front).any(1)))
    far = np.flatnonzero((values[f] < 1.5).all(1))
    assert far.size > len(f) // 2 and np.median([level(fc[i]) for i in far]) < 60  # 1 cm of 20: low end


def test_errors_on_a_body_of_unknown_facing_name_its_sides(tmp_path, saved_figures):
    v, f = icosphere(2)
    plot_errors_on_body([("m", np.ones(len(v)))], v * [0.3, 0.1, 0.9], f, tmp_path / "h.png", UP, None)
    (fig,) = saved_figures
    assert [ax.get_title() for ax in fig.axes if ax.collections and not ax.get_ylabel()] == ["side 1", "side 2 (turned 180°)"]
