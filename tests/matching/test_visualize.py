"""Pictures of bodies: a mesh drawn front and back, a value per vertex with its colour bar, the image
overlay with the template colour code as its legend. Tiny meshes built in code, no Anny."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from bodycorr.matching.visualize import draw_mesh, draw_order, draw_values_on_mesh, image_overlay_figure, view_basis
from tinyshapes import icosphere


def test_front_view_shows_the_bodys_left_on_the_right_and_back_view_the_reverse():
    right, up, toward = view_basis(side="front")  # the template: z up, facing -y, its left is +x
    np.testing.assert_allclose([right, up, toward], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    right_b, _, toward_b = view_basis(side="back")
    np.testing.assert_allclose([right_b, toward_b], [[-1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_draw_mesh_paints_far_triangles_first_in_their_own_colours():
    v, f = icosphere(2)
    colours = np.zeros((len(v), 3))
    colours[v[:, 1] < 0] = [1.0, 0.0, 0.0]  # the front half (facing -y) red, the back blue
    colours[v[:, 1] >= 0] = [0.0, 0.0, 1.0]
    fig, axes = plt.subplots(1, 2)
    for ax, side in zip(axes, ("front", "back")):
        pc = draw_mesh(ax, v, f, colours, side, shade=0.0)
        fc = pc.get_facecolor()[:, :3]
        order = draw_order(v, f, side)
        last = f[order[-len(f) // 10 :]]  # the nearest tenth, drawn last
        want = [1.0, 0.0, 0.0] if side == "front" else [0.0, 0.0, 1.0]
        np.testing.assert_allclose(fc[-len(f) // 10 :], np.tile(want, (len(last), 1)))
        assert ax.get_title() == ""
    plt.close(fig)


def test_values_on_a_mesh_take_the_colour_map_and_a_colour_bar_in_cm():
    v, f = icosphere(2)
    values = np.zeros(len(v))
    hot = int(np.argmin(v[:, 1]))  # the vertex nearest the viewer in the front view
    values[hot] = 90.0  # far over the top of the scale
    fig, axes = plt.subplots(1, 2)
    bar = draw_values_on_mesh(fig, axes, v, f, values, "geodesic error (cm)", vmax=20.0)
    assert "cm" in bar.ax.get_ylabel() and bar.vmax == 20.0
    assert [a.get_title() for a in axes] == ["front", "back"]
    pc = axes[0].collections[0]
    order = draw_order(v, f, "front")
    fc = pc.get_facecolor()[:, :3][np.argsort(order)]  # back to face order
    lut = matplotlib.colormaps["turbo"](np.linspace(0, 1, 256))[:, :3]

    def level(c):  # the colour map entry of a (shaded: scaled) colour
        n = lut / lut.max(1, keepdims=True)
        return int(np.argmin(np.abs(n - c / c.max()).sum(1)))

    with_hot = np.flatnonzero((f == hot).any(1))
    assert all(level(fc[i]) > 240 for i in with_hot)  # a triangle takes its corners' mean: 30 > 20, the top colour
    cold = np.flatnonzero(values[f].max(1) == 0)
    assert all(level(fc[i]) < 15 for i in cold[:50])
    plt.close(fig)


def test_image_overlay_figure_has_the_photo_the_overlay_and_the_template_legend(tmp_path, saved_figures):
    v, f = icosphere(2)
    colours = ((v - v.min(0)) / np.ptp(v, 0) * 255).astype(np.uint8)
    rgb = np.full((40, 30, 3), 90, np.uint8)
    overlay = rgb.copy()
    overlay[10:30, 10:20] = colours[5]
    path = image_overlay_figure(rgb, overlay, v, f, colours, tmp_path / "legend.png", "600 person pixels, mean confidence 0.50")
    assert path.is_file() and path.stat().st_size > 5000
    (fig,) = saved_figures
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4
    assert titles[0] == "input" and titles[1].startswith("correspondence")
    assert titles[2].replace("\n", " ") == "template colour code: front" and titles[3].replace("\n", " ") == "template colour code: back"
    assert "mean confidence 0.50" in fig._supxlabel.get_text()
    # the legend is drawn in the code's colours: the template's vertex colours, not a stand-in
    legend = fig.axes[2].collections[0].get_facecolor()[:, :3]
    assert legend.std(0).min() > 0.1


@pytest.mark.parametrize("side", ["left", ""])
def test_view_basis_refuses_unknown_sides(side):
    with pytest.raises(ValueError, match="front"):
        view_basis(side=side)
